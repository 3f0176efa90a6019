"""Cross-run report: `python -m experiments.report RUN_DIR [RUN_DIR ...] --out=DIR` (tables and plots).

Reads finished run directories (each holds `summary.json` and `config.json`) from disk, groups them by every
setting that differs between them except the seed, and writes, for each metric, the mean ± sample standard
deviation over seeds against the swept parameter (β, α or γ), one line per series:

  python -m experiments.report workdirs/dsprites-sweep workdirs/dsprites-aniso-* --out=reports/dsprites
  python -m experiments.report 'workdirs/pinwheel-*' --x=alpha --metrics=test/elbo,test/clusters/nmi --out=r

A sweep directory (with `members/<name>/` run directories) stands for its members; quoted glob patterns are
expanded here. Runs without `summary.json` are skipped with a warning. Outputs in --out: `results.csv` and
`results.md` (one row per series and x), `runs.csv` (every run used) and one PNG per metric.

Standalone on purpose: it imports nothing from the other experiment modules, only the files they write.
"""

import csv
import dataclasses
import glob
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from absl import app, flags, logging

# The parameters a figure of the paper can sweep, by short name, in the order preferred on a tie.
X_CANDIDATES = {"beta": "objective.beta", "alpha": "objective.alpha", "gamma": "prior.gamma"}
X_SYMBOLS = {"objective.beta": "β", "objective.alpha": "α", "prior.gamma": "γ"}

# Config keys that never separate runs: the seed (aggregated over) and settings that do not change what is
# trained (logging, checkpoints, devices, where the data are read from). A trailing ".*" matches a subtree.
IGNORED_CONFIG_KEYS = ("seed", "train.*", "data.path", "data.data_dir", "data.cache_dir", "data.download",
                       "data.source", "eval.figures", "sweep_members")

# Prior hyperparameters that matter only for some priors: for a run with another prior they are ignored, so
# that e.g. isotropic runs that happen to record different Student-t dfs still share a group.
PRIOR_KEYS = {
    "isotropic": (),
    "anisotropic": ("learnable", "init", "pca_examples", "scale"),
    "student_t": ("df",),
    "sparse": ("gamma", "sigma0"),
    "mixture": ("variance",),
}
_ALL_PRIOR_KEYS = {k for keys in PRIOR_KEYS.values() for k in keys}

# Scalars in summary.json that describe the evaluation rather than the model.
EXCLUDED_METRICS = ("eval_seconds",)


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished run.

  Attributes:
    path: its directory.
    config: the flattened config, {"objective.beta": 1.0, "prior.name": "anisotropic", ...} (lists as tuples).
    metrics: the flat metrics of summary.json (scalars; lists as tuples; null as None).
    step: the training step at which it was evaluated.
  """
  path: str
  config: Mapping[str, Any]
  metrics: Mapping[str, Any]
  step: int


@dataclasses.dataclass(frozen=True)
class Group:
  """The runs of one series at one x, and their statistics.

  Attributes:
    series: the series label, e.g. "anisotropic (learnable)" or "sparse, alpha=100".
    x: the swept value (None when the runs do not record it).
    runs: the runs, ordered by seed.
    mean: {metric: mean over the runs that report it (NaN if none)}.
    std: {metric: sample standard deviation, ddof = 1 (NaN for fewer than 2 values)}.
    count: {metric: how many runs report a finite value}.
  """
  series: str
  x: float | None
  runs: tuple[Run, ...]
  mean: Mapping[str, float]
  std: Mapping[str, float]
  count: Mapping[str, int]

  @property
  def n_seeds(self) -> int:
    return len(self.runs)


# --- loading -------------------------------------------------------------------------------------------------


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": (1, 2)}: dotted keys, lists as (hashable) tuples."""
  out = {}
  for key, value in nested.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, name + "."))
    else:
      out[name] = _freeze(value)
  return out


