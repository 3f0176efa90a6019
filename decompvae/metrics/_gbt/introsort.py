"""scikit-learn's tree sort (`simultaneous_sort`, 3-way introsort), simulated to the position of every element.

A node's samples are sorted by a feature before its splits are scanned (sklearn/tree/_partitioner.pyx, which calls
sklearn/utils/_sorting.pyx with `use_three_way_partition=True`). The sort is not stable: where equal values belong
to samples with different targets, the order it leaves them in decides the rounding of the node's running sums.
This module computes that order exactly. Introsort (Musser, SP&E 1997) as scikit-learn 1.9 runs it:

* a segment of more than 15 elements is partitioned around the median of its first, middle (n // 2) and last values
  by a Dijkstra 3-way sweep (< pivot swapped to the front, > pivot to the back, = pivot stepped over); the < part
  and the > part are then sorted in turn, each with one unit less of depth budget (2 ⌊log₂ n⌋ at the start);
* a segment of more than 15 elements with no budget left is heap-sorted;
* a segment of at most 15 elements is insertion-sorted, which is stable.

Segments are independent, so all segments of one depth are partitioned at once with array operations. The sweep's
outcome has a closed form: the front pointer accepts the elements that are not > pivot in the order it meets them
(its own positions, with each > pivot it meets replaced by the next not-> element from the back), sends the others
to the back in that order, and the < elements it accepts rotate the queue of = elements already accepted.
"""
import numpy as np

_SMALL = 15   # segments this short are insertion-sorted
_SCALAR_UP_TO = 4096   # arrays up to this size are sorted element by element (array operations cost more there)


def simultaneous_sort(values: np.ndarray, samples: np.ndarray) -> np.ndarray:
  """The order `samples` take when scikit-learn sorts them by `values` (float32, no NaN).

  Args:
    values: [n] float32 values of the samples, in their current order.
    samples: [n] sample indices in their current order.

  Returns:
    [n] the sample indices as scikit-learn's sort leaves them.
  """
  v = np.array(values, dtype=np.float32)
  s = np.array(samples)
  n = v.size
  if n <= 1:
    return s
  budget = 2 * (n.bit_length() - 1)   # 2 * (intp)log2(n), exact for integers
  if n <= _SCALAR_UP_TO:
    return _sort_lists(v.tolist(), s.tolist(), budget, s.dtype)
  starts, lengths = np.zeros(1, dtype=np.intp), np.full(1, n, dtype=np.intp)
  done_starts, done_lengths = [], []
  while starts.size:
    big = lengths > _SMALL
    done_starts.append(starts[~big])
    done_lengths.append(lengths[~big])
    starts, lengths = starts[big], lengths[big]
    if not starts.size:
      break
    if budget <= 0:
      for a, m in zip(starts.tolist(), lengths.tolist()):
        _heapsort(v, s, a, m)
      break
    budget -= 1
    starts, lengths = _partition_segments(v, s, starts, lengths)
  _insertion_sort_segments(v, s, np.concatenate(done_starts), np.concatenate(done_lengths))
  return s


