"""End to end: each experiment trains, evaluates and writes what a user reads; the command lines' behaviour."""

import dataclasses
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from decompvae import metrics
from experiments import dsprites, evaluate
from experiments.runner import checkpointing
from experiments.runner import evaluation
from experiments.runner import run as run_lib
from experiments.runner import training
from experiments.runner.errors import RunError
from tests import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC and os.path.getsize(path) > 2000, path


def _eval_means(workdir, c):
  """E[z|x] of every evaluation point, from the checkpoint, independently of the runner's evaluation."""
  task = runs.TASKS[c.experiment]
  _, state = runs.restore(workdir, c)
  data = training.load_data(task, c, None)
  rows = data.eval.storage if data.eval.indices is None else data.eval.storage[data.eval.indices]
  run = run_lib.make_run(task, c, data)
  encode = jax.jit(lambda variables, x: run.model.encode(variables, x, train=False)[0].mean())
  return np.asarray(encode(run.variables(state), data.eval.decode(rows))), data


# Small-protocol versions of disentanglement_lib's suite: the same functions, so the summary can be checked
# against direct calls in seconds (the default sizes are measured by benchmarks/bench_eval.py).
_SMALL_SUITE = {"factor_vae": functools.partial(metrics.factor_vae_score, num_train=200, num_eval=100,
                                                num_variance_estimate=500),
                "beta_vae": functools.partial(metrics.beta_vae_score, batch_size=16, num_train=200, num_eval=100),
                "mig": functools.partial(metrics.mig, num_train=500),
                "dci": functools.partial(metrics.dci, num_train=300, num_test=150),
                "sap": functools.partial(metrics.sap, num_train=300, num_test=150),
                "modularity": functools.partial(metrics.modularity_explicitness, num_train=300, num_test=150)}


def test_dsprites_summary_holds_every_metric_under_its_own_name(tmp_path, monkeypatch):
  monkeypatch.setattr(dsprites, "standard_metrics", lambda: _SMALL_SUITE)
  c = runs.config("dsprites", "anisotropic", steps=4, light_eval=False,   # the whole coarse grid: a CodeTable
                  **{"train.num_devices": 1, "eval.standard_metrics": True, "data.max_examples": 0})
  summary = training.train_and_evaluate(dsprites.TASK, c, str(tmp_path))
  assert summary == json.loads((tmp_path / "summary.json").read_text())
  m = summary["metrics"]
  z_mean, data = _eval_means(tmp_path, c)
  factors = data.ground_truth.factor_classes
  np.testing.assert_allclose(m["test/paper/disentanglement"], metrics.paper_disentanglement(
      z_mean, factors, num_votes=c.eval.paper_votes, num_points=c.eval.paper_points, random_state=c.seed)
      ["disentanglement"], atol=1e-12)
  table = metrics.CodeTable(z_mean, factors, data.ground_truth.factor_sizes)
  for family, metric in _SMALL_SUITE.items():
    for key, value in metric(table, None, random_state=0).items():
      np.testing.assert_allclose(m[f"test/{family}/{key}"], value, atol=1e-6, err_msg=f"{family}/{key}")
  assert m["test/iwae"] >= m["test/elbo"] - 1.0 and m["test/iwae_stderr"] > 0
  assert len(m["prior/variances"]) == c.model.latent_dim
  for name in ("reconstructions.png", "prior_samples.png", "traversals.png"):
    _assert_png(tmp_path / "figures" / name)
  assert runs.rows(tmp_path, "test/paper/disentanglement") == [4]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="bitwise batch independence is checked on XLA:CPU")
def test_dsprites_heldout_suite_equals_encoding_the_sampled_images(tmp_path, monkeypatch):
  # A held-out split: the suite looks the sampled images' codes up in a CodeTable of the whole grid (the
  # evaluation points' means plus the training images' encoded once), which gives exactly the numbers of
  # rendering and encoding each sampled image again. (DCI is left out: it reads the same sampled codes as the
  # others, and its 100 boosting stages cost seconds of Python each time.)
  suite = {family: metric for family, metric in _SMALL_SUITE.items() if family != "dci"}
  monkeypatch.setattr(dsprites, "standard_metrics", lambda: suite)
  c = runs.config("dsprites", steps=2, **{"train.num_devices": 1, "eval.standard_metrics": True,
                                          "data.max_examples": 0, "data.heldout_fraction": 0.25})
  m = training.train_and_evaluate(dsprites.TASK, c, str(tmp_path))["metrics"]
  _, state = runs.restore(tmp_path, c)
  data = training.load_data(dsprites.TASK, c, None)
  assert data.eval.num_examples == round(0.25 * data.ground_truth.num_examples)
  run = run_lib.make_run(dsprites.TASK, c, data)
  encoder = jax.jit(lambda x: run.model.encode(run.variables(state), x, train=False)[0].mean())
  for family, metric in suite.items():
    for key, value in metric(data.ground_truth, lambda x: np.asarray(encoder(x)), random_state=0).items():
      assert m[f"test/{family}/{key}"] == value, (family, key)


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_mnist_summary_holds_sparsity(tmp_path):
  c = runs.config("fashion_mnist", "sparse", steps=2, **{"train.num_devices": 1, "eval.figures": True})
  m = training.train_and_evaluate(runs.TASKS["fashion_mnist"], c, str(tmp_path))["metrics"]
  z_mean, data = _eval_means(tmp_path, c)
  np.testing.assert_allclose(m["test/sparsity/hoyer"], metrics.hoyer_sparsity(z_mean), rtol=1e-5)
  np.testing.assert_allclose(m["test/sparsity/per_class_magnitude"],
                             metrics.latent_magnitude_per_class(z_mean, data.labels), rtol=1e-5)
  _assert_png(tmp_path / "figures" / "class_magnitudes.png")


