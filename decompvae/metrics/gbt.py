"""scikit-learn's default `GradientBoostingClassifier`, reproduced number for number and fast (DCI's classifier).

DCI fits `GradientBoostingClassifier()` (100 stages, learning rate ν = 0.1, depth-3 trees, log-loss) per factor.
This module grows the trees scikit-learn grows (its arithmetic as of version 1.9, which regresses with
`criterion="squared_error"`), for all factors and classes of a stage at once:

* Start: F = the link of the class priors π (clipped to [ε, 1 − ε]): log(π_c / (Π_c' π_c')^(1/C)) for C > 2 classes
  (one tree per class and stage), logit(π_1) for C = 2 (one tree per stage).
* Each tree regresses the negative gradient r_i = y_ik − p_ik (p = softmax(F), expit(F) for C = 2) on the float32
  codes. A node of n samples with s = Σ r and q = Σ r² has impurity q/n − (s/n)²; it is split unless n < 2, its
  depth is 3 or its impurity is ≤ ε₆₄ (float64 machine epsilon). The split maximises s_L²/n_L + s_R²/n_R over the
  dimensions and the positions between consecutive sorted values that differ by more than 1e-7 (in float32); the
  threshold is the float64 midpoint x_L/2 + x_R/2.
* Leaves take one Newton step, γ = (K−1)/K · Σ r / Σ p(1 − p) (the factor (K−1)/K only for C > 2, γ = 0 when the
  denominator is below 1e-150, sums as `np.average`), and F_k += ν γ(leaf of x).
* feature_importances_: per tree Σ over splits of n·imp − n_L·imp_L − n_R·imp_R, / N, for the dimension split;
  averaged over the trees with a split and normalised to sum 1. Predictions: argmax_k F_k (F ≥ 0 for C = 2).

Speed. Each dimension's sorted positions are cut into blocks of `_BLOCK` and coarse blocks of `_GROUP` blocks. One
sparse product per level gives, for every node, its block sums of r, of the positive r and of its members (for a
node's smaller child; the sibling is the parent minus it). At block starts the proxy is exact and gives a lower bound
of the node's best split; inside a block the proxy is jointly convex in (Σ_L r, n_L), so the corners of the box of
reachable values bound it from above. Coarse blocks and then blocks that cannot hold the best split are skipped, and
the rest are scanned position by position.

Exactness. Where candidate splits come within a rounding-level tolerance of each other, or an impurity lies near
ε₆₄, the node is replayed with scikit-learn's own arithmetic (`_Replay`): the dimensions in the random order its
splitter draws them (`random_state`, scikit-learn's generator, one seed per tree), sums in the order it keeps the
node's samples, the first strictly better split winning. The one difference left: equal code values of points
with different targets in a node may be ordered differently by scikit-learn's introsort than by the stable order
used here, which can change the last bit of a sum and so, rarely, the winner of a tie (see BUILD_NOTES.md).
"""
import concurrent.futures
import os

import numpy as np
import scipy.sparse
from scipy import special, stats

_FEATURE_THRESHOLD = np.float32(1e-7)   # sklearn/tree/_partitioner.pxd: values closer than this are not split
_EPSILON = np.finfo(np.float64).eps      # sklearn/tree/_tree.pyx: a node with impurity <= this is a leaf
_RAND_R_MAX = 2 ** 31 - 1
_MAX_DEPTH = 3
_NUM_NODES = 2 ** (_MAX_DEPTH + 1) - 1   # heap numbering: the children of node h are 2h + 1 and 2h + 2
_PREORDER = (0, 1, 3, 7, 8, 4, 9, 10, 2, 5, 11, 12, 6, 13, 14)   # scikit-learn builds depth first, left first
_BLOCK = 32   # sorted positions per block of the split search
_GROUP = 8   # blocks per coarse block
_TIE_TOLERANCE = 1e-9      # relative to Σr² of the node: candidates this close are replayed exactly
_IMPURITY_AMBIGUITY = 64   # impurities within this many √n·ε₆₄·q/n of ε₆₄ are recomputed exactly


