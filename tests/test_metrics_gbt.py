"""decompvae.metrics._gbt against scikit-learn's GradientBoostingClassifier, which it reproduces tree for tree.

Run at every SIMD level numpy dispatches to by tests/simd_levels.sh.
"""
import importlib
import warnings

import numpy as np
import pytest
import sklearn
from sklearn import ensemble

from decompvae import metrics
from decompvae.metrics import _gbt
from decompvae.metrics._gbt import boosting, environment, introsort, replay

dci_lib = importlib.import_module("decompvae.metrics.dci")   # the module (its name is also the function's)


def _codes_and_labels(seed, num_points, num_dims, num_classes, num_test=200):
  """Continuous random codes and a label that depends on a few of them (non-trivial trees, no exact ties)."""
  rng = np.random.RandomState(seed)
  z = rng.randn(num_points + num_test, num_dims)
  score = z[:, 0] + 0.5 * z[:, 1] ** 2 - 0.7 * z[:, 2 % num_dims] + 0.4 * rng.randn(len(z))
  labels = np.digitize(score, np.quantile(score, np.linspace(0, 1, num_classes + 1)[1:-1]))
  return z[:num_points], labels[:num_points], z[num_points:]


def _sklearn(z_train, labels, z_test, n_estimators):
  model = ensemble.GradientBoostingClassifier(n_estimators=n_estimators, random_state=0).fit(z_train, labels)
  return model, model.decision_function(z_train), model.decision_function(z_test)


def _rounded_codes(seed, num_points, num_dims=6):
  """Codes of three factors rounded to one decimal: long runs of equal values with different targets."""
  rng = np.random.RandomState(seed)
  factors = np.stack([rng.randint(s, size=num_points) for s in (3, 6, 8)], axis=1)
  z = np.concatenate([(factors + 0.5 * rng.randn(*factors.shape)) @ rng.randn(3, 3),
                      rng.randn(num_points, num_dims - 3)], axis=1)
  return np.round(z, 1), factors


def _symmetric_codes(seed, num_points, sizes=(3, 6, 40, 8, 8)):
  """dSprites-like codes of what the image shows: a square looks the same every quarter turn (orientation mod 10 of
  40) and an ellipse every half turn (mod 20), so identical codes carry different orientation labels."""
  rng = np.random.RandomState(seed)
  factors = np.stack([rng.randint(s, size=num_points) for s in sizes], axis=1)
  seen = factors.copy()
  seen[factors[:, 0] == 0, 2] %= 10
  seen[factors[:, 0] == 1, 2] %= 20
  unit = seen / (np.array(sizes) - 1)
  mixing = np.eye(5) + 0.3 * np.random.RandomState(100).randn(5, 5)
  z = np.concatenate([np.tanh(2 * unit - 1) @ mixing, 0.01 * np.sin(7 * unit[:, :2] + unit[:, 2:4])], axis=1)
  return z, factors


def _assert_same_as_sklearn(z_train, labels, z_test, n_estimators):
  model, raw_train, raw_test = _sklearn(z_train, labels, z_test, n_estimators)
  factor, = boosting.fit(z_train, labels[:, None], z_test, n_estimators, 0.1, 0)
  squeeze = (lambda raw: raw[:, 0]) if factor.num_trees == 1 else (lambda raw: raw)
  np.testing.assert_array_equal(squeeze(factor.raw), raw_train)        # the same trees and leaf values, bit for bit
  np.testing.assert_array_equal(squeeze(factor.raw_test), raw_test)
  importance, train_pred, test_pred = _gbt.fit_gbt_importance(z_train, labels, z_test, n_estimators=n_estimators)
  np.testing.assert_allclose(importance, model.feature_importances_, rtol=1e-9, atol=1e-15)
  np.testing.assert_array_equal(train_pred, model.predict(z_train))
  np.testing.assert_array_equal(test_pred, model.predict(z_test))
  return importance


@pytest.mark.parametrize("num_classes, num_points, num_dims", [(2, 800, 5), (3, 600, 4), (10, 600, 8)])
def test_same_classifier_as_sklearn(num_classes, num_points, num_dims):
  z_train, labels, z_test = _codes_and_labels(num_classes, num_points, num_dims, num_classes)
  _assert_same_as_sklearn(z_train, labels, z_test, n_estimators=30)


def test_small_nodes_and_many_stages():
  """Late stages grow trees that isolate single points: many equally good splits, decided as scikit-learn does."""
  z_train, labels, z_test = _codes_and_labels(7, 300, 6, 4)
  _assert_same_as_sklearn(z_train, labels, z_test, n_estimators=100)


