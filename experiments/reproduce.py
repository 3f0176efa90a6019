"""Reproduce the paper's claims: one command per claim, a budget switch, tables, plots and a verdict.

  python -m experiments.reproduce --claim=clustering              # pinwheel: β collapses clusters, α keeps four
  python -m experiments.reproduce --claim=overlap                 # β raises the posterior's entropy, lowers the KL
  python -m experiments.reproduce --claim=sparsity                # Fashion-MNIST: γ and α make codes sparse
  python -m experiments.reproduce --claim=independence            # dSprites: anisotropic and Student-t priors
  python -m experiments.reproduce --claim=all --budget=paper      # the authors' settings (for GPU/TPU)

--budget=cpu (the default) shortens the runs where the paper's settings would take days on a CPU (the
numbers each budget uses are in CLAIMS below and in docs/reproduction.md); --budget=paper keeps the authors'
epochs. Runs go to --workdir/<budget>/<claim>/<row>/ as sweeps (resumable: re-running the command continues
them and skips finished members); the report of each claim (results.md, results.csv, runs.csv, one PNG per
metric, verdict.md) goes to --out/<claim>/. The verdict applies the criteria stated in each claim.
"""

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping

import ml_collections
import numpy as np
from absl import app, flags, logging

from experiments import dsprites, fashion_mnist, pinwheel, report
from experiments.runner import config as config_lib
from experiments.runner import devices
from experiments.runner import sweep as sweep_lib
from experiments.runner import training
from experiments.runner import writer as writer_lib
from experiments.runner.errors import RunError

TASKS = {t.name: t for t in (dsprites.TASK, fashion_mnist.TASK, pinwheel.TASK)}


@dataclasses.dataclass(frozen=True)
class Row:
  """One sweep of a claim: an experiment, a prior, fixed settings and the swept values."""
  name: str
  experiment: str
  prior: str
  settings: Mapping[str, object]      # config overrides, e.g. {"objective.alpha": 0.0}
  sweep: Mapping[str, object]         # --sweep.* values, e.g. {"beta": "0.25,1,4,16", "seeds": 5}


@dataclasses.dataclass(frozen=True)
class Claim:
  """A statement of the paper, the sweeps that test it and how the verdict is reached.

  Attributes:
    statement: the claim, in words.
    rows: its sweeps.
    budgets: {budget: config overrides of every row}.
    x: the parameter on the x-axis of the report.
    metrics: the metrics reported.
    verdict: `{row name: [report.Group]} -> (verdict, reasons)` with verdict one of "holds",
      "does not hold", "inconclusive".
    criteria: the verdict's criteria, in words (written next to it).
  """
  statement: str
  rows: tuple[Row, ...]
  budgets: Mapping[str, Mapping[str, object]]
  x: str
  metrics: tuple[str, ...]
  verdict: Callable[[dict], tuple[str, list[str]]]
  criteria: str