def _freeze(value):
  return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def expand_paths(patterns: Iterable[str]) -> tuple[list[str], list[str]]:
  """Run directories named by `patterns`, and a warning for each pattern or directory that names none.

  A pattern with glob characters is expanded (sorted); a directory holding `members/` is a sweep and stands
  for its member directories (sorted by name); anything else is taken as a run directory. The same directory
  reached twice (a sweep and one of its members, say) is kept once.

  Returns:
    (run directories, warnings).
  """
  dirs, warnings, seen = [], [], set()
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not matches:
      warnings.append(f"{pattern}: matches nothing")
    for path in matches:
      if not os.path.isdir(path):
        warnings.append(f"{path}: not a directory")
        continue
      members = os.path.join(path, "members")
      if os.path.isdir(members):
        found = sorted(os.path.join(members, m) for m in os.listdir(members)
                       if os.path.isdir(os.path.join(members, m)))
        if not found:
          warnings.append(f"{path}: a sweep without members")
      else:
        found = [path]
      for run_dir in found:
        real = os.path.realpath(run_dir)
        if real not in seen:
          seen.add(real)
          dirs.append(run_dir)
  return dirs, warnings


def load_run(path: str) -> Run:
  """Reads `path/summary.json` (and its config, else `path/config.json`).

  Raises:
    FileNotFoundError: without summary.json (the run has not finished its evaluation).
    ValueError: for a summary.json that is not a JSON object with "metrics", or a run without a config.
  """
  with open(os.path.join(path, "summary.json")) as f:
    summary = json.load(f)
  if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
    raise ValueError(f"{path}/summary.json has no \"metrics\" object")
  config = summary.get("config")
  if not isinstance(config, dict):
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
      raise ValueError(f"{path}: neither summary.json nor config.json holds the config")
    with open(config_path) as f:
      config = json.load(f)
  return Run(path=path, config=flatten(config), metrics=flatten(summary["metrics"]),
             step=int(summary.get("step", -1)))


def load_runs(paths: Iterable[str]) -> tuple[list[Run], list[str]]:
  """The loadable runs among `paths`, and one warning per skipped directory (no or unreadable summary.json)."""
  runs, warnings = [], []
  for path in paths:
    try:
      runs.append(load_run(path))
    except FileNotFoundError:
      warnings.append(f"{path}: no summary.json (unfinished run?), skipped")
    except (ValueError, OSError) as e:   # json.JSONDecodeError is a ValueError
      warnings.append(f"{path}: unreadable summary ({e}), skipped")
  return runs, warnings


# --- grouping ------------------------------------------------------------------------------------------------


def _ignored(key: str, ignore: Sequence[str]) -> bool:
  return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in ignore)


def _relevant(run: Run, key: str) -> bool:
  """False for a prior hyperparameter that the run's prior does not use."""
  if not key.startswith("prior.") or key == "prior.name":
    return True
  name = run.config.get("prior.name")
  field = key[len("prior."):]
  return name not in PRIOR_KEYS or field not in _ALL_PRIOR_KEYS or field in PRIOR_KEYS[name]


def varying_keys(runs: Sequence[Run], ignore: Sequence[str] = IGNORED_CONFIG_KEYS) -> list[str]:
  """Config keys (sorted) whose values are not the same in every run (a key absent from some runs varies)."""
  keys = sorted({k for r in runs for k in r.config})
  return [k for k in keys if not _ignored(k, ignore)
          and len({repr(r.config.get(k, _MISSING)) for r in runs}) > 1]


_MISSING = "<absent>"


def choose_x(runs: Sequence[Run], x: str | None = None) -> str:
  """The config key of the x-axis: `x` itself (a name in X_CANDIDATES or a dotted key), else the candidate
  (β, α, γ) that takes the most distinct values over the runs (β, then α, then γ on a tie; β if none varies)."""
  if x:
    return X_CANDIDATES.get(x, x)
  counts = {key: len({r.config.get(key) for r in runs}) for key in X_CANDIDATES.values()}
  best = max(counts.values(), default=1)
  return next(key for key, n in counts.items() if n == best) if best > 1 else X_CANDIDATES["beta"]


