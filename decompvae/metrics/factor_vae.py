"""FactorVAE disentanglement score with disentanglement_lib's protocol and random stream."""
import numpy as np

from decompvae.metrics import utils


def factor_vae_score(data: utils.FactorData, representation_fn: utils.RepresentationFn | None = None, *,
                     random_state: int | utils.Rng = 0, batch_size: int = 64, num_train: int = 10_000,
                     num_eval: int = 5000, num_variance_estimate: int = 10_000,
                     prune_threshold: float = 0.05) -> dict[str, float]:
  """FactorVAE score: accuracy of a majority-vote classifier from argmin-variance dimension to fixed factor.

  Global variances σ²_d come from `num_variance_estimate` i.i.d. points; dimensions with σ_d < prune_threshold (a
  threshold on the standard deviation, as in disentanglement_lib) or constant ones are pruned. A vote fixes a random
  factor k in a batch of `batch_size` points and records (k, argmin_d Var_batch(z_d) / σ²_d) over active d. The
  classifier maps each dimension to its most frequent factor on the training votes; the score is its accuracy on
  the evaluation votes. Draws the random numbers of disentanglement_lib's `compute_factor_vae` (see
  `utils.sample_factor_code` for the one exception).

  Args:
    data: ground-truth data (`factor_sizes`, `sample_observations_from_factors`), e.g. dSprites or `CodeTable`.
    representation_fn: observations -> codes [n, D] (encoder means); None when observations already are codes.
    random_state: seed (-> `np.random.RandomState`) or numpy generator.
    batch_size, num_train, num_eval, num_variance_estimate, prune_threshold: disentanglement_lib's settings.

  Returns:
    {"train_accuracy", "eval_accuracy", "num_active_dims"}; accuracies are 0 when every dimension is pruned.

  References:
    Kim & Mnih (2018), "Disentangling by Factorising", §4; Locatello et al. (2019), disentanglement_lib.
  """
  rng = utils.as_rng(random_state)
  sizes = utils.check_factor_sizes(data.factor_sizes)
  utils.check_counts(batch_size=(2, batch_size), num_train=(1, num_train), num_eval=(1, num_eval),
                     num_variance_estimate=(2, num_variance_estimate))
  codes, _ = utils.sample_factor_code(data, representation_fn, num_variance_estimate, rng, num_variance_estimate)
  global_var = np.var(codes, axis=0, ddof=1)
  active = (np.sqrt(global_var) >= prune_threshold) & (np.ptp(codes, axis=0) > 0)
  if not active.any():
    return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

  def votes(num_votes):
    counts = np.zeros((len(sizes), codes.shape[1]), dtype=np.int64)
    for group in utils.vote_groups(num_votes, batch_size):
      ks, factors = utils.sample_votes(rng, sizes, group, batch_size, 1)
      factors = factors[:, 0]
      votes_index = np.arange(len(ks))
      factors[votes_index, :, ks] = factors[votes_index, :1, ks]
      z = utils.encode_factors(data, representation_fn, factors.reshape(-1, len(sizes)), rng)
      local_var = np.var(z.reshape(len(ks), batch_size, -1), axis=1, ddof=1)
      ratio = np.where(active, local_var / np.where(active, global_var, 1.0), np.inf)
      np.add.at(counts, (ks, np.argmin(ratio, axis=1)), 1)
    return counts

  train_votes = votes(num_train)
  classifier = np.argmax(train_votes, axis=0)  # dimension -> factor
  eval_votes = votes(num_eval)

  def accuracy(counts):
    return float(counts[classifier, np.arange(counts.shape[1])].sum() / counts.sum())

  return {"train_accuracy": accuracy(train_votes), "eval_accuracy": accuracy(eval_votes),
          "num_active_dims": int(active.sum())}
