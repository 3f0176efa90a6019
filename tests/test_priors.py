"""Priors: densities against scipy/numpy, sample moments against closed forms, gradients, jit and errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from decompvae import priors

# TFP's Student-t sampler draws gammas through a float64 code path; with x64 off JAX warns and uses float32.
pytestmark = pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")

PINWHEEL_MEANS = np.array([[0.0, -1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
SPARSE_D, N_SAMPLES = 8, 200_000  # Latent size of the spike-and-slab sampling tests; samples per moment test.


def _points(d, n=16, std=1.5, seed=0):
  return np.random.default_rng(seed).normal(scale=std, size=(n, d)).astype(np.float32)


# Compiling is what costs time here (sampling programs take seconds on a small CPU), so every density and
# sampler goes through one of these two jitted functions, with float32 hyperparameters as traced arguments
# (as in the train step): calls that differ only in hyperparameter values reuse one compiled program.


@functools.partial(jax.jit, static_argnames=("name", "d"))
def _jit_log_prob_fn(z, hp, *, name, d):
  return priors.make_prior(name, d, **hp).log_prob(z)


@functools.partial(jax.jit, static_argnames=("name", "d", "n"))
def _jit_sample_fn(key, hp, *, name, d, n):
  return priors.make_prior(name, d, **hp).sample(seed=key, sample_shape=(n,))


def _f32(hp):
  return {k: np.asarray(v, np.float32) for k, v in hp.items()}


def _jit_log_prob(name, d, z, **hp):
  """log p(z) with the prior built inside jit from traced hyperparameters."""
  return np.asarray(_jit_log_prob_fn(z, _f32(hp), name=name, d=d))


def _samples(name, d, n, seed=0, **hp):
  z = np.asarray(_jit_sample_fn(jax.random.key(seed), _f32(hp), name=name, d=d, n=n))
  assert z.shape == (n, d) and z.dtype == np.float32
  return z.astype(np.float64)


def _softmax_variances(logits, scale):
  w = np.exp(np.asarray(logits, np.float64))
  return scale * len(w) * w / w.sum()


# --- shapes and every prior under jit/grad ----------------------------------------------------------------

ALL_PRIORS = [
    ("isotropic", {}),
    ("anisotropic", {"logits": np.array([0.3, -1.0], np.float32), "scale": 1.3}),
    ("anisotropic", {"variances": np.array([0.5, 2.0], np.float32)}),
    ("student_t", {"df": 3.0, "scale": np.array([0.5, 2.0], np.float32)}),
    ("sparse", {"gamma": np.array([0.3, 0.9], np.float32), "sigma0": 0.1}),
    ("mixture", {"means": PINWHEEL_MEANS.astype(np.float32), "variance": 0.05}),
]


@pytest.mark.parametrize("name,hp", ALL_PRIORS)
def test_shapes(name, hp):
  pz = priors.make_prior(name, 2, **hp)
  assert pz.event_shape == (2,) and pz.batch_shape == ()
  z = jax.eval_shape(lambda key: pz.sample(seed=key, sample_shape=(3, 5)), jax.random.key(0))
  assert z.shape == (3, 5, 2) and z.dtype == jnp.float32
  assert jax.eval_shape(pz.log_prob, z).shape == (3, 5)


@pytest.mark.parametrize("name,hp", ALL_PRIORS)
def test_gradients_finite_under_jit(name, hp):
  z = _points(2)
  log_prob_sum = lambda z, hp: priors.make_prior(name, 2, **hp).log_prob(z).sum()
  grads = jax.jit(jax.grad(log_prob_sum, argnums=(0, 1)))(z, hp)
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(g))
  assert np.any(grads[0] != 0)


def test_isotropic_log_prob():
  z = _points(3)
  expected = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z)
  np.testing.assert_allclose(_jit_log_prob("isotropic", 3, z), expected, rtol=1e-5)


# --- anisotropic --------------------------------------------------------------------------------------------


def test_anisotropic_logits_log_prob_and_variances():
  logits, scale = np.array([0.5, -1.0, 2.0, 0.0], np.float32), 0.7
  var = _softmax_variances(logits, scale)
  z = _points(4)
  np.testing.assert_allclose(_jit_log_prob("anisotropic", 4, z, logits=logits, scale=scale),
                             stats.multivariate_normal(np.zeros(4), np.diag(var)).logpdf(z), rtol=1e-5)
  got = priors.make_prior("anisotropic", 4, logits=logits, scale=scale).variance()
  np.testing.assert_allclose(got, var, rtol=1e-5)
  np.testing.assert_allclose(np.sum(got), scale * 4, rtol=1e-5)


def test_anisotropic_default_is_scaled_isotropic():
  for hp, var in [({}, 1.0), ({"scale": 2.5}, 2.5)]:
    np.testing.assert_allclose(priors.make_prior("anisotropic", 3, **hp).variance(), np.full(3, var), rtol=1e-6)


def test_anisotropic_fixed_variances():
  var = np.array([0.1, 1.0, 4.0], np.float32)
  z = _points(3)
  np.testing.assert_allclose(_jit_log_prob("anisotropic", 3, z, variances=var),
                             stats.multivariate_normal(np.zeros(3), np.diag(var)).logpdf(z), rtol=1e-5)


def test_init_prior_params_anisotropic():
  var = np.array([0.2, 1.0, 3.0], np.float32)
  np.testing.assert_array_equal(priors.init_prior_params("anisotropic", 3)["logits"], np.zeros(3))
  params = priors.init_prior_params("anisotropic", 3, variances=var)
  assert set(params) == {"logits"}
  np.testing.assert_allclose(params["logits"], np.log(var), rtol=1e-6)
  # With scale = mean(v) the learnable parameterisation starts exactly at v.
  pz = priors.make_prior("anisotropic", 3, scale=float(var.mean()), **params)
  np.testing.assert_allclose(pz.variance(), var, rtol=1e-5)
  logits = np.array([1.0, 2.0, 3.0], np.float32)
  np.testing.assert_array_equal(priors.init_prior_params("anisotropic", 3, logits=logits)["logits"], logits)


@pytest.mark.parametrize("name,hp", [(n, hp) for n, hp in ALL_PRIORS if n != "anisotropic"])
def test_init_prior_params_empty_for_fixed_priors(name, hp):
  assert priors.init_prior_params(name, 2, **hp) == {}


def test_anisotropic_logits_gradient_closed_form():
  """d/dl log N(z; 0, diag(v)), v = sD softmax(l): with g_i = ∂/∂v_i = (z_i²/v_i − 1)/(2 v_i),
  ∂v_i/∂l_j = v_i (δ_ij − p_j), so the gradient is g ⊙ v − p (g · v)."""
  logits, scale = np.array([0.2, -0.5, 1.0], np.float32), 2.0
  z = _points(3, n=1)[0]
  params = priors.init_prior_params("anisotropic", 3, logits=logits)
  grad = jax.jit(jax.grad(lambda p: priors.make_prior("anisotropic", 3, scale=scale, **p).log_prob(z)))(params)
  v = _softmax_variances(logits, scale)
  p = v / v.sum()
  g = (z.astype(np.float64) ** 2 / v - 1) / (2 * v)
  expected = g * v - p * np.dot(g, v)
  assert np.all(np.abs(expected) > 1e-3)
  np.testing.assert_allclose(grad["logits"], expected, rtol=1e-4, atol=1e-6)


# --- Student-t ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df,scale", [(2.0, 1.0), (9.0, 0.5), (np.array([1.0, 4.0, 30.0], np.float32), 2.0)])
def test_student_t_log_prob(df, scale):
  z = _points(3, std=3.0)
  expected = stats.t.logpdf(z, np.broadcast_to(df, (3,)), 0.0, scale).sum(-1)
  np.testing.assert_allclose(_jit_log_prob("student_t", 3, z, df=df, scale=scale), expected, rtol=1e-5)


def test_student_t_default_df_is_2():
  z = _points(2)
  np.testing.assert_allclose(_jit_log_prob("student_t", 2, z), stats.t.logpdf(z, 2.0).sum(-1), rtol=1e-5)


# --- sparse (spike-and-slab) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma,sigma0", [(0.8, 0.05), (0.3, 0.5), (np.array([0.0, 0.5, 1.0], np.float32), 0.1)])
def test_sparse_log_prob(gamma, sigma0):
  z = _points(3, std=0.4)
  gamma_d = np.broadcast_to(np.asarray(gamma, np.float64), (3,))
  with np.errstate(divide="ignore"):
    expected = np.logaddexp(np.log(gamma_d) + stats.norm.logpdf(z, 0.0, sigma0),
                            np.log1p(-gamma_d) + stats.norm.logpdf(z)).sum(-1)
  np.testing.assert_allclose(_jit_log_prob("sparse", 3, z, gamma=gamma, sigma0=sigma0), expected, rtol=1e-5)


def test_sparse_default_hyperparameters():
  z = _points(2, std=0.3)
  expected = np.log(0.8 * stats.norm.pdf(z, 0.0, 0.05) + 0.2 * stats.norm.pdf(z)).sum(-1)
  np.testing.assert_allclose(_jit_log_prob("sparse", 2, z), expected, rtol=1e-5)


@jax.jit
@functools.partial(jax.grad, argnums=(0, 1, 2))
def _sparse_grads(z, gamma, sigma0):
  return priors.make_prior("sparse", z.shape[-1], gamma=gamma, sigma0=sigma0).log_prob(z).sum()


@pytest.mark.parametrize("gamma,std", [(0.0, 1.0), (1.0, 0.05)])
def test_sparse_extreme_gamma_is_a_gaussian_without_nan(gamma, std):
  """γ = 0 is N(0, I) and γ = 1 is N(0, σ₀² I); log 0 in the weights must not make values or gradients NaN."""
  z = _points(3, std=0.2)
  np.testing.assert_allclose(_jit_log_prob("sparse", 3, z, gamma=gamma, sigma0=0.05),
                             stats.multivariate_normal(np.zeros(3), std**2 * np.eye(3)).logpdf(z), rtol=1e-5)
  dz, dgamma, dsigma0 = _sparse_grads(z, np.float32(gamma), np.float32(0.05))
  assert np.isfinite(dgamma)
  np.testing.assert_allclose(dz, -z / std**2, rtol=1e-4)
  # d/dσ₀ Σ log N(z; 0, σ₀²) = Σ (z²/σ₀³ − 1/σ₀) for the spike alone; no dependence on σ₀ for the slab alone.
  expected = 0.0 if gamma == 0.0 else np.sum(z.astype(np.float64) ** 2 / std**3 - 1 / std)
  np.testing.assert_allclose(dsigma0, expected, rtol=1e-4)


def test_sparse_samples_mix_per_dimension():
  """Each coordinate picks spike or slab on its own: the number of near-zero coordinates per vector is
  Binomial(D, p), not all-or-nothing, and the near-zero fraction follows each dimension's own γ."""
  near = 0.2

  def p_near(gamma, sigma0=0.05):
    return gamma * (2 * stats.norm.cdf(near / sigma0) - 1) + (1 - gamma) * (2 * stats.norm.cdf(near) - 1)

  near_NxD = np.abs(_samples("sparse", SPARSE_D, N_SAMPLES, gamma=np.full(SPARSE_D, 0.8), sigma0=0.05)) < near
  p = p_near(0.8)
  np.testing.assert_allclose(near_NxD.mean(0), np.full(SPARSE_D, p), atol=0.01)
  counts = near_NxD.sum(1)
  np.testing.assert_allclose(counts.mean(), SPARSE_D * p, rtol=0.01)
  np.testing.assert_allclose(counts.var(), SPARSE_D * p * (1 - p), rtol=0.05)  # All-or-nothing: D² p (1 − p).

  gamma_d = np.linspace(0.0, 1.0, SPARSE_D)
  near_NxD = np.abs(_samples("sparse", SPARSE_D, N_SAMPLES, seed=1, gamma=gamma_d, sigma0=0.05)) < near
  np.testing.assert_allclose(near_NxD.mean(0), p_near(gamma_d), atol=0.01)