def series_keys(runs: Sequence[Run], x_key: str, ignore: Sequence[str] = IGNORED_CONFIG_KEYS) -> list[str]:
  """The keys that separate series: prior.name, then every other varying key except x and the seed."""
  return ["prior.name"] + [k for k in varying_keys(runs, ignore) if k not in ("prior.name", x_key)]


def _short(key: str, keys: Sequence[str]) -> str:
  """The last component of a dotted key, or the whole key where two keys share that component."""
  last = key.rsplit(".", 1)[-1]
  return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def _format_value(value) -> str:
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, (int, float)):
    return f"{value:g}"
  return str(value)


def series_label(run: Run, keys: Sequence[str]) -> str:
  """E.g. "anisotropic (learnable)", "isotropic", "sparse, alpha=100": the prior's name (with learnable or fixed
  for the anisotropic prior), then `key=value` for the other series keys that matter for this run."""
  name = run.config.get("prior.name", "?")
  label = str(name)
  if name == "anisotropic":
    label += " (learnable)" if run.config.get("prior.learnable") else " (fixed)"
  parts = [f"{_short(k, keys)}={_format_value(run.config.get(k))}" for k in keys
           if k not in ("prior.name", "prior.learnable") and _relevant(run, k)]
  return ", ".join([label] + parts)


def scalar_metrics(runs: Sequence[Run], exclude: Sequence[str] = EXCLUDED_METRICS) -> list[str]:
  """Sorted names of the metrics that are a number (or null) in every run reporting them, lists excluded."""
  names = {k for r in runs for k in r.metrics if k not in exclude}
  return sorted(k for k in names
                if all(_is_scalar(r.metrics[k]) for r in runs if k in r.metrics)
                and any(r.metrics.get(k) is not None for r in runs))


def _is_scalar(value) -> bool:
  return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _as_float(value) -> float:
  return float(value) if _is_scalar(value) and value is not None else math.nan


def aggregate(runs: Sequence[Run], x_key: str, metrics: Sequence[str], keys: Sequence[str]) -> list[Group]:
  """Groups runs by (series, x) and computes each metric's mean and sample std (ddof = 1) over the group.

  Non-finite or missing values (summary.json writes NaN as null) are left out of a metric's statistics; `count`
  says how many values remain. Groups are ordered by series label, then x (None last).

  Returns:
    the groups.
  """
  buckets: dict[tuple[str, float | None], list[Run]] = {}
  for run in runs:
    x = run.config.get(x_key)
    x = float(x) if _is_scalar(x) and x is not None else None
    buckets.setdefault((series_label(run, keys), x), []).append(run)
  groups = []
  for (series, x), members in sorted(buckets.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or 0)):
    members = sorted(members, key=lambda r: (str(r.config.get("seed")), r.path))
    mean, std, count = {}, {}, {}
    for m in metrics:
      values = np.array([_as_float(r.metrics.get(m)) for r in members])
      values = values[np.isfinite(values)]
      count[m] = int(values.size)
      mean[m] = float(values.mean()) if values.size else math.nan
      std[m] = float(values.std(ddof=1)) if values.size > 1 else math.nan
    groups.append(Group(series=series, x=x, runs=tuple(members), mean=mean, std=std, count=count))
  return groups


def duplicate_seeds(groups: Sequence[Group]) -> list[str]:
  """A warning for each group where two runs record the same seed (they are counted as separate samples)."""
  out = []
  for g in groups:
    seeds = [r.config.get("seed") for r in g.runs]
    dup = sorted({str(s) for s in seeds if seeds.count(s) > 1})
    if dup:
      out.append(f"{g.series} at x={_format_value(g.x)}: seeds {', '.join(dup)} occur more than once")
  return out


