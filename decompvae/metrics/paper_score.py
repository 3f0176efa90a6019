"""The paper's disentanglement score (Kim & Mnih's majority vote on every encoding) and the Student-t transport."""
from collections.abc import Callable

import numpy as np
from scipy import special

from decompvae.metrics import utils

# Votes whose gathered codes take at most this many elements are processed together (float32: 32 MiB).
_CHUNK_ELEMENTS = 1 << 23


def student_t_to_gaussian(z: np.ndarray, df, loc=0.0, scale=1.0) -> np.ndarray:
  """Monotone transport of Student-t(ν, loc, scale) coordinates to N(loc, scale²): Φ⁻¹(T_ν(z)).

  z' = loc + scale · Φ⁻¹(T_ν(u)), u = (z − loc) / scale, evaluated through the lower tail on both sides,
  z' − loc = −sign(u) · scale · Φ⁻¹(T_ν(−|u|)), so that large |z| stay finite instead of saturating T_ν at 1, with
  T_ν(−|u|) = ½ I_{ν/(ν+u²)}(ν/2, ½) (regularised incomplete beta; twice as fast as `scipy.stats.t.cdf`).

  Args:
    z: codes [..., D] (e.g. encoder means under a Student-t prior).
    df, loc, scale: the prior's parameters, scalars or broadcastable to z.

  Returns:
    float64 array of z's shape.

  References:
    Mathieu et al. (2019), "Disentangling Disentanglement in VAEs", §5 (and the authors' evaluation code).
  """
  z, df, loc, scale = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (z, df, loc, scale)))
  u = (z - loc) / scale
  lower_tail = 0.5 * special.betainc(0.5 * df, 0.5, df / (df + u * u))
  return loc - np.sign(u) * scale * special.ndtri(lower_tail)


def paper_disentanglement(z_NxD: np.ndarray, factors_NxK: np.ndarray, *, num_votes: int = 20_000,
                          num_points: int = 1000, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                          random_state: int | utils.Rng = 0) -> dict[str, float]:
  """The paper's variant of Kim & Mnih's disentanglement score, computed on every point of a data set.

  s_d = std of z_d over all points. Each of M votes picks a factor k and one of its values uniformly, takes L points
  with that value (all of them when fewer, without replacement otherwise), and votes V[d*, k] += 1 for
  d* = argmin_d Var(z_d / s_d). Score = Σ_d max_k V[d, k] / M, the accuracy of the majority-vote classifier.
  Collapsed dimensions (s_d = 0) never win a vote; with no other dimension the score is 0.

  Args:
    z_NxD: representation of every point (encoder means).
    factors_NxK: ground-truth factor classes (or values) of every point.
    num_votes: M.
    num_points: L.
    transform: optional map of the codes (e.g. `functools.partial(student_t_to_gaussian, df=9.0)`); the score is
      then also computed on transform(z) with the same votes and reported as "disentanglement_mapped".
    random_state: seed or numpy generator.

  Returns:
    {"disentanglement": score} plus {"disentanglement_mapped": score} when `transform` is given.

  References:
    Kim & Mnih (2018), "Disentangling by Factorising", §4; Mathieu et al. (2019), §5 and docs/science.md §6.
  """
  z = utils.check_codes(z_NxD)
  utils.check_counts(num_votes=(1, num_votes), num_points=(2, num_points))
  factors = np.asarray(factors_NxK)
  if factors.ndim != 2 or factors.shape[0] != z.shape[0]:
    raise ValueError(f"factors must be [{z.shape[0]}, K], got shape {factors.shape}")
  reps = {"disentanglement": z}
  if transform is not None:
    reps["disentanglement_mapped"] = utils.check_codes(transform(z), "transformed codes")
  rng = utils.as_rng(random_state)

  normalized, inactive = {}, {}
  for name, rep in reps.items():
    inactive[name] = np.ptp(rep, axis=0) == 0  # exactly: a float32 std of equal values need not be 0
    std = np.where(inactive[name], 1.0, rep.std(axis=0))
    normalized[name] = ((rep - rep.mean(axis=0)) / std).astype(np.float32)
  votes = {name: np.zeros((z.shape[1], factors.shape[1]), dtype=np.int64) for name in reps}

  ks = utils.randint(rng, factors.shape[1], size=num_votes)
  for k in range(factors.shape[1]):
    values, group_of_point = np.unique(factors[:, k], return_inverse=True)
    if values.size < 2:
      raise ValueError(f"factor {k} takes a single value; it carries no information")
    sizes = np.bincount(group_of_point)
    if sizes.min() < 2:
      raise ValueError(f"every value of factor {k} needs at least 2 points, one has {sizes.min()}")
    order = np.argsort(group_of_point, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    grouped = {name: rep[order] for name, rep in normalized.items()}  # contiguous per value: cache-friendly
    group_votes = np.bincount(utils.randint(rng, values.size, size=int(np.sum(ks == k))), minlength=values.size)
    for g in np.flatnonzero(group_votes):
      n_g = int(sizes[g])
      chunk = max(1, _CHUNK_ELEMENTS // (min(num_points, n_g) * z.shape[1]))
      for done in range(0, group_votes[g], chunk):
        idx = _subsets(rng, n_g, num_points, min(chunk, group_votes[g] - done)) + starts[g]
        for name, rep in grouped.items():
          var = rep[idx].var(axis=1)
          var[:, inactive[name]] = np.inf
          winners = np.argmin(var, axis=1)
          votes[name][:, k] += np.bincount(winners, minlength=z.shape[1])
  return {name: 0.0 if inactive[name].all() else float(v.max(axis=1).sum() / num_votes)
          for name, v in votes.items()}


def _subsets(rng: utils.Rng, n: int, size: int, count: int) -> np.ndarray:
  """int [count, min(size, n)]: `count` independent uniform `size`-subsets of range(n) (all of it if n ≤ size)."""
  if n <= size:
    return np.broadcast_to(np.arange(n), (count, n))
  if n <= 4 * size:  # dense: the `size` smallest of n uniform keys
    return np.argpartition(rng.random((count, n)), size - 1, axis=1)[:, :size]
  # Sparse: draw with replacement, then redraw repeated entries until none is left. Every step treats the n
  # elements symmetrically, so the final set is a uniform subset; collisions are rare when n > 4·size.
  idx = np.sort(utils.randint(rng, n, size=(count, size)), axis=1)
  while True:
    repeated = np.zeros(idx.shape, dtype=bool)
    repeated[:, 1:] = idx[:, 1:] == idx[:, :-1]
    num_repeated = int(repeated.sum())
    if num_repeated == 0:
      return idx
    idx[repeated] = utils.randint(rng, n, size=num_repeated)
    idx.sort(axis=1)
