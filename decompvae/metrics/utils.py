"""Shared pieces of the metrics: seeding, ground-truth sampling as disentanglement_lib does it, discretisation, MI."""
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Protocol
import warnings

import numpy as np
from sklearn import exceptions as sk_exceptions
from sklearn import linear_model
from sklearn import metrics as sk_metrics

Rng = np.random.RandomState | np.random.Generator
RepresentationFn = Callable[[np.ndarray], np.ndarray]

# Number of observations handed to a representation function at once (64 MiB of dSprites images).
MAX_POINTS_PER_CALL = 4096
# Votes are drawn, rendered and encoded in groups of at most this many observations (memory stays bounded:
# 40 MiB of factors and of float32 codes with 10 dimensions).
MAX_POINTS_PER_GROUP = 1 << 20


class FactorData(Protocol):
  """The part of `decompvae.data.GroundTruthData` the sampling metrics use."""

  factor_sizes: Sequence[int]

  def sample_observations_from_factors(self, factors: np.ndarray, rng: Rng) -> np.ndarray: ...


def as_rng(random_state: int | Rng) -> Rng:
  """An int becomes `np.random.RandomState(int)` (disentanglement_lib's convention); generators pass through."""
  if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
    return random_state
  return np.random.RandomState(random_state)


def randint(rng: Rng, high, size=None):
  """Uniform integers in [0, high) from either kind of numpy generator; `high` may be an array of bounds.

  `RandomState.randint(highs)` with an array draws exactly the numbers of one `randint(h, size=n)` call per run
  of equal bounds (checked in the tests), so many of disentanglement_lib's small draws can be made in one call.
  """
  if isinstance(rng, np.random.Generator):
    return rng.integers(high, size=size)
  return rng.randint(high, size=size)


def check_factor_sizes(factor_sizes: Sequence[int]) -> np.ndarray:
  sizes = np.asarray(factor_sizes, dtype=np.int64)
  if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 2):
    raise ValueError(f"every factor needs at least 2 values, got factor_sizes={tuple(sizes.tolist())}")
  return sizes


def check_counts(**minimum_and_value: tuple[int, int]) -> None:
  """Raises ValueError for a protocol size below its minimum: check_counts(batch_size=(2, batch_size))."""
  for name, (minimum, value) in minimum_and_value.items():
    if value < minimum:
      raise ValueError(f"{name} must be at least {minimum}, got {value}")


def check_codes(z_NxD: np.ndarray, name: str = "codes") -> np.ndarray:
  z = np.asarray(z_NxD)
  if z.ndim != 2:
    raise ValueError(f"{name} must be [num_points, num_dims], got shape {z.shape}")
  if not np.all(np.isfinite(z)):
    raise ValueError(f"{name} contain NaN or inf")
  return z


def check_factors(y_NxK: np.ndarray, num_points: int, name: str = "factors") -> np.ndarray:
  y = np.asarray(y_NxK)
  if y.ndim != 2 or y.shape[0] != num_points:
    raise ValueError(f"{name} must be [{num_points}, num_factors], got shape {y.shape}")
  for k in range(y.shape[1]):
    if np.unique(y[:, k]).size < 2:
      raise ValueError(f"factor {k} takes a single value in these {num_points} points; it carries no information")
  return y


def sample_votes(rng: Rng, factor_sizes: np.ndarray, num_votes: int, batch_size: int,
                 num_batches: int) -> tuple[np.ndarray, np.ndarray]:
  """Votes as disentanglement_lib draws them: per vote a factor k, then `num_batches` batches of factor classes.

  Returns:
    (k [V], factors [V, num_batches, batch_size, K]), from one call to the generator.
  """
  num_factors = len(factor_sizes)
  per_vote = np.concatenate([[num_factors], np.tile(np.repeat(factor_sizes, batch_size), num_batches)])
  draws = randint(rng, np.tile(per_vote, num_votes)).reshape(num_votes, -1)
  factors = draws[:, 1:].reshape(num_votes, num_batches, num_factors, batch_size).transpose(0, 1, 3, 2)
  return draws[:, 0], factors


