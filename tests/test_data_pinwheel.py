"""Tests of the pinwheel generator: arms, angles and spreads match its parameters."""

import numpy as np

from decompvae.data import pinwheel


def test_paper_data_shapes_and_determinism():
  (x_train, y_train), (x_test, y_test) = pinwheel.load_pinwheel(seed=0)
  for x, y in ((x_train, y_train), (x_test, y_test)):
    assert x.shape == (400, 2) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, np.repeat(np.arange(4), 100))
  assert not np.allclose(x_train, x_test)  # two draws
  (again, _), _ = pinwheel.load_pinwheel(seed=0)
  np.testing.assert_array_equal(again, x_train)
  (other, _), _ = pinwheel.load_pinwheel(seed=1)
  assert not np.allclose(other, x_train)


def test_arms_angles_and_spreads():
  """Inverts the construction approximately: radius ρ = |x| ≈ f₀, tangential offset ≈ ρ·(θ + a_k + rate·e^ρ)."""
  radial_std, tangential_std, rate, arms = 0.3, 0.1, 0.25, 5
  x, labels = pinwheel.make_pinwheel(0, radial_std=radial_std, tangential_std=tangential_std,
                                     num_classes=arms, num_per_class=20_000, rate=rate)
  np.testing.assert_array_equal(np.unique(labels), np.arange(arms))
  x = x.astype(np.float64)
  rho = np.hypot(x[:, 0], x[:, 1])
  theta = np.arctan2(x[:, 1], x[:, 0])
  # x = f·R(a) with R(a) = [[cos a, -sin a], [sin a, cos a]]: the point sits at polar angle -a + atan2(f₁, f₀).
  residual = np.angle(np.exp(1j * (theta + 2 * np.pi * labels / arms + rate * np.exp(rho))))
  for k in range(arms):
    arm = labels == k
    np.testing.assert_allclose(rho[arm].mean(), 1.0, atol=0.02)
    np.testing.assert_allclose(rho[arm].std(), radial_std, rtol=0.05)
    np.testing.assert_allclose(residual[arm].mean(), 0.0, atol=0.01)  # the arm sits at its angle
    np.testing.assert_allclose((rho * residual)[arm].std(), tangential_std, rtol=0.05)


def test_radial_and_tangential_are_not_swapped():
  """Long thin arms with the defaults: the authors' data (radius std 0.3, across 0.1)."""
  x, _ = pinwheel.make_pinwheel(0, num_per_class=5000)
  rho = np.hypot(x[:, 0], x[:, 1])
  assert 0.27 < rho.std() < 0.33
