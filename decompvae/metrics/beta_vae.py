"""BetaVAE disentanglement score with disentanglement_lib's protocol and random stream."""
import numpy as np

from decompvae.metrics import utils


def beta_vae_score(data: utils.FactorData, representation_fn: utils.RepresentationFn | None = None, *,
                   random_state: int | utils.Rng = 0, batch_size: int = 64, num_train: int = 10_000,
                   num_eval: int = 5000) -> dict[str, float]:
  """BetaVAE score: accuracy of a linear classifier predicting which factor two batches share.

  A sample fixes a random factor k, draws two batches of `batch_size` factor vectors that agree on k only, and
  has feature mean_b |z(x1_b) − z(x2_b)| [D] and label k. scikit-learn's default LogisticRegression is trained on
  `num_train` samples; the score is its accuracy on `num_eval` new ones. Draws the random numbers of
  disentanglement_lib's `compute_beta_vae_sklearn` (see `utils.sample_factor_code` for the one exception).

  Args:
    data: ground-truth data (`factor_sizes`, `sample_observations_from_factors`), e.g. dSprites or `CodeTable`.
    representation_fn: observations -> codes [n, D]; None when observations already are codes.
    random_state: seed (-> `np.random.RandomState`) or numpy generator.
    batch_size, num_train, num_eval: disentanglement_lib's settings.

  Returns:
    {"train_accuracy", "eval_accuracy"}.

  References:
    Higgins et al. (2017), "beta-VAE", §3; Locatello et al. (2019), disentanglement_lib.
  """
  rng = utils.as_rng(random_state)
  sizes = utils.check_factor_sizes(data.factor_sizes)
  utils.check_counts(batch_size=(1, batch_size), num_train=(1, num_train), num_eval=(1, num_eval))

  def samples(num):
    features, labels = [], []
    for group in utils.vote_groups(num, 2 * batch_size):
      ks, factors = utils.sample_votes(rng, sizes, group, batch_size, 2)
      votes_index = np.arange(len(ks))
      factors[votes_index, 1, :, ks] = factors[votes_index, 0, :, ks]
      z = utils.encode_factors(data, representation_fn, factors.reshape(-1, len(sizes)), rng)
      z = z.reshape(len(ks), 2, batch_size, -1)
      features.append(np.mean(np.abs(z[:, 0] - z[:, 1]), axis=1))
      labels.append(ks)
    return np.concatenate(features).astype(np.float64), np.concatenate(labels)

  train_x, train_y = samples(num_train)
  # lbfgs (the default solver) draws no random numbers: no seed is needed for disentanglement_lib's model.
  model = utils.fit_logistic_regression(train_x, train_y, "BetaVAE score")
  train_accuracy = float(np.mean(model.predict(train_x) == train_y))
  eval_x, eval_y = samples(num_eval)
  return {"train_accuracy": train_accuracy, "eval_accuracy": float(model.score(eval_x, eval_y))}