# --- outputs -------------------------------------------------------------------------------------------------


def _csv_number(value: float) -> str:
  return "" if value is None or not math.isfinite(value) else repr(float(value))


def results_rows(groups: Sequence[Group], metrics: Sequence[str], x_name: str) -> list[list[str]]:
  """results.csv: header, then one row per group: series, x, n_seeds, then mean and std of each metric."""
  header = ["series", x_name, "n_seeds"] + [f"{m} {stat}" for m in metrics for stat in ("mean", "std")]
  rows = [header]
  for g in groups:
    row = [g.series, _csv_number(g.x), str(g.n_seeds)]
    for m in metrics:
      row += [_csv_number(g.mean[m]), _csv_number(g.std[m])]
    rows.append(row)
  return rows


def runs_rows(groups: Sequence[Group], metrics: Sequence[str], x_name: str) -> list[list[str]]:
  """runs.csv: header, then every run used: dir, series, x, seed, step and its value of each metric."""
  rows = [["dir", "series", x_name, "seed", "step"] + list(metrics)]
  for g in groups:
    for r in g.runs:
      rows.append([r.path, g.series, _csv_number(g.x), _format_value(r.config.get("seed")), str(r.step)]
                  + [_csv_number(_as_float(r.metrics.get(m))) for m in metrics])
  return rows


def format_mean_std(mean: float, std: float, count: int, n_seeds: int) -> str:
  """"−12.35 ± 0.123": mean to 4 significant digits, std to 3; "—" without values; "(n=k)" when some seed
  lacks the metric."""
  if count == 0:
    return "—"
  text = f"{mean:.4g}" if not math.isfinite(std) else f"{mean:.4g} ± {std:.3g}"
  return text + (f" (n={count})" if count != n_seeds else "")


def markdown(groups: Sequence[Group], metrics: Sequence[str], x_name: str, max_columns: int = 6) -> str:
  """results.md: markdown tables of mean ± std (at most `max_columns` metrics per table, so they stay readable)."""
  if not groups:
    return "No runs.\n"
  blocks = []
  for start in range(0, max(len(metrics), 1), max_columns):
    chunk = metrics[start:start + max_columns]
    lines = ["| " + " | ".join(["series", x_name, "n"] + list(chunk)) + " |",
             "|" + "---|" * (3 + len(chunk))]
    for g in groups:
      cells = [g.series, _format_value(g.x), str(g.n_seeds)]
      cells += [format_mean_std(g.mean[m], g.std[m], g.count[m], g.n_seeds) for m in chunk]
      lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks) + "\n"


def x_scale(xs: Iterable[float]) -> tuple[str, dict[str, float]]:
  """The x-axis scale: ("log", {}) when all x > 0 span at least two decades; ("symlog", {"linthresh": the
  smallest positive x}) when x includes 0 and the positive values span at least two decades (α ∈ {0, 10,
  100, 1000}); else ("linear", {})."""
  xs = np.array([x for x in xs if x is not None and math.isfinite(x)], dtype=np.float64)
  positive = xs[xs > 0]
  if xs.size == 0 or np.any(xs < 0) or positive.size < 2 or positive.max() < 100 * positive.min():
    return "linear", {}
  if positive.size == xs.size:
    return "log", {}
  return "symlog", {"linthresh": float(positive.min())}


