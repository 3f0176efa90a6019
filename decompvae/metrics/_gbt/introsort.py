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

Segments are independent, so they are sorted from a stack in any order. The loops are compiled by numba (they
only compare and move values, so they are exact on any CPU) and release the GIL, so DCI's threads sort in
parallel: ~0.3 ms for 10,000 values with many ties, against ~4 ms for the same loops in Python on lists, which
is what runs where numba is not installed (array operations over all segments of a depth at once were slower
still; BUILD_NOTES.md, "Evaluation speed").
"""
import numpy as np

try:
  import numba
except ImportError:   # e.g. an accelerator host without it: the same loops run in Python, on lists
  numba = None

_SMALL = 15   # segments this short are insertion-sorted


def _compiled(fn):
  return numba.njit(nogil=True, cache=True)(fn) if numba is not None else fn


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
  if numba is None:   # float32 values compare alike as Python floats (exact conversion)
    s = samples.tolist()
    _sort(np.asarray(values, dtype=np.float32).tolist(), s, budget)
    return np.array(s, dtype=samples.dtype)
  s = samples.astype(np.int64)
  _sort(np.array(values, dtype=np.float32), s, budget)
  return s.astype(samples.dtype)


@_compiled
def _heapsort(v, s, lo, n):
  """Heap sort of v[lo:lo + n] (and s alike): sift-down heapify from the last parent, then the maximum to the end."""
  for root in range((n - 2) // 2, -1, -1):
    _sift(v, s, lo, root, n)
  for end in range(n - 1, 0, -1):
    v[lo], v[lo + end] = v[lo + end], v[lo]
    s[lo], s[lo + end] = s[lo + end], s[lo]
    _sift(v, s, lo, 0, end)


@_compiled
def _sift(v, s, lo, root, end):
  while True:
    child, largest = 2 * root + 1, root
    if child < end and v[lo + largest] < v[lo + child]:
      largest = child
    if child + 1 < end and v[lo + largest] < v[lo + child + 1]:
      largest = child + 1
    if largest == root:
      return
    i, j = lo + root, lo + largest
    v[i], v[j] = v[j], v[i]
    s[i], s[j] = s[j], s[i]
    root = largest


@_compiled
def _sort(v, s, budget):
  """The sort of `simultaneous_sort`, in place on values v and samples s (float32 and int64 arrays, or lists)."""
  stack = [(0, len(v), budget)]   # pending segments: (start, size, depth budget)
  while stack:
    lo, m, budget = stack.pop()
    while m > _SMALL:
      if budget <= 0:
        _heapsort(v, s, lo, m)
        m = 0
        break
      budget -= 1
      a, b, c = v[lo], v[lo + m // 2], v[lo + m - 1]
      if a < b:
        pivot = b if b < c else (c if a < c else a)
      else:
        pivot = (a if a < c else c) if b < c else b
      i = low = lo
      high = lo + m
      while i < high:   # Dijkstra's 3-way partition
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
    for k in range(lo + 1, lo + m):   # insertion sort (stable) of what is left, at most 15 elements
      x, y = v[k], s[k]
      j = k - 1
      while j >= lo and v[j] > x:
        v[j + 1], s[j + 1] = v[j], s[j]
        j -= 1
      v[j + 1], s[j + 1] = x, y
