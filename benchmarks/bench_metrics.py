"""Times the metrics on a synthetic dSprites-sized representation and prints one JSON object.

  python -m benchmarks.bench_metrics                  # paper score + the standard suite, DCI included
  python -m benchmarks.bench_metrics --dci_sklearn    # also DCI with scikit-learn's own classifier (5-15 minutes)
                                                      # and the largest differences between the two
  python -m benchmarks.bench_metrics --dci_only --code_decimals=1   # DCI alone, on codes rounded to 1 decimal

The representation has one code per dSprites factor combination (737,280 x 10): five noisy monotone functions of
the factors, mixed, and five noise dimensions, so the classifiers see realistic, non-trivial codes.
"""
import functools
import json
import time

import numpy as np
from absl import app, flags

from decompvae import metrics

_DCI_SKLEARN = flags.DEFINE_bool("dci_sklearn", False, "Also time DCI with scikit-learn's classifier (minutes).")
_N_JOBS = flags.DEFINE_integer("n_jobs", -1, "Threads for DCI's classifiers (-1: one per CPU).")
_DCI_ONLY = flags.DEFINE_bool("dci_only", False, "Time DCI only (not the paper score and the other metrics).")
_CODE_DECIMALS = flags.DEFINE_integer("code_decimals", -1, "Round the codes to this many decimals (-1: do not): "
                                      "equal values of different points, the hard case of DCI's trees.")

DSPRITES_SIZES = (3, 6, 40, 32, 32)


def synthetic_dsprites_codes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  classes = np.stack(np.meshgrid(*[np.arange(s) for s in DSPRITES_SIZES], indexing="ij"), -1).reshape(-1, 5)
  rng = np.random.RandomState(seed)
  signal = np.tanh(2 * (classes / (np.array(DSPRITES_SIZES) - 1) - 0.5)) + 0.1 * rng.randn(*classes.shape)
  mixing = np.eye(5) + 0.3 * rng.randn(5, 5)
  z = np.concatenate([signal @ mixing, rng.randn(len(classes), 5)], axis=1)
  return z.astype(np.float32), classes


def _timed(fn):
  """Wall seconds, and CPU seconds of this process (all its threads): the CPU is often shared."""
  start, start_cpu = time.perf_counter(), time.process_time()
  result = fn()
  return {"seconds": round(time.perf_counter() - start, 2),
          "cpu_seconds": round(time.process_time() - start_cpu, 2), **result}


def main(argv):
  del argv
  z, classes = synthetic_dsprites_codes()
  if _CODE_DECIMALS.value >= 0:
    z = np.round(z, _CODE_DECIMALS.value)
  table = metrics.CodeTable(z, classes)
  if _DCI_ONLY.value:
    report = {"representation": list(z.shape), "dci": _timed(lambda: metrics.dci(table, n_jobs=_N_JOBS.value))}
    _add_sklearn_dci(report, table)
    print(json.dumps(report, indent=1))
    return
  to_gaussian = functools.partial(metrics.student_t_to_gaussian, df=9.0)
  report = {
      "representation": list(z.shape),
      "paper_disentanglement": _timed(lambda: metrics.paper_disentanglement(z, classes)),
      "paper_disentanglement_with_student_t_map": _timed(
          lambda: metrics.paper_disentanglement(z, classes, transform=to_gaussian)),
      "factor_vae": _timed(lambda: metrics.factor_vae_score(table)),
      "beta_vae": _timed(lambda: metrics.beta_vae_score(table)),
      "mig": _timed(lambda: metrics.mig(table)),
      "sap": _timed(lambda: metrics.sap(table)),
      "modularity_explicitness": _timed(lambda: metrics.modularity_explicitness(table)),
      "hoyer_sparsity": _timed(lambda: {"value": metrics.hoyer_sparsity(z)}),
      "dci": _timed(lambda: metrics.dci(table, n_jobs=_N_JOBS.value)),
  }
  _add_sklearn_dci(report, table)
  print(json.dumps(report, indent=1))


def _add_sklearn_dci(report, table):
  if _DCI_SKLEARN.value:
    report["dci_sklearn"] = _timed(lambda: metrics.dci(table, backend="sklearn"))
    report["dci_max_abs_difference"] = max(abs(report["dci"][k] - report["dci_sklearn"][k]) for k in
                                           ("informativeness_train", "informativeness_test", "disentanglement",
                                            "completeness"))


if __name__ == "__main__":
  app.run(main)
