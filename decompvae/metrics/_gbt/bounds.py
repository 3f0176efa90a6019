"""Worst-case rounding bounds: how far a sum computed in one order can be from scikit-learn's in another.

Every decision the split search takes from its own sums (which split wins, whether a node is a leaf) is taken
only when it holds for any rounding within these bounds; otherwise the node is replayed with scikit-learn's
arithmetic. A sum of n floating-point terms computed in any order is within γ(n) Σ|terms| of the exact sum
(Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §4.2), γ(n) = n u / (1 − n u), u = 2⁻⁵³; the
targets of the trees are gradients of the log-loss, y − p, so |r| ≤ 1 and |Σ r| / n ≤ 1 for every node.
"""
import numpy as np

UNIT_ROUNDOFF = 2.0 ** -53
SAFETY = 1.0 + 1e-6   # covers the rounding of the bounds themselves


def gamma(n):
  """γ(n) = n u / (1 − n u)."""
  n = np.asarray(n, dtype=np.float64)
  return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


def proxy_error(sum_error, proxy):
  """Bound on |ours − scikit-learn's| of the proxy Σ_L²/n_L + Σ_R²/n_R of any split of a node.

  Args:
    sum_error: bound on the error of every Σ_L and Σ_R of the node's splits, ours and scikit-learn's alike.
    proxy: the largest proxy of the node (for the relative rounding of the formula).
  """
  e = np.asarray(sum_error, dtype=np.float64)
  return SAFETY * (8.0 * e + 4.0 * e * e + 10.0 * UNIT_ROUNDOFF * np.abs(proxy))


def impurity_margin(n, squares, abs_sum, total_error, n_parent, squares_parent, abs_sum_parent):
  """Bound on |ours − scikit-learn's| of a node's impurity q/n − (Σr/n)².

  scikit-learn takes a child's impurity from its parent's sums (Σr² of the right child is the parent's minus the
  left child's), so its error scales with the parent's sums; for the root pass the node's own as the parent's.

  Args:
    n, squares, abs_sum: the node's size, Σr² and Σ|r| (upper bounds).
    total_error: bound on the error of our Σr of the node.
    n_parent, squares_parent, abs_sum_parent: the same of its parent.
  """
  n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
  g_parent, g = gamma(n_parent), gamma(n)
  theirs = (2.0 * g_parent * squares_parent + 6.0 * g_parent * abs_sum_parent) / n
  ours = (g * squares + 2.0 * total_error) / n
  square = (total_error / n + 3.0 * g_parent * abs_sum_parent / n) ** 2
  return SAFETY * (theirs + ours + square + 8.0 * UNIT_ROUNDOFF * (squares / n + 1.0))


def improvement_margin(n, squares, abs_sum, sum_error, impurity_margin_node, proxy_err, num_train):
  """Bound on the error of the best split's N · improvement, n·imp − n_L·imp_L − n_R·imp_R ≈ P − (Σr)²/n, plus
  N·EPSILON: a split whose computed P − (Σr)²/n exceeds it passes the builder's test improvement + EPSILON ≥ 0.

  Args:
    n, squares, abs_sum: the node's size, Σr² and Σ|r| (upper bounds).
    sum_error: bound on the error of the node's Σr, Σ_L r and Σ_R r (ours and scikit-learn's).
    impurity_margin_node: `impurity_margin` of the node.
    proxy_err: `proxy_error` of the node.
    num_train: N.
  """
  g = gamma(n)
  children = 2.0 * (3.0 * g * squares + 6.0 * g * abs_sum + 2.0 * sum_error + 8.0 * UNIT_ROUNDOFF * (squares + n))
  return SAFETY * (2.0 * proxy_err + 4.0 * sum_error + n * impurity_margin_node + children +
                   2.0 * num_train * np.finfo(np.float64).eps)
