"""One tree of scikit-learn's builder, replayed with its own arithmetic for the nodes where rounding decides.

scikit-learn (sklearn/tree/_splitter.pyx `node_split_best`, _partitioner.pyx, _criterion.pyx `MSE`, _tree.pyx
`DepthFirstTreeBuilder`, 1.9) keeps a node's samples in an array that each split search reorders: it sorts them by
every dimension it tries (introsort, see `introsort`), then partitions them in place by a two-pointer sweep; the
node's sums run over that order, Σ_L is updated position by position (from the left, or from the node total
downwards when that is shorter) and the first strictly better split wins. Dimensions are tried in a random order
(Fisher–Yates with its xorshift generator, seeded per tree), dimensions found constant are set aside for the
descendants, and the builder grows the tree depth first, left first, so each node's draws follow those of the
nodes before it in that order.

`Replay` reads the tree grown so far through a `TreeView` (it never changes it) and answers with values: the
impurity scikit-learn stores for a node, whether it tries to split a node, and the split it picks.
"""
import dataclasses
import itertools
from typing import Protocol

import numpy as np

from decompvae.metrics._gbt import bounds, introsort
from decompvae.metrics._gbt.data import FEATURE_THRESHOLD, Codes

EPSILON = np.finfo(np.float64).eps      # sklearn/tree/_tree.pyx: a node with impurity <= this is a leaf
RAND_R_MAX = 2 ** 31 - 1                # sklearn/tree/_utils.pxd
MAX_DEPTH = 3
ENUMERATE_UP_TO = 4   # nodes this small are decided for every order of their samples instead of replaying it
PREORDER = (0, 1, 3, 7, 8, 4, 9, 10, 2, 5, 11, 12, 6, 13, 14)   # heap numbers, depth first, left first


class TreeView(Protocol):
  """What a replay reads of the tree being grown: the decisions taken so far."""

  decided_level: int   # the deepest level whose split attempts are decided

  def attempted(self, node: int) -> bool:
    """Whether the builder tries to split `node` (a node at a level <= decided_level)."""

  def split(self, node: int) -> tuple[int, float] | None:
    """(dimension, threshold) of the split of `node`, None while it is not split."""


@dataclasses.dataclass(frozen=True)
class Split:
  feature: int
  threshold: float
  num_left: int
  sum_left: float   # Σ r over the left child (any order: the search's approximation)


def depth(node):
  return (node + 1).bit_length() - 1