def fit_gbt_classifiers(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, *,
                        n_estimators: int = 100, learning_rate: float = 0.1, random_state: int = 0,
                        n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One `GradientBoostingClassifier(n_estimators, learning_rate, random_state)` per factor, as scikit-learn fits it.

  Args:
    codes_train: [N, D] codes (converted to float32, as scikit-learn's trees do).
    factors_train: [N, F] labels, one classifier per column (any values; classes are the sorted unique values;
      every column needs two classes).
    codes_test: [M, D] codes to predict.
    n_estimators, learning_rate, random_state: scikit-learn's parameters (the rest are its defaults);
      `random_state` fixes the order in which features are tried, which decides between equally good splits.
    n_jobs: threads (-1: one per CPU); the factors are split between them by number of trees. Trees and
      predictions do not depend on it; importances can differ in their last bits (sums of other trees' widths).

  Returns:
    (importance [D, F] = feature_importances_ per factor, train predictions [N, F], test predictions [M, F]).
  """
  labels = np.asarray(factors_train)
  if labels.ndim != 2 or labels.shape[0] != np.shape(codes_train)[0]:
    raise ValueError(f"factors must be [{np.shape(codes_train)[0]}, num_factors], got shape {labels.shape}")
  sizes = [np.unique(labels[:, k]).size for k in range(labels.shape[1])]
  groups = _split_by_work([1 if c == 2 else c for c in sizes], _num_cpus() if n_jobs < 0 else n_jobs)
  args = (n_estimators, learning_rate, random_state)
  if len(groups) == 1:
    fitted = [_fit(codes_train, labels[:, groups[0]], codes_test, *args)]
  else:
    with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
      fitted = list(pool.map(lambda cols: _fit(codes_train, labels[:, cols], codes_test, *args), groups))
  factors = [None] * labels.shape[1]
  for cols, group in zip(groups, fitted):
    for k, f in zip(cols, group):
      factors[k] = f
  importance = np.stack([f.feature_importances() for f in factors], axis=1)
  train_pred = np.stack([f.predict(f.raw) for f in factors], axis=1)
  test_pred = np.stack([f.predict(f.raw_test) for f in factors], axis=1)
  return importance, train_pred, test_pred


def _num_cpus():
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _split_by_work(work, n_jobs):
  """Factor indices in at most n_jobs groups of similar total work (largest first, each to the lightest group)."""
  groups = [[] for _ in range(max(1, min(n_jobs, len(work))))]
  load = [0] * len(groups)
  for k in sorted(range(len(work)), key=lambda k: -work[k]):
    j = load.index(min(load))
    groups[j].append(k)
    load[j] += work[k]
  return [g for g in groups if g]


def fit_gbt_importance(codes_train: np.ndarray, labels_train: np.ndarray, codes_test: np.ndarray,
                       **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`fit_gbt_classifiers` for one factor: (feature_importances_ [D], train predictions [N], test predictions [M])."""
  importance, train_pred, test_pred = fit_gbt_classifiers(codes_train, np.asarray(labels_train)[:, None],
                                                          codes_test, **kwargs)
  return importance[:, 0], train_pred[:, 0], test_pred[:, 0]


def _fit(codes_train, factors_train, codes_test, n_estimators, learning_rate, random_state):
  """The fitted classifiers (`_Factor`: raw predictions F on train and test, per-tree importances)."""
  codes = _Codes(codes_train, codes_test)
  labels = np.asarray(factors_train)
  factors = [_Factor(labels[:, k], codes, n_estimators, random_state) for k in range(labels.shape[1])]
  columns = np.cumsum([0] + [f.num_trees for f in factors])
  for stage in range(n_estimators):
    targets = np.concatenate([f.negative_gradient() for f in factors], axis=1)
    seeds = np.concatenate([f.seeds[stage] for f in factors])
    trees = _Stage(codes, targets, seeds).grow()
    for f, lo, hi in zip(factors, columns[:-1], columns[1:]):
      f.add_trees(trees, slice(lo, hi), learning_rate)
  return factors


class _Codes:
  """The float32 codes with, per dimension, the sorted order and the block structure of the split search."""

  def __init__(self, codes_train, codes_test):
    x = np.asarray(codes_train, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
      raise ValueError(f"codes must be [num_points >= 2, num_dims], got shape {x.shape}")
    self.x = x
    self.x_test = np.asarray(codes_test, dtype=np.float32).reshape(-1, x.shape[1])
    self.num_train, self.num_dims = n, d = x.shape
    self.order = np.ascontiguousarray(np.argsort(x, axis=0, kind="stable").T)            # [D, N]
    self.sorted = np.take_along_axis(x.T, self.order, axis=1)                             # [D, N] float32
    # last[d, q]: the last sorted position whose value is within FEATURE_THRESHOLD of position q (float32 sum)
    within = self.sorted + _FEATURE_THRESHOLD
    self.last = np.stack([np.searchsorted(self.sorted[j], within[j], side="right") - 1 for j in range(d)])
    self.max_run = (self.last - np.arange(n)[None, :]).max(axis=1) + 1   # most values within 1e-7 of one
    # Dimensions where equal values belong to different codes: there, the order scikit-learn's sort leaves equal
    # values in can matter (repeated identical codes are interchangeable).
    rows = np.unique(x, axis=0, return_inverse=True)[1].reshape(-1)[self.order]
    self.runs = []   # per dimension: (sorted positions in runs of equal values from different codes, run index)
    for j in range(d):
      same = self.sorted[j, 1:] == self.sorted[j, :-1]
      start = np.flatnonzero(np.r_[True, ~same])
      run = np.cumsum(np.r_[True, ~same]) - 1
      mixed = np.zeros(start.size, dtype=bool)
      mixed[run[1:][same & (rows[j, 1:] != rows[j, :-1])]] = True
      at = np.flatnonzero(mixed[run])
      self.runs.append((at, run[at]))
    self.num_blocks = nb = -(-n // _BLOCK)
    rank = np.empty_like(self.order)
    np.put_along_axis(rank, self.order, np.arange(n)[None, :], axis=1)
    rows = (np.arange(d)[:, None] * nb + rank // _BLOCK).ravel()
    cols = np.tile(np.arange(n), d)
    self.blocks = scipy.sparse.csr_matrix((np.ones(n * d), (rows, cols)), shape=(d * nb, n))
    self.blocks32 = self.blocks.astype(np.float32)
    self.block_size = np.minimum(_BLOCK, n - np.arange(nb) * _BLOCK)                   # samples per block
    # A split at the boundary before block b is valid for any node when the sorted values there differ enough.
    boundary = np.arange(1, nb) * _BLOCK - 1
    self.safe_boundary = np.zeros((d, nb), dtype=bool)
    self.safe_boundary[:, 1:] = self.last[:, boundary] == boundary
    self._buffers = {}

  def buffer(self, name, shape, dtype):
    """A scratch array kept between stages (fresh large arrays cost page faults every time)."""
    array = self._buffers.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
      array = self._buffers[name] = np.empty(shape, dtype=dtype)
    return array


class _Factor:
  """One classifier: labels, raw predictions F (train and test), seeds of its trees and their importances."""

  def __init__(self, labels, codes, n_estimators, random_state):
    self.classes, y = np.unique(labels, return_inverse=True)
    if self.classes.size < 2:
      raise ValueError("every factor needs at least two classes among the training points")
    self.y = y.reshape(-1)
    self.num_classes = c = self.classes.size
    self.num_trees = 1 if c == 2 else c
    counts = np.bincount(self.y)
    eps = np.finfo(np.float64).eps
    proba = np.clip(np.ones((codes.num_train, 1)) * (counts / counts.sum()), eps, 1 - eps, dtype=np.float64)
    if c == 2:
      self.raw = special.logit(proba[:, 1]).reshape(-1, 1)
    else:
      self.raw = np.log(proba / stats.gmean(proba, axis=1)[:, None])
    self.raw_test = np.repeat(self.raw[:1], codes.x_test.shape[0], axis=0)
    # scikit-learn draws each tree's seed from one RandomState, in the order the trees are fitted.
    self.seeds = np.random.RandomState(random_state).randint(0, _RAND_R_MAX, size=(n_estimators, self.num_trees))
    self.onehot = (self.y[:, None] == np.arange(self.num_trees)).astype(np.float64) if c > 2 else \
        self.y[:, None].astype(np.float64)
    self.tree_importances = []
    self.num_dims = codes.num_dims

  def negative_gradient(self):
    """r = y − p, with scikit-learn's arithmetic (max-shifted softmax; the binary form split at F = −37)."""
    raw = self.raw
    if self.num_classes == 2:
      r, y = raw[:, 0], self.onehot[:, 0]
      grad = np.empty_like(r)
      big = r > -37
      e = np.exp(-r[big])
      grad[big] = ((1 - y[big]) - y[big] * e) / (1 + e)
      grad[~big] = np.exp(r[~big]) - y[~big]
      return -grad[:, None]
    p = np.exp(raw - raw.max(axis=1, keepdims=True))
    total = np.zeros(raw.shape[0])
    for k in range(raw.shape[1]):
      total = total + p[:, k]
    return -(p / total[:, None] - self.onehot)

  def add_trees(self, trees, cols, learning_rate):
    """Newton leaf values, F += ν γ(leaf) on train and test, and each tree's unnormalised importances."""
    k = self.num_trees
    factor = (k - 1) / k if self.num_classes > 2 else None
    values = trees.leaf_values(cols, self.onehot, factor)                         # [K, NUM_NODES]
    for j in range(k):
      self.raw[:, j] += (learning_rate * values[j]).take(trees.heap[:, cols.start + j])
      self.raw_test[:, j] += (learning_rate * values[j]).take(trees.test_leaves[:, cols.start + j])
    for j in range(k):
      if trees.split[cols.start + j, 0]:
        self.tree_importances.append(trees.importances(cols.start + j))

  def feature_importances(self):
    if not self.tree_importances:   # every tree is a single leaf
      return np.zeros(self.num_dims)
    mean = np.mean(self.tree_importances, axis=0, dtype=np.float64)
    return mean / np.sum(mean)

  def predict(self, raw):
    if self.num_classes == 2:
      return self.classes[(raw[:, 0] >= 0).astype(int)]
    return self.classes[np.argmax(raw, axis=1)]


class _Stage:
  """The trees of one boosting stage (one per factor and class), grown together level by level.

  Nodes are numbered as a heap (root 0). Per tree and node: sample count, Σr and Σr² (summed in some order, so
  approximately: `exact` marks impurities taken from a replay), impurity, whether scikit-learn calls its splitter
  (`attempted`; that draws random numbers) and the split (`feature`, `threshold`).
  """

  def __init__(self, codes, targets, seeds):
    self.codes = codes
    self.g = np.ascontiguousarray(targets, dtype=np.float64)                   # [N, T]
    self.seeds = seeds
    self.num_trees = t = self.g.shape[1]
    self.heap = np.zeros(self.g.shape, dtype=np.int8)                          # node of each sample
    shape = (t, _NUM_NODES)
    self.count = np.zeros(shape)
    self.total = np.zeros(shape)
    self.squares = np.zeros(shape)
    self.impurity = np.zeros(shape)
    self.exact = np.zeros(shape, dtype=bool)           # impurity computed with scikit-learn's sums
    self.attempted = np.zeros(shape, dtype=bool)
    self.split = np.zeros(shape, dtype=bool)
    self.feature = np.zeros(shape, dtype=np.intp)
    self.threshold = np.zeros(shape)
    self.left_count, self.left_total = np.zeros(shape), np.zeros(shape)   # of each split's left child
    self.small, self.coarse = {}, {}   # block sums per level, see _block_stats
    self.decided_level = -1
    self.known_attempts = {}   # (tree, node) -> whether scikit-learn splits it, as a replay found
    self._replays = {}

  def replay(self, tree):
    if tree not in self._replays:
      self._replays[tree] = _Replay(self, tree)
    return self._replays[tree]

  def grow(self):
    for level in range(_MAX_DEPTH):
      self._node_stats(level)
      self._decide_attempts(level)
      if self.attempted[:, 2 ** level - 1:2 ** (level + 1) - 1].any():
        self._search(level)
        self.heap = self._descend(self.codes.x, self.heap)
    self._node_stats(_MAX_DEPTH)
    self.test_leaves = self._leaves(self.codes.x_test)
    return self

  # -- node statistics and the leaf test -------------------------------------------------------------------------
  def _node_stats(self, level):
    nodes = slice(2 ** level - 1, 2 ** (level + 1) - 1)
    if level == 0:
      n = self.g.shape[0]
      self.count[:, 0] = n
      g = np.ascontiguousarray(self.g.T)              # sums per tree that do not depend on the other trees
      self.total[:, 0] = np.sum(g, axis=1)
      self.squares[:, 0] = np.sum(g * g, axis=1)
      self.impurity[:, 0] = self.squares[:, 0] / n - (self.total[:, 0] / n) ** 2
      return
    parents = (np.arange(nodes.start, nodes.stop) - 1) // 2
    is_left = (np.arange(nodes.start, nodes.stop) % 2) == 1
    for array, left in ((self.count, self.left_count), (self.total, self.left_total)):
      array[:, nodes] = np.where(is_left, left[:, parents], array[:, parents] - left[:, parents])
    key = (self.heap + (_NUM_NODES + 1) * np.arange(self.num_trees)[None, :].astype(np.int64)).ravel()
    self.squares[:, nodes] = np.bincount(key, weights=(self.g * self.g).ravel(),
                                         minlength=(_NUM_NODES + 1) * self.num_trees).reshape(
        self.num_trees, -1)[:, nodes]
    with np.errstate(divide="ignore", invalid="ignore"):
      n = self.count[:, nodes]
      approx = self.squares[:, nodes] / n - (self.total[:, nodes] / n) ** 2
    self.impurity[:, nodes] = np.where(self.exact[:, nodes], self.impurity[:, nodes], approx)

  def _decide_attempts(self, level):
    """scikit-learn splits a node unless n < 2 or impurity <= ε; impurities near ε are recomputed exactly."""
    lo, hi = 2 ** level - 1, 2 ** (level + 1) - 1
    exists = np.ones((self.num_trees, hi - lo), dtype=bool) if level == 0 else \
        np.repeat(self.split[:, (lo - 1) // 2:(hi - 1) // 2], 2, axis=1)
    n, imp = self.count[:, lo:hi], self.impurity[:, lo:hi]
    unsure = exists & (n >= 2) & ~self.exact[:, lo:hi] & \
        (np.abs(imp - _EPSILON) <= _impurity_margin(n, self.squares[:, lo:hi]))
    for tree, j in zip(*np.nonzero(unsure)):
      if (tree, lo + j) not in self.known_attempts:
        self.replay(tree).impurity(lo + j)
    self.attempted[:, lo:hi] = exists & (n >= 2) & (self.impurity[:, lo:hi] > _EPSILON)
    for (tree, node), decision in self.known_attempts.items():
      if lo <= node < hi:
        self.attempted[tree, node] = decision
    self.decided_level = level

  def record_exact_impurity(self, tree, node, impurity):
    self.impurity[tree, node] = impurity
    self.exact[tree, node] = True

  # -- the split search --------------------------------------------------------------------------------------------
  def _block_stats(self, level):
    """Per node of this level and sorted block of every dimension: the sum of its members' targets (float64), the
    sum of the positive ones and their number (float32: they only bound). Only a node's smaller child is summed
    (sparse products over the blocks); its sibling is the parent minus it, formed where needed (`_fine`).
    Coarse blocks (sums of _GROUP blocks) are kept for every node: [D, NG, T, M] each."""
    codes = self.codes
    shape = (codes.num_dims, codes.num_blocks, self.num_trees)
    if level == 0:
      self.g_pos = np.maximum(self.g, 0.0, out=codes.buffer("g_pos", self.g.shape, np.float32),
                              dtype=np.float32)
      parts = [_sparse_product(codes.blocks, self.g).reshape(shape + (1,)),
               _sparse_product(codes.blocks32, self.g_pos).reshape(shape + (1,)),
               np.broadcast_to(codes.block_size[None, :, None, None].astype(np.float32), shape + (1,))]
      self.small[0] = (parts, None)
      self.coarse[0] = [_coarsen(a) for a in parts]
      return
    parents = 2 ** (level - 1)
    first = parents - 1
    heads = np.arange(first, first + parents)
    small_right = self.count[:, 2 * heads + 2] < self.count[:, 2 * heads + 1]   # [T, P]: sum the smaller child
    small = 2 * heads[None, :] + 1 + small_right
    n, t = self.g.shape
    targets = codes.buffer("targets", (n, parents, t), np.float64)
    both32 = codes.buffer("both32", (n, 2, parents, t), np.float32)     # positive targets, membership
    sel = codes.buffer("sel", (n, t), bool)
    for j in range(parents):
      np.equal(self.heap, small[None, :, j], out=sel)
      sel &= self.split[None, :, first + j]
      mask = both32[:, 1, j]
      mask[...] = sel
      np.multiply(self.g, mask, out=targets[:, j])
      np.multiply(self.g_pos, mask, out=both32[:, 0, j])
    sums = _sparse_product(codes.blocks, targets.reshape(n, -1)).reshape(shape[:2] + (parents, t))
    pos_cnt = _sparse_product(codes.blocks32, both32.reshape(n, -1)).reshape(shape[:2] + (2, parents, t))
    parts = [np.moveaxis(a, -2, -1) for a in (sums, pos_cnt[:, :, 0], pos_cnt[:, :, 1])]   # [D, NB, T, P]
    self.small[level] = (parts, small_right)
    sr = small_right[None, None, :, :]
    self.coarse[level] = []
    for part, whole in zip(parts, self.coarse[level - 1]):
      c = _coarsen(part)
      rest = whole - c
      both = np.empty(c.shape[:3] + (2 * parents,), dtype=c.dtype)
      both[..., 0::2] = np.where(sr, rest, c)
      both[..., 1::2] = np.where(sr, c, rest)
      self.coarse[level].append(both)

  def _fine(self, level, which, d, b, t, m):
    """Block sums (which: 0 targets, 1 positive targets, 2 count) of node slot m of tree t at this level, for blocks
    b of dimension d (broadcast index arrays)."""
    parts, small_right = self.small[level]
    if level == 0:
      return parts[which][d, b, t, 0]
    j = m // 2
    value = parts[which][d, b, t, j]
    parent = self._fine(level - 1, which, d, b, t, j)
    return np.where((m % 2) == small_right[t, j], value, parent - value)

  def _search(self, level):
    codes = self.codes
    width = 2 ** level
    first = width - 1
    self._block_stats(level)
    active = self.attempted[:, first:first + width]                              # [T, M]
    n, s = self.count[:, first:first + width], self.total[:, first:first + width]
    tol = _TIE_TOLERANCE * self.squares[:, first:first + width]
    # Coarse blocks of _GROUP blocks: bound every one, keep those that can hold the best split.
    num_blocks = codes.num_blocks
    c_sum, c_pos, c_cnt = self.coarse[level]
    c_neg, c_pos = _widen(c_sum, c_pos)
    c_ps, c_pc = _exclusive_cumsum(c_sum), _exclusive_cumsum(c_cnt)
    safe = codes.safe_boundary[:, ::_GROUP][:, :, None, None]
    low = _proxy_at_boundaries(c_ps, c_pc, safe, active, n, s).max(axis=(0, 1))
    high = _proxy_bound(c_ps, c_pc, c_neg, c_pos, c_cnt, active, n, s)
    dg, gg, tg, mg = np.nonzero((high >= low - tol) & (high > -np.inf))
    if dg.size == 0:
      return
    # Their blocks, bounded the same way with the lower bound raised by their boundaries.
    blocks = gg[:, None] * _GROUP + np.arange(_GROUP)[None, :]
    inside = blocks < num_blocks
    blocks = np.minimum(blocks, num_blocks - 1)
    index = (dg[:, None], blocks, tg[:, None], mg[:, None])
    f_sum, f_pos, f_cnt = (np.where(inside, self._fine(level, k, *index), 0.0) for k in range(3))
    f_neg, f_pos = _widen(f_sum, f_pos)
    f_ps = c_ps[dg, gg, tg, mg][:, None] + _exclusive_cumsum(f_sum, axis=1)
    f_pc = c_pc[dg, gg, tg, mg][:, None] + _exclusive_cumsum(f_cnt, axis=1)
    n_g, s_g, active_g = n[tg, mg][:, None], s[tg, mg][:, None], active[tg, mg][:, None]
    safe_g = codes.safe_boundary[dg[:, None], blocks] & inside
    lows = _proxy_at_boundaries(f_ps, f_pc, safe_g, active_g, n_g, s_g).max(axis=1)
    np.maximum.at(low, (tg, mg), lows)
    high = _proxy_bound(f_ps, f_pc, f_neg, f_pos, f_cnt, active_g, n_g, s_g)
    r, j = np.nonzero((high >= (low - tol)[tg, mg][:, None]) & (high > -np.inf))
    if r.size == 0:
      return
    d, b, t, m = dg[r], blocks[r, j], tg[r], mg[r]
    # The block after each kept block holding a member of its node (to find the next member of the last one).
    later = (np.arange(_GROUP)[None, :] > j[:, None]) & (f_cnt[r] > 0.5)
    next_block = np.where(later.any(axis=1), gg[r] * _GROUP + np.argmax(later, axis=1), -1)
    far = np.flatnonzero(next_block < 0)
    if far.size:
      groups = c_cnt[dg[r[far]], :, tg[r[far]], mg[r[far]]] > 0.5
      groups &= np.arange(groups.shape[1])[None, :] > gg[r[far], None]
      g_next = np.argmax(groups, axis=1)
      in_group = np.minimum(g_next[:, None] * _GROUP + np.arange(_GROUP)[None, :], num_blocks - 1)
      counts = self._fine(level, 2, d[far, None], in_group, t[far, None], m[far, None])
      first_hit = in_group[np.arange(far.size), np.argmax(counts > 0.5, axis=1)]
      next_block[far] = np.where(groups.any(axis=1), first_hit, -1)
    proxy, next_pos, pos, n_left, sum_left = self._scan_blocks(level, d, b, t, m, f_ps[r, j], f_pc[r, j], n, s,
                                                               next_block)
    rows = np.arange(d.size)
    col = np.argmax(proxy, axis=1)
    top = proxy[rows, col]
    proxy[rows, col] = -np.inf
    runner_up = proxy.max(axis=1)
    key = t * width + m
    order = np.lexsort((top, key))
    key_sorted = key[order]
    is_last = np.r_[key_sorted[1:] != key_sorted[:-1], True]
    last_idx = np.flatnonzero(is_last)
    best = order[last_idx]
    second = runner_up[best]
    has_prev = np.r_[False, key_sorted[1:] == key_sorted[:-1]][last_idx]
    second[has_prev] = np.maximum(second[has_prev], top[order[last_idx[has_prev] - 1]])
    gt, gm = t[best], m[best]
    found = top[best] > -np.inf
    near = found & (second >= top[best] - tol[gt, gm])
    # Clear winners: the split after the chosen member; the threshold is the midpoint with the next member.
    win = best[found & ~near]
    if win.size:
      q, nxt = pos[win, col[win]], next_pos[win, col[win]]
      sv = codes.sorted
      node = first + m[win]
      self.feature[t[win], node] = d[win]
      self.threshold[t[win], node] = np.float64(sv[d[win], q]) / 2.0 + np.float64(sv[d[win], nxt]) / 2.0
      self.split[t[win], node] = True
      self.left_count[t[win], node] = n_left[win, col[win]]
      self.left_total[t[win], node] = sum_left[win, col[win]]
    # Near ties: replayed with scikit-learn's arithmetic, in the order scikit-learn builds each tree.
    if near.any():
      group_of_row = np.empty(d.size, dtype=np.intp)
      group_of_row[order] = np.cumsum(np.r_[True, key_sorted[1:] != key_sorted[:-1]]) - 1
      for g_idx in sorted(np.flatnonzero(near), key=lambda i: (gt[i], gm[i])):
        tree, node = gt[g_idx], first + gm[g_idx]
        rows_g = np.flatnonzero((group_of_row == g_idx) & (top >= top[best[g_idx]] - tol[tree, gm[g_idx]]))
        contenders = set(d[rows_g].tolist())
        replay = self.replay(tree)
        result = replay.best_split(node, contenders, tol[tree, gm[g_idx]])
        if result is not None:
          self.feature[tree, node], self.threshold[tree, node] = result
          self.split[tree, node] = True
          left = replay.members(2 * node + 1)
          self.left_count[tree, node] = left.size
          self.left_total[tree, node] = np.sum(replay.g[left])

  def _scan_blocks(self, level, d, b, t, m, prefix_sum, prefix_count, n, s, next_block):
    """Proxies inside the kept blocks, position by position: [rows, BLOCK] (−inf where no valid split ends),
    with the membership of the positions and the sorted position of each member's next member in the node."""
    codes = self.codes
    first = 2 ** level - 1
    num = codes.num_train
    cols = np.arange(_BLOCK)
    pos = b[:, None] * _BLOCK + cols[None, :]
    inside = pos < num
    pos = np.minimum(pos, num - 1)
    samples = codes.order.ravel().take(d[:, None] * num + pos)
    node = (first + m)[:, None]
    flat = samples * self.num_trees + t[:, None]
    member = inside & (self.heap.ravel().take(flat) == node)
    gv = np.where(member, self.g.ravel().take(flat), 0.0)
    sum_left = prefix_sum[:, None] + np.cumsum(gv, axis=1)
    n_left = prefix_count[:, None] + np.cumsum(member, axis=1)
    nn, ss = n[t, m][:, None], s[t, m][:, None]
    # The next member of the node: later in the row, else the first member of the next block that has one.
    at = np.where(member, cols[None, :], _BLOCK)
    after = np.full(at.shape, _BLOCK)
    after[:, :-1] = np.minimum.accumulate(at[:, :0:-1], axis=1)[:, ::-1]
    next_pos = b[:, None] * _BLOCK + after
    rows = np.flatnonzero((member & (after == _BLOCK)).any(axis=1) & (next_block >= 0))
    if rows.size:
      nb = next_block[rows]
      there = np.minimum(nb[:, None] * _BLOCK + cols[None, :], num - 1)
      hit = self.heap[codes.order[d[rows, None], there], t[rows, None]] == node[rows]
      first_after = nb * _BLOCK + np.argmax(hit, axis=1)
      next_pos[rows] = np.where(after[rows] == _BLOCK, first_after[:, None], next_pos[rows])
    # A split is valid when the next member's value exceeds this one's by more than FEATURE_THRESHOLD.
    valid = member & (n_left < nn) & (next_pos > codes.last.ravel().take(d[:, None] * num + pos))
    with np.errstate(divide="ignore", invalid="ignore"):
      sum_right = ss - sum_left
      proxy = np.where(valid, sum_left * sum_left / n_left + sum_right * sum_right / (nn - n_left), -np.inf)
    return proxy, next_pos, pos, n_left, sum_left

  def _descend(self, x, heap):
    """Move the samples of the split nodes (all at the current level) to their children (left: x <= threshold)."""
    codes, width = self.codes, _NUM_NODES + 1
    shape = heap.shape
    node = codes.buffer(f"node{shape}", shape, np.intp)
    np.add(heap, width * np.arange(self.num_trees)[None, :], out=node)
    tables = np.zeros((3, self.num_trees, width))
    tables[0, :, :_NUM_NODES] = self.feature
    tables[1, :, :_NUM_NODES] = self.threshold
    tables[2, :, :_NUM_NODES] = self.split
    feature = codes.buffer(f"feature{shape}", shape, np.intp)
    np.take(tables[0].astype(np.intp).ravel(), node, out=feature)
    right = np.take_along_axis(x, feature, axis=1) > tables[1].ravel().take(node)
    go = tables[2].astype(bool).ravel().take(node)
    return np.where(go, 2 * heap + 1 + right, heap).astype(np.int8)

  def _leaves(self, x):
    heap = np.zeros((x.shape[0], self.num_trees), dtype=np.int8)
    for _ in range(_MAX_DEPTH):
      heap = self._descend(x, heap)
    return heap

  # -- what the factors need -----------------------------------------------------------------------------------
  def leaf_values(self, cols, onehot, factor):
    """Newton step γ of every leaf of the trees `cols`, summed as np.average sums (pairwise): [K, 16]."""
    k = cols.stop - cols.start
    heap = np.ascontiguousarray(self.heap[:, cols].T)
    order = np.argsort(heap, axis=1, kind="stable")              # each leaf's samples in index order
    neg = np.take_along_axis(np.ascontiguousarray(self.g[:, cols].T), order, axis=1)
    prob = np.take_along_axis(np.ascontiguousarray(onehot.T), order, axis=1) - neg
    hess = prob * (1 - prob)
    counts = np.stack([np.bincount(row, minlength=_NUM_NODES + 1) for row in heap])
    ends = np.cumsum(counts, axis=1)
    values = np.zeros((k, _NUM_NODES + 1))
    for j, leaf in zip(*np.nonzero(counts)):
      lo, hi = ends[j, leaf] - counts[j, leaf], ends[j, leaf]
      numerator = np.sum(neg[j, lo:hi]) / (hi - lo)
      if factor is not None:
        numerator *= factor
      denominator = np.sum(hess[j, lo:hi]) / (hi - lo)
      values[j, leaf] = 0.0 if abs(denominator) < 1e-150 else float(numerator) / float(denominator)
    return values

  def importances(self, tree):
    """compute_feature_importances(normalize=False): Σ over splits of n·imp − n_L·imp_L − n_R·imp_R, / N."""
    out = np.zeros(self.codes.num_dims)
    n, imp = self.count[tree], self.impurity[tree]
    for h in _PREORDER:
      if self.split[tree, h]:
        left, right = 2 * h + 1, 2 * h + 2
        out[self.feature[tree, h]] += n[h] * imp[h] - n[left] * imp[left] - n[right] * imp[right]
    return out / n[0]


class _Replay:
  """One tree with scikit-learn's own arithmetic, computed on demand for the nodes where rounding decides.

  scikit-learn keeps the node's samples in an array that each split reorders: sorted by the last dimension its
  splitter sorted, then partitioned in place by a two-pointer sweep; node sums run over that order. The splitter
  draws dimensions in a random order (Fisher–Yates with scikit-learn's xorshift generator, seeded per tree), skips
  dimensions found constant, and keeps the first strictly better split.
  """

  def __init__(self, stage, tree):
    self.stage, self.tree = stage, tree
    self.x = stage.codes.x
    self.g = np.ascontiguousarray(stage.g[:, tree])
    n = self.x.shape[0]
    self._members = {0: np.arange(n)}
    self._arrangement = {0: np.arange(n)}
    self._sums = {}
    self._children = {}
    self._draws = {}
    self._sorted_cache, self._inside = {}, {}
    self._rng = int(stage.seeds[tree]) & 0xFFFFFFFF
    self._features = list(range(self.x.shape[1]))
    self._constant = [0] * self.x.shape[1]
    self._cursor = 0

  def members(self, node):
    if node not in self._members:
      parent = (node - 1) // 2
      inside = self.members(parent)
      left = self.x[inside, self.stage.feature[self.tree, parent]] <= self.stage.threshold[self.tree, parent]
      self._members[2 * parent + 1], self._members[2 * parent + 2] = inside[left], inside[~left]
    return self._members[node]

  def sums(self, node):
    """Σr and Σr² in scikit-learn's order of the node's samples (Criterion.init)."""
    if node not in self._sums:
      r = self.g[self.arrangement(node)]
      self._sums[node] = (_sequential_sum(r), _sequential_sum(r * r))
    return self._sums[node]

  def impurity(self, node):
    """The impurity scikit-learn stores for the node (node_impurity for the root, else children_impurity)."""
    if node == 0:
      total, squares = self.sums(0)
      n = float(self.x.shape[0])
      value = squares / n - (total / n) ** 2
    else:
      value = self.children_impurity((node - 1) // 2)[(node - 1) % 2]
    self.stage.record_exact_impurity(self.tree, node, value)
    return value

  def attempted(self, node):
    """Whether scikit-learn calls the splitter on this node (and so draws random numbers)."""
    stage, tree = self.stage, self.tree
    depth = int(np.log2(node + 1))
    if depth >= _MAX_DEPTH or (node > 0 and not stage.split[tree, (node - 1) // 2]):
      return False
    if depth <= stage.decided_level:
      return bool(stage.attempted[tree, node])
    # a child of a node split at the current level: the leaf test, exact only when it is close
    if (tree, node) not in stage.known_attempts:
      r = self.g[self.members(node)]
      n = float(r.size)
      if n < 2:
        decision = False
      else:
        squares = np.sum(r * r)
        impurity = squares / n - (np.sum(r) / n) ** 2
        if abs(impurity - _EPSILON) <= _impurity_margin(n, squares):
          impurity = self.impurity(node)
        decision = bool(impurity > _EPSILON)
      stage.known_attempts[(tree, node)] = decision
    return stage.known_attempts[(tree, node)]

  def draws(self, node):
    """(dimensions evaluated, dimensions sorted (those plus the ones found constant), constants known after) of
    the node's splitter call, in the order drawn."""
    while node not in self._draws:
      u = _PREORDER[self._cursor]
      self._cursor += 1
      if self.attempted(u):
        self._simulate(u)
    return self._draws[node]

  def _rand_int(self, low, high):
    s = self._rng if self._rng != 0 else 1
    s ^= (s << 13) & 0xFFFFFFFF
    s ^= s >> 17
    s ^= (s << 5) & 0xFFFFFFFF
    self._rng = s
    return low + (s % (_RAND_R_MAX + 1)) % (high - low)

  def _simulate(self, node):
    """node_split_best's draws: Fisher–Yates over the dimensions; known constants first, found ones set aside."""
    inside = self.members(node)
    constant = np.zeros(self.x.shape[1], dtype=bool)
    maybe = np.flatnonzero(self.stage.codes.max_run >= inside.size)   # more values can't fit in 1e-7
    if maybe.size:
      values = self.x[inside][:, maybe]
      constant[maybe] = values.max(axis=0) <= values.min(axis=0) + _FEATURE_THRESHOLD
    n_known = 0 if node == 0 else self._draws[(node - 1) // 2][2]
    features, constants = self._features, self._constant
    num = len(features)
    f_i, n_found, n_drawn, n_visited, n_total = num, 0, 0, 0, n_known
    visited, sorted_features = [], []
    while f_i > n_total and (n_visited < num or n_visited <= n_found + n_drawn):
      n_visited += 1
      f_j = self._rand_int(n_drawn, f_i - n_found)
      if f_j < n_known:
        features[n_drawn], features[f_j] = features[f_j], features[n_drawn]
        n_drawn += 1
        continue
      f_j += n_found
      f = features[f_j]
      sorted_features.append(f)
      if constant[f]:
        features[f_j], features[n_total] = features[n_total], features[f_j]
        n_found += 1
        n_total += 1
        continue
      f_i -= 1
      features[f_i], features[f_j] = features[f_j], features[f_i]
      visited.append(f)
    features[:n_known] = constants[:n_known]
    constants[n_known:n_known + n_found] = features[n_known:n_known + n_found]
    self._draws[node] = (visited, sorted_features, n_total)

  def arrangement(self, node):
    if node not in self._arrangement:
      self._partition((node - 1) // 2)
    return self._arrangement[node]

  def _sorted(self, node, features):
    """The node's samples after the splitter sorted them by each of `features` in turn.

    Sorting by dimensions whose values in the node are distinct has one result, and scikit-learn's introsort
    leaves a node whose values are all equal untouched; both agree with successive stable sorts, which is what
    this computes (as one lexicographic sort on the last dimensions, back to the first without repeated values).
    """
    if not features:
      return self.arrangement(node)
    key = (node, tuple(features))
    if key not in self._sorted_cache:
      codes = self.stage.codes
      f = features[-1]
      inside = self.inside(node)
      order = codes.order[f]
      result = order[inside[order]]                 # the members in the presorted order of dimension f
      at, run = codes.runs[f]
      if at.size and np.any(np.bincount(run, weights=inside[order[at]]) > 1):
        # equal values of different codes in the node: they keep the order of the previous sort
        previous = self._sorted(node, features[:-1])
        rank = np.empty(codes.num_train, dtype=np.intp)
        rank[previous] = np.arange(previous.size)
        result = result[np.lexsort((rank[result], self.x[result, f]))]
      self._sorted_cache[key] = result
    return self._sorted_cache[key]

  def inside(self, node):
    if node not in self._inside:
      mask = np.zeros(self.x.shape[0], dtype=bool)
      mask[self.members(node)] = True
      self._inside[node] = mask
    return self._inside[node]

  def _partition(self, parent):
    samples = self._sorted(parent, self.draws(parent)[1])
    f, thr = self.stage.feature[self.tree, parent], self.stage.threshold[self.tree, parent]
    left, right = _partition_like_sklearn(samples, self.x[samples, f] <= thr)
    self._arrangement[2 * parent + 1], self._arrangement[2 * parent + 2] = left, right
    self._children[parent] = (left, right)

  def children_impurity(self, parent):
    """Criterion.children_impurity after the split of `parent`: (left, right)."""
    self.arrangement(2 * parent + 1)
    left, right = self._children[parent]
    total, squares = self.sums(parent)
    n_left, n_right = float(left.size), float(right.size)
    if left.size <= right.size:
      sum_left = _sequential_sum(self.g[left])
    else:
      sum_left = _sequential_sum(np.concatenate([[total], -self.g[right[::-1]]]))
    sq_left = _sequential_sum(self.g[left] * self.g[left])
    sum_right, sq_right = total - sum_left, squares - sq_left
    return (sq_left / n_left - (sum_left / n_left) ** 2, sq_right / n_right - (sum_right / n_right) ** 2)

  def best_split(self, node, contenders, tolerance):
    """node_split_best restricted to the dimensions that can win: (dimension, threshold) or None.

    Candidates with the same Σ_L r and n_L (to the bit) have the same proxy whatever the node total; when those
    are all that come within `tolerance` of the best, the first one drawn wins and the node total (which needs
    scikit-learn's order of the node's samples) is not computed.
    """
    sorted_features = self.draws(node)[1]
    n = self.members(node).size
    total = self.stage.total[self.tree, node]
    scans = []
    for i, f in enumerate(sorted_features):
      if f not in contenders:
        continue
      samples = self._sorted(node, sorted_features[:i + 1])
      v = self.x[samples, f]
      cand = np.flatnonzero(v[1:] > v[:-1] + _FEATURE_THRESHOLD) + 1
      if cand.size:
        sum_left = _sums_left_like_sklearn(self.g[samples], cand, lambda: self.sums(node)[0])
        scans.append((f, v, cand, sum_left))
    if not scans:
      return None
    for exact in (False, True):
      if exact:
        total = self.sums(node)[0]
      proxies = [_proxy(sum_left, cand, n, total) for _, _, cand, sum_left in scans]
      top = max(p.max() for p in proxies)
      close = [(sum_left[p >= top - tolerance], cand[p >= top - tolerance])
               for (_, _, cand, sum_left), p in zip(scans, proxies)]
      pairs = {(float(a), int(k)) for sums, counts in close for a, k in zip(sums, counts)}
      if exact or len(pairs) == 1:
        break
    best, best_proxy = None, -np.inf
    for (f, v, cand, _), proxy in zip(scans, proxies):
      j = int(np.argmax(proxy))
      if proxy[j] > best_proxy:
        p = cand[j]
        best_proxy = proxy[j]
        best = (f, np.float64(v[p - 1]) / 2.0 + np.float64(v[p]) / 2.0)
    return best


def _proxy(sum_left, n_left, n, total):
  """proxy_impurity_improvement: Σ_L² / n_L + Σ_R² / n_R, as scikit-learn computes it."""
  n_left = n_left.astype(np.float64)
  sum_right = total - sum_left
  return sum_left * sum_left / n_left + sum_right * sum_right / (n - n_left)


def _sparse_product(blocks, values, chunk=64):
  """blocks @ values, by chunks of columns small enough to stay in cache while every block row reads them."""
  if values.shape[1] <= 2 * chunk:
    return blocks @ values
  return np.concatenate([blocks @ np.ascontiguousarray(values[:, i:i + chunk])
                         for i in range(0, values.shape[1], chunk)], axis=1)


def _coarsen(a):
  """Sums of _GROUP consecutive blocks (axis 1)."""
  return np.add.reduceat(a, np.arange(0, a.shape[1], _GROUP), axis=1)


def _widen(total, positive):
  """(negative, positive) sums of a block, widened by a relative 1e-5 for the float32 rounding of `positive`."""
  positive = positive.astype(np.float64)
  negative = total - positive
  slack = 1e-5 * (positive - negative)
  return negative - slack, positive + slack


def _exclusive_cumsum(a, axis=1):
  out = np.zeros_like(a)
  body = [slice(None)] * a.ndim
  head = list(body)
  body[axis], head[axis] = slice(1, None), slice(None, -1)
  np.cumsum(a[tuple(head)], axis=axis, out=out[tuple(body)])
  return out


def _proxy_at_boundaries(prefix_sum, prefix_count, safe, active, n, s):
  """The proxy of the splits at block starts whose sorted values differ by enough (−inf elsewhere)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    ok = safe & (prefix_count > 0) & (prefix_count < n) & active
    right = s - prefix_sum
    return np.where(ok, prefix_sum * prefix_sum / prefix_count + right * right / (n - prefix_count), -np.inf)


def _proxy_bound(prefix_sum, prefix_count, negative, positive, count, active, n, s):
  """An upper bound of the proxy of the splits inside each block (−inf where there are none).

  The proxy s_L²/n_L + (s − s_L)²/(n − n_L) is jointly convex in (s_L, n_L), so over the box of reachable values
  (s_L between the block start plus its members' negative and positive sums, n_L up to its member count) it is
  largest at a corner.
  """
  k_lo, k_hi = prefix_count + 1.0, np.minimum(prefix_count + count, n - 1)
  high = np.full(np.broadcast_shapes(prefix_sum.shape, n.shape), -np.inf)
  with np.errstate(divide="ignore", invalid="ignore"):
    for sum_left in (prefix_sum + negative, prefix_sum + positive):
      sum_right = s - sum_left
      for k in (k_lo, k_hi):
        high = np.maximum(high, sum_left * sum_left / k + sum_right * sum_right / (n - k))
  return np.where((count > 0) & (k_lo <= k_hi) & active, high, -np.inf)


def _impurity_margin(n, squares):
  """How far an impurity computed with other rounding may be from scikit-learn's (a generous multiple of the
  typical error of sums of n terms)."""
  return _IMPURITY_AMBIGUITY * np.sqrt(n) * np.finfo(np.float64).eps * squares / np.maximum(n, 1)


def _sequential_sum(values):
  """Σ in index order, as scikit-learn's loops add (numpy's cumsum is sequential, its sum is pairwise)."""
  return float(np.cumsum(values)[-1]) if values.size else 0.0


def _sums_left_like_sklearn(r, cand, node_total):
  """Criterion.update's Σ_L r at each candidate: added from the previous candidate, or (when that is the shorter
  way) from the node total (`node_total()`) downwards from the end."""
  n = r.size
  prev = np.zeros_like(cand)
  prev[1:] = cand[:-1]
  backward = (cand - prev) > (n - cand)
  if not backward.any():
    return np.cumsum(r)[cand - 1]
  total = node_total()
  out = np.empty(cand.size)
  value, at = 0.0, 0
  for i, p in enumerate(cand):
    if backward[i]:
      value = _sequential_sum(np.concatenate([[total], -r[p:][::-1]]))
    else:
      value = _sequential_sum(np.concatenate([[value], r[at:p]]))
    out[i], at = value, p
  return out


def _partition_like_sklearn(samples, goes_left):
  """scikit-learn's in-place partition (front pointer keeps lefts, a right swaps with the back): (left, right).

  The back elements are taken from the end; each right-goer met at the front leaves a hole that the next left-goer
  taken from the back fills, and the right-goers go to the end in the order they are met.
  """
  n = samples.size
  n_left = int(goes_left.sum())
  front = n_left if (n_left == n or goes_left[n_left]) else n_left + 1
  left = samples[:n_left].copy()
  holes = np.flatnonzero(~goes_left[:n_left])
  back = samples[front:][::-1]
  back_left = goes_left[front:][::-1]
  left[holes] = back[back_left][:holes.size]
  front_right = np.flatnonzero(~goes_left[:front])
  back_left_at = np.flatnonzero(back_left)
  rights_before = back_left_at - np.arange(back_left_at.size)   # back right-goers taken before each back left-goer
  j = np.arange(front_right.size)
  rank_front = j + (rights_before[np.maximum(j - 1, 0)] if back_left_at.size else 0) * (j > 0)
  back_right = ~back_left
  rank_back = ((np.cumsum(back_left) - back_left) + 1 + (np.cumsum(back_right) - back_right))[back_right]
  right = np.empty(n - n_left, dtype=samples.dtype)
  right[n - n_left - 1 - rank_front] = samples[front_right]
  right[n - n_left - 1 - rank_back] = back[back_right]
  return left, right