def test_constant_dimension_is_never_split():
  z_train, labels, z_test = _codes_and_labels(1, 500, 5, 3)
  z_train[:, 3] = 0.25
  importance = _assert_same_as_sklearn(z_train, labels, z_test, n_estimators=30)
  assert importance[3] == 0.0


def test_repeated_codes():
  """Identical codes (a sampled point drawn twice) are interchangeable in every sum."""
  z_train, labels, z_test = _codes_and_labels(2, 600, 5, 5)
  z_train[300:400], labels[300:400] = z_train[:100], labels[:100]
  _assert_same_as_sklearn(z_train.astype(np.float32), labels, z_test, n_estimators=40)


@pytest.mark.parametrize("seed, num_points, factor", [(2, 200, 1), (3, 300, 0)])
def test_codes_rounded_to_one_decimal(seed, num_points, factor):
  """Equal values of samples with different targets: where a near tie is decided, scikit-learn's sums run in the
  order its (unstable) introsort leaves them, which the replay simulates."""
  z, factors = _rounded_codes(seed, num_points + 50)
  _assert_same_as_sklearn(z[:num_points], factors[:num_points, factor], z[num_points:], n_estimators=20)


@pytest.mark.parametrize("seed, factor", [(0, 3), (5, 4)])
def test_identical_codes_with_different_labels(seed, factor):
  """Identical images (rotation-symmetric shapes) give identical codes with different labels; such samples are
  not interchangeable in the sums, unlike a code drawn twice with one label."""
  z, factors = _symmetric_codes(seed, 200)
  _assert_same_as_sklearn(z[:150], factors[:150, factor], z[150:], n_estimators=20)


# A median-of-3 killer for the 3-way introsort (found with McIlroy's adversary, "A killer adversary for quicksort",
# SP&E 1999): it exhausts the depth budget, so part of it is heap-sorted.
_KILLER_64 = [24, 25, 26, 2, 27, 28, 4, 29, 30, 6, 31, 32, 8, 33, 34, 10, 35, 36, 12, 37, 38, 14, 39, 40, 16, 41, 42,
              18, 43, 44, 20, 45, 0, 22, 3, 46, 5, 47, 7, 48, 9, 49, 11, 50, 13, 51, 15, 52, 17, 53, 19, 54, 21, 55,
              23, 56, 57, 58, 59, 60, 61, 62, 63, 1]


@pytest.mark.parametrize("compiled", [True, False])
def test_sort_is_sklearns_introsort(monkeypatch, compiled):
  sorting = pytest.importorskip("sklearn.utils._sorting")
  heap_sorted = []
  if not compiled:   # as where numba is not installed: the same functions, uncompiled, on lists
    if introsort.numba is not None:
      for name in ("_sort", "_heapsort", "_sift"):
        monkeypatch.setattr(introsort, name, getattr(introsort, name).py_func)
      monkeypatch.setattr(introsort, "numba", None)
    heapsort = introsort._heapsort
    monkeypatch.setattr(introsort, "_heapsort", lambda v, s, lo, n: (heap_sorted.append(n), heapsort(v, s, lo, n)))
  rng = np.random.default_rng(0)
  cases = [np.array(_KILLER_64, dtype=np.float32), np.floor(np.array(_KILLER_64) / 2).astype(np.float32)]
  for _ in range(300):
    n = int(rng.choice([1, 2, 15, 16, 17, 40, 100, 600, 3000]))
    values = (rng.integers(0, int(rng.choice([1, 2, 5, 30, 10 ** 6])), n) * 0.1).astype(np.float32)
    cases.append(np.sort(values) if rng.random() < 0.2 else values)
  for values in cases:
    samples = rng.permutation(values.size).astype(np.intp)
    want_values, want = values.copy(), samples.copy()
    sorting._py_simultaneous_sort(want_values, want, values.size, use_three_way_partition=True)
    np.testing.assert_array_equal(introsort.simultaneous_sort(values, samples), want)
  if not compiled:
    assert heap_sorted   # the killer inputs reach the heap sort


def test_arithmetic_checks_pass():
  assert environment.unsupported_reason() is None


def test_outside_the_verified_versions_dci_uses_sklearn(monkeypatch):
  monkeypatch.setattr(sklearn, "__version__", "1.8.2")
  assert "outside the range" in environment.unsupported_reason()
  called = []
  monkeypatch.setattr(_gbt, "fit_gbt_classifiers", lambda *args, **kwargs: called.append(1))
  rng = np.random.RandomState(0)
  y = np.stack([rng.randint(s, size=120) for s in (2, 3)], axis=1)
  z = np.concatenate([y + 0.3 * rng.randn(*y.shape), rng.randn(120, 1)], axis=1)
  with pytest.warns(RuntimeWarning, match="outside the range"):
    ours = metrics.dci_from_codes(z[:80], y[:80], z[80:], y[80:], backend="fast")
  assert not called
  monkeypatch.setattr(sklearn, "__version__", "1.9.1")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    reference = metrics.dci_from_codes(z[:80], y[:80], z[80:], y[80:], backend="sklearn")
  assert ours == reference