class Replay:
  """scikit-learn's arithmetic for one tree of a stage.

  Args:
    codes: the codes of the fit.
    targets: [N] the tree's regression targets (negative gradients).
    seed: the tree's `random_state` seed.
    view: the tree grown so far.
  """

  def __init__(self, codes: Codes, targets: np.ndarray, seed: int, view: TreeView):
    self._codes = codes
    self._x = codes.x
    self._r = np.ascontiguousarray(targets, dtype=np.float64)
    self._view = view
    n = self._x.shape[0]
    self._members = {0: np.arange(n)}
    self._arrangement = {0: np.arange(n)}
    self._sums, self._children, self._draws = {}, {}, {}
    self._sorted, self._presorted, self._insides = {}, {}, {}
    self._impurities, self._attempts = {}, {}
    self._rng = int(seed) & 0xFFFFFFFF
    self._features = list(range(self._x.shape[1]))
    self._constant = [0] * self._x.shape[1]
    self._cursor = 0

  # -- answers -------------------------------------------------------------------------------------------------
  def impurity(self, node: int) -> float:
    """The impurity scikit-learn stores for `node` (node_impurity at the root, else its parent's
    children_impurity)."""
    if node not in self._impurities:
      if node == 0:
        total, squares = self._node_sums(0)
        n = float(self._x.shape[0])
        mean = total / n
        self._impurities[0] = squares / n - mean * mean
      else:
        parent = (node - 1) // 2
        left, right = self._children_impurity(parent)
        self._impurities[2 * parent + 1], self._impurities[2 * parent + 2] = left, right
    return self._impurities[node]

  def exact_impurities(self) -> dict[int, float]:
    """The impurities computed so far, by node."""
    return dict(self._impurities)

  def attempts(self) -> dict[int, bool]:
    """Split attempts this replay decided for nodes below the view's decided level, by node."""
    return dict(self._attempts)

  def members(self, node: int) -> np.ndarray:
    """The node's samples, in index order."""
    if node not in self._members:
      parent = (node - 1) // 2
      inside = self.members(parent)
      feature, threshold = self._view.split(parent)
      left = self._x[inside, feature] <= threshold
      self._members[2 * parent + 1], self._members[2 * parent + 2] = inside[left], inside[~left]
    return self._members[node]

  def best_split(self, node: int, contenders: set[int], tolerance: float, check_improvement: bool) -> Split | None:
    """node_split_best restricted to the dimensions that can win, and the builder's test of its improvement.

    Args:
      node: a node the builder tries to split.
      contenders: the dimensions whose best splits come within `tolerance` of the node's best (the others have
        none that can win).
      tolerance: twice the bound on |ours − scikit-learn's| of the node's proxies: a candidate further than this
        below the best cannot be scikit-learn's choice. Candidates with the same Σ_L r and n_L (to the bit) have
        the same proxy whatever the node total; when those are all that come within `tolerance` of the best, the
        first one drawn wins and the node total (scikit-learn's order of the node's samples) is not needed.
      check_improvement: also apply the builder's leaf test `improvement + EPSILON < 0` (min_impurity_decrease 0),
        which needs the impurities of the children.

    Returns:
      The split, or None when the node stays a leaf.
    """
    sorted_features = [f for f in self.draws(node)[1] if f in contenders]
    n = self.members(node).size
    inside = self.members(node)
    approx_total = float(np.sum(self._r[inside]))
    best = None
    if not check_improvement:
      best = self._split_without_order(node, sorted_features, n, approx_total, tolerance)
      if best is None and n <= ENUMERATE_UP_TO:
        best = self._split_in_any_order(node, sorted_features, tolerance)
    if best is None:
      best = self._split_in_order(node, sorted_features, n, approx_total, tolerance)
    if best is None:
      return None
    feature, threshold = best
    left = inside[self._x[inside, feature] <= threshold]
    if check_improvement and self._improvement(node, feature, threshold) + EPSILON < 0.0:
      return None
    return Split(feature, threshold, int(left.size), float(np.sum(self._r[left])))

  def _split_without_order(self, node, features, n, approx_total, tolerance):
    """The best split when it does not depend on the order of tied values: each dimension's samples in the
    stable sorted order, Σ_L from the left. A Σ_L is scikit-learn's to the bit when the prefix holds no equal
    values of samples that are not interchangeable (beyond two at its very start, as 0 + a + b = 0 + b + a) and
    scikit-learn reaches it from the left. When the candidates within `tolerance` of the best are all such and
    share one (Σ_L, n_L), their proxies are equal whatever the node total, and the first drawn wins.

    Returns:
      (dimension, threshold), or None when the order decides (or no dimension has a split).
    """
    scans, known = [], []
    for f in features:
      samples, mixed = self._presorted_by(node, f)
      v = self._x[samples, f]
      cand = np.flatnonzero(v[1:] > v[:-1] + FEATURE_THRESHOLD) + 1
      if not cand.size:
        continue
      sum_left = np.add.accumulate(self._r[samples])[cand - 1]
      prev = np.zeros_like(cand)
      prev[1:] = cand[:-1]
      backward = np.flatnonzero((cand - prev) > (n - cand))
      ok = np.arange(cand.size) < (backward[0] if backward.size else cand.size)
      if mixed:
        ok &= cand <= self._first_order_dependent(samples, v)
      scans.append((f, v, cand, sum_left))
      known.append(ok)
    if not scans:
      return None
    proxies = [proxy(sum_left, cand, n, approx_total) for _, _, cand, sum_left in scans]
    top = max(p.max() for p in proxies)
    pairs = set()
    for (_, _, cand, sum_left), p, ok in zip(scans, proxies, known):
      close = p >= top - tolerance
      if not ok[close].all():
        return None
      pairs.update(zip(sum_left[close].tolist(), cand[close].tolist()))
    if len(pairs) != 1:
      return None
    return _first_best(scans, proxies)

  def _split_in_any_order(self, node, features, tolerance):
    """The best split of a node of at most ENUMERATE_UP_TO samples when it is the same for every order scikit-learn
    could hold them in (their order at the node's start decides the node total and, through the sorts, the order
    of tied values; a node this small is sorted by insertion sort, which is stable). None when the order decides."""
    all_features = self.draws(node)[1]
    positions = [all_features.index(f) for f in features]
    members = self.members(node)
    keys = self._x[members][:, all_features].T                     # [sorts, n]
    decisions = set()
    for start in itertools.permutations(range(members.size)):
      start = np.array(start)
      scans = []
      for f, i in zip(features, positions):
        # successive stable sorts by all_features[:i + 1]: one lexicographic sort, ties in the starting order
        samples = members[start[np.lexsort((np.arange(start.size),) + tuple(keys[:i + 1, start]))]]
        v = self._x[samples, f]
        cand = np.flatnonzero(v[1:] > v[:-1] + FEATURE_THRESHOLD) + 1
        if cand.size:
          total = sequential_sum(self._r[members[start]])
          scans.append((f, v, cand, sums_left_like_sklearn(self._r[samples], cand, lambda t=total: t), total))
      if not scans:
        return None
      total = scans[0][4]
      proxies = [proxy(sum_left, cand, members.size, total) for _, _, cand, sum_left, _ in scans]
      decisions.add(_first_best([scan[:4] for scan in scans], proxies))
      if len(decisions) > 1:
        return None
    return decisions.pop()

  def _first_order_dependent(self, samples, v):
    """The first sorted position whose prefix sums can depend on the order of equal values: the start of the
    first run of equal values with samples that are not interchangeable (other than a run of two at 0)."""
    tie = v[1:] == v[:-1]
    a, b = samples[:-1], samples[1:]
    mixed_pair = tie & ((self._codes.row[a] != self._codes.row[b]) | (self._r[a] != self._r[b]))
    starts = np.flatnonzero(np.r_[True, ~tie])                   # run starts
    run = np.cumsum(np.r_[True, ~tie]) - 1                       # run of each position
    mixed_runs = np.unique(run[1:][mixed_pair])
    first = starts[mixed_runs]
    size = np.diff(np.r_[starts, v.size])[mixed_runs]
    first = first[~((first == 0) & (size == 2))]
    return int(first.min()) if first.size else v.size

  def _split_in_order(self, node, features, n, approx_total, tolerance):
    """node_split_best over `features` with the node's samples in scikit-learn's order (the node total in that
    order only when the candidates within `tolerance` have different (Σ_L, n_L))."""
    all_features = self.draws(node)[1]
    scans = []
    for f in features:
      samples = self._sorted_by(node, all_features[:all_features.index(f) + 1])
      v = self._x[samples, f]
      cand = np.flatnonzero(v[1:] > v[:-1] + FEATURE_THRESHOLD) + 1
      if cand.size:
        sum_left = sums_left_like_sklearn(self._r[samples], cand, lambda: self._node_sums(node)[0])
        scans.append((f, v, cand, sum_left))
    if not scans:
      return None
    total = approx_total
    for exact in (False, True):
      if exact:
        total = self._node_sums(node)[0]
      proxies = [proxy(sum_left, cand, n, total) for _, _, cand, sum_left in scans]
      top = max(p.max() for p in proxies)
      pairs = {(float(a), int(k)) for (_, _, cand, sum_left), p in zip(scans, proxies)
               for a, k in zip(sum_left[p >= top - tolerance], cand[p >= top - tolerance])}
      if exact or len(pairs) == 1:
        break
    return _first_best(scans, proxies)

  # -- the builder's decisions ---------------------------------------------------------------------------------
  def _attempted(self, node):
    """Whether scikit-learn calls the splitter on this node (and so draws random numbers)."""
    view = self._view
    level = depth(node)
    if level >= MAX_DEPTH or (node > 0 and view.split((node - 1) // 2) is None):
      return False
    if level <= view.decided_level:
      return bool(view.attempted(node))
    if node not in self._attempts:   # a child of a node split at the level being searched
      r = self._r[self.members(node)]
      if r.size < 2:
        decision = False
      else:
        n, squares, abs_sum = float(r.size), float(np.sum(r * r)), float(np.sum(np.abs(r)))
        mean = float(np.sum(r)) / n
        impurity = squares / n - mean * mean
        rp = self._r[self.members((node - 1) // 2)]
        margin = bounds.impurity_margin(n, squares, abs_sum, bounds.gamma(n) * abs_sum, float(rp.size),
                                        float(np.sum(rp * rp)), float(np.sum(np.abs(rp))))
        if abs(impurity - EPSILON) <= margin:
          impurity = self.impurity(node)
        decision = bool(impurity > EPSILON)
      self._attempts[node] = decision
    return self._attempts[node]

  def _improvement(self, node, feature, threshold):
    """Criterion.impurity_improvement of the split, as node_split_best computes it after partitioning."""
    left, right = self._children_impurity(node, (feature, threshold))
    n, n_all = float(self.members(node).size), float(self._x.shape[0])
    n_left = float(np.count_nonzero(self._x[self.members(node), feature] <= threshold))
    n_right = n - n_left
    return (n / n_all) * (self.impurity(node) - (n_right / n * right) - (n_left / n * left))

  # -- the splitter's random draws -----------------------------------------------------------------------------
  def draws(self, node):
    """(dimensions evaluated, dimensions sorted (those plus the ones found constant), constants known after) of
    the node's splitter call, in the order drawn."""
    while node not in self._draws:
      u = PREORDER[self._cursor]
      self._cursor += 1
      if self._attempted(u):
        self._simulate(u)
    return self._draws[node]

  def _rand_int(self, low, high):
    """sklearn/tree/_utils.pyx rand_int: xorshift32 (our_rand_r) modulo the range."""
    s = self._rng if self._rng != 0 else 1
    s ^= (s << 13) & 0xFFFFFFFF
    s ^= s >> 17
    s ^= (s << 5) & 0xFFFFFFFF
    self._rng = s
    return low + (s % (RAND_R_MAX + 1)) % (high - low)

  def _simulate(self, node):
    """node_split_best's draws: Fisher–Yates over the dimensions; known constants first, found ones set aside."""
    inside = self.members(node)
    constant = np.zeros(self._x.shape[1], dtype=bool)
    maybe = np.flatnonzero(self._codes.max_run >= inside.size)   # more values cannot fit within 1e-7
    if maybe.size:
      values = self._x[inside][:, maybe]
      constant[maybe] = values.max(axis=0) <= values.min(axis=0) + FEATURE_THRESHOLD
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

  # -- the order of a node's samples ---------------------------------------------------------------------------
  def _arrangement_of(self, node):
    """The node's samples in scikit-learn's array at the start of its split search."""
    if node not in self._arrangement:
      parent = (node - 1) // 2
      left, right = self._partition(parent, self._view.split(parent))
      self._arrangement[2 * parent + 1], self._arrangement[2 * parent + 2] = left, right
    return self._arrangement[node]

  def _partition(self, parent, split):
    """partition_samples_final of `parent` by `split`, from the order its last sort left: (left, right)."""
    key = (parent, split)
    if key not in self._children:
      samples = self._sorted_by(parent, self.draws(parent)[1])
      feature, threshold = split
      self._children[key] = partition_like_sklearn(samples, self._x[samples, feature] <= threshold)
    return self._children[key]

  def _inside(self, node):
    if node not in self._insides:
      mask = np.zeros(self._x.shape[0], dtype=bool)
      mask[self.members(node)] = True
      self._insides[node] = mask
    return self._insides[node]

  def _presorted_by(self, node, f):
    """(the node's samples sorted by dimension f, stably; whether equal values there belong to samples that
    are not interchangeable). Samples with the same code and the same target are interchangeable: no sum or
    comparison can tell them apart, so any order among them is scikit-learn's."""
    key = (node, f)
    if key not in self._presorted:
      order = self._codes.order[f]
      result = order[self._inside(node)[order]]
      v = self._x[result, f]
      tie = v[1:] == v[:-1]
      mixed = False
      if tie.any():
        a, b = result[:-1][tie], result[1:][tie]
        mixed = bool(np.any((self._codes.row[a] != self._codes.row[b]) | (self._r[a] != self._r[b])))
      self._presorted[key] = (result, mixed)
    return self._presorted[key]

  def _sorted_by(self, node, features):
    """The node's samples after the splitter sorted them by each of `features` in turn."""
    if not features:
      return self._arrangement_of(node)
    key = (node, tuple(features))
    if key not in self._sorted:
      result, mixed = self._presorted_by(node, features[-1])
      if mixed:
        previous = self._sorted_by(node, features[:-1])
        result = introsort.simultaneous_sort(self._x[previous, features[-1]], previous)
      self._sorted[key] = result
    return self._sorted[key]

  # -- Criterion sums ------------------------------------------------------------------------------------------
  def _node_sums(self, node):
    """Σr and Σr² in scikit-learn's order of the node's samples (Criterion.init)."""
    if node not in self._sums:
      r = self._r[self._arrangement_of(node)]
      self._sums[node] = (sequential_sum(r), sequential_sum(r * r))
    return self._sums[node]

  def _children_impurity(self, parent, split=None):
    """Criterion.children_impurity after the split of `parent` (the view's, or `split`): (left, right)."""
    left, right = self._partition(parent, split or self._view.split(parent))
    total, squares = self._node_sums(parent)
    n_left, n_right = float(left.size), float(right.size)
    if left.size <= right.size:
      sum_left = sequential_sum(self._r[left])
    else:
      sum_left = sequential_sum(np.concatenate([[total], -self._r[right[::-1]]]))
    sq_left = sequential_sum(self._r[left] * self._r[left])
    sum_right, sq_right = total - sum_left, squares - sq_left
    mean_left, mean_right = sum_left / n_left, sum_right / n_right
    return sq_left / n_left - mean_left * mean_left, sq_right / n_right - mean_right * mean_right


def _first_best(scans, proxies):
  """The first strictly best candidate, dimensions in draw order: (dimension, threshold)."""
  best, best_proxy = None, -np.inf
  for (f, v, cand, _), p in zip(scans, proxies):
    j = int(np.argmax(p))
    if p[j] > best_proxy:
      best_proxy, pos = p[j], cand[j]
      best = (f, float(np.float64(v[pos - 1]) / 2.0 + np.float64(v[pos]) / 2.0))
  return best


def proxy(sum_left, n_left, n, total):
  """MSE.proxy_impurity_improvement: Σ_L² / n_L + Σ_R² / n_R, as scikit-learn computes it."""
  n_left = n_left.astype(np.float64)
  sum_right = total - sum_left
  return sum_left * sum_left / n_left + sum_right * sum_right / (n - n_left)


def sequential_sum(values):
  """Σ in index order, as scikit-learn's loops add (ufunc.accumulate is sequential; np.sum is pairwise)."""
  return float(np.add.accumulate(values)[-1]) if values.size else 0.0


def sums_left_like_sklearn(r, cand, node_total):
  """Criterion.update's Σ_L r at each candidate: added from the previous candidate, or (when that is the shorter
  way) from the node total (`node_total()`) downwards from the end."""
  n = r.size
  prev = np.zeros_like(cand)
  prev[1:] = cand[:-1]
  backward = (cand - prev) > (n - cand)
  if not backward.any():
    return np.add.accumulate(r)[cand - 1]
  total = node_total()
  out = np.empty(cand.size)
  value, at = 0.0, 0
  for i, p in enumerate(cand):
    if backward[i]:
      value = sequential_sum(np.concatenate([[total], -r[p:][::-1]]))
    else:
      value = sequential_sum(np.concatenate([[value], r[at:p]]))
    out[i], at = value, p
  return out


def partition_like_sklearn(samples, goes_left):
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
