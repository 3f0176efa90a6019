"""Disentanglement, completeness and informativeness (DCI) with gradient-boosted trees, as disentanglement_lib does."""
import warnings

import numpy as np
from sklearn import ensemble

from decompvae.metrics import _gbt, utils

# Below this many training points scikit-learn itself is faster than the replica, whose cost is mostly a fixed
# Python overhead per boosting stage (dSprites' 5 factors, codes of a trained model, 2 cores: 300 points 3.2 s
# against 7.3 s, 600: 4.9 against 6.9 s, 1,000: 7.7 against 7.0 s, 2,000: 14.7 against 7.8 s).
AUTO_SKLEARN_BELOW = 1000


def dci_disentanglement(importance_DxK: np.ndarray) -> float:
  """D = Σ_i ρ_i (1 − H_K(P_i·)), P_ij = R_ij / Σ_k R_ik, ρ_i = Σ_k R_ik / Σ R (uniform when R = 0).

  Entropies use base K and R + 1e-11 (disentanglement_lib's smoothing).

  References:
    Eastwood & Williams (2018), "A Framework for the Quantitative Evaluation of Disentangled Representations", §2.
  """
  return _weighted_one_minus_entropy(np.asarray(importance_DxK, dtype=np.float64))


def dci_completeness(importance_DxK: np.ndarray) -> float:
  """C = Σ_k ρ_k (1 − H_D(P_·k)), P_ik = R_ik / Σ_j R_jk, ρ_k = Σ_i R_ik / Σ R (uniform when R = 0).

  References:
    Eastwood & Williams (2018), §2.
  """
  return _weighted_one_minus_entropy(np.asarray(importance_DxK, dtype=np.float64).T)


def _weighted_one_minus_entropy(r_AxB: np.ndarray) -> float:
  p = (r_AxB + 1e-11) / np.sum(r_AxB + 1e-11, axis=1, keepdims=True)
  one_minus_entropy = 1.0 + np.sum(p * np.log(p), axis=1) / np.log(r_AxB.shape[1])
  weights = r_AxB.sum(axis=1) if r_AxB.sum() > 0 else np.ones(r_AxB.shape[0])
  return float(np.sum(one_minus_entropy * weights / weights.sum()))


def gbt_importance(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, *,
                   backend: str = "auto", n_jobs: int = -1) -> tuple[np.ndarray, float, float]:
  """Importance matrix R [D, K] of scikit-learn's `GradientBoostingClassifier(random_state=0)`, one per factor.

  R[:, k] = feature_importances_ of the classifier predicting factor k from the codes. `random_state=0` fixes the
  model's only randomness, the order in which dimensions are tried, which decides between exactly equally good
  splits (disentanglement_lib leaves it unseeded, so its DCI varies by ~1e-3 from run to run).

  Args:
    backend: "auto" (default): "sklearn" below `AUTO_SKLEARN_BELOW` training points, where it is the faster,
      "fast" from there on. "fast": `decompvae.metrics._gbt`, a replica that grows scikit-learn's trees for all
      factors at once (identical trees, leaf values and predictions, importances equal to rounding; see that
      package), ~50× faster at disentanglement_lib's sizes. It needs the scikit-learn versions it is verified on
      (1.9.x): elsewhere, or when its arithmetic checks fail, it warns and uses "sklearn". "sklearn":
      scikit-learn itself, one factor after another (5–15 minutes at disentanglement_lib's sizes), the reference.
    n_jobs: threads of the fast backend (-1: one per CPU; factors are split between them). The results do not
      depend on it, to the bit (tested, as is the independence of numpy's SIMD level: tests/simd_levels.sh).

  Returns:
    (R [D, K], mean train accuracy, mean test accuracy).
  """
  if backend == "auto":
    backend = "sklearn" if len(z_train) < AUTO_SKLEARN_BELOW else "fast"
  if backend == "fast":
    reason = _gbt.unsupported_reason(len(z_train))
    if reason is not None:
      warnings.warn(f"{reason}; DCI uses scikit-learn's own classifier (backend='sklearn', minutes)", RuntimeWarning)
      backend = "sklearn"
  if backend == "fast":
    importance, train_pred, test_pred = _gbt.fit_gbt_classifiers(z_train, y_train, z_test, n_jobs=n_jobs)
  elif backend == "sklearn":
    fits = [_fit_sklearn(z_train, y_train[:, k], z_test) for k in range(y_train.shape[1])]
    importance, train_pred, test_pred = (np.stack(parts, axis=-1) for parts in zip(*fits))
  else:
    raise ValueError(f"backend must be 'auto', 'fast' or 'sklearn', got {backend!r}")
  train_acc = np.mean(train_pred == y_train, axis=0)
  test_acc = np.mean(test_pred == y_test, axis=0)
  return np.abs(importance), float(train_acc.mean()), float(test_acc.mean())


