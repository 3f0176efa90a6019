"""A private replica of scikit-learn's default `GradientBoostingClassifier` (DCI's classifier), exact and fast.

What it replicates: `GradientBoostingClassifier(n_estimators=100, learning_rate=0.1, random_state=...)` with every
other parameter at its default (log-loss, depth-3 `squared_error` trees, all features, no subsampling), as
scikit-learn 1.9.x fits it (`environment.VERIFIED_SKLEARN`; outside that range, or when the arithmetic checks of
`environment` fail, `unsupported_reason()` says why and callers use scikit-learn itself). It grows the same trees
with the same leaf values, so raw predictions, predictions and hence accuracies are identical to the bit; feature
importances (sums of impurity decreases, computed here in another order) agree to rounding (relative ~1e-12).

How exactness is kept:

* `boosting`: the start (link of the class priors) and the gradients come from scikit-learn's own loss objects
  (compiled loops over libm's `exp`; numpy's `exp` differs from libm in the last bit for ~5% of inputs where it
  dispatches to AVX-512 code); leaf values use `np.average`'s reduction on the same contiguous arrays.
* `search`: all trees of a stage are grown level by level from block sums. Its sums are rounded differently, so
  it decides only what holds under the worst-case rounding bounds of `bounds`, whatever order numpy sums in.
* `replay`: every other node (near ties of the best splits, impurities near EPSILON, weak improvements) is
  computed with scikit-learn's arithmetic: its random feature order, its order of the node's samples (`introsort`
  simulates its unstable sort where equal values of different samples meet), sequential sums, first strictly
  better split.

Tested in tests/test_metrics_gbt.py (trees and leaf values bit for bit against scikit-learn on continuous, tied and
repeated codes; the sort against scikit-learn's own); tests/simd_levels.sh runs those tests at every SIMD level
numpy dispatches to (`NPY_DISABLE_CPU_FEATURES`).
"""
import numpy as np

from decompvae.metrics._gbt import boosting
from decompvae.metrics._gbt.environment import VERIFIED_SKLEARN, unsupported_reason

__all__ = ["VERIFIED_SKLEARN", "fit_gbt_classifiers", "fit_gbt_importance", "unsupported_reason"]


def fit_gbt_classifiers(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, *,
                        n_estimators: int = 100, learning_rate: float = 0.1, random_state: int = 0,
                        n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One `GradientBoostingClassifier(n_estimators, learning_rate, random_state)` per factor, as scikit-learn fits it.

  Callers check `unsupported_reason()` first (this does not).

  Args:
    codes_train: [N, D] codes (converted to float32, as scikit-learn's trees do).
    factors_train: [N, F] labels, one classifier per column (any values; classes are the sorted unique values;
      every column needs two classes).
    codes_test: [M, D] codes to predict.
    n_estimators, learning_rate, random_state: scikit-learn's parameters (the rest are its defaults);
      `random_state` fixes the order in which features are tried, which decides between equally good splits.
    n_jobs: threads (-1: one per CPU); the factors are split between them by number of trees. Nothing returned
      depends on it, to the bit: each sum runs over one tree's own values in an order fixed by the samples.

  Returns:
    (importance [D, F] = feature_importances_ per factor, train predictions [N, F], test predictions [M, F]).
  """
  return boosting.fit_classifiers(codes_train, factors_train, codes_test, n_estimators=n_estimators,
                                  learning_rate=learning_rate, random_state=random_state, n_jobs=n_jobs)


def fit_gbt_importance(codes_train: np.ndarray, labels_train: np.ndarray, codes_test: np.ndarray,
                       **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`fit_gbt_classifiers` for one factor: (feature_importances_ [D], train predictions [N], test predictions [M])."""
  importance, train_pred, test_pred = fit_gbt_classifiers(codes_train, np.asarray(labels_train)[:, None],
                                                          codes_test, **kwargs)
  return importance[:, 0], train_pred[:, 0], test_pred[:, 0]