# --- mixture ------------------------------------------------------------------------------------------------


def _mixture_log_prob(z, means, var_k):
  lp_kn = [stats.multivariate_normal(m, v * np.eye(len(m))).logpdf(z) for m, v in zip(means, var_k)]
  return special.logsumexp(lp_kn, axis=0) - np.log(len(means))


def test_mixture_default_is_pinwheel():
  z = _points(2)
  np.testing.assert_allclose(_jit_log_prob("mixture", 2, z),
                             _mixture_log_prob(z, PINWHEEL_MEANS, [0.03] * 4), rtol=1e-5)


def test_mixture_given_means_and_variances():
  means = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
  var_k = np.array([0.1, 0.5, 2.0], np.float32)
  z = _points(4)
  np.testing.assert_allclose(_jit_log_prob("mixture", 4, z, means=means, variance=var_k),
                             _mixture_log_prob(z, means, var_k), rtol=1e-5)


# --- sample moments against closed forms ---------------------------------------------------------------------


def _mixture_moments(means, var):
  centred = means - means.mean(0)
  return means.mean(0), var * np.eye(means.shape[1]) + centred.T @ centred / len(means)


OTHER_MEANS = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0], [-2.0, 0.5]])
MOMENTS = [  # name, D, hp, mean [D], covariance [D, D]; hp of one structure per prior share a compiled sampler.
    ("isotropic", 3, {}, np.zeros(3), np.eye(3)),
    ("anisotropic", 3, {"logits": np.array([0.0, 1.0, 2.0]), "scale": 2.0}, np.zeros(3),
     np.diag(_softmax_variances([0.0, 1.0, 2.0], 2.0))),
    ("student_t", 3, {"df": 9.0, "scale": 0.5}, np.zeros(3), 0.25 * 9 / 7 * np.eye(3)),
    ("sparse", SPARSE_D, {"gamma": np.full(SPARSE_D, 0.8), "sigma0": 0.05}, np.zeros(SPARSE_D),
     (0.8 * 0.05**2 + 0.2) * np.eye(SPARSE_D)),
    ("sparse", SPARSE_D, {"gamma": np.full(SPARSE_D, 0.4), "sigma0": 0.3}, np.zeros(SPARSE_D),
     (0.4 * 0.3**2 + 0.6) * np.eye(SPARSE_D)),
    ("mixture", 2, {"means": PINWHEEL_MEANS, "variance": 0.03}, *_mixture_moments(PINWHEEL_MEANS, 0.03)),
    ("mixture", 2, {"means": OTHER_MEANS, "variance": 0.2}, *_mixture_moments(OTHER_MEANS, 0.2)),
]


