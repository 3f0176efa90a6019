"""Tests of the normalised Hoyer sparsity and the per-class latent magnitude."""
import itertools

import numpy as np
import pytest

from decompvae.metrics import hoyer_sparsity, latent_magnitude_per_class


@pytest.mark.parametrize("normalize", [True, False])
def test_one_hot_codes_are_maximally_sparse(normalize):
  z = 3.0 * np.eye(6)[np.random.RandomState(0).randint(6, size=200)]
  assert hoyer_sparsity(z, normalize) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_constant_magnitude_codes_are_dense(normalize):
  z = 0.7 * np.array(list(itertools.product([-1.0, 1.0], repeat=5)))  # equal std in every dimension
  assert hoyer_sparsity(z, normalize) == pytest.approx(0.0, abs=1e-12)


def test_matches_a_point_by_point_computation():
  z = np.random.RandomState(0).standard_t(2, size=(50, 4)) * np.array([1.0, 0.1, 5.0, 2.0])
  for normalize in (False, True):
    x = z / z.std(0, ddof=1) if normalize else z  # the ddof cancels in ‖x‖₁/‖x‖₂
    ratios = [np.linalg.norm(row, 1) / np.linalg.norm(row, 2) for row in x]
    expected = (2.0 - np.mean(ratios)) / (2.0 - 1.0)
    assert hoyer_sparsity(z, normalize) == pytest.approx(expected, rel=1e-12)


def test_collapsed_dimensions_are_dropped_and_zero_codes_count_as_sparse():
  z = np.random.RandomState(1).randn(40, 3)
  with_constant = np.concatenate([z, np.full((40, 2), 0.1)], axis=1).astype(np.float32)  # float32 std ≠ 0
  assert hoyer_sparsity(with_constant) == pytest.approx(hoyer_sparsity(z.astype(np.float32)), rel=1e-12)
  one_hot_and_zero = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
  assert hoyer_sparsity(one_hot_and_zero, normalize=False) == 1.0
  with pytest.raises(ValueError, match="at least 2"):
    hoyer_sparsity(np.concatenate([z[:, :1], np.ones((40, 1))], axis=1))


def test_latent_magnitude_per_class_by_hand():
  rng = np.random.RandomState(0)
  z, labels = rng.randn(30, 4), rng.permutation(np.arange(30) % 3)
  expected = np.array([[np.mean(np.abs(z[labels == c, d])) for d in range(4)] for c in range(3)])
  np.testing.assert_allclose(latent_magnitude_per_class(z, labels), expected, rtol=1e-12)
  np.testing.assert_allclose(latent_magnitude_per_class(z, labels, normalize=True), expected / z.std(0), rtol=1e-12)
  with pytest.raises(ValueError, match=r"classes \[3\] have no points"):
    latent_magnitude_per_class(z, labels, num_classes=4)