def metric_filename(metric: str) -> str:
  """"test/paper/disentanglement" -> "test_paper_disentanglement.png"."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") + ".png"


def plot_metric(groups: Sequence[Group], metric: str, x_key: str, path: str) -> None:
  """One PNG: the metric's mean against x, one line per series, error bars = std over seeds."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  series = sorted({g.series for g in groups})
  for name in series:
    points = [g for g in groups if g.series == name and g.x is not None and g.count[metric] > 0]
    if not points:
      continue
    ns = sorted({g.count[metric] for g in points})
    n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"
    ax.errorbar([g.x for g in points], [g.mean[metric] for g in points],
                yerr=[g.std[metric] if math.isfinite(g.std[metric]) else 0.0 for g in points],
                marker="o", capsize=3, label=f"{name} ({n_text})")
  scale, kwargs = x_scale(g.x for g in groups)
  ax.set_xscale(scale, **kwargs)
  symbol = X_SYMBOLS.get(x_key)
  ax.set_xlabel(f"{symbol} ({x_key})" if symbol else x_key)
  ax.set_ylabel(metric)
  ax.set_title(metric)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize="small")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _write_csv(path: str, rows: Sequence[Sequence[str]]) -> None:
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)


def write_report(runs: Sequence[Run], out_dir: str, *, x: str | None = None,
                 metrics: Sequence[str] | None = None,
                 ignore: Sequence[str] = IGNORED_CONFIG_KEYS) -> tuple[list[Group], list[str]]:
  """Groups and aggregates `runs` and writes results.csv, results.md, runs.csv and one PNG per metric.

  Args:
    runs: the loaded runs.
    out_dir: created if needed.
    x: the x-axis ("beta", "alpha", "gamma" or a dotted config key); None chooses (`choose_x`).
    metrics: the metrics to report; None: every scalar metric (`scalar_metrics`).
    ignore: config keys that never separate runs.

  Returns:
    (the groups, warnings: requested metrics no run reports, duplicate seeds in a group).
  """
  warnings = []
  x_key = choose_x(runs, x)
  if metrics is None:
    metrics = scalar_metrics(runs)
  else:
    known = set(scalar_metrics(runs, exclude=()))
    warnings += [f"metric {m} is not a scalar in any run" for m in metrics if m not in known]
    metrics = [m for m in metrics if m in known]
  keys = series_keys(runs, x_key, tuple(ignore) + (x_key,))
  groups = aggregate(runs, x_key, metrics, keys)
  warnings += duplicate_seeds(groups)
  x_name = _short(x_key, [x_key])
  os.makedirs(out_dir, exist_ok=True)
  _write_csv(os.path.join(out_dir, "results.csv"), results_rows(groups, metrics, x_name))
  _write_csv(os.path.join(out_dir, "runs.csv"), runs_rows(groups, metrics, x_name))
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(markdown(groups, metrics, x_name))
  for m in metrics:
    plot_metric(groups, m, x_key, os.path.join(out_dir, metric_filename(m)))
  return groups, warnings


# --- command line --------------------------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so that importing this module defines none."""
  flags.DEFINE_string("out", None, "Output directory for results.csv, results.md, runs.csv and the PNGs.")
  flags.DEFINE_string("x", None, "x-axis: beta, alpha, gamma or a dotted config key (default: the one that "
                      "varies most).")
  flags.DEFINE_list("metrics", None, "Metrics to report, e.g. test/elbo,test/paper/disentanglement (default: "
                    "all scalar metrics).")
  flags.DEFINE_list("ignore", [], "More config keys (dotted, 'a.*' for a subtree) that never separate runs.")


def main(argv):
  patterns = argv[1:]
  if not patterns:
    raise app.UsageError("name at least one run or sweep directory (or a quoted glob pattern)")
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  dirs, warnings = expand_paths(patterns)
  runs, skipped = load_runs(dirs)
  for w in warnings + skipped:
    logging.warning("%s", w)
  if not runs:
    raise app.UsageError("no finished run (with summary.json) among the given directories")
  groups, warnings = write_report(runs, FLAGS.out, x=FLAGS.x, metrics=FLAGS.metrics,
                                  ignore=IGNORED_CONFIG_KEYS + tuple(FLAGS.ignore))
  for w in warnings:
    logging.warning("%s", w)
  logging.info("%d runs in %d groups (%d series) -> %s", len(runs), len(groups), len({g.series for g in groups}),
               FLAGS.out)


if __name__ == "__main__":
  define_flags()
  app.run(main)
