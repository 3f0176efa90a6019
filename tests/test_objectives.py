"""Tests of decompvae.objectives: Theorem 1, rotation invariance, the IWAE bound and the training loss."""

import dataclasses
import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats
from tensorflow_probability.substrates import jax as tfp

from decompvae import divergences, objectives
from test_divergences import diag_gaussian, mmd_numpy


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
  """z ~ N(0, I_D), x | z ~ N(z W + b, σ² I_P); a diagonal-Gaussian encoder linear in x.

  log p(x) = log N(x; b, WᵀW + σ² I) is exact. It follows the VAE contract (encode/decode return
  `(distribution, updates)`); with `train=True` it reports fake BatchNorm-like statistics, to check how
  `vae_loss` merges the two halves' updates.
  """

  @staticmethod
  def make_variables(seed=0, latent_dim=2, data_dim=5, sigma=0.5):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(latent_dim, data_dim)), 0.3 * rng.normal(size=data_dim)
    # Mean-field encoder: the exact posterior's mean, Λ⁻¹ W (x − b)ᵀ / σ² with Λ = I + W Wᵀ / σ², and twice its
    # conditional standard deviations, so that the ELBO is well below log p(x) (≈ 1.7 nats).
    precision = np.eye(latent_dim) + w @ w.T / sigma**2
    a = w.T @ np.linalg.inv(precision) / sigma**2
    params = {"w": w, "b": b, "log_sigma": np.log(sigma), "a": a, "c": -b @ a,
              "log_s": -0.5 * np.log(np.diag(precision)) + 0.7}
    return {"params": {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}}

  def encode(self, variables, x, *, train=False):
    p = variables["params"]
    updates = {"batch_stats": {"encoder": {"mean": jnp.mean(x, 0)}}} if train else {}
    return distrax.MultivariateNormalDiag(x @ p["a"] + p["c"], jnp.exp(p["log_s"]) * jnp.ones_like(p["c"])), updates

  def decode(self, variables, z, *, train=False):
    p = variables["params"]
    updates = {"batch_stats": {"decoder": {"mean": jnp.mean(z, 0)}}} if train else {}
    loc = z @ p["w"] + p["b"]
    return distrax.Independent(distrax.Normal(loc, jnp.exp(p["log_sigma"]) * jnp.ones_like(loc)), 1), updates


def _params64(variables):
  return {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}


def exact_log_px(variables, x):
  p = _params64(variables)
  cov = p["w"].T @ p["w"] + np.exp(2 * p["log_sigma"]) * np.eye(len(p["b"]))
  return stats.multivariate_normal(p["b"], cov).logpdf(np.asarray(x, np.float64))


def exact_elbo(variables, x):
  """E_q[log p(x|z)] − KL(q ‖ N(0, I)) in closed form for the linear-Gaussian model."""
  p = _params64(variables)
  x = np.asarray(x, np.float64)
  mu, s2, sigma2 = x @ p["a"] + p["c"], np.exp(2 * p["log_s"]), np.exp(2 * p["log_sigma"])
  resid = np.sum((x - mu @ p["w"] - p["b"]) ** 2, -1) + np.sum(s2[:, None] * p["w"] ** 2)
  e_lpx_z = -0.5 * x.shape[-1] * np.log(2 * np.pi * sigma2) - resid / (2 * sigma2)
  kl = 0.5 * np.sum(s2 + mu**2 - 1 - np.log(s2), -1)
  return e_lpx_z - kl


def gaussian_entropy(scale):
  return np.sum(0.5 * np.log(2 * np.pi * np.e * np.asarray(scale, np.float64) ** 2), -1)


