"""The float32 codes as scikit-learn's trees see them, sorted per dimension once for every tree of a fit."""
import numpy as np

FEATURE_THRESHOLD = np.float32(1e-7)   # sklearn/tree/_partitioner.pxd: values closer than this are not split


class Codes:
  """Train and test codes (float32, as scikit-learn converts them) and per-dimension sort structures.

  Read-only once built; shared by the split search and the replays.

  Attributes:
    x: [N, D] float32 train codes; x_test: [M, D] float32 test codes.
    order: [D, N] the samples sorted by each dimension (stable).
    sorted: [D, N] float32 the sorted values.
    last: [D, N] the last sorted position whose value is within FEATURE_THRESHOLD of position q (float32 sum).
    max_run: [D] the most samples whose values lie within FEATURE_THRESHOLD of one value.
    row: [N] an id per distinct code row (identical codes share it).
  """

  def __init__(self, codes_train: np.ndarray, codes_test: np.ndarray):
    x = np.asarray(codes_train, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
      raise ValueError(f"codes must be [num_points >= 2, num_dims], got shape {x.shape}")
    self.x = x
    self.x_test = np.asarray(codes_test, dtype=np.float32).reshape(-1, x.shape[1])
    self.num_train, self.num_dims = n, d = x.shape
    self.order = np.ascontiguousarray(np.argsort(x, axis=0, kind="stable").T)            # [D, N]
    self.sorted = np.take_along_axis(x.T, self.order, axis=1)                             # [D, N] float32
    within = self.sorted + FEATURE_THRESHOLD
    self.last = np.stack([np.searchsorted(self.sorted[j], within[j], side="right") - 1 for j in range(d)])
    self.max_run = (self.last - np.arange(n)[None, :]).max(axis=1) + 1
    self.row = np.unique(x, axis=0, return_inverse=True)[1].reshape(-1)