def vote_groups(num_votes: int, points_per_vote: int) -> list[int]:
  """Sizes of the groups of votes drawn and encoded together: each at most `MAX_POINTS_PER_GROUP` points.

  With observations that draw no random numbers (dSprites, `CodeTable`) the grouping changes nothing: the
  generator's stream is that of disentanglement_lib's vote-by-vote loop whatever the group sizes.
  """
  per_group = max(1, MAX_POINTS_PER_GROUP // points_per_vote)
  return [min(per_group, num_votes - done) for done in range(0, num_votes, per_group)]


def encode_factors(data: FactorData, representation_fn: RepresentationFn | None, factors_MxK: np.ndarray,
                   rng: Rng) -> np.ndarray:
  """[M, D]: codes of observations of the given factors, rendered and encoded in calls of a fixed size.

  The observations are rendered in chunks of `MAX_POINTS_PER_CALL` rows, in order (so `rng` is used as by one
  loop over the chunks), and each chunk goes to `representation_fn` in one call. Every call has the same
  number of observations, min(M, MAX_POINTS_PER_CALL): the last chunk is padded with copies of its last
  observation and their codes are dropped, so a jitted representation compiles once. While a chunk is being
  encoded, a worker thread renders the next one. Without a representation function the observations are the
  codes, looked up chunk by chunk.

  The codes keep the representation's dtype: disentanglement_lib computes its statistics in that dtype (float32
  for most encoders), and so do the metrics here, to give the same numbers.
  """
  factors = np.asarray(factors_MxK)
  size = min(MAX_POINTS_PER_CALL, len(factors))
  chunks = [factors[start:start + size] for start in range(0, len(factors), size)]

  def render(chunk):
    return data.sample_observations_from_factors(chunk, rng)

  if representation_fn is None:
    return check_codes(np.concatenate([np.asarray(render(chunk)) for chunk in chunks]), "representations")
  codes = []
  with futures.ThreadPoolExecutor(max_workers=1) as renderer:
    pending = renderer.submit(render, chunks[0])
    for i in range(len(chunks)):
      observations = np.asarray(pending.result())
      if i + 1 < len(chunks):
        pending = renderer.submit(render, chunks[i + 1])
      num = len(observations)
      if num < size:
        observations = np.concatenate([observations, np.repeat(observations[-1:], size - num, axis=0)])
      codes.append(np.asarray(representation_fn(observations))[:num])
  return check_codes(np.concatenate(codes), "representations")


def sample_factor_code(data: FactorData, representation_fn: RepresentationFn | None, num_points: int, rng: Rng,
                       batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """i.i.d. (codes [N, D], factors [N, K]) drawn as disentanglement_lib's `generate_batch_factor_code` draws them.

  Factors come in batches of `batch_size`, each drawn factor by factor; all batches are drawn before any
  observation is rendered, so the numbers equal disentanglement_lib's when `sample_observations_from_factors`
  draws no random numbers (dSprites, `CodeTable`).
  """
  sizes = check_factor_sizes(data.factor_sizes)
  check_counts(num_points=(1, num_points), batch_size=(1, batch_size))
  num_full, rest = divmod(num_points, batch_size)
  draws = randint(rng, np.concatenate([np.tile(np.repeat(sizes, batch_size), num_full), np.repeat(sizes, rest)]))
  split = num_full * batch_size * len(sizes)
  full = draws[:split].reshape(num_full, len(sizes), batch_size).transpose(0, 2, 1).reshape(-1, len(sizes))
  factors = np.concatenate([full, draws[split:].reshape(len(sizes), rest).T])
  return encode_factors(data, representation_fn, factors, rng), factors


def histogram_discretize(z_NxD: np.ndarray, num_bins: int = 20) -> np.ndarray:
  """int [N, D]: bin index 1..num_bins of each value among `num_bins` equal-width bins spanning its dimension."""
  out = np.empty(z_NxD.shape, dtype=np.int64)
  for d in range(z_NxD.shape[1]):
    edges = np.histogram(z_NxD[:, d], num_bins)[1]
    out[:, d] = np.digitize(z_NxD[:, d], edges[:-1])
  return out


def discrete_mutual_info(a_NxA: np.ndarray, b_NxB: np.ndarray) -> np.ndarray:
  """[A, B]: plug-in mutual information (nats) between every column of `a` and every column of `b`."""
  return np.array([[sk_metrics.mutual_info_score(b_NxB[:, j], a_NxA[:, i]) for j in range(b_NxB.shape[1])]
                   for i in range(a_NxA.shape[1])])


def discrete_entropy(y_NxK: np.ndarray) -> np.ndarray:
  """[K]: plug-in entropy (nats) of each column."""
  return np.array([sk_metrics.mutual_info_score(y_NxK[:, k], y_NxK[:, k]) for k in range(y_NxK.shape[1])])


class CodeTable:
  """Ground-truth data whose observations are precomputed codes: one code per combination of factor classes.

  Encode a complete factorial data set (dSprites) once, then run every sampling metric on the table with the
  identity representation: `factor_vae_score(CodeTable(z, classes))`.
  """

  def __init__(self, z_NxD: np.ndarray, factor_classes_NxK: np.ndarray, factor_sizes: Sequence[int] | None = None):
    z = check_codes(z_NxD)
    classes = np.asarray(factor_classes_NxK, dtype=np.int64)
    if classes.ndim != 2 or classes.shape[0] != z.shape[0]:
      raise ValueError(f"factor classes must be [{z.shape[0]}, K], got shape {classes.shape}")
    sizes = classes.max(axis=0) + 1 if factor_sizes is None else np.asarray(factor_sizes, dtype=np.int64)
    self.factor_sizes = tuple(int(s) for s in check_factor_sizes(sizes))
    flat = np.ravel_multi_index(tuple(classes.T), self.factor_sizes)
    if z.shape[0] != np.prod(self.factor_sizes) or np.unique(flat).size != z.shape[0]:
      raise ValueError(f"need every combination of factor_sizes={self.factor_sizes} exactly once")
    self._z = z[np.argsort(flat)]

  def sample_observations_from_factors(self, factors: np.ndarray, rng: Rng) -> np.ndarray:
    del rng  # one code per combination: nothing to draw
    return self._z[np.ravel_multi_index(tuple(np.asarray(factors).T), self.factor_sizes)]


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, metric: str):
  """scikit-learn's default `LogisticRegression` fitted to (x, y), as disentanglement_lib's protocol fits it.

  At its default 100 lbfgs iterations the fit often stops before converging on codes (disentanglement_lib
  keeps that setting, so do we). scikit-learn's seven-line ConvergenceWarning for each fit becomes one line
  naming the metric, shown once per process by Python's default filter.
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", sk_exceptions.ConvergenceWarning)
    model = linear_model.LogisticRegression().fit(x, y)
  if np.any(model.n_iter_ >= model.max_iter):
    warnings.warn(f"{metric}: the logistic regression stopped at scikit-learn's default max_iter="
                  f"{model.max_iter} before converging, as in disentanglement_lib's protocol", RuntimeWarning,
                  stacklevel=2)
  return model