def test_pinwheel_summary_holds_the_clusters(tmp_path):
  c = runs.config("pinwheel", "mixture", steps=3, light_eval=False, **{"train.num_devices": 8})
  m = training.train_and_evaluate(runs.TASKS["pinwheel"], c, str(tmp_path))["metrics"]
  z_mean, data = _eval_means(tmp_path, c)
  means = np.array([[0.0, -1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
  np.testing.assert_allclose(m["test/clusters/nmi"],
                             metrics.cluster_alignment(z_mean, data.labels, means, c.prior.variance), rtol=1e-5)
  assert 1 <= m["test/clusters/occupied"] <= 4 and np.isclose(sum(m["test/clusters/masses"]), 1.0)
  _assert_png(tmp_path / "figures" / "aggregate_posterior.png")


def test_evaluation_points_are_a_random_subset_covering_the_factors():
  idx = evaluation.eval_subset(737_280, 10_000, seed=0)
  assert len(np.unique(idx)) == 10_000 and np.all(np.diff(idx) > 0)
  shape, scale, orientation, _, _ = np.unravel_index(idx, (3, 6, 40, 32, 32))
  for factor, size in ((shape, 3), (scale, 6), (orientation, 40)):
    counts = np.bincount(factor, minlength=size)
    assert counts.min() > 0.8 * 10_000 / size                          # every value, in proportion
  assert not np.array_equal(idx, evaluation.eval_subset(737_280, 10_000, seed=1))
  np.testing.assert_array_equal(evaluation.eval_subset(400, 0, seed=0), np.arange(400))


def test_a_figure_that_fails_loses_no_metric(tmp_path):
  broken = dataclasses.replace(runs.TASKS["pinwheel"], figures=lambda ev, directory: 1 / 0)
  summary = training.train_and_evaluate(broken, runs.config(steps=2, **{"eval.figures": True}), str(tmp_path))
  assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_evaluate_a_saved_run_with_other_settings_elsewhere(tmp_path, monkeypatch):
  c = runs.config(steps=2)
  training.train_and_evaluate(runs.TASKS["pinwheel"], c, str(tmp_path / "run"))
  before = (tmp_path / "run" / "summary.json").read_text()
  monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(tmp_path / "run")))
  with pytest.raises(RunError, match="cannot write to .*--output_dir"):
    evaluate.evaluate(str(tmp_path / "run"))
  summary = evaluate.evaluate(str(tmp_path / "run"), str(tmp_path / "out"))
  assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary and summary["step"] == 2
  assert (tmp_path / "run" / "summary.json").read_text() == before      # the run itself is left untouched


# ------------------------------------------------------------------------------------------------------------
# The command lines.


def _cli(module, *args, cwd=ROOT, **kw):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300, **kw)


@pytest.mark.parametrize("module,own", [("experiments.dsprites", ["learn_prior", "df"]),
                                        ("experiments.fashion_mnist", ["gamma", "sigma0"]),
                                        ("experiments.pinwheel", [])])
def test_each_entry_point_lists_its_own_flags(module, own):
  r = _cli(module, "--help")                                          # (absl's --help exits with status 1)
  assert "Traceback" not in r.stderr, r.stderr
  for flag in ["prior", "beta", "alpha", "workdir", "steps", "smoke", "config", "sweep", "compilation_cache", *own]:
    assert re.search(rf"^  --(\[no\])?{flag}:", r.stdout, re.MULTILINE), flag
  assert "python -m " + module in r.stdout                            # the usage: commands per figure
  assert "--jax_" not in r.stdout


