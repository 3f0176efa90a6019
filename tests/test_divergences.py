"""Tests of decompvae.divergences against plain NumPy/SciPy computations."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats
from tensorflow_probability.substrates import jax as tfp

from decompvae import divergences

SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # docs/science.md §3, written out independently of the module


def mmd_numpy(zq, zp, *, full=False):
  """Unbiased IMQ MMD of docs/science.md §3 in float64, one dimension (or the full vectors) and one scale at a time."""
  zq, zp = np.asarray(zq, np.float64), np.asarray(zp, np.float64)
  b = len(zq)
  blocks = [slice(None)] if full else [slice(d, d + 1) for d in range(zq.shape[1])]
  total = 0.0
  for block in blocks:
    x, y = zp[:, block], zq[:, block]
    for s in SCALES:
      c = 2 * s
      within = cross = 0.0
      for i in range(b):
        kx = c / (c + np.sum((x[i] - x) ** 2, axis=-1))
        ky = c / (c + np.sum((y[i] - y) ** 2, axis=-1))
        within += np.sum(np.delete(kx, i)) + np.sum(np.delete(ky, i))
        cross += np.sum(c / (c + np.sum((x[i] - y) ** 2, axis=-1)))
      total += within / (b * (b - 1)) - 2 * cross / b**2
  return total


def mmd_dim_naive_jnp(zq, zp):
  """Direct [B, B, D, S] jnp version, differentiated by plain autodiff (the gradient reference)."""
  zp = jax.lax.stop_gradient(zp)
  b = zq.shape[0]
  c = 2 * jnp.asarray(SCALES)
  off = (1 - jnp.eye(b))[:, :, None, None]

  def k(u, v):
    return c / (c + (u[:, None, :, None] - v[None, :, :, None]) ** 2)

  return (jnp.sum(k(zp, zp) * off) + jnp.sum(k(zq, zq) * off)) / (b * (b - 1)) - 2 * jnp.sum(k(zp, zq)) / b**2


def diag_gaussian(loc, scale):
  return distrax.MultivariateNormalDiag(jnp.asarray(loc, jnp.float32), jnp.asarray(scale, jnp.float32))


def test_kl_qp_analytic_broadcasts_batch_against_prior():
  rng = np.random.default_rng(0)
  mu, s = rng.normal(size=(5, 3)), rng.uniform(0.3, 2.0, size=(5, 3))
  prior_mu, prior_s = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
  kl = jax.jit(divergences.kl_qp)(diag_gaussian(mu, s), diag_gaussian(prior_mu, prior_s))
  expected = np.sum(np.log(prior_s / s) + (s**2 + (mu - prior_mu) ** 2) / (2 * prior_s**2) - 0.5, axis=-1)
  assert kl.shape == (5,)
  np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_kl_qp_monte_carlo_with_student_t_prior():
  rng = np.random.default_rng(1)
  mu, s = rng.normal(size=(4, 2)), rng.uniform(0.3, 2.0, size=(4, 2))
  z = rng.normal(size=(4, 2)).astype(np.float32)
  pz = distrax.Independent(tfp.distributions.StudentT(df=jnp.full(2, 3.0), loc=jnp.zeros(2), scale=jnp.ones(2)), 1)
  kl = jax.jit(divergences.kl_qp)(diag_gaussian(mu, s), pz, z)
  expected = np.sum(stats.norm.logpdf(z, mu, s) - stats.t.logpdf(z, df=3.0), axis=-1)
  np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-5)
  # Forcing the Monte-Carlo estimate for two Gaussians uses the sample too.
  kl_mc = divergences.kl_qp(diag_gaussian(mu, s), diag_gaussian(np.zeros(2), np.ones(2)), z, analytic=False)
  np.testing.assert_allclose(kl_mc, np.sum(stats.norm.logpdf(z, mu, s) - stats.norm.logpdf(z), -1), rtol=1e-5)


def test_kl_qp_without_sample_raises():
  pz = distrax.Independent(tfp.distributions.StudentT(df=jnp.full(2, 3.0), loc=jnp.zeros(2), scale=jnp.ones(2)), 1)
  with pytest.raises(ValueError, match="sample z"):
    divergences.kl_qp(diag_gaussian(np.zeros((3, 2)), np.ones((3, 2))), pz)


@pytest.mark.parametrize("batch,dim,spread", [(40, 4, 1.0), (9, 2, 1e6)])
def test_mmd_matches_numpy(batch, dim, spread):
  rng = np.random.default_rng(batch)
  zq = (spread * rng.normal(size=(batch, dim)) + 0.3).astype(np.float32)
  zp = rng.standard_t(3.0, size=(batch, dim)).astype(np.float32)
  np.testing.assert_allclose(jax.jit(divergences.mmd_dim)(zq, zp), mmd_numpy(zq, zp), rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(jax.jit(divergences.mmd_full)(zq, zp), mmd_numpy(zq, zp, full=True),
                             rtol=2e-5, atol=2e-6)


def test_mmd_dim_gradient_matches_autodiff_of_naive_version():
  rng = np.random.default_rng(3)
  zq = (1.5 * rng.normal(size=(30, 5)) + 0.5).astype(np.float32)
  zp = rng.normal(size=(30, 5)).astype(np.float32)
  value, (grad_q, grad_p) = jax.jit(jax.value_and_grad(divergences.mmd_dim, argnums=(0, 1)))(zq, zp)
  ref_value, ref_grad_q = jax.jit(jax.value_and_grad(mmd_dim_naive_jnp))(zq, zp)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(grad_q, ref_grad_q, rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(grad_p, 0.0)  # the prior samples are constants
  np.testing.assert_array_equal(jax.jit(jax.grad(divergences.mmd_full, argnums=1))(zq, zp), 0.0)


def test_mmd_gradient_far_from_the_prior():
  zq, zp = jnp.array([[1e6], [-3e5], [2.0]], jnp.float32), jnp.zeros((3, 1))
  grad = jax.jit(jax.grad(divergences.mmd_dim))(zq, zp)
  np.testing.assert_allclose(grad, jax.jit(jax.grad(mmd_dim_naive_jnp))(zq, zp), rtol=1e-4)


def test_mmd_identical_samples_and_shifts():
  rng = np.random.default_rng(4)
  z = rng.normal(size=(40, 4)).astype(np.float32)
  # The unbiased estimate of two equal sets is not exactly zero: compare with NumPy.
  for mmd, full in ((divergences.mmd_dim, False), (divergences.mmd_full, True)):
    np.testing.assert_allclose(jax.jit(mmd)(z, z), mmd_numpy(z, z, full=full), rtol=1e-4, atol=1e-6)
  # Two large samples of the same distribution: near zero; a growing shift: growing MMD.
  zq, zp = rng.normal(size=(2, 500, 3)).astype(np.float32)
  shifts = jnp.array([0.0, 0.25, 0.5, 1.0, 3.0])
  mmds = jax.jit(jax.vmap(lambda shift: (divergences.mmd_dim(zq + shift, zp), divergences.mmd_full(zq + shift, zp))))
  for values in mmds(shifts):
    assert abs(values[0]) < 0.03 < values[2]
    assert np.all(np.diff(values) > 0), values


def test_mmd_rejects_bad_shapes():
  with pytest.raises(ValueError, match="B >= 2"):
    divergences.mmd_dim(jnp.zeros((1, 3)), jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="same shape"):
    divergences.mmd_full(jnp.zeros((4, 3)), jnp.zeros((5, 3)))


def test_kl_inclusive_matches_numpy():
  rng = np.random.default_rng(5)
  mu, s = rng.normal(size=(16, 2)), rng.uniform(0.3, 1.5, size=(16, 2))
  pz = diag_gaussian([0.5, -0.2], [1.2, 0.8])
  key = jax.random.key(7)
  value = jax.jit(divergences.kl_inclusive)(diag_gaussian(mu, s), pz, key)
  z = np.asarray(jax.jit(lambda k: pz.sample(seed=k, sample_shape=(16,)))(key), np.float64)  # documented
  lqz_x = np.array([[np.sum(stats.norm.logpdf(z[i], mu[j], s[j])) for j in range(16)] for i in range(16)])
  lpz = np.sum(stats.norm.logpdf(z, [0.5, -0.2], [1.2, 0.8]), axis=-1)
  expected = np.mean(lpz - (special.logsumexp(lqz_x, axis=1) - np.log(16)))
  np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)


def test_kl_inclusive_is_zero_when_every_posterior_is_the_prior():
  pz = diag_gaussian([0.3, -1.0], [0.5, 2.0])
  qz_x = diag_gaussian(np.tile([0.3, -1.0], (16, 1)), np.tile([0.5, 2.0], (16, 1)))
  assert abs(float(jax.jit(divergences.kl_inclusive)(qz_x, pz, jax.random.key(0)))) < 1e-5

