"""The fast split search: the trees of a boosting stage (one per factor and class) grown together, level by level.

Each dimension's sorted positions are cut into blocks of `BLOCK` and coarse blocks of `GROUP` blocks. One sparse
product per level gives, for every node, its block sums of r, of the positive r and of its members (for a node's
smaller child; the sibling is the parent minus it). At block starts the proxy Σ_L²/n_L + Σ_R²/n_R is known and
gives a lower bound of the node's best split; inside a block the proxy is jointly convex in (Σ_L r, n_L), so the
corners of the box of reachable values bound it from above. Coarse blocks and then blocks that cannot hold the best
split are skipped, and the rest are scanned position by position.

All sums here are rounded differently from scikit-learn's. A decision is taken here only when it holds for every
rounding within the worst-case bounds of `bounds` (the best split beats all others by more than twice the proxy
error; an impurity is farther from EPSILON than its margin; the best split's improvement clears the builder's
test); otherwise the node goes to its tree's `replay.Replay`, which computes it with scikit-learn's arithmetic.
The search reads the replays' answers and keeps its own state; replays read the tree only through a `TreeView`.
"""
import numpy as np
import scipy.sparse

from decompvae.metrics._gbt import bounds
from decompvae.metrics._gbt.data import Codes
from decompvae.metrics._gbt.replay import EPSILON, MAX_DEPTH, PREORDER, Replay

NUM_NODES = 2 ** (MAX_DEPTH + 1) - 1   # heap numbering: the children of node h are 2h + 1 and 2h + 2
BLOCK = 32   # sorted positions per block of the split search
GROUP = 8    # blocks per coarse block