def test_string_labels_and_several_factors_in_threads():
  z_train, labels, z_test = _codes_and_labels(3, 500, 6, 3)
  other = np.where(z_train[:, 4] > 0.3, "yes", "no")
  factors = np.stack([labels.astype(str), other], axis=1)
  one = _gbt.fit_gbt_classifiers(z_train, factors, z_test, n_estimators=20)
  two = _gbt.fit_gbt_classifiers(z_train, factors, z_test, n_estimators=20, n_jobs=2)
  for a, b in zip(one, two):   # importances too: every sum runs over one tree's own values, in a fixed order
    np.testing.assert_array_equal(a, b)
  for k in range(2):
    model, _, _ = _sklearn(z_train, factors[:, k], z_test, 20)
    np.testing.assert_allclose(one[0][:, k], model.feature_importances_, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(one[1][:, k], model.predict(z_train))
    np.testing.assert_array_equal(one[2][:, k], model.predict(z_test))


def test_a_factor_needs_two_classes():
  z_train, labels, z_test = _codes_and_labels(4, 100, 3, 2)
  with pytest.raises(ValueError, match="two classes"):
    _gbt.fit_gbt_importance(z_train, np.zeros(100, dtype=int), z_test)
  with pytest.raises(ValueError, match="single value"):
    metrics.dci_from_codes(z_train, np.stack([labels, np.zeros(100, dtype=int)], 1), z_test,
                           np.zeros((len(z_test), 2), dtype=int))


@pytest.mark.parametrize("num_train, expected", [(dci_lib.AUTO_SKLEARN_BELOW - 1, "sklearn"),
                                                 (dci_lib.AUTO_SKLEARN_BELOW, "fast")])
def test_auto_backend_is_sklearn_below_the_crossover(monkeypatch, num_train, expected):
  used = []
  monkeypatch.setattr(_gbt, "fit_gbt_classifiers", lambda *args, **kwargs: used.append("fast") or _fake_fit(*args))
  monkeypatch.setattr(dci_lib, "_fit_sklearn", lambda z, y, z_test: used.append("sklearn") or
                      (np.ones(z.shape[1]), y, np.zeros(len(z_test), dtype=y.dtype)))
  rng = np.random.RandomState(0)
  y = np.stack([rng.randint(2, size=num_train + 10) for _ in range(2)], axis=1)
  z = rng.randn(num_train + 10, 3)
  metrics.dci_from_codes(z[:num_train], y[:num_train], z[num_train:], y[num_train:])
  assert set(used) == {expected}


def _fake_fit(z_train, factors, z_test, **_):
  return np.ones((z_train.shape[1], factors.shape[1])), factors, np.zeros((len(z_test), factors.shape[1]), int)


def test_dci_with_the_fast_classifier_equals_dci_with_sklearn():
  rng = np.random.RandomState(5)
  y = np.stack([rng.randint(s, size=450) for s in (2, 4, 7)], axis=1)
  z = np.concatenate([(y + 0.5 * rng.randn(*y.shape)) @ rng.randn(3, 3), rng.randn(len(y), 2)], axis=1)
  fast = metrics.dci_from_codes(z[:300], y[:300], z[300:], y[300:], backend="fast")
  reference = metrics.dci_from_codes(z[:300], y[:300], z[300:], y[300:], backend="sklearn")
  assert fast.keys() == reference.keys()
  for key in reference:
    assert fast[key] == pytest.approx(reference[key], rel=1e-12, abs=1e-14), key
  assert 0.05 < fast["disentanglement"] < 0.95


def test_partition_is_sklearns_two_pointer_sweep():
  def sweep(samples, goes_left):
    s, i, j = list(samples), 0, len(samples)
    while i < j:
      if goes_left[s[i]]:
        i += 1
      else:
        j -= 1
        s[i], s[j] = s[j], s[i]
    return s[:i], s[i:]

  rng = np.random.default_rng(1)
  for _ in range(300):
    samples = rng.permutation(60)[:rng.integers(1, 40)]
    goes_left = rng.random(60) < rng.random()
    left, right = replay.partition_like_sklearn(samples, goes_left[samples])
    want_left, want_right = sweep(samples, goes_left)
    np.testing.assert_array_equal(left, want_left)
    np.testing.assert_array_equal(right, want_right)
