"""Separated Attribute Predictability (SAP) as disentanglement_lib defines it."""
import numpy as np
from sklearn import svm

from decompvae.metrics import utils


def sap_from_codes(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, *,
                   continuous_factors: bool = False) -> dict[str, float]:
  """SAP = (1/K) Σ_k (S_{j1,k} − S_{j2,k}), j1, j2 the two dimensions that predict factor k best.

  Discrete factors: S_jk = test accuracy of `LinearSVC(C=0.01, class_weight="balanced")` trained on the single
  dimension z_j to predict v_k. Continuous factors: S_jk = Corr(z_j, v_k)² on the training points (0 when z_j is
  constant); the test points are then unused.

  Args:
    z_train, y_train: codes [N, D] (D ≥ 2) and factors [N, K].
    z_test, y_test: held-out codes and factors (discrete factors only).
    continuous_factors: disentanglement_lib's switch; False for dSprites.

  Returns:
    {"SAP_score": SAP}.

  References:
    Kumar et al. (2018), "Variational Inference of Disentangled Latent Concepts from Unlabeled Observations", §3;
    disentanglement_lib's `sap_score.py`.
  """
  z_train = utils.check_codes(z_train, "train codes")
  y_train = utils.check_factors(y_train, z_train.shape[0], "train factors")
  if z_train.shape[1] < 2:
    raise ValueError("SAP needs at least 2 code dimensions")
  scores = np.zeros((z_train.shape[1], y_train.shape[1]))
  if continuous_factors:
    z_c = z_train - z_train.mean(axis=0)
    y_c = y_train - y_train.mean(axis=0)
    var_z = np.sum(z_c**2, axis=0)
    safe = var_z > 1e-12 * (z_train.shape[0] - 1)
    cov = z_c.T @ y_c
    scores[safe] = cov[safe] ** 2 / (var_z[safe, None] * np.sum(y_c**2, axis=0))
  else:
    z_test = utils.check_codes(z_test, "test codes")
    y_test = np.asarray(y_test)
    for j in range(z_train.shape[1]):
      for k in range(y_train.shape[1]):
        model = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=0)
        model.fit(z_train[:, j:j + 1], y_train[:, k])
        scores[j, k] = np.mean(model.predict(z_test[:, j:j + 1]) == y_test[:, k])
  top = np.sort(scores, axis=0)
  return {"SAP_score": float(np.mean(top[-1] - top[-2]))}


def sap(data: utils.FactorData, representation_fn: utils.RepresentationFn | None = None, *,
        random_state: int | utils.Rng = 0, num_train: int = 10_000, num_test: int = 5000, batch_size: int = 16,
        continuous_factors: bool = False) -> dict[str, float]:
  """SAP (see `sap_from_codes`) on i.i.d. train and test points, sampled as disentanglement_lib's `compute_sap`.

  Args:
    data: ground-truth data (`factor_sizes`, `sample_observations_from_factors`), e.g. dSprites or `CodeTable`.
    representation_fn: observations -> codes [n, D]; None when observations already are codes.
    random_state: seed (-> `np.random.RandomState`) or numpy generator.
    num_train, num_test, batch_size, continuous_factors: disentanglement_lib's settings.

  Returns:
    {"SAP_score": SAP}.

  References:
    Kumar et al. (2018), §3; Locatello et al. (2019), disentanglement_lib.
  """
  rng = utils.as_rng(random_state)
  z_train, y_train = utils.sample_factor_code(data, representation_fn, num_train, rng, batch_size)
  z_test, y_test = utils.sample_factor_code(data, representation_fn, num_test, rng, batch_size)
  return sap_from_codes(z_train, y_train, z_test, y_test, continuous_factors=continuous_factors)