def test_bad_input_gets_one_clear_error_and_blocks_nothing(tmp_path):
  workdir = f"--workdir={tmp_path / 'run'}"
  cases = [
      (["--prior=gaussian"], "mixture|isotropic"),
      (["--divergence=wasserstein"], "mmd_dim"),
      (["--cpu_devices=0"], "--cpu_devices=0: 0 is not a positive integer"),
      (["--steps=-1", "--beta=-1", "--alpha=-1", "--latent_dim=0"],   # every bad setting, in one message
       ("optim.num_steps=-1: must be >= 0", "objective.beta=-1.0: must be a finite number >= 0",
        "objective.alpha=-1.0: must be a finite number >= 0", "model.latent_dim=0: must be a positive integer")),
      (["--config.optim.batch_sise=3"], 'Did you mean "batch_size"'),
      (["--sweep.beta=1,x"], "--sweep.beta must be comma-separated numbers"),
      (["--latent_dim=3"], "the default (pinwheel) means need latent_dim=2"),
  ]
  for args, message in cases:
    r = _cli("experiments.pinwheel", "--smoke", workdir, *args)
    assert r.returncode != 0, args
    for part in (message,) if isinstance(message, str) else message:
      assert part in r.stderr, (args, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, (args, r.stderr[-2000:])
  r = _cli("experiments.pinwheel", "--smoke", "--steps=2", workdir,    # the corrected command goes ahead
           "--config.eval.iwae_samples=0", "--config.eval.figures=False")
  assert r.returncode == 0, r.stderr[-2000:]


def test_damaged_data_files_get_a_clear_error(tmp_path):
  (tmp_path / "empty.npz").write_bytes(b"")
  (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(5000))
  for name in ("empty.npz", "random.npz", "missing.npz"):
    r = _cli("experiments.dsprites", "--smoke", "--data_source=npz", f"--data_path={tmp_path / name}",
             f"--workdir={tmp_path / 'run'}")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert name in r.stderr and "--data_path" in r.stderr, r.stderr[-2000:]
  if os.path.isdir(FASHION_DIR):
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    for f in os.listdir(FASHION_DIR):
      data = open(os.path.join(FASHION_DIR, f), "rb").read()
      (fashion / f).write_bytes(data[:len(data) // 2] if f.startswith("train-images") else data)
    r = _cli("experiments.fashion_mnist", "--smoke", f"--data_path={fashion}", f"--workdir={tmp_path / 'f'}")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "train-images" in r.stderr and "--data_path" in r.stderr, r.stderr[-2000:]


def test_default_workdir_console_and_log_file(tmp_path):
  # The README's command shape, from another directory: the default workdir is relative to it.
  r = _cli("experiments.pinwheel", "--smoke", cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  workdir = tmp_path / "workdirs" / "pinwheel-mixture-smoke"
  assert json.loads((workdir / "summary.json").read_text())["step"] == 6
  assert "checkpoint_manager" not in r.stderr and "step 6/6" in r.stderr      # orbax's INFO goes to the file
  assert f"compilation cache: {os.environ['JAX_COMPILATION_CACHE_DIR']}" in r.stderr   # the session's (conftest)
  assert "checkpoint_manager" in (workdir / "log.txt").read_text()
  assert len(r.stderr.splitlines()) < 40


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.pinwheel", "--smoke", "--steps=1000000", f"--workdir={tmp_path}",
       "--config.train.checkpoint_every_steps=1000000"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while not os.path.exists(tmp_path / "metrics.jsonl") and time.time() < deadline and proc.poll() is None:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert "saved a checkpoint" in out
  mngr = checkpointing.manager(str(tmp_path / "checkpoints"))
  assert mngr.latest_step() and mngr.latest_step() > 0
  mngr.close()


def test_evaluate_command_takes_eval_overrides_only(tmp_path):
  training.train_and_evaluate(runs.TASKS["pinwheel"], runs.config(steps=2), str(tmp_path))
  r = _cli("experiments.evaluate", f"--workdir={tmp_path}", "--config.eval.iwae_samples=4",
           "--config.eval.figures=False")
  assert r.returncode == 0, r.stderr[-2000:]
  evaluated = json.loads((tmp_path / "summary.json").read_text())["config"]["eval"]
  assert evaluated["iwae_samples"] == 4 and evaluated["figures"] is False
  r = _cli("experiments.evaluate", f"--workdir={tmp_path}", "--config.eval.paper_votes=4")
  assert r.returncode != 0 and "not evaluation settings of a pinwheel run" in r.stderr
  r = _cli("experiments.evaluate", f"--workdir={tmp_path / 'nothing'}")
  assert r.returncode != 0 and "holds no run" in r.stderr and "Traceback" not in r.stderr
