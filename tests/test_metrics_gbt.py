"""decompvae.metrics.gbt against scikit-learn's GradientBoostingClassifier, which it reproduces tree for tree."""
import numpy as np
import pytest
from sklearn import ensemble

from decompvae import metrics
from decompvae.metrics import _gbt
from decompvae.metrics._gbt import boosting, replay


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


@pytest.mark.parametrize("num_classes, num_points, num_dims", [(2, 800, 5), (3, 600, 4), (10, 1000, 8)])
def test_same_classifier_as_sklearn(num_classes, num_points, num_dims):
  z_train, labels, z_test = _codes_and_labels(num_classes, num_points, num_dims, num_classes)
  _assert_same_as_sklearn(z_train, labels, z_test, n_estimators=40)


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


def test_string_labels_and_several_factors_in_threads():
  z_train, labels, z_test = _codes_and_labels(3, 500, 6, 3)
  other = np.where(z_train[:, 4] > 0.3, "yes", "no")
  factors = np.stack([labels.astype(str), other], axis=1)
  one = _gbt.fit_gbt_classifiers(z_train, factors, z_test, n_estimators=20)
  two = _gbt.fit_gbt_classifiers(z_train, factors, z_test, n_estimators=20, n_jobs=2)
  np.testing.assert_allclose(one[0], two[0], rtol=1e-12, atol=1e-15)   # impurities are summed with other rounding
  np.testing.assert_array_equal(one[1], two[1])
  np.testing.assert_array_equal(one[2], two[2])
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


def test_dci_with_the_fast_classifier_equals_dci_with_sklearn():
  rng = np.random.RandomState(5)
  y = np.stack([rng.randint(s, size=900) for s in (2, 4, 7)], axis=1)
  z = np.concatenate([(y + 0.5 * rng.randn(*y.shape)) @ rng.randn(3, 3), rng.randn(len(y), 2)], axis=1)
  fast = metrics.dci_from_codes(z[:600], y[:600], z[600:], y[600:])
  reference = metrics.dci_from_codes(z[:600], y[:600], z[600:], y[600:], backend="sklearn")
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