def _fit_sklearn(z_train, y_train, z_test):
  model = ensemble.GradientBoostingClassifier(random_state=0).fit(z_train, y_train)
  return model.feature_importances_, model.predict(z_train), model.predict(z_test)


def dci_from_codes(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, *,
                   backend: str = "auto", n_jobs: int = -1) -> dict[str, float]:
  """DCI from gradient-boosted-tree importances (see `gbt_importance`, `dci_disentanglement`, `dci_completeness`).

  Args:
    z_train, y_train: codes [N, D] and factor classes [N, K] to fit the classifiers on (D, K ≥ 2).
    z_test, y_test: held-out codes and factors for the informativeness (accuracy) on test data.
    backend, n_jobs: see `gbt_importance`.

  Returns:
    {"informativeness_train", "informativeness_test" (mean accuracies), "disentanglement", "completeness"}.

  References:
    Eastwood & Williams (2018), §2; disentanglement_lib's `dci.py`.
  """
  z_train = utils.check_codes(z_train, "train codes")
  z_test = utils.check_codes(z_test, "test codes")
  y_train = utils.check_factors(y_train, z_train.shape[0], "train factors")
  y_test = np.asarray(y_test)
  if z_train.shape[1] < 2 or y_train.shape[1] < 2:
    raise ValueError("DCI needs at least 2 code dimensions and 2 factors")
  importance, train_acc, test_acc = gbt_importance(z_train, y_train, z_test, y_test, backend=backend,
                                                   n_jobs=n_jobs)
  return {"informativeness_train": train_acc, "informativeness_test": test_acc,
          "disentanglement": dci_disentanglement(importance), "completeness": dci_completeness(importance)}


def dci(data: utils.FactorData, representation_fn: utils.RepresentationFn | None = None, *,
        random_state: int | utils.Rng = 0, num_train: int = 10_000, num_test: int = 5000, batch_size: int = 16,
        backend: str = "auto", n_jobs: int = -1) -> dict[str, float]:
  """DCI (see `dci_from_codes`) on i.i.d. train and test points, sampled as disentanglement_lib's `compute_dci`.

  At the default sizes the classifiers have 100 trees per class, ~11,300 trees for dSprites' factors: 12–16 s
  with the fast backend on 2 idle cores (scikit-learn itself, `backend="sklearn"`, took 14 minutes there).

  Args:
    data: ground-truth data (`factor_sizes`, `sample_observations_from_factors`), e.g. dSprites or `CodeTable`.
    representation_fn: observations -> codes [n, D]; None when observations already are codes.
    random_state: seed (-> `np.random.RandomState`) or numpy generator.
    num_train, num_test, batch_size: disentanglement_lib's settings.
    backend, n_jobs: see `gbt_importance`.

  Returns:
    {"informativeness_train", "informativeness_test", "disentanglement", "completeness"}.

  References:
    Eastwood & Williams (2018), §2; Locatello et al. (2019), disentanglement_lib.
  """
  rng = utils.as_rng(random_state)
  z_train, y_train = utils.sample_factor_code(data, representation_fn, num_train, rng, batch_size)
  z_test, y_test = utils.sample_factor_code(data, representation_fn, num_test, rng, batch_size)
  return dci_from_codes(z_train, y_train, z_test, y_test, backend=backend, n_jobs=n_jobs)
