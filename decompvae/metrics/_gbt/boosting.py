"""Gradient boosting as `GradientBoostingClassifier` runs it: start, gradients, Newton leaf values, predictions."""
import concurrent.futures
import os

import numpy as np

from decompvae.metrics._gbt.data import Codes
from decompvae.metrics._gbt.replay import RAND_R_MAX
from decompvae.metrics._gbt.search import NUM_NODES, Blocks, Stage


def fit_classifiers(codes_train, factors_train, codes_test, *, n_estimators, learning_rate, random_state, n_jobs):
  """One classifier per column of `factors_train`: (importance [D, F], train predictions [N, F], test [M, F])."""
  labels = np.asarray(factors_train)
  if labels.ndim != 2 or labels.shape[0] != np.shape(codes_train)[0]:
    raise ValueError(f"factors must be [{np.shape(codes_train)[0]}, num_factors], got shape {labels.shape}")
  sizes = [np.unique(labels[:, k]).size for k in range(labels.shape[1])]
  groups = _split_by_work([1 if c == 2 else c for c in sizes], _num_cpus() if n_jobs < 0 else n_jobs)
  args = (n_estimators, learning_rate, random_state)
  if len(groups) == 1:
    fitted = [fit(codes_train, labels[:, groups[0]], codes_test, *args)]
  else:
    with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
      fitted = list(pool.map(lambda cols: fit(codes_train, labels[:, cols], codes_test, *args), groups))
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


def fit(codes_train, factors_train, codes_test, n_estimators, learning_rate, random_state):
  """The fitted classifiers (`Factor`) of the columns of `factors_train`, their stages grown together."""
  codes = Codes(codes_train, codes_test)
  blocks = Blocks(codes)
  labels = np.asarray(factors_train)
  factors = [Factor(labels[:, k], codes, n_estimators, random_state) for k in range(labels.shape[1])]
  columns = np.cumsum([0] + [f.num_trees for f in factors])
  for stage in range(n_estimators):
    targets = np.concatenate([f.negative_gradient() for f in factors], axis=1)
    seeds = np.concatenate([f.seeds[stage] for f in factors])
    trees = Stage(codes, blocks, targets, seeds).grow()
    for f, lo, hi in zip(factors, columns[:-1], columns[1:]):
      f.add_trees(trees, slice(lo, hi), learning_rate)
  return factors


class Factor:
  """One classifier: labels, raw predictions F (train and test), seeds of its trees and their importances.

  The start and the gradients are computed by scikit-learn's own loss objects (`sklearn._loss.loss`, what
  `GradientBoostingClassifier._get_loss` returns): the gradient is a compiled loop over libm's `exp`, which numpy's
  vectorised `exp` does not reproduce to the last bit on every CPU (it dispatches to AVX-512 code there).
  """

  def __init__(self, labels, codes, n_estimators, random_state):
    self.classes, y = np.unique(labels, return_inverse=True)
    if self.classes.size < 2:
      raise ValueError("every factor needs at least two classes among the training points")
    self.y = y.reshape(-1)
    self.y_float = self.y.astype(np.float64)
    self.num_classes = c = self.classes.size
    self.num_trees = 1 if c == 2 else c
    # scikit-learn's private module, imported here so that its absence only disables this backend (see environment)
    from sklearn._loss import loss as sklearn_loss  # pylint: disable=import-outside-toplevel
    self.loss = sklearn_loss.HalfBinomialLoss() if c == 2 else sklearn_loss.HalfMultinomialLoss(n_classes=c)
    prior = np.bincount(self.y) / self.y.size   # DummyClassifier(strategy="prior")
    self.raw = self._start(prior, codes.num_train)
    self.raw_test = self._start(prior, codes.x_test.shape[0])
    # scikit-learn draws each tree's seed from one RandomState, in the order the trees are fitted.
    self.seeds = np.random.RandomState(random_state).randint(0, RAND_R_MAX, size=(n_estimators, self.num_trees))
    self.onehot = (self.y[:, None] == np.arange(self.num_trees)).astype(np.float64) if c > 2 else \
        self.y_float[:, None]
    self.tree_importances = []
    self.num_dims = codes.num_dims

  def _start(self, prior, num):
    """_init_raw_predictions: the link of the clipped class priors, for `num` points."""
    eps = np.finfo(np.float64).eps
    proba = np.ones((num, 1)) * prior
    if self.num_classes == 2:
      proba = proba[:, 1]
    proba = np.clip(proba, eps, 1 - eps, dtype=np.float64)
    return np.ascontiguousarray(self.loss.link.link(proba).reshape(num, -1))

  def negative_gradient(self):
    """−∂loss/∂F = y − p, computed by scikit-learn's loss (its compiled arithmetic): [N, trees]."""
    gradient = self.loss.gradient(y_true=self.y_float, raw_prediction=self.raw, sample_weight=None)
    return -gradient.reshape(self.raw.shape[0], -1)

  def add_trees(self, trees, cols, learning_rate):
    """Newton leaf values, F += ν γ(leaf) on train and test, and each tree's unnormalised importances."""
    k = self.num_trees
    factor = (k - 1) / k if self.num_classes > 2 else None
    values = leaf_values(trees.heap[:, cols], trees.g[:, cols], self.onehot, factor)   # [K, NUM_NODES + 1]
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


def leaf_values(heap, neg, onehot, factor):
  """_update_terminal_regions' Newton step γ = Σr / Σp(1 − p) of every leaf (times (K−1)/K for K > 2 classes,
  0 when the denominator is below 1e-150), with its averages: `np.average` of the leaf's values in index order.

  Args:
    heap: [N, K] the leaf of each sample in each tree.
    neg: [N, K] the trees' targets r = y − p.
    onehot: [N, K] y.
    factor: (K − 1) / K, or None for two classes.

  Returns:
    [K, NUM_NODES + 1] leaf values by heap number.
  """
  k = heap.shape[1]
  heap = np.ascontiguousarray(heap.T)
  order = np.argsort(heap, axis=1, kind="stable")              # each leaf's samples in index order
  neg = np.take_along_axis(np.ascontiguousarray(neg.T), order, axis=1)
  prob = np.take_along_axis(np.ascontiguousarray(onehot.T), order, axis=1) - neg
  hess = prob * (1 - prob)
  counts = np.stack([np.bincount(row, minlength=NUM_NODES + 1) for row in heap])
  ends = np.cumsum(counts, axis=1)
  values = np.zeros((k, NUM_NODES + 1))
  for j, leaf in zip(*np.nonzero(counts)):
    lo, hi = ends[j, leaf] - counts[j, leaf], ends[j, leaf]
    numerator = neg[j, lo:hi].mean()   # np.average(a) is a.mean(): one contiguous array, as scikit-learn's
    if factor is not None:
      numerator *= factor
    denominator = hess[j, lo:hi].mean()
    values[j, leaf] = 0.0 if abs(denominator) < 1e-150 else float(numerator) / float(denominator)
  return values