def _sort_lists(v, s, budget, dtype):
  """The same sort, step by step on Python lists (float32 values compare alike as Python floats)."""
  stack = [(0, len(v), budget)]
  while stack:
    lo, m, budget = stack.pop()
    while m > _SMALL:
      if budget <= 0:
        values, items = v[lo:lo + m], s[lo:lo + m]
        _heapsort_lists(values, items)
        v[lo:lo + m], s[lo:lo + m] = values, items
        m = 0
        break
      budget -= 1
      a, b, c = v[lo], v[lo + m // 2], v[lo + m - 1]
      pivot = (b if b < c else (c if a < c else a)) if a < b else ((a if a < c else c) if b < c else b)
      i = low = lo
      high = lo + m
      while i < high:
        x = v[i]
        if x < pivot:
          v[i], v[low] = v[low], x
          s[i], s[low] = s[low], s[i]
          i += 1
          low += 1
        elif x > pivot:
          high -= 1
          v[i], v[high] = v[high], x
          s[i], s[high] = s[high], s[i]
        else:
          i += 1
      stack.append((lo, low - lo, budget))
      m -= high - lo
      lo = high
    if m > 1:   # insertion sort: stable
      order = sorted(range(lo, lo + m), key=v.__getitem__)
      v[lo:lo + m], s[lo:lo + m] = [v[k] for k in order], [s[k] for k in order]
  return np.array(s, dtype=dtype)


def _segment_ids(starts, lengths):
  """(positions of all elements of the segments, segment of each, position within its segment)."""
  total = int(lengths.sum())
  seg = np.repeat(np.arange(starts.size), lengths)
  offsets = np.cumsum(lengths) - lengths
  local = np.arange(total) - offsets[seg]
  return starts[seg] + local, seg, local


def _median3(a, b, c):
  """The median of three values as scikit-learn's `median3` picks it (Bentley & McIlroy 1993)."""
  return np.where(a < b, np.where(b < c, b, np.where(a < c, c, a)),
                  np.where(b < c, np.where(a < c, a, c), b))


def _within(seg, flags, num_segments):
  """Per element: how many elements of its segment before it have `flags` set; and per segment: the total."""
  c = np.cumsum(flags)
  totals = np.bincount(seg, weights=flags, minlength=num_segments).astype(np.intp)
  before_segment = np.cumsum(totals) - totals
  return c - flags - before_segment[seg], totals


def _partition_segments(v, s, starts, lengths):
  """One 3-way partition of every segment, in place; returns the < and > parts as the next segments."""
  pos, seg, local = _segment_ids(starts, lengths)
  k = starts.size
  pivot = _median3(v[starts], v[starts + lengths // 2], v[starts + lengths - 1])
  val = v[pos]
  less, greater = val < pivot[seg], val > pivot[seg]
  keep = ~greater
  # The front/back sweep: not-> elements are accepted at the front pointer, > elements go to the back.
  keep_before, num_keep = _within(seg, keep, k)          # not-> elements before each, per segment
  accepted_at = np.full(pos.size, -1, dtype=np.intp)     # local position in the accepted sequence
  in_front = local < num_keep[seg]
  stay = keep & in_front
  accepted_at[stay] = local[stay]
  holes = greater & in_front                             # filled, in order, by the not-> elements from the back
  hole_rank, _ = _within(seg, holes, k)
  back_keep = keep & ~in_front
  order = np.lexsort((-local[back_keep], seg[back_keep]))   # back elements are met from the end
  from_back = np.flatnonzero(back_keep)[order]
  hole_idx = np.flatnonzero(holes)                       # already in (segment, position) order
  accepted_at[from_back] = local[hole_idx]
  # > elements: met in rounds (a front run ends at a > element, a back run at a not-> one), placed from the end.
  tip = np.minimum(num_keep, lengths - 1)
  front_len = num_keep + ((num_keep < lengths) & (v[starts + tip] > pivot))
  in_front_region = local < front_len[seg]
  greater_before, _ = _within(seg, greater, k)
  keep_after = num_keep[seg] - keep_before - keep
  round_of = np.where(in_front_region, greater_before, keep_after)
  g = np.flatnonzero(greater)
  met = g[np.lexsort((-local[g], ~in_front_region[g], round_of[g], seg[g]))]
  met_rank, _ = _within(seg[met], np.ones(met.size, dtype=np.intp), k)
  final_local = np.empty(pos.size, dtype=np.intp)
  final_local[met] = lengths[seg[met]] - 1 - met_rank
  # Accepted sequence: < elements to the front in order; = elements through the rotating queue.
  acc = np.flatnonzero(keep)
  acc = acc[np.lexsort((accepted_at[acc], seg[acc]))]    # accepted sequence, per segment in acceptance order
  acc_seg = seg[acc]
  acc_less = less[acc]
  less_rank, num_less = _within(acc_seg, acc_less, k)
  final_local[acc[acc_less]] = less_rank[acc_less]
  _queue(acc, acc_seg, acc_less, num_less, final_local, k)
  new_pos = starts[seg] + final_local
  v[new_pos], s[new_pos] = val, s[pos]
  next_starts = np.concatenate([starts, starts + num_keep])
  next_lengths = np.concatenate([num_less, lengths - num_keep])
  return next_starts, next_lengths


def _queue(acc, acc_seg, acc_less, num_less, final_local, k):
  """Final places of the = elements. The = elements accepted so far sit between the < elements and the front
  pointer, a queue: an accepted = element joins its back; an accepted < element swaps with its head, which so
  moves to the back. As a list of pushes, the j-th head move pushes again what push j pushed."""
  equal = ~acc_less
  eq_before, num_eq = _within(acc_seg, equal, k)
  moves = acc_less & (eq_before > 0)                     # with an empty queue the swap is with itself
  move_before, num_moves = _within(acc_seg, moves, k)
  pushed = np.flatnonzero(equal | moves)
  if not pushed.size:
    return
  seg = acc_seg[pushed]
  offset = np.cumsum(num_eq + num_moves) - (num_eq + num_moves)   # first slot of each segment's pushes
  slot = offset[seg] + eq_before[pushed] + move_before[pushed]
  is_move = moves[pushed]
  pointer = np.arange(pushed.size)                       # slot -> slot it copies (itself for = elements)
  pointer[slot[is_move]] = offset[seg[is_move]] + move_before[pushed[is_move]]
  while True:
    nxt = pointer[pointer]
    if np.array_equal(nxt, pointer):
      break
    pointer = nxt
  element = np.empty(pushed.size, dtype=np.intp)
  element[slot] = acc[pushed]
  owner = np.repeat(np.arange(k), num_eq)
  rank = np.arange(owner.size) - (np.cumsum(num_eq) - num_eq)[owner]
  final_slot = offset[owner] + num_moves[owner] + rank   # the queue at the end: the last num_eq pushes
  final_local[element[pointer[final_slot]]] = num_less[owner] + rank


def _insertion_sort_segments(v, s, starts, lengths):
  """Insertion sort of each short segment: stable, so a stable sort by (segment, value)."""
  keep = lengths > 1
  starts, lengths = starts[keep], lengths[keep]
  if not starts.size:
    return
  pos, seg, _ = _segment_ids(starts, lengths)
  order = pos[np.lexsort((v[pos], seg))]
  v[pos], s[pos] = v[order], s[order]


def _heapsort(v, s, start, n):
  """Heap sort of v[start:start + n] (and s alike), step by step as scikit-learn's `heapsort`."""
  values = v[start:start + n].tolist()
  items = s[start:start + n].tolist()
  _heapsort_lists(values, items)
  v[start:start + n] = values
  s[start:start + n] = items


def _heapsort_lists(values, items):
  """Heap sort of the lists in place: sift-down heapify from the last parent, then the maximum to the end."""
  n = len(values)

  def sift(root, end):
    while True:
      child, largest = 2 * root + 1, root
      if child < end and values[largest] < values[child]:
        largest = child
      if child + 1 < end and values[largest] < values[child + 1]:
        largest = child + 1
      if largest == root:
        return
      values[root], values[largest] = values[largest], values[root]
      items[root], items[largest] = items[largest], items[root]
      root = largest

  for root in range((n - 2) // 2, -1, -1):
    sift(root, n)
  for end in range(n - 1, 0, -1):
    values[0], values[end] = values[end], values[0]
    items[0], items[end] = items[end], items[0]
    sift(0, end)
