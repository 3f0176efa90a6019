"""Mutual Information Gap (MIG) as disentanglement_lib defines it."""
import numpy as np

from decompvae.metrics import utils


def mig_from_codes(z_NxD: np.ndarray, factors_NxK: np.ndarray, num_bins: int = 20) -> dict[str, float]:
  """MIG = (1/K) Σ_k (I(z_{j1}; v_k) − I(z_{j2}; v_k)) / H(v_k), j1, j2 the two dimensions most informative on v_k.

  Each dimension is discretised into `num_bins` equal-width bins over its range (np.histogram edges, np.digitize);
  mutual informations and entropies are plug-in estimates in nats (`sklearn.metrics.mutual_info_score`).
  A constant dimension has zero mutual information with every factor.

  Args:
    z_NxD: codes, D ≥ 2.
    factors_NxK: discrete factor classes; each factor must take at least two values among the N points.
    num_bins: bins per dimension.

  Returns:
    {"discrete_mig": MIG}.

  References:
    Chen et al. (2018), "Isolating Sources of Disentanglement in VAEs", §4.1; disentanglement_lib's `mig.py`.
  """
  z = utils.check_codes(z_NxD)
  factors = utils.check_factors(factors_NxK, z.shape[0])
  if z.shape[1] < 2:
    raise ValueError("MIG needs at least 2 code dimensions")
  mi = np.sort(utils.discrete_mutual_info(utils.histogram_discretize(z, num_bins), factors), axis=0)
  return {"discrete_mig": float(np.mean((mi[-1] - mi[-2]) / utils.discrete_entropy(factors)))}


def mig(data: utils.FactorData, representation_fn: utils.RepresentationFn | None = None, *,
        random_state: int | utils.Rng = 0, num_train: int = 10_000, batch_size: int = 16,
        num_bins: int = 20) -> dict[str, float]:
  """MIG (see `mig_from_codes`) on `num_train` i.i.d. points, sampled as disentanglement_lib's `compute_mig` does.

  Args:
    data: ground-truth data (`factor_sizes`, `sample_observations_from_factors`), e.g. dSprites or `CodeTable`.
    representation_fn: observations -> codes [n, D]; None when observations already are codes.
    random_state: seed (-> `np.random.RandomState`) or numpy generator.
    num_train, batch_size, num_bins: disentanglement_lib's settings.

  Returns:
    {"discrete_mig": MIG}.

  References:
    Chen et al. (2018), §4.1; Locatello et al. (2019), disentanglement_lib.
  """
  z, factors = utils.sample_factor_code(data, representation_fn, num_train, utils.as_rng(random_state), batch_size)
  return mig_from_codes(z, factors, num_bins)
