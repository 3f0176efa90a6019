"""The cross-run report on fake run directories (JSON files only): grouping, statistics, tables and plots."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import report

BETAS = (1.0, 10.0, 100.0)
SEEDS = (0, 1, 2)
SERIES = {"anisotropic (fixed)": ("anisotropic", False), "anisotropic (learnable)": ("anisotropic", True),
          "isotropic": ("isotropic", False)}


def _config(prior="anisotropic", learnable=False, beta=1.0, alpha=0.0, gamma=0.8, seed=0, **extra):
  config = {"experiment": "dsprites", "seed": seed,
            "prior": {"name": prior, "learnable": learnable, "gamma": gamma, "df": 9.0, "init": "pca"},
            "objective": {"beta": beta, "alpha": alpha, "divergence": "mmd_dim"},
            "train": {"num_devices": seed + 1},            # differs between runs, never separates them
            "data": {"path": f"/somewhere/{seed}"}}
  for path, value in extra.items():
    section, key = path.split("__")
    config[section][key] = value
  return config


def _write_run(path, config, metrics, step=1000, summary=True):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  if summary:
    with open(os.path.join(path, "summary.json"), "w") as f:
      json.dump({"step": step, "config": config, "metrics": metrics}, f)


def _values():
  """Known metric values per (series, beta, seed), drawn once."""
  rng = np.random.RandomState(0)
  return {(s, b, seed): {"test/elbo": float(-100.0 - 3 * b + rng.randn()),
                         "test/paper/disentanglement": float(rng.rand())}
          for s in SERIES for b in BETAS for seed in SEEDS}


def _dsprites_runs(root):
  values = _values()
  for (s, b, seed), v in values.items():
    prior, learnable = SERIES[s]
    metrics = dict(v, **{"test/per_class_magnitude": [[1.0, 2.0]], "eval_seconds": 3.0 + seed})
    _write_run(os.path.join(root, f"{prior}-{learnable}-b{b:g}-s{seed}"),
               _config(prior, learnable, beta=b, seed=seed), metrics)
  return values


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def test_groups_by_series_and_beta_with_mean_and_sample_std(tmp_path):
  values = _dsprites_runs(tmp_path / "runs")
  _write_run(tmp_path / "runs" / "unfinished", _config(beta=1.0, seed=5), {}, summary=False)
  dirs, warnings = report.expand_paths([str(tmp_path / "runs" / "*")])
  assert len(dirs) == 28 and warnings == []
  runs, skipped = report.load_runs(dirs)
  assert len(runs) == 27
  assert len(skipped) == 1 and "unfinished" in skipped[0] and "no summary.json" in skipped[0]

  out = tmp_path / "out"
  groups, warnings = report.write_report(runs, str(out))
  assert warnings == []
  assert [(g.series, g.x, g.n_seeds) for g in groups] == [(s, b, 3) for s in sorted(SERIES) for b in BETAS]
  metrics = ["test/elbo", "test/paper/disentanglement"]   # lists and eval_seconds are not reported
  rows = _read_csv(out / "results.csv")
  assert rows[0] == ["series", "beta", "n_seeds", "test/elbo mean", "test/elbo std",
                     "test/paper/disentanglement mean", "test/paper/disentanglement std"]
  for row, g in zip(rows[1:], groups):
    assert row[:3] == [g.series, repr(g.x), "3"]
    for i, m in enumerate(metrics):
      v = np.array([values[(g.series, g.x, seed)][m] for seed in SEEDS])
      assert float(row[3 + 2 * i]) == pytest.approx(v.mean(), rel=1e-12)
      assert float(row[4 + 2 * i]) == pytest.approx(v.std(ddof=1), rel=1e-12)
  assert len(rows) == 1 + 9

  md = (out / "results.md").read_text()
  g = groups[0]
  v = np.array([values[(g.series, g.x, seed)]["test/elbo"] for seed in SEEDS])
  assert f"| anisotropic (fixed) | 1 | 3 | {v.mean():.4g} ± {v.std(ddof=1):.3g} |" in md
  assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 9   # header, one line per group

  run_rows = _read_csv(out / "runs.csv")
  assert run_rows[0] == ["dir", "series", "beta", "seed", "step"] + metrics
  assert len(run_rows) == 1 + 27
  assert {r[0] for r in run_rows[1:]} == {r.path for r in runs}

  for m in metrics:
    png = out / report.metric_filename(m)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in out.glob("*.png")) == ["test_elbo.png", "test_paper_disentanglement.png"]


def test_sweep_directory_stands_for_its_members(tmp_path):
  sweep = tmp_path / "sweep"
  _write_run(sweep, dict(_config(), sweep_members=["beta=1", "beta=4"]), {}, summary=False)
  for b in (1.0, 4.0):
    _write_run(sweep / "members" / f"beta={b:g}", _config(beta=b), {"test/elbo": -b})
  _write_run(tmp_path / "single", _config(beta=1.0, seed=1), {"test/elbo": -3.0})
  dirs, warnings = report.expand_paths([str(sweep), str(tmp_path / "single"),
                                        str(sweep / "members" / "beta=4"), str(tmp_path / "missing*")])
  assert dirs == [str(sweep / "members" / "beta=1"), str(sweep / "members" / "beta=4"), str(tmp_path / "single")]
  assert warnings == [f"{tmp_path / 'missing*'}: matches nothing"]
  runs, _ = report.load_runs(dirs)
  groups = report.aggregate(runs, "objective.beta", ["test/elbo"], ["prior.name"])
  assert [(g.x, g.n_seeds, g.mean["test/elbo"]) for g in groups] == [(1.0, 2, -2.0), (4.0, 1, -4.0)]
  assert groups[0].std["test/elbo"] == pytest.approx(np.std([-1.0, -3.0], ddof=1))
  assert np.isnan(groups[1].std["test/elbo"])   # one seed: no sample std


def test_alpha_sweep_with_gamma_series_and_symlog_axis(tmp_path):
  alphas, gammas = (0.0, 10.0, 100.0, 1000.0), (0.8, 0.9)
  for a in alphas:
    for g in gammas:
      for seed in (0, 1):
        _write_run(tmp_path / f"a{a:g}-g{g:g}-s{seed}", _config("sparse", alpha=a, gamma=g, seed=seed),
                   {"test/hoyer_sparsity": a / 1000 + g + seed})
  runs, _ = report.load_runs(report.expand_paths([str(tmp_path / "*")])[0])
  assert report.choose_x(runs) == "objective.alpha"
  keys = report.series_keys(runs, "objective.alpha")
  assert keys == ["prior.name", "prior.gamma"]
  groups = report.aggregate(runs, "objective.alpha", ["test/hoyer_sparsity"], keys)
  assert sorted({g.series for g in groups}) == ["sparse, gamma=0.8", "sparse, gamma=0.9"]
  for g in groups:
    gamma = float(g.series.rsplit("=", 1)[1])
    assert g.mean["test/hoyer_sparsity"] == pytest.approx(g.x / 1000 + gamma + 0.5)
    assert g.std["test/hoyer_sparsity"] == pytest.approx(np.std([0.0, 1.0], ddof=1))
  assert report.x_scale(g.x for g in groups) == ("symlog", {"linthresh": 10.0})
  # --x=gamma instead: one line per α.
  groups = report.aggregate(runs, "prior.gamma", ["test/hoyer_sparsity"],
                            report.series_keys(runs, "prior.gamma"))
  assert sorted({g.series for g in groups}) == [f"sparse, alpha={a:g}" for a in (0, 10, 100, 1000)]


def test_prior_settings_of_other_priors_do_not_split_groups(tmp_path):
  # Isotropic runs recording different Student-t dfs are one group; Student-t runs with other dfs are not.
  for seed, df in enumerate((2.0, 9.0)):
    _write_run(tmp_path / f"iso{seed}", _config("isotropic", seed=seed, prior__df=df), {"test/elbo": float(seed)})
    _write_run(tmp_path / f"t{seed}", _config("student_t", seed=seed, prior__df=df), {"test/elbo": float(seed)})
  runs, _ = report.load_runs(report.expand_paths([str(tmp_path / "*")])[0])
  keys = report.series_keys(runs, "objective.beta")
  groups = report.aggregate(runs, "objective.beta", ["test/elbo"], keys)
  assert [(g.series, g.n_seeds) for g in groups] == [("isotropic", 2), ("student_t, df=2", 1),
                                                     ("student_t, df=9", 1)]


def test_missing_and_null_values_are_left_out_and_counted(tmp_path):
  for seed, value in enumerate((1.0, None, 3.0)):
    _write_run(tmp_path / f"r{seed}", _config(seed=seed), {"test/elbo": value, "test/kl": 2.0 * seed})
  _write_run(tmp_path / "r3", _config(seed=3), {"test/kl": 6.0})
  runs, _ = report.load_runs(report.expand_paths([str(tmp_path / "*")])[0])
  [g] = report.aggregate(runs, "objective.beta", ["test/elbo", "test/kl"], ["prior.name"])
  assert (g.n_seeds, g.count["test/elbo"], g.count["test/kl"]) == (4, 2, 4)
  assert g.mean["test/elbo"] == 2.0 and g.std["test/elbo"] == pytest.approx(np.sqrt(2.0))
  assert report.format_mean_std(g.mean["test/elbo"], g.std["test/elbo"], 2, 4) == "2 ± 1.41 (n=2)"
  assert report.format_mean_std(np.nan, np.nan, 0, 4) == "—"


def test_duplicate_seeds_and_unknown_metrics_are_reported(tmp_path):
  for name in ("a", "b"):
    _write_run(tmp_path / name, _config(seed=0), {"test/elbo": 1.0})
  runs, _ = report.load_runs([str(tmp_path / "a"), str(tmp_path / "b")])
  _, warnings = report.write_report(runs, str(tmp_path / "out"), metrics=["test/elbo", "test/nope"])
  assert warnings == ["metric test/nope is not a scalar in any run",
                      "anisotropic (fixed) at x=1: seeds 0 occur more than once"]


@pytest.mark.parametrize("xs,expected", [
    ((1.0, 10.0, 100.0), ("log", {})),
    ((0.0, 10.0, 100.0, 1000.0), ("symlog", {"linthresh": 10.0})),
    ((0.0, 1.0, 2.0, 4.0), ("linear", {})),
    ((1.0, 2.0, 4.0, 8.0, 16.0), ("linear", {})),
    ((-1.0, 1.0, 1000.0), ("linear", {})),
])
def test_x_scale(xs, expected):
  assert report.x_scale(xs) == expected


def test_command_line(tmp_path):
  _dsprites_runs(tmp_path / "runs")
  out = tmp_path / "out"
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "-m", "experiments.report", str(tmp_path / "runs" / "isotropic-*"), f"--out={out}",
       "--metrics=test/elbo"], cwd=repo, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  rows = _read_csv(out / "results.csv")
  assert [r[:3] for r in rows[1:]] == [["isotropic", repr(b), "3"] for b in BETAS]
  assert sorted(p.name for p in out.glob("*.png")) == ["test_elbo.png"]