def _by_x(groups, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(x, mean, std) of `metric` over the groups of one series, ordered by x."""
  groups = sorted(groups, key=lambda g: g.x)
  return (np.array([g.x for g in groups]), np.array([g.mean[metric] for g in groups]),
          np.array([g.std[metric] for g in groups]))


def _separated(a_mean, a_std, b_mean, b_std) -> bool:
  """Whether a > b by more than the sum of the standard deviations (NaN std counts as 0)."""
  return a_mean - b_mean > np.nan_to_num(a_std) + np.nan_to_num(b_std)


def _combine(checks: list[tuple[bool, str]]) -> tuple[str, list[str]]:
  passed = [ok for ok, _ in checks]
  verdict = "holds" if all(passed) else "does not hold" if not any(passed) else "inconclusive"
  return verdict, [f"[{'x' if ok else ' '}] {text}" for ok, text in checks]


# --- the claims ------------------------------------------------------------------------------------------------

_PINWHEEL_BETA = Row("beta", "pinwheel", "mixture", {"objective.alpha": 0.0},
                     {"beta": "0.25,1,4,16", "seeds": 5})
_PINWHEEL_ALPHA = Row("alpha", "pinwheel", "mixture", {"objective.beta": 0.0},
                      {"alpha": "0.25,1,4,16", "seeds": 5})


def _clustering_verdict(groups):
  bx, b_nmi, b_nmi_sd = _by_x(groups["beta"], "test/clusters/nmi")
  _, b_modes, _ = _by_x(groups["beta"], "test/clusters/modes")
  ax, a_nmi, _ = _by_x(groups["alpha"], "test/clusters/nmi")
  _, a_modes, _ = _by_x(groups["alpha"], "test/clusters/modes")
  return _combine([
      (_separated(b_nmi[0], b_nmi_sd[0], b_nmi[-1], b_nmi_sd[-1]),
       f"α = 0: NMI falls from β = {bx[0]:g} to β = {bx[-1]:g} ({b_nmi[0]:.3f} → {b_nmi[-1]:.3f}, beyond ±1 std)"),
      (b_modes[-1] <= 2, f"α = 0: the aggregate posterior's modes at β = {bx.tolist()}: "
       f"{np.round(b_modes, 2).tolist()} (one or two at the largest β)"),
      (bool(np.all(np.abs(a_modes[ax > 0] - 4) <= 0.5) and np.all(a_nmi[ax > 0] >= 0.5)),
       f"β = 0, every α > 0 ({ax.tolist()}): four modes (3.5 to 4.5 on average: {np.round(a_modes, 2).tolist()}) "
       f"aligned with the arms (NMI ≥ 0.5: {np.round(a_nmi, 3).tolist()})"),
  ])


_PINWHEEL_ISOTROPIC_BETA = Row("isotropic_beta", "pinwheel", "isotropic", {"objective.alpha": 0.0},
                               {"beta": "0.25,1,4,16", "seeds": 5})


def _overlap_verdict(groups):
  checks = []
  for name, row in groups.items():
    x, entropy, entropy_sd = _by_x(row, "test/posterior_entropy")
    _, kl, kl_sd = _by_x(row, "test/kl")
    monotone = ("strictly monotone" if np.all(np.diff(entropy) > 0) and np.all(np.diff(kl) < 0)
                else "not monotone at every step")
    checks.append((_separated(entropy[-1], entropy_sd[-1], entropy[0], entropy_sd[0]),
                   f"{name}: posterior entropy at β = {x[-1]:g} above β = {x[0]:g} beyond ±1 std "
                   f"({np.round(entropy, 3).tolist()} for β = {x.tolist()})"))
    checks.append((_separated(kl[0], kl_sd[0], kl[-1], kl_sd[-1]),
                   f"{name}: KL at β = {x[-1]:g} below β = {x[0]:g} beyond ±1 std ({np.round(kl, 3).tolist()}; "
                   f"entropy and KL {monotone})"))
  return _combine(checks)


_FASHION = Row("gamma_alpha", "fashion_mnist", "sparse", {"objective.beta": 1.0},
               {"alpha": "0,10,100,1000", "gamma": "0,0.8", "seeds": 2})


def _sparsity_verdict(groups):
  series = {}
  for g in groups["gamma_alpha"]:
    series.setdefault(g.series, []).append(g)
  (low_name, low), (high_name, high) = sorted(series.items())      # "sparse, gamma=0" < "sparse, gamma=0.8"
  x, hoyer_high, sd_high = _by_x(high, "test/sparsity/hoyer")
  _, hoyer_low, _ = _by_x(low, "test/sparsity/hoyer")
  _, rec_high, _ = _by_x(high, "test/lpx_z")
  _, rec_low, _ = _by_x(low, "test/lpx_z")
  drop = (rec_low[0] - rec_high[-1]) / abs(rec_low[0])
  return _combine([
      (bool(np.all(hoyer_high > hoyer_low)),
       f"Hoyer sparsity higher at γ = 0.8 than γ = 0 for every α {x.tolist()}: "
       f"{np.round(hoyer_high, 3).tolist()} vs {np.round(hoyer_low, 3).tolist()}"),
      (_separated(hoyer_high[-1], sd_high[-1], hoyer_high[0], sd_high[0]) and hoyer_high[-1] == hoyer_high.max(),
       f"at γ = 0.8 it rises with α: {np.round(hoyer_high, 3).tolist()} (largest α highest, beyond ±1 std of α = 0)"),
      (drop < 0.05, f"reconstruction log p(x|z) drops only slightly: {rec_low[0]:.1f} (γ = 0, α = 0) → "
       f"{rec_high[-1]:.1f} (γ = 0.8, α = {x[-1]:g}), {100 * drop:.1f}% (criterion < 5%)"),
  ])


_DSPRITES = tuple(
    Row(name, "dsprites", prior, settings, {"seeds": 3})
    for name, prior, settings in (("isotropic", "isotropic", {}), ("anisotropic", "anisotropic", {}),
                                  ("anisotropic_learned", "anisotropic", {"prior.learnable": True}),
                                  ("student_t", "student_t", {"prior.df": 9.0})))
_INDEPENDENCE_METRICS = ("test/paper/disentanglement", "test/mig/discrete_mig", "test/dci/disentanglement",
                         "test/lpx_z")


def _independence_verdict(groups):
  def stats(name, metric):
    (g,) = groups[name]
    return g.mean[metric], g.std[metric]

  checks = []
  for metric in _INDEPENDENCE_METRICS[:-1]:
    base = stats("isotropic", metric)
    better = [name for name in ("anisotropic", "anisotropic_learned", "student_t")
              if _separated(*stats(name, metric), *base)]
    checks.append((bool(better), f"{metric}: isotropic {base[0]:.3f} ± {base[1]:.3f}; beyond ±1 std above it: "
                   + (", ".join(f"{n} {stats(n, metric)[0]:.3f} ± {stats(n, metric)[1]:.3f}" for n in better)
                      or "none")))
  rec = {n: stats(n, "test/lpx_z")[0] for n in groups}
  worst = min(rec.values())
  checks.append((abs(worst - rec["isotropic"]) / abs(rec["isotropic"]) < 0.05,
                 f"similar reconstruction: log p(x|z) {', '.join(f'{n} {v:.1f}' for n, v in rec.items())} "
                 "(criterion: within 5% of isotropic)"))
  return _combine(checks)


CLAIMS = {
    "clustering": Claim(
        statement="Pinwheel, 4-component mixture prior, inclusive KL: with α = 0, raising β degrades the four "
                  "clusters of the aggregate posterior towards one or two; with β = 0 and α > 0 it has four "
                  "separated modes aligned with the prior (Figure 4).",
        rows=(_PINWHEEL_BETA, _PINWHEEL_ALPHA),
        budgets={"cpu": {}, "paper": {}},          # the authors' 500 epochs of 400 points are cheap
        x="auto", metrics=("test/clusters/modes", "test/clusters/nmi", "test/clusters/occupied",
                           "test/clusters/within_fraction", "test/lpx_z", "test/kl"),
        verdict=_clustering_verdict,
        criteria="means over 5 seeds; modes: local maxima of the aggregate posterior's density (1/N) Σ_n "
                 "q(z|x_n) over the test points, at least 5% of the highest; NMI between the arms and the "
                 "prior component most responsible for E[z|x]. (Occupied components and the share of q(z) "
                 "inside the components are reported too.)"),
    "overlap": Claim(
        statement="β controls the overlap of the encodings: raising β raises the posterior's entropy "
                  "H[q(z|x)] and lowers the KL term (Theorem 1: the β-VAE objective is an ELBO with an "
                  "annealed prior plus (β − 1)·H[q(z|x)]).",
        rows=(_PINWHEEL_BETA, _PINWHEEL_ISOTROPIC_BETA),
        budgets={"cpu": {}, "paper": {}},
        x="beta", metrics=("test/posterior_entropy", "test/posterior_variance", "test/kl", "test/lpx_z"),
        verdict=_overlap_verdict,
        criteria="pinwheel with the mixture prior (Monte-Carlo KL) and with N(0, I) (analytic KL); means over "
                 "5 seeds of the test-set averages; the largest β against the smallest, beyond the sum of "
                 "their standard deviations (whether every step is monotone is reported too)."),
    "sparsity": Claim(
        statement="Fashion-MNIST, D = 50, spike-and-slab prior, dimension-wise MMD: the normalised Hoyer "
                  "sparsity of E[z|x] is higher at γ = 0.8 than γ = 0 and rises with α ∈ {0, 10, 100, 1000}, "
                  "while the reconstruction drops only slightly (Figures 5 and 6).",
        rows=(_FASHION,),
        budgets={"cpu": {"optim.num_epochs": 3, "eval.iwae_samples": 0}, "paper": {}},
        x="alpha", metrics=("test/sparsity/hoyer", "test/lpx_z", "test/kl", "test/elbo"),
        verdict=_sparsity_verdict,
        criteria="means over 2 seeds; 'rises with α': the largest α gives the highest sparsity, beyond ±1 std "
                 "of α = 0."),
    "independence": Claim(
        statement="dSprites, β = 1: an anisotropic prior (PCA-fixed or learned) and a Student-t prior "
                  "disentangle better than the isotropic one on the paper's score, MIG and DCI, with similar "
                  "reconstruction (Figure 3, Table 1).",
        rows=_DSPRITES,
        # On a CPU, encoding all 737,280 images for the metrics alone takes 5-10 minutes per run, so the CPU
        # budget trains and evaluates on the coarse full-factorial grid (every shape and scale, every 4th
        # orientation and position: 11,520 images; docs/science.md §7.1).
        budgets={"cpu": {"data.source": "coarse", "optim.num_steps": 1000, "eval.iwae_samples": 0}, "paper": {}},
        x="beta", metrics=_INDEPENDENCE_METRICS + ("test/factor_vae/eval_accuracy", "test/elbo"),
        verdict=_independence_verdict,
        criteria="means ± std over 3 seeds; a prior beats the isotropic one on a metric when its mean exceeds "
                 "the isotropic mean by more than the sum of the two standard deviations."),
}


def row_config(claim: Claim, row: Row, budget: str) -> tuple[ml_collections.ConfigDict, dict]:
  """The sweep of `row` at `budget`: (base config, {member name: member config})."""
  task = TASKS[row.experiment]
  c = config_lib.make_config(task, row.prior)
  c.update_from_flattened_dict({**row.settings, **claim.budgets[budget]})
  config_lib.check(c, task)
  sweep = sweep_lib.sweep_config()
  sweep.update(row.sweep)
  return c, sweep_lib.members(c, sweep)


def run_claim(name: str, budget: str, workdir: str, out: str, rows=()) -> tuple[str, list[str]]:
  """Trains and evaluates the rows of claim `name` (resuming), then writes its report and verdict.

  `rows` (names) restricts the work to those rows, e.g. to run them in parallel processes; the verdict needs
  every row, so it is written only when all are run (run the command again without `rows` to write it: the
  finished members are skipped).
  """
  claim = CLAIMS[name]
  unknown = set(rows) - {r.name for r in claim.rows}
  if unknown:
    raise RunError(f"claim {name} has no row {sorted(unknown)}; its rows: {[r.name for r in claim.rows]}")
  groups, directories = {}, []
  for row in claim.rows:
    if rows and row.name not in rows:
      continue
    c, members = row_config(claim, row, budget)
    row_dir = os.path.join(workdir, budget, row.experiment, row.name)
    logging.info("Claim %s, row %s: %d members in %s", name, row.name, len(members), row_dir)
    if "interrupted" in training.train_sweep(TASKS[row.experiment], c, members, row_dir):
      raise RunError(f"stopped by a signal; run the same command again to continue {row_dir}")
    runs, warnings = report.load_runs(report.expand_paths([row_dir])[0])
    for w in warnings:
      logging.warning("%s", w)
    groups[row.name], _ = report.write_report(runs, os.path.join(out, name, row.name), x=claim.x
                                              if claim.x != "auto" else None, metrics=list(claim.metrics))
    directories.append(row_dir)
  if len(groups) < len(claim.rows):
    return "not judged", [f"only rows {sorted(groups)} were run; the verdict needs all of them"]
  verdict, reasons = claim.verdict(groups)
  text = (f"# {name}: {verdict}\n\n{claim.statement}\n\nBudget: {budget} "
          f"({claim.budgets[budget] or 'the authors’ settings'}). Criteria: {claim.criteria}\n\n"
          + "\n".join(f"- {r}" for r in reasons) + "\n\nRuns: " + ", ".join(map(os.path.relpath, directories)) + "\n")
  writer_lib.write_text(os.path.join(out, name, "verdict.md"), text)
  return verdict, reasons


def define_flags() -> None:
  """This command's flags, defined when it runs (so that importing the module beside other entry points,
  which define --workdir too, defines nothing)."""
  flags.DEFINE_enum("claim", None, [*CLAIMS, "all"], "The claim to reproduce.", required=True)
  flags.DEFINE_enum("budget", "cpu", ["cpu", "paper"], "cpu: shortened runs (see docs/reproduction.md); "
                    "paper: the authors' settings.")
  flags.DEFINE_string("workdir", "workdirs/reproduce", "Where the runs go (<budget>/<experiment>/<row>).")
  flags.DEFINE_string("out", "reports/reproduction", "Where each claim's report goes (<claim>/).")
  flags.DEFINE_list("rows", [], "Only these rows of the claim (e.g. to run rows in parallel processes); "
                    "the verdict is written when a command runs them all.")
  devices.define_compilation_cache_flag()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.verbosity < 1:
    writer_lib.quiet_console()
  devices.use_compilation_cache(f.compilation_cache)
  devices.use_cpu_cores()
  names = list(CLAIMS) if f.claim == "all" else [f.claim]
  try:
    for name in names:
      verdict, reasons = run_claim(name, f.budget, os.path.abspath(f.workdir), f.out, tuple(f.rows))
      logging.info("Claim %s: %s\n  %s", name, verdict, "\n  ".join(reasons))
  except RunError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
