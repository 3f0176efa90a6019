"""Whether this process can run the replica exactly: the scikit-learn version and a few arithmetic checks."""
import functools
import re

import numpy as np
import sklearn

# [lower, upper): the versions whose code the replica follows (up to 1.8 the classifier split with friedman_mse
# and the tree sort had no insertion-sort stage)
VERIFIED_SKLEARN = ((1, 9), (1, 10))


def sklearn_version(version: str | None = None) -> tuple[int, int]:
  """(major, minor) of scikit-learn's version string (the installed one by default)."""
  match = re.match(r"(\d+)\.(\d+)", version or sklearn.__version__)
  return (int(match[1]), int(match[2])) if match else (0, 0)


MAX_POINTS = 2 ** 24   # member counts are summed in float32, exact below this


def unsupported_reason(num_points: int = 0) -> str | None:
  """Why the replica cannot promise scikit-learn's numbers here (for `num_points` training points), or None."""
  if num_points >= MAX_POINTS:
    return f"{num_points} training points are too many for the fast classifier (at most {MAX_POINTS - 1})"
  lower, upper = VERIFIED_SKLEARN
  if not lower <= sklearn_version() < upper:
    return (f"scikit-learn {sklearn.__version__} is outside the range the fast classifier is verified on "
            f"(>={lower[0]}.{lower[1]},<{upper[0]}.{upper[1]})")
  return _arithmetic_problem()


@functools.cache
def _arithmetic_problem():
  """Checks, once per process, the arithmetic the replica assumes of numpy and of scikit-learn's build."""
  # The replays' sums are ufunc.accumulate, documented as r[i] = r[i-1] + a[i]; check it is sequential.
  terms = np.ones(4097)
  terms[0] = 2.0 ** 53
  if np.add.accumulate(terms)[-1] != 2.0 ** 53:
    return "numpy's add.accumulate does not add sequentially"
  # scikit-learn's criterion must round its sums as the replays do (no fused multiply-add in its build): the
  # impurities of a depth-1 tree on random targets, against the replay's arithmetic.
  try:
    from sklearn import tree  # pylint: disable=import-outside-toplevel
    from sklearn._loss import loss  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as error:   # the private loss module moved
    return f"scikit-learn's loss module is not where the replica expects it ({error})"
  rng = np.random.RandomState(0)
  x = rng.rand(500, 2).astype(np.float32)
  r = rng.uniform(-1, 1, 500)
  fitted = tree.DecisionTreeRegressor(max_depth=1, random_state=0).fit(x, r).tree_
  from decompvae.metrics._gbt import replay  # pylint: disable=import-outside-toplevel
  mean = replay.sequential_sum(r) / 500.0
  ours = replay.sequential_sum(r * r) / 500.0 - mean * mean
  if fitted.impurity[0] != ours:
    return "scikit-learn's criterion rounds differently from the replica (e.g. a build with fused multiply-add)"
  return None
