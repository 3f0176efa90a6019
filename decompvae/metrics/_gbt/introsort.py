"""scikit-learn's tree sort (`simultaneous_sort`, 3-way introsort), simulated to the position of every element.

A node's samples are sorted by a feature before its splits are scanned (sklearn/tree/_partitioner.pyx, which calls
sklearn/utils/_sorting.pyx with `use_three_way_partition=True`). The sort is not stable: where equal values belong
to samples with different targets, the order it leaves them in decides the rounding of the node's running sums.
This module computes that order exactly, running introsort (Musser, SP&E 1997) step by step as scikit-learn 1.9
does:

* a segment of more than 15 elements is partitioned around the median of its first, middle (n // 2) and last values
  (Bentley & McIlroy 1993) by a Dijkstra 3-way sweep (< pivot swapped to the front, > pivot to the back, = pivot
  stepped over); the < part and the > part are then sorted in turn, each with one unit less of depth budget
  (2 ⌊log₂ n⌋ at the start);
* a segment of more than 15 elements with no budget left is heap-sorted;
* a segment of at most 15 elements is insertion-sorted, which is stable.

Segments are independent, so they are sorted from a stack in any order. On Python lists this takes ~30 ms for
10,000 values (an array-operation version, all segments of a depth at once, was slower at every size measured).
"""
import numpy as np

_SMALL = 15   # segments this short are insertion-sorted


def simultaneous_sort(values: np.ndarray, samples: np.ndarray) -> np.ndarray:
  """The order `samples` take when scikit-learn sorts them by `values` (float32, no NaN).

  Args:
    values: [n] float32 values of the samples, in their current order.
    samples: [n] sample indices in their current order.

  Returns:
    [n] the sample indices as scikit-learn's sort leaves them.
  """
  samples = np.asarray(samples)
  n = samples.size
  if n <= 1:
    return samples.copy()
  budget = 2 * (n.bit_length() - 1)   # 2 * (intp)log2(n), exact for integers
  # float32 values compare alike as Python floats (exact conversion)
  return _sort_lists(np.asarray(values, dtype=np.float32).tolist(), samples.tolist(), budget, samples.dtype)


def _sort_lists(v, s, budget, dtype):
  """The sort of `simultaneous_sort` on lists: values v and samples s, in place; returns s as an array."""
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