# --- Theorem 1 (docs/science.md §2) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.25, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("sigma2", [[1.0, 1.0, 1.0], [0.2, 1.5, 4.0]])
def test_theorem1_gaussian_prior(beta, sigma2):
  rng = np.random.default_rng(0)
  sigma2 = np.asarray(sigma2)
  mu, s = rng.normal(size=(6, 3)), rng.uniform(0.2, 2.0, size=(6, 3))
  qz_x = diag_gaussian(mu, s)
  lpx_z = rng.normal(size=6) * 10  # any reconstruction term: the same on both sides
  l_beta = objectives.beta_vae_objective(lpx_z, divergences.kl_qp(qz_x, diag_gaussian(np.zeros(3), np.sqrt(sigma2))),
                                         beta=beta)
  annealed_prior = diag_gaussian(np.zeros(3), np.sqrt(sigma2 / beta))  # f_β = N(0, Σ/β)
  elbo_annealed = objectives.beta_vae_objective(lpx_z, divergences.kl_qp(qz_x, annealed_prior), beta=1.0)
  d = len(sigma2)
  log_f_beta = (d * (1 - beta) / 2 * np.log(2 * np.pi) + (1 - beta) / 2 * np.sum(np.log(sigma2))
                - d / 2 * np.log(beta))
  np.testing.assert_allclose(l_beta, elbo_annealed + (beta - 1) * gaussian_entropy(s) + log_f_beta,
                             rtol=1e-5, atol=1e-4)
  # The closed form of log F_β = log ∫ p(z)^β dz, checked by quadrature one dimension at a time.
  quad = sum(np.log(integrate.quad(lambda z, v=v: stats.norm.pdf(z, 0, np.sqrt(v)) ** beta, -np.inf, np.inf)[0])
             for v in sigma2)
  np.testing.assert_allclose(log_f_beta, quad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_theorem1_student_t_prior(beta):
  df, scale = 3.0, 1.5
  df_beta = beta * (df + 1) - 1  # docs/science.md §2: f_β = Student-t(ν', 0, s'), s'² = ν s² / ν'
  scale_beta = np.sqrt(df * scale**2 / df_beta)
  log_f_beta = np.log(integrate.quad(lambda z: stats.t.pdf(z, df, 0, scale) ** beta, -np.inf, np.inf)[0])
  grid = np.linspace(-20, 20, 41)
  np.testing.assert_allclose(beta * stats.t.logpdf(grid, df, 0, scale) - log_f_beta,
                             stats.t.logpdf(grid, df_beta, 0, scale_beta), rtol=1e-7, atol=1e-9)

  def student_t(df, scale):
    return distrax.Independent(tfp.distributions.StudentT(df=jnp.full(1, df), loc=jnp.zeros(1),
                                                          scale=jnp.full(1, scale)), 1)

  # Theorem 1 with the Monte-Carlo KL: it holds sample by sample, with −log q(z|x) as the entropy estimate.
  qz_x = diag_gaussian([[0.3]], [[0.7]])
  z = np.asarray(jax.jit(lambda k: qz_x.sample(seed=k, sample_shape=(16,)))(jax.random.key(0)))  # [16, 1, 1]
  lqz_x = stats.norm.logpdf(z[..., 0], 0.3, 0.7)
  l_beta, elbo_annealed = jax.jit(lambda z: (-beta * divergences.kl_qp(qz_x, student_t(df, scale), z),
                                               -divergences.kl_qp(qz_x, student_t(df_beta, scale_beta), z)))(z)
  np.testing.assert_allclose(l_beta, elbo_annealed - (beta - 1) * lqz_x + log_f_beta, rtol=1e-4, atol=1e-4)


# --- Rotation invariance (docs/science.md §2) ------------------------------------------------------------------------


def test_rotation_invariance_needs_an_isotropic_prior():
  rng = np.random.default_rng(1)
  dim, data_dim, beta = 3, 4, 2.0
  mu = rng.normal(size=dim)
  m = rng.normal(size=(dim, dim))
  cov = m @ m.T + 0.3 * np.eye(dim)
  rot = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
  w1, w2, x = rng.normal(size=(dim, 6)), rng.normal(size=(6, data_dim)), rng.normal(size=data_dim)
  eps = rng.normal(size=(8, dim))
  z = mu + eps @ np.linalg.cholesky(cov).T  # z = μ + L ε, row by row

  def lpx_z(z, rotated):
    z_in = z @ rot if rotated else z  # g'(z') = g(Rᵀ z') for the rotated model
    return np.sum(stats.norm.logpdf(x, np.tanh(z_in @ w1) @ w2, 0.5), -1)

  def kl_closed_form(mu, cov, var):
    return 0.5 * (np.sum(np.diag(cov) / var) + np.sum(mu**2 / var) - dim + np.sum(np.log(var))
                  - np.linalg.slogdet(cov)[1])

  def l_beta(var, rotated):
    m, c, zz = (rot @ mu, rot @ cov @ rot.T, z @ rot.T) if rotated else (mu, cov, z)  # z' = R z, same ε
    qz_x = distrax.MultivariateNormalFullCovariance(jnp.asarray(m, jnp.float32), jnp.asarray(c, jnp.float32))
    pz = diag_gaussian(np.zeros(dim), np.sqrt(var))
    kl_mc = np.asarray(divergences.kl_qp(qz_x, pz, jnp.asarray(zz, jnp.float32)), np.float64)
    return (objectives.beta_vae_objective(lpx_z(zz, rotated), kl_mc, beta=beta),
            objectives.beta_vae_objective(lpx_z(zz, rotated), kl_closed_form(m, c, var), beta=beta))

  for var in (np.full(dim, 0.7), np.array([0.2, 1.0, 3.0])):
    (mc, exact), (mc_rot, exact_rot) = l_beta(var, False), l_beta(var, True)
    if np.all(var == var[0]):
      np.testing.assert_allclose(mc_rot, mc, rtol=1e-4, atol=1e-3)
      np.testing.assert_allclose(exact_rot, exact, rtol=1e-10)
    else:
      assert np.max(np.abs(mc_rot - mc)) > 1e-2 and np.max(np.abs(exact_rot - exact)) > 1e-2


# --- IWAE bound --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
  model = LinearGaussian()
  variables = model.make_variables()
  x = jnp.asarray(2.0 * np.random.default_rng(1).normal(size=(200, 5)), jnp.float32)
  return model, variables, x, diag_gaussian(np.zeros(2), np.ones(2))


def test_iwae_rises_towards_log_px(toy):
  model, variables, x, pz = toy
  log_px, elbo = np.mean(exact_log_px(variables, x)), np.mean(exact_elbo(variables, x))
  bound = functools.partial(objectives.iwae_bound, variables, x, model=model, pz=pz)
  num_samples = (1, 10, 100, 1000)

  @jax.jit  # one compilation for all the bounds
  def run():
    bounds = [bound(jax.random.key(k), num_samples=k) for k in num_samples]  # chunks of 100 for K = 1000
    return bounds, bound(jax.random.key(1000), num_samples=1000, chunk_size=1000)

  per_point, unchunked = jax.tree.map(lambda a: np.asarray(a, np.float64), run())
  values = [b.mean() for b in per_point]
  errors = [b.std() / np.sqrt(len(b)) for b in per_point]
  assert elbo < log_px - 1.0  # the encoder is not the posterior: there is a gap to close
  assert abs(values[0] - elbo) < 4 * errors[0]  # K = 1 estimates the ELBO
  assert np.all(np.diff(values) > 0), values
  assert values[1] > elbo
  assert values[-1] < log_px + 4 * errors[-1]
  assert log_px - values[-1] < 0.1 * (log_px - elbo)
  # Ten chunks of 100 or one chunk of 1000: the same samples, the same bound.
  np.testing.assert_allclose(unchunked, per_point[-1], rtol=1e-5)
  with pytest.raises(ValueError, match="divide"):
    bound(jax.random.key(0), num_samples=1000, chunk_size=300)


def test_iwae_stderr_is_the_delta_method_error_of_the_same_samples(toy):
  model, variables, x, pz = toy
  x, key, num_samples = x[:8], jax.random.key(3), 40
  bound = jax.jit(functools.partial(objectives.iwae_bound, model=model, pz=pz, num_samples=num_samples,
                                    return_stderr=True), static_argnames="chunk_size")
  value, stderr = bound(variables, x, key, chunk_size=40)
  # The same samples, redone in NumPy: z_k = qz_x.sample(seed=split(key, K)[k]).
  qz_x = model.encode(variables, x)[0]
  z = np.float64(jax.jit(jax.vmap(lambda k: qz_x.sample(seed=k)))(jax.random.split(key, num_samples)))
  p = {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}
  mu, s = np.float64(x) @ p["a"] + p["c"], np.exp(p["log_s"])
  log_w = (np.sum(stats.norm.logpdf(z), -1) - np.sum(stats.norm.logpdf(z, mu, s), -1)
           + np.sum(stats.norm.logpdf(np.float64(x), z @ p["w"] + p["b"], np.exp(p["log_sigma"])), -1))  # [K, B]
  w = np.exp(log_w - log_w.max(0))
  np.testing.assert_allclose(value, special.logsumexp(log_w, 0) - np.log(num_samples), rtol=1e-5)
  np.testing.assert_allclose(stderr, np.std(w, 0, ddof=1) / np.sqrt(num_samples) / np.mean(w, 0), rtol=1e-4)
  for chunk_size in (4, 20):  # the chunking changes neither
    v, e = bound(variables, x, key, chunk_size=chunk_size)
    np.testing.assert_allclose(v, value, rtol=1e-5)
    np.testing.assert_allclose(e, stderr, rtol=1e-4)
  # It describes the spread of log p̂ over independent draws of the K samples.
  many = jax.jit(jax.vmap(lambda k: bound(variables, x, k, chunk_size=40)))(jax.random.split(key, 300))
  ratio = np.std(np.asarray(many[0]), axis=0, ddof=1) / np.mean(np.asarray(many[1]), axis=0)
  assert np.all((0.8 < ratio) & (ratio < 1.25)), ratio


def test_iwae_from_log_sums_by_hand():
  w = np.array([[1.0, 3.0], [2.0, 2.0]])  # two points, K = 2
  for xp in (np, jnp):
    log_p, se = objectives.iwae_from_log_sums(xp.log(xp.asarray(w.sum(1))), xp.log(xp.asarray((w**2).sum(1))), 2)
    np.testing.assert_allclose(log_p, np.log([2.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(se, [np.std([1.0, 3.0], ddof=1) / np.sqrt(2) / 2.0, 0.0], rtol=1e-6, atol=1e-7)
  _, se = objectives.iwae_from_log_sums(np.zeros(3), np.zeros(3), 1)
  assert np.all(np.isnan(se))


# --- vae_loss ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("divergence,prior_name,analytic_kl",
                         [("mmd_dim", "normal", True), ("kl_inclusive", "student_t", True),
                          ("mmd_full", "normal", False)])
def test_vae_loss_matches_numpy(toy, divergence, prior_name, analytic_kl):
  model, variables, x, pz = toy
  x, key = x[:16], jax.random.key(5)
  if prior_name == "student_t":
    pz = distrax.Independent(tfp.distributions.StudentT(df=jnp.full(2, 4.0), loc=jnp.zeros(2), scale=jnp.ones(2)), 1)

  @jax.jit
  def run(variables, x, key):
    loss, aux = objectives.vae_loss(variables, x, key, model=model, pz=pz, beta=2.0, alpha=0.7,
                                    divergence=divergence, analytic_kl=analytic_kl)
    # The documented use of the key, to redo everything else in NumPy.
    key_z, key_d = jax.random.split(key)
    z = model.encode(variables, x)[0].sample(seed=key_z)
    return loss, aux, z, pz.sample(seed=key_d, sample_shape=(16,))

  loss, (metrics, updates), z, zp = jax.tree.map(np.asarray, run(variables, x, key))
  z, zp, x = np.float64(z), np.float64(zp), np.float64(x)
  p = _params64(variables)
  mu, s = x @ p["a"] + p["c"], np.exp(p["log_s"])
  lpx_z = np.sum(stats.norm.logpdf(x, z @ p["w"] + p["b"], np.exp(p["log_sigma"])), -1)
  if analytic_kl and prior_name == "normal":
    kl = 0.5 * np.sum(s**2 + mu**2 - 1 - np.log(s**2), -1)
  else:
    lpz = np.sum(stats.t.logpdf(z, 4.0) if prior_name == "student_t" else stats.norm.logpdf(z), -1)
    kl = np.sum(stats.norm.logpdf(z, mu, s), -1) - lpz
  if divergence == "kl_inclusive":
    lq = special.logsumexp(np.sum(stats.norm.logpdf(zp[:, None, :], mu[None], s), -1), axis=1) - np.log(16)
    reg = np.mean(np.sum(stats.t.logpdf(zp, 4.0), -1) - lq)
  else:
    reg = mmd_numpy(z, zp, full=divergence == "mmd_full")
  expected = {"loss": -np.mean(lpx_z - 2.0 * kl) + 0.7 * reg, "elbo": np.mean(lpx_z - kl),
              "lpx_z": np.mean(lpx_z), "kl": np.mean(kl), "reg": reg}
  assert set(metrics) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-4, atol=1e-4, err_msg=name)
  np.testing.assert_allclose(loss, expected["loss"], rtol=1e-4, atol=1e-4)
  assert set(updates["batch_stats"]) == {"encoder", "decoder"}  # both halves' updates are kept


def test_vae_loss_vmaps_over_beta_and_alpha(toy):
  model, variables, x, pz = toy
  loss_fn = functools.partial(objectives.vae_loss, variables, x[:32], jax.random.key(2), model=model, pz=pz,
                              divergence="mmd_dim")
  betas, alphas = jnp.array([0.5, 1.0, 4.0]), jnp.array([0.0, 1.0, 10.0])

  @jax.jit
  def run(betas, alphas):
    vmapped = jax.vmap(lambda b, a: loss_fn(beta=b, alpha=a))(betas, alphas)
    singles = [loss_fn(beta=betas[i], alpha=alphas[i]) for i in range(3)]
    return vmapped, singles, loss_fn(beta=1.0, alpha=0.0)

  (losses, (metrics, _)), singles, (skipped, (skipped_metrics, _)) = run(betas, alphas)
  for i, (loss, (single_metrics, _)) in enumerate(singles):
    np.testing.assert_allclose(losses[i], loss, rtol=1e-5)
    for name in single_metrics:
      np.testing.assert_allclose(metrics[name][i], single_metrics[name], rtol=1e-5, atol=1e-6)
  # A traced α computes the divergence even where it is 0; a Python 0 skips it.
  assert float(metrics["reg"][0]) != 0.0
  assert float(skipped_metrics["reg"]) == 0.0
  np.testing.assert_allclose(skipped, losses[1] - alphas[1] * metrics["reg"][1], rtol=1e-5)


def test_vae_loss_gradients_reach_model_and_prior(toy):
  model, variables, x, _ = toy

  def loss(variables, log_var):
    pz = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.exp(0.5 * log_var))
    return objectives.vae_loss(variables, x[:32], jax.random.key(0), model=model, pz=pz, alpha=5.0)[0]

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, jnp.array([0.5, -0.5]))
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)


def test_objectives_propagate_non_finite_values():
  lpx_z, kl = np.array([1.0, np.nan, 2.0]), np.array([0.5, 0.5, np.inf])
  out = objectives.decomposition_objective(lpx_z, kl, 0.1, beta=1.0, alpha=2.0)
  np.testing.assert_allclose(out[0], 1.0 - 0.5 - 0.2)
  assert np.isnan(out[1]) and out[2] == -np.inf
  assert np.isnan(objectives.decomposition_objective(lpx_z[0], kl[0], np.inf, beta=1.0, alpha=0.0))


def test_vae_loss_rejects_unknown_divergence(toy):
  model, variables, x, pz = toy
  with pytest.raises(ValueError, match="mmd_dim"):
    objectives.vae_loss(variables, x[:4], jax.random.key(0), model=model, pz=pz, divergence="mmd")