@pytest.mark.parametrize("name,d,hp,mean,cov", MOMENTS)
def test_sample_moments(name, d, hp, mean, cov):
  z = _samples(name, d, N_SAMPLES, **hp)
  std = np.sqrt(np.diag(cov))
  np.testing.assert_allclose(z.mean(0), mean, atol=5 * std.max() / np.sqrt(len(z)))
  np.testing.assert_allclose(np.cov(z, rowvar=False), cov, atol=0.03 * np.max(cov))


# --- pca_logits ---------------------------------------------------------------------------------------------


def test_pca_logits_against_numpy():
  rng = np.random.default_rng(0)
  eig = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.25])
  rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  x = rng.multivariate_normal(np.full(6, 10.0), rotation @ np.diag(eig) @ rotation.T, size=10_000)
  got = priors.pca_logits(x.astype(np.float32), 3)
  expected = np.log(np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1][:3])
  assert got.shape == (3,) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got, np.log(eig[:3]), atol=0.1)  # Centred: the mean 10 leaves no trace.
  np.testing.assert_array_equal(priors.pca_logits(x.reshape(-1, 2, 3), 3), priors.pca_logits(x, 3))


# --- errors -------------------------------------------------------------------------------------------------

BAD = [  # name, D, hp, message pattern
    ("nope", 2, {}, r"unknown prior 'nope'; allowed: isotropic, anisotropic, student_t, sparse, mixture"),
    ("isotropic", 0, {}, "latent_dim must be a positive int"),
    ("isotropic", 2.0, {}, "latent_dim must be a positive int"),
    ("isotropic", 2, {"scale": 1.0}, r"hyperparameter\(s\) \['scale'\] for prior 'isotropic'; allowed: none"),
    ("student_t", 2, {"nu": 3.0}, r"\['nu'\] for prior 'student_t'; allowed: df, scale"),
    ("sparse", 2, {"sigma": 0.1}, "allowed: gamma, sigma0"),
    ("sparse", 2, {"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
    ("sparse", 2, {"gamma": -0.1}, r"gamma must be in \[0, 1\]"),
    ("sparse", 2, {"gamma": np.nan}, r"gamma must be in \[0, 1\]"),
    ("sparse", 2, {"sigma0": 0.0}, "sigma0 must be > 0"),
    ("sparse", 2, {"gamma": np.full(3, 0.5)}, r"gamma must have shape \(\) or \(2,\)"),
    ("student_t", 2, {"df": 0.0}, "df must be > 0"),
    ("student_t", 2, {"df": np.array([3.0, -1.0])}, "df must be > 0"),
    ("student_t", 2, {"scale": -1.0}, "scale must be > 0"),
    ("anisotropic", 3, {"scale": 0.0}, "scale must be > 0"),
    ("anisotropic", 3, {"variances": [1.0, 0.0, 2.0]}, "variances must be > 0"),
    ("anisotropic", 3, {"logits": np.zeros(2)}, r"logits must have shape \(3,\)"),
    ("anisotropic", 3, {"logits": np.zeros(3), "variances": np.ones(3)}, "either `variances`, or `logits`"),
    ("anisotropic", 3, {"variances": np.ones(3), "scale": 2.0}, "either `variances`, or `logits`"),
    ("anisotropic", 3, {"log_var": np.zeros(3)}, "allowed: logits, variances, scale"),
    ("mixture", 3, {}, "default \\(pinwheel\\) means need latent_dim=2"),
    ("mixture", 2, {"means": np.zeros((4, 3))}, r"means must have shape \[K, 2\]"),
    ("mixture", 2, {"means": np.zeros(2)}, r"means must have shape \[K, 2\]"),
    ("mixture", 2, {"variance": -0.1}, "variance must be > 0"),
    ("mixture", 2, {"variance": np.ones(3)}, r"variance must have shape \(\) or \(4,\)"),
]


@pytest.mark.parametrize("name,d,hp,match", BAD)
def test_errors(name, d, hp, match):
  with pytest.raises(ValueError, match=match):
    priors.make_prior(name, d, **hp)
  with pytest.raises(ValueError, match=match):
    priors.init_prior_params(name, d, **hp)


def test_shape_errors_under_jit():
  with pytest.raises(ValueError, match=r"logits must have shape \(3,\)"):
    jax.jit(lambda l: priors.make_prior("anisotropic", 3, logits=l).log_prob(jnp.zeros(3)))(jnp.zeros(4))


@pytest.mark.parametrize("data,d,match", [
    (np.ones((1, 3)), 1, "at least 2 data points"),
    (np.random.default_rng(0).normal(size=(10, 3)), 4, r"latent_dim must be in \[1, 3\]"),
    (np.random.default_rng(0).normal(size=(10, 1)) * np.ones((1, 3)), 2, "rank < latent_dim=2"),
])
def test_pca_logits_errors(data, d, match):
  with pytest.raises(ValueError, match=match):
    priors.pca_logits(data, d)