class Blocks:
  """The block structure of the codes' sorted positions (see the module docstring) and scratch buffers."""

  def __init__(self, codes: Codes):
    n, d = codes.num_train, codes.num_dims
    self.num_blocks = nb = -(-n // BLOCK)
    rank = np.empty_like(codes.order)
    np.put_along_axis(rank, codes.order, np.arange(n)[None, :], axis=1)
    rows = (np.arange(d)[:, None] * nb + rank // BLOCK).ravel()
    cols = np.tile(np.arange(n), d)
    self.matrix = scipy.sparse.csr_matrix((np.ones(n * d), (rows, cols)), shape=(d * nb, n))
    self.matrix32 = self.matrix.astype(np.float32)   # member counts are exact integers in float32
    self.block_size = np.minimum(BLOCK, n - np.arange(nb) * BLOCK)
    # A split at the boundary before block b is valid for any node when the sorted values there differ enough.
    boundary = np.arange(1, nb) * BLOCK - 1
    self.safe_boundary = np.zeros((d, nb), dtype=bool)
    self.safe_boundary[:, 1:] = codes.last[:, boundary] == boundary
    self._buffers = {}

  def buffer(self, name, shape, dtype):
    """A scratch array kept between stages (fresh large arrays cost page faults every time)."""
    array = self._buffers.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
      array = self._buffers[name] = np.empty(shape, dtype=dtype)
    return array


class _View:
  """A tree of a stage as its replay sees it (read-only)."""

  def __init__(self, stage, tree):
    self._stage, self._tree = stage, tree

  @property
  def decided_level(self):
    return self._stage.decided_level

  def attempted(self, node):
    return bool(self._stage.attempted[self._tree, node])

  def split(self, node):
    stage, tree = self._stage, self._tree
    if not stage.split[tree, node]:
      return None
    return int(stage.feature[tree, node]), float(stage.threshold[tree, node])


class Stage:
  """The trees of one boosting stage, grown together level by level.

  Nodes are numbered as a heap (root 0). Per tree and node: sample count, Σr, Σr², Σ|r| (summed in some order,
  with bounds on their errors), impurity (`exact` where a replay computed it), whether scikit-learn calls its
  splitter (`attempted`; that draws random numbers) and the split (`feature`, `threshold`).

  Args:
    codes, blocks: the fit's codes and their block structure.
    targets: [N, T] the negative gradients, one column per tree.
    seeds: [T] the trees' seeds.
  """

  def __init__(self, codes: Codes, blocks: Blocks, targets: np.ndarray, seeds: np.ndarray):
    self.codes, self.blocks = codes, blocks
    self.g = np.ascontiguousarray(targets, dtype=np.float64)                   # [N, T]
    self.seeds = seeds
    self.num_trees = t = self.g.shape[1]
    self.heap = np.zeros(self.g.shape, dtype=np.int8)                          # node of each sample
    shape = (t, NUM_NODES)
    self.count, self.total, self.squares, self.impurity = (np.zeros(shape) for _ in range(4))
    self.abs_sum = np.zeros(shape)      # upper bound of Σ|r|
    self.total_err = np.zeros(shape)    # bound on the error of `total`
    self.sum_err = np.zeros(shape)      # bound on the errors of the block and prefix sums of the node
    self.exact = np.zeros(shape, dtype=bool)
    self.attempted = np.zeros(shape, dtype=bool)
    self.split = np.zeros(shape, dtype=bool)
    self.feature = np.zeros(shape, dtype=np.intp)
    self.threshold = np.zeros(shape)
    self.left_count, self.left_total = np.zeros(shape), np.zeros(shape)   # of each split's left child
    self.small, self.coarse = {}, {}   # block sums per level, see _block_stats
    self.decided_level = -1
    self.num_replayed = 0
    self._gamma = float(bounds.gamma(4 * codes.num_train))
    self._replays = {}

  def replay(self, tree):
    if tree not in self._replays:
      self._replays[tree] = Replay(self.codes, self.g[:, tree], self.seeds[tree], _View(self, tree))
    return self._replays[tree]

  def grow(self):
    for level in range(MAX_DEPTH):
      self._node_stats(level)
      self._decide_attempts(level)
      if self.attempted[:, 2 ** level - 1:2 ** (level + 1) - 1].any():
        self._search(level)
        self.heap = self._descend(self.codes.x, self.heap)
    self._node_stats(MAX_DEPTH)
    self._take_exact_impurities(MAX_DEPTH)
    self.test_leaves = self._leaves(self.codes.x_test)
    return self

  # -- node statistics and the leaf test -------------------------------------------------------------------------
  def _node_stats(self, level):
    nodes = slice(2 ** level - 1, 2 ** (level + 1) - 1)
    g = self._gamma
    if level == 0:
      n = self.g.shape[0]
      self.count[:, 0] = n
      gt = np.ascontiguousarray(self.g.T)              # sums per tree that do not depend on the other trees
      self.total[:, 0] = np.sum(gt, axis=1)
      self.squares[:, 0] = np.sum(gt * gt, axis=1)
      self.abs_sum[:, 0] = np.sum(np.abs(gt), axis=1) * (1.0 + 2.0 * g)
      self.total_err[:, 0] = g * self.abs_sum[:, 0]
      self.impurity[:, 0] = self.squares[:, 0] / n - (self.total[:, 0] / n) ** 2
      return
    parents = (np.arange(nodes.start, nodes.stop) - 1) // 2
    is_left = (np.arange(nodes.start, nodes.stop) % 2) == 1
    for array, left in ((self.count, self.left_count), (self.total, self.left_total)):
      array[:, nodes] = np.where(is_left, left[:, parents], array[:, parents] - left[:, parents])
    # Σ_L from a scan or a replay (error within the parent's sum error), Σ_R = parent − Σ_L.
    self.total_err[:, nodes] = (self.total_err[:, parents] + self.sum_err[:, parents] +
                                g * self.abs_sum[:, parents] + bounds.UNIT_ROUNDOFF * self.count[:, parents])
    self.abs_sum[:, nodes] = self.abs_sum[:, parents]   # refined for searched nodes in _block_stats
    key = (self.heap + (NUM_NODES + 1) * np.arange(self.num_trees)[None, :].astype(np.int64)).ravel()
    self.squares[:, nodes] = np.bincount(key, weights=(self.g * self.g).ravel(),
                                         minlength=(NUM_NODES + 1) * self.num_trees).reshape(
        self.num_trees, -1)[:, nodes]
    with np.errstate(divide="ignore", invalid="ignore"):
      n = self.count[:, nodes]
      approx = self.squares[:, nodes] / n - (self.total[:, nodes] / n) ** 2
    self.impurity[:, nodes] = np.where(self.exact[:, nodes], self.impurity[:, nodes], approx)

  def _impurity_margin(self, lo, hi):
    parents = np.maximum((np.arange(lo, hi) - 1) // 2, 0)
    if lo == 0:
      parents = np.arange(lo, hi)   # the root's sums are its own
    return bounds.impurity_margin(self.count[:, lo:hi], self.squares[:, lo:hi], self.abs_sum[:, lo:hi],
                                  self.total_err[:, lo:hi], self.count[:, parents], self.squares[:, parents],
                                  self.abs_sum[:, parents])

  def _decide_attempts(self, level):
    """scikit-learn splits a node unless n < 2 or impurity <= EPSILON; impurities within their margin of EPSILON
    are taken from a replay."""
    lo, hi = 2 ** level - 1, 2 ** (level + 1) - 1
    exists = np.ones((self.num_trees, hi - lo), dtype=bool) if level == 0 else \
        np.repeat(self.split[:, (lo - 1) // 2:(hi - 1) // 2], 2, axis=1)
    n, imp = self.count[:, lo:hi], self.impurity[:, lo:hi]
    self._take_exact_impurities(level)
    with np.errstate(invalid="ignore"):
      unsure = exists & (n >= 2) & ~self.exact[:, lo:hi] & (np.abs(imp - EPSILON) <= self._impurity_margin(lo, hi))
    for tree, j in zip(*np.nonzero(unsure)):
      self._record_impurity(tree, lo + j, self.replay(tree).impurity(lo + j))
    self.attempted[:, lo:hi] = exists & (n >= 2) & (self.impurity[:, lo:hi] > EPSILON)
    for tree, replay in self._replays.items():
      for node, decision in replay.attempts().items():
        if lo <= node < hi:
          self.attempted[tree, node] = decision
    self.decided_level = level

  def _take_exact_impurities(self, level):
    """Impurities the replays computed for nodes of this level (they replace the approximate ones)."""
    lo, hi = 2 ** level - 1, 2 ** (level + 1) - 1
    for tree, replay in self._replays.items():
      for node, value in replay.exact_impurities().items():
        if lo <= node < hi:
          self._record_impurity(tree, node, value)

  def _record_impurity(self, tree, node, value):
    self.impurity[tree, node] = value
    self.exact[tree, node] = True

  # -- the split search --------------------------------------------------------------------------------------------
  def _block_stats(self, level):
    """Per node of this level and sorted block of every dimension: the sums of its members' targets and of the
    positive ones (float64), and their number (float32). Only a node's smaller child is summed (sparse products
    over the blocks); its sibling is the parent minus it, formed where needed (`_fine`). Coarse blocks (sums of
    GROUP blocks) are kept for every node: [D, NG, T, M] each. Also sets the nodes' Σ|r| and sum error bounds."""
    codes, blk = self.codes, self.blocks
    shape = (codes.num_dims, blk.num_blocks, self.num_trees)
    g = self._gamma
    if level == 0:
      self.g_pos = np.maximum(self.g, 0.0, out=blk.buffer("g_pos", self.g.shape, np.float64))
      both = np.concatenate([self.g, self.g_pos], axis=1)
      sums = _sparse_product(blk.matrix, both).reshape(shape[:2] + (2, self.num_trees))
      parts = [sums[:, :, 0, :, None], sums[:, :, 1, :, None],
               np.broadcast_to(blk.block_size[None, :, None, None].astype(np.float32), shape + (1,))]
      self.small[0] = (parts, None)
      self.coarse[0] = [_coarsen(a) for a in parts]
      self.sum_err[:, 0] = 2.0 * g * self.abs_sum[:, 0]
      return
    parents = 2 ** (level - 1)
    first = parents - 1
    heads = np.arange(first, first + parents)
    small_right = self.count[:, 2 * heads + 2] < self.count[:, 2 * heads + 1]   # [T, P]: sum the smaller child
    small = 2 * heads[None, :] + 1 + small_right
    n, t = self.g.shape
    both = blk.buffer("both", (n, 2, parents, t), np.float64)       # targets, positive targets
    member = blk.buffer("member", (n, parents, t), np.float32)
    sel = blk.buffer("sel", (n, t), bool)
    for j in range(parents):
      np.equal(self.heap, small[None, :, j], out=sel)
      sel &= self.split[None, :, first + j]
      mask = member[:, j]
      mask[...] = sel
      np.multiply(self.g, mask, out=both[:, 0, j])
      np.multiply(self.g_pos, mask, out=both[:, 1, j])
    sums = _sparse_product(blk.matrix, both.reshape(n, -1)).reshape(shape[:2] + (2, parents, t))
    counts = _sparse_product(blk.matrix32, member.reshape(n, -1)).reshape(shape[:2] + (parents, t))
    parts = [np.moveaxis(a, -2, -1) for a in (sums[:, :, 0], sums[:, :, 1], counts)]   # [D, NB, T, P]
    self.small[level] = (parts, small_right)
    sr = small_right[None, None, :, :]
    self.coarse[level] = []
    for part, whole in zip(parts, self.coarse[level - 1]):
      c = _coarsen(part)
      rest = whole - c
      pair = np.empty(c.shape[:3] + (2 * parents,), dtype=c.dtype)
      pair[..., 0::2] = np.where(sr, rest, c)
      pair[..., 1::2] = np.where(sr, c, rest)
      self.coarse[level].append(pair)
    # Σ|r| = 2 Σ r⁺ − Σ r of the summed child (from dimension 0's blocks); bounds of the block sums' errors.
    abs_small = np.maximum(2.0 * parts[1][0].sum(axis=0) - parts[0][0].sum(axis=0), 0.0) * (1.0 + 4.0 * g)   # [T, P]
    rows = np.arange(self.num_trees)[:, None]
    small_node, big_node = small, 2 * heads[None, :] + 2 - small_right
    parent_abs = self.abs_sum[:, heads]
    self.abs_sum[rows, small_node] = abs_small
    self.abs_sum[rows, big_node] = parent_abs
    self.sum_err[rows, small_node] = 2.0 * g * abs_small
    self.sum_err[rows, big_node] = self.sum_err[:, heads] + 2.0 * g * abs_small + 2.0 * g * parent_abs

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
    codes, blk = self.codes, self.blocks
    width = 2 ** level
    first = width - 1
    nodes = slice(first, first + width)
    self._block_stats(level)
    active = self.attempted[:, nodes]                                           # [T, M]
    n, s = self.count[:, nodes], self.total[:, nodes]
    error = (self.total_err[:, nodes] + self.sum_err[:, nodes] + 3.0 * self._gamma * self.abs_sum[:, nodes] +
             bounds.UNIT_ROUNDOFF * n)                                          # Σ errors, ours and scikit-learn's
    widen = 2.0 * error
    tol = 2.0 * bounds.proxy_error(error, n)                                    # proxies are at most n (|r| <= 1)
    # Coarse blocks of GROUP blocks: bound every one, keep those that can hold the best split.
    num_blocks = blk.num_blocks
    c_sum, c_pos, c_cnt = self.coarse[level]
    c_neg = c_sum - c_pos
    c_ps, c_pc = _exclusive_cumsum(c_sum), _exclusive_cumsum(c_cnt)
    safe = blk.safe_boundary[:, ::GROUP][:, :, None, None]
    low = _proxy_at_boundaries(c_ps, c_pc, safe, active, n, s).max(axis=(0, 1))
    high = _proxy_bound(c_ps, c_pc, c_neg - widen, c_pos + widen, c_cnt, active, n, s)
    dg, gg, tg, mg = np.nonzero((high >= low - tol) & (high > -np.inf))
    if dg.size == 0:
      return
    # Their blocks, bounded the same way with the lower bound raised by their boundaries.
    blocks = gg[:, None] * GROUP + np.arange(GROUP)[None, :]
    inside = blocks < num_blocks
    blocks = np.minimum(blocks, num_blocks - 1)
    index = (dg[:, None], blocks, tg[:, None], mg[:, None])
    f_sum, f_pos, f_cnt = (np.where(inside, self._fine(level, k, *index), 0.0) for k in range(3))
    f_neg = f_sum - f_pos
    f_ps = c_ps[dg, gg, tg, mg][:, None] + _exclusive_cumsum(f_sum, axis=1)
    f_pc = c_pc[dg, gg, tg, mg][:, None] + _exclusive_cumsum(f_cnt, axis=1)
    n_g, s_g, active_g = n[tg, mg][:, None], s[tg, mg][:, None], active[tg, mg][:, None]
    w_g = widen[tg, mg][:, None]
    safe_g = blk.safe_boundary[dg[:, None], blocks] & inside
    lows = _proxy_at_boundaries(f_ps, f_pc, safe_g, active_g, n_g, s_g).max(axis=1)
    np.maximum.at(low, (tg, mg), lows)
    high = _proxy_bound(f_ps, f_pc, f_neg - w_g, f_pos + w_g, f_cnt, active_g, n_g, s_g)
    r, j = np.nonzero((high >= (low - tol)[tg, mg][:, None]) & (high > -np.inf))
    if r.size == 0:
      return
    d, b, t, m = dg[r], blocks[r, j], tg[r], mg[r]
    # The block after each kept block holding a member of its node (to find the next member of the last one).
    later = (np.arange(GROUP)[None, :] > j[:, None]) & (f_cnt[r] > 0.5)
    next_block = np.where(later.any(axis=1), gg[r] * GROUP + np.argmax(later, axis=1), -1)
    far = np.flatnonzero(next_block < 0)
    if far.size:
      groups = c_cnt[dg[r[far]], :, tg[r[far]], mg[r[far]]] > 0.5
      groups &= np.arange(groups.shape[1])[None, :] > gg[r[far], None]
      g_next = np.argmax(groups, axis=1)
      in_group = np.minimum(g_next[:, None] * GROUP + np.arange(GROUP)[None, :], num_blocks - 1)
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
    # A best split whose improvement could fail the builder's test improvement + EPSILON >= 0 is replayed too.
    node_ids = first + gm
    imp_margin = self._impurity_margin(first, first + width)[gt, gm]
    gain = top[best] - s[gt, gm] * s[gt, gm] / n[gt, gm]
    weak = found & (gain <= bounds.improvement_margin(
        n[gt, gm], self.squares[gt, node_ids] * (1 + 2 * self._gamma), self.abs_sum[gt, node_ids], error[gt, gm],
        imp_margin, tol[gt, gm] / 2.0, codes.num_train))
    # Clear winners: the split after the chosen member; the threshold is the midpoint with the next member.
    win = best[found & ~near & ~weak]
    if win.size:
      q, nxt = pos[win, col[win]], next_pos[win, col[win]]
      sv = codes.sorted
      node = first + m[win]
      self.feature[t[win], node] = d[win]
      self.threshold[t[win], node] = np.float64(sv[d[win], q]) / 2.0 + np.float64(sv[d[win], nxt]) / 2.0
      self.split[t[win], node] = True
      self.left_count[t[win], node] = n_left[win, col[win]]
      self.left_total[t[win], node] = sum_left[win, col[win]]
    # Near ties and weak splits: replayed with scikit-learn's arithmetic, in the order it builds each tree.
    replay_groups = np.flatnonzero(near | weak)
    if replay_groups.size:
      group_of_row = np.empty(d.size, dtype=np.intp)
      group_of_row[order] = np.cumsum(np.r_[True, key_sorted[1:] != key_sorted[:-1]]) - 1
      for g_idx in sorted(replay_groups, key=lambda i: (gt[i], gm[i])):
        tree, node = gt[g_idx], first + gm[g_idx]
        rows_g = np.flatnonzero((group_of_row == g_idx) & (top >= top[best[g_idx]] - tol[tree, gm[g_idx]]))
        contenders = set(d[rows_g].tolist())
        result = self.replay(tree).best_split(node, contenders, tol[tree, gm[g_idx]], bool(weak[g_idx]))
        self.num_replayed += 1
        if result is not None:
          self.feature[tree, node], self.threshold[tree, node] = result.feature, result.threshold
          self.split[tree, node] = True
          self.left_count[tree, node] = result.num_left
          self.left_total[tree, node] = result.sum_left

  def _scan_blocks(self, level, d, b, t, m, prefix_sum, prefix_count, n, s, next_block):
    """Proxies inside the kept blocks, position by position: [rows, BLOCK] (−inf where no valid split ends),
    with the membership of the positions and the sorted position of each member's next member in the node."""
    codes = self.codes
    first = 2 ** level - 1
    num = codes.num_train
    cols = np.arange(BLOCK)
    pos = b[:, None] * BLOCK + cols[None, :]
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
    at = np.where(member, cols[None, :], BLOCK)
    after = np.full(at.shape, BLOCK)
    after[:, :-1] = np.minimum.accumulate(at[:, :0:-1], axis=1)[:, ::-1]
    next_pos = b[:, None] * BLOCK + after
    rows = np.flatnonzero((member & (after == BLOCK)).any(axis=1) & (next_block >= 0))
    if rows.size:
      nb = next_block[rows]
      there = np.minimum(nb[:, None] * BLOCK + cols[None, :], num - 1)
      hit = self.heap[codes.order[d[rows, None], there], t[rows, None]] == node[rows]
      first_after = nb * BLOCK + np.argmax(hit, axis=1)
      next_pos[rows] = np.where(after[rows] == BLOCK, first_after[:, None], next_pos[rows])
    # A split is valid when the next member's value exceeds this one's by more than FEATURE_THRESHOLD.
    valid = member & (n_left < nn) & (next_pos > codes.last.ravel().take(d[:, None] * num + pos))
    with np.errstate(divide="ignore", invalid="ignore"):
      sum_right = ss - sum_left
      proxy = np.where(valid, sum_left * sum_left / n_left + sum_right * sum_right / (nn - n_left), -np.inf)
    return proxy, next_pos, pos, n_left, sum_left

  def _descend(self, x, heap):
    """Move the samples of the split nodes (all at the current level) to their children (left: x <= threshold)."""
    width = NUM_NODES + 1
    shape = heap.shape
    node = self.blocks.buffer(f"node{shape}", shape, np.intp)
    np.add(heap, width * np.arange(self.num_trees)[None, :], out=node)
    tables = np.zeros((3, self.num_trees, width))
    tables[0, :, :NUM_NODES] = self.feature
    tables[1, :, :NUM_NODES] = self.threshold
    tables[2, :, :NUM_NODES] = self.split
    feature = self.blocks.buffer(f"feature{shape}", shape, np.intp)
    np.take(tables[0].astype(np.intp).ravel(), node, out=feature)
    right = np.take_along_axis(x, feature, axis=1) > tables[1].ravel().take(node)
    go = tables[2].astype(bool).ravel().take(node)
    return np.where(go, 2 * heap + 1 + right, heap).astype(np.int8)

  def _leaves(self, x):
    heap = np.zeros((x.shape[0], self.num_trees), dtype=np.int8)
    for _ in range(MAX_DEPTH):
      heap = self._descend(x, heap)
    return heap

  def importances(self, tree):
    """compute_feature_importances(normalize=False): Σ over splits of n·imp − n_L·imp_L − n_R·imp_R, / N."""
    out = np.zeros(self.codes.num_dims)
    n, imp = self.count[tree], self.impurity[tree]
    for h in PREORDER:
      if self.split[tree, h]:
        left, right = 2 * h + 1, 2 * h + 2
        out[self.feature[tree, h]] += n[h] * imp[h] - n[left] * imp[left] - n[right] * imp[right]
    return out / n[0]


def _sparse_product(matrix, values, chunk=64):
  """matrix @ values, by chunks of columns small enough to stay in cache while every block row reads them."""
  if values.shape[1] <= 2 * chunk:
    return matrix @ values
  return np.concatenate([matrix @ np.ascontiguousarray(values[:, i:i + chunk])
                         for i in range(0, values.shape[1], chunk)], axis=1)


def _coarsen(a):
  """Sums of GROUP consecutive blocks (axis 1)."""
  return np.add.reduceat(a, np.arange(0, a.shape[1], GROUP), axis=1)


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
  (s_L between the block start plus its members' negative and positive sums, widened by their error bounds, n_L up
  to its member count) it is largest at a corner.
  """
  k_lo, k_hi = prefix_count + 1.0, np.minimum(prefix_count + count, n - 1)
  high = np.full(np.broadcast_shapes(prefix_sum.shape, n.shape), -np.inf)
  with np.errstate(divide="ignore", invalid="ignore"):
    for sum_left in (prefix_sum + negative, prefix_sum + positive):
      sum_right = s - sum_left
      for k in (k_lo, k_hi):
        high = np.maximum(high, sum_left * sum_left / k + sum_right * sum_right / (n - k))
  return np.where((count > 0) & (k_lo <= k_hi) & active, high, -np.inf)
