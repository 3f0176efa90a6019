"""Modularity and explicitness (Ridgeway & Mozer) as disentanglement_lib defines them."""
import numpy as np
from sklearn import metrics, preprocessing

from decompvae.metrics import utils


def modularity_explicitness_from_codes(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray,
                                       y_test: np.ndarray, num_bins: int = 20) -> dict[str, float]:
  """Modularity from histogram mutual information, explicitness from one-vs-rest ROC-AUC of a logistic regression.

  Modularity: with m_jk = I(z_j; v_k) (as in MIG) and θ_j = max_k m_jk, each dimension scores
  1 − Σ_{k ≠ argmax} m_jk² / (θ_j² (K − 1)) (0 when θ_j = 0); the result is the mean over dimensions.
  Explicitness: codes standardised with the training mean and std (a constant dimension is only centred),
  scikit-learn's default LogisticRegression per factor, macro ROC-AUC of its class probabilities, mean over factors.

  Args:
    z_train, y_train: codes [N, D] and discrete factors [N, K] (K ≥ 2).
    z_test, y_test: held-out codes and factors.
    num_bins: histogram bins per dimension for the mutual information.

  Returns:
    {"modularity_score", "explicitness_score_train", "explicitness_score_test"}.

  References:
    Ridgeway & Mozer (2018), "Learning Deep Disentangled Embeddings With the F-Statistic Loss", §3;
    disentanglement_lib's `modularity_explicitness.py`.
  """
  z_train = utils.check_codes(z_train, "train codes")
  z_test = utils.check_codes(z_test, "test codes")
  y_train = utils.check_factors(y_train, z_train.shape[0], "train factors")
  y_test = np.asarray(y_test)
  if y_train.shape[1] < 2:
    raise ValueError("modularity needs at least 2 factors")

  squared_mi = utils.discrete_mutual_info(utils.histogram_discretize(z_train, num_bins), y_train) ** 2
  theta = squared_mi.max(axis=1)
  informative = theta > 0
  deviation = (squared_mi.sum(axis=1) - theta)[informative] / (theta[informative] * (squared_mi.shape[1] - 1))
  modularity = np.zeros(squared_mi.shape[0])
  modularity[informative] = 1.0 - deviation

  mean = z_train.mean(axis=0)
  std = np.where(np.ptp(z_train, axis=0) > 0, z_train.std(axis=0), 1.0)
  x_train, x_test = (z_train - mean) / std, (z_test - mean) / std
  explicitness = np.array([_roc_auc_train_test(x_train, y_train[:, k], x_test, y_test[:, k])
                           for k in range(y_train.shape[1])])
  return {"modularity_score": float(modularity.mean()),
          "explicitness_score_train": float(explicitness[:, 0].mean()),
          "explicitness_score_test": float(explicitness[:, 1].mean())}


def _roc_auc_train_test(x_train, y_train, x_test, y_test):
  model = utils.fit_logistic_regression(x_train, y_train, "explicitness")
  binarizer = preprocessing.MultiLabelBinarizer()
  return [metrics.roc_auc_score(binarizer.fit_transform(y[:, None]), model.predict_proba(x))
          for x, y in ((x_train, y_train), (x_test, y_test))]


def modularity_explicitness(data: utils.FactorData, representation_fn: utils.RepresentationFn | None = None, *,
                            random_state: int | utils.Rng = 0, num_train: int = 10_000, num_test: int = 5000,
                            batch_size: int = 16, num_bins: int = 20) -> dict[str, float]:
  """Modularity and explicitness (see `modularity_explicitness_from_codes`) on i.i.d. points sampled as
  disentanglement_lib's `compute_modularity_explicitness` does.

  Args:
    data: ground-truth data (`factor_sizes`, `sample_observations_from_factors`), e.g. dSprites or `CodeTable`.
    representation_fn: observations -> codes [n, D]; None when observations already are codes.
    random_state: seed (-> `np.random.RandomState`) or numpy generator.
    num_train, num_test, batch_size, num_bins: disentanglement_lib's settings.

  Returns:
    {"modularity_score", "explicitness_score_train", "explicitness_score_test"}.

  References:
    Ridgeway & Mozer (2018), §3; Locatello et al. (2019), disentanglement_lib.
  """
  rng = utils.as_rng(random_state)
  z_train, y_train = utils.sample_factor_code(data, representation_fn, num_train, rng, batch_size)
  z_test, y_test = utils.sample_factor_code(data, representation_fn, num_test, rng, batch_size)
  return modularity_explicitness_from_codes(z_train, y_train, z_test, y_test, num_bins)
