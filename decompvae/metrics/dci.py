"""Disentanglement, completeness and informativeness (DCI) with gradient-boosted trees, as disentanglement_lib does."""
import joblib
import numpy as np
from sklearn import ensemble

from decompvae.metrics import utils


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
                   n_jobs: int = -1) -> tuple[np.ndarray, float, float]:
    """Importance matrix R [D, K] of scikit-learn's default GradientBoostingClassifier, one model per factor.

    R[:, k] = feature_importances_ of the classifier predicting factor k from the codes. Factors are fitted in
    parallel processes (`n_jobs` as in joblib), those with most classes (the slowest) first. `random_state=0` fixes
    the model's only randomness, the order in which features are tried, which decides between exactly equally good
    splits (disentanglement_lib leaves it unseeded, so its DCI varies by ~1e-3 from run to run).

    Returns:
      (R [D, K], mean train accuracy, mean test accuracy).
    """
    num_factors = y_train.shape[1]
    order = np.argsort([-np.unique(y_train[:, k]).size for k in range(num_factors)], kind="stable")
    workers = min(n_jobs if n_jobs > 0 else joblib.cpu_count(), num_factors)
    fits = joblib.Parallel(n_jobs=workers)(joblib.delayed(_fit_gbt)(z_train, y_train[:, k], z_test) for k in order)
    importance = np.zeros((z_train.shape[1], num_factors))
    train_acc, test_acc = np.zeros(num_factors), np.zeros(num_factors)
    for k, (factor_importance, train_pred, test_pred) in zip(order, fits):
        importance[:, k] = np.abs(factor_importance)
        train_acc[k] = np.mean(train_pred == y_train[:, k])
        test_acc[k] = np.mean(test_pred == y_test[:, k])
    return importance, float(train_acc.mean()), float(test_acc.mean())


def _fit_gbt(z_train, y_train, z_test):
    model = ensemble.GradientBoostingClassifier(random_state=0).fit(z_train, y_train)
    return model.feature_importances_, model.predict(z_train), model.predict(z_test)


def dci_from_codes(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, *,
                   n_jobs: int = -1) -> dict[str, float]:
    """DCI from gradient-boosted-tree importances (see `gbt_importance`, `dci_disentanglement`, `dci_completeness`).

    Args:
      z_train, y_train: codes [N, D] and factor classes [N, K] to fit the classifiers on (D, K ≥ 2).
      z_test, y_test: held-out codes and factors for the informativeness (accuracy) on test data.
      n_jobs: parallel processes over factors (joblib convention, -1 = all cores).

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
    importance, train_acc, test_acc = gbt_importance(z_train, y_train, z_test, y_test, n_jobs=n_jobs)
    return {"informativeness_train": train_acc, "informativeness_test": test_acc,
            "disentanglement": dci_disentanglement(importance), "completeness": dci_completeness(importance)}


def dci(data: utils.FactorData, representation_fn: utils.RepresentationFn | None = None, *,
        random_state: int | utils.Rng = 0, num_train: int = 10_000, num_test: int = 5000, batch_size: int = 16,
        n_jobs: int = -1) -> dict[str, float]:
    """DCI (see `dci_from_codes`) on i.i.d. train and test points, sampled as disentanglement_lib's `compute_dci`.

    Slow at the default sizes: 100 trees per class, ~11,000 trees for dSprites' factors, about 5 minutes on 2 cores.

    Args:
      data: ground-truth data (`factor_sizes`, `sample_observations_from_factors`), e.g. dSprites or `CodeTable`.
      representation_fn: observations -> codes [n, D]; None when observations already are codes.
      random_state: seed (-> `np.random.RandomState`) or numpy generator.
      num_train, num_test, batch_size: disentanglement_lib's settings.
      n_jobs: parallel processes over factors.

    Returns:
      {"informativeness_train", "informativeness_test", "disentanglement", "completeness"}.

    References:
      Eastwood & Williams (2018), §2; Locatello et al. (2019), disentanglement_lib.
    """
    rng = utils.as_rng(random_state)
    z_train, y_train = utils.sample_factor_code(data, representation_fn, num_train, rng, batch_size)
    z_test, y_test = utils.sample_factor_code(data, representation_fn, num_test, rng, batch_size)
    return dci_from_codes(z_train, y_train, z_test, y_test, n_jobs=n_jobs)
