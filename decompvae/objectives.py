"""Objectives: the β-VAE and α-β decomposition objectives, the training loss and the IWAE bound."""

import numbers
from collections.abc import Mapping
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from decompvae import divergences
from decompvae.divergences import DIVERGENCES

Metrics = dict[str, jax.Array]


def beta_vae_objective(lpx_z: jax.Array, kl: jax.Array, *, beta) -> jax.Array:
  """The β-VAE objective per data point (to maximise).

      L_β(x) = E_q(z|x)[log p(x|z)] − β · KL(q(z|x) ‖ p(z))

  β = 1 is the ELBO. By Theorem 1, L_β is the ELBO under the annealed prior p(z)^β / F_β plus
  (β − 1)·H[q(z|x)] + log F_β: β controls the overlap of the encodings, not the structure of q(z).

  Args:
    lpx_z: [B] log p(x|z) (a single-sample estimate of the expectation).
    kl: [B] KL(q(z|x) ‖ p(z)), analytic or estimated (see `divergences.kl_qp`).
    beta: weight of the KL; a float or a traced scalar.

  Returns:
    [B] objective values. Nothing is masked: a NaN or inf in the inputs stays in the output.

  References:
    Higgins et al. (2017), "β-VAE"; Mathieu et al. (2019), Theorem 1 (docs/science.md §2).
  """
  return lpx_z - beta * kl


def decomposition_objective(lpx_z: jax.Array, kl: jax.Array, reg: jax.Array, *, beta, alpha) -> jax.Array:
  """The α-β decomposition objective per data point (to maximise).

      L_{α,β}(x) = E_q(z|x)[log p(x|z)] − β · KL(q(z|x) ‖ p(z)) − α · D(q(z), p(z))

  β tunes the overlap of the encodings, α pushes the aggregate posterior q(z) towards the prior through a
  minibatch divergence D (`divergences.mmd_dim`, `mmd_full` or `kl_inclusive`), one value for the whole batch.

  Args:
    lpx_z: [B] log p(x|z).
    kl: [B] KL(q(z|x) ‖ p(z)).
    reg: scalar D̂(q(z), p(z)) of the batch (broadcast to every point).
    beta: weight of the KL; a float or a traced scalar.
    alpha: weight of the divergence; a float or a traced scalar.

  Returns:
    [B] objective values. Nothing is masked: NaN/inf in any input propagates (note 0 · inf = NaN, so
    α = 0 does not hide a non-finite `reg`; `vae_loss` skips the divergence when α is a Python 0).

  References:
    Mathieu et al. (2019), the decomposition objective L_{α,β} (docs/science.md §1).
  """
  return beta_vae_objective(lpx_z, kl, beta=beta) - alpha * reg


def _merge(tree_a: Mapping[str, Any], tree_b: Mapping[str, Any]) -> Mapping[str, Any]:
  """Nested-dict union of two variable collections; `tree_b` wins on common leaves."""
  if not tree_b:
    return tree_a
  flat = traverse_util.flatten_dict(tree_a, keep_empty_nodes=True)
  flat.update(traverse_util.flatten_dict(tree_b, keep_empty_nodes=True))
  return traverse_util.unflatten_dict(flat)


def _divergence(name: str, qz_x: distrax.Distribution, z_BxD: jax.Array, pz: distrax.Distribution,
                key: jax.Array) -> jax.Array:
  if name == "kl_inclusive":
    return divergences.kl_inclusive(qz_x, pz, key)
  mmd = {"mmd_dim": divergences.mmd_dim, "mmd_full": divergences.mmd_full}[name]
  return mmd(z_BxD, pz.sample(seed=key, sample_shape=(z_BxD.shape[0],)))


def vae_loss(variables, x_BxX: jax.Array, key: jax.Array, *, model, pz: distrax.Distribution, beta=1.0,
             alpha=0.0, divergence: str = "mmd_dim", analytic_kl: bool = True,
             train: bool = True) -> tuple[jax.Array, tuple[Metrics, dict[str, Any]]]:
  """Loss of one batch: the negative α-β decomposition objective, averaged over the batch.

      loss = −(1/B) Σ_b [ log p(x_b|z_b) − β · KL(q(z|x_b) ‖ p(z)) ] + α · D̂(q(z), p(z)),
      z_b ~ q(z|x_b) (one reparameterised sample each),  D̂ on {z_b} (and prior samples), one per batch.

  log p(x|z) is summed over pixels; the KL is analytic when `analytic_kl` and both distributions are
  diagonal Gaussians, otherwise log q(z_b|x_b) − log p(z_b) at the same z_b. The authors sum the per-point
  objective over the batch; the mean used here divides the loss by B and keeps α on the per-point scale.
  When `alpha` is a Python number equal to 0 the divergence is not computed ("reg" is 0); a traced `alpha`
  (e.g. under `jax.vmap` over α or β) always computes it. Non-finite values are never masked: they reach the
  loss, and the caller (the training loop) is expected to fail loudly on them.

  Keys: `key_z, key_d = jax.random.split(key)`; z = qz_x.sample(seed=key_z); the divergence draws its prior
  samples with `pz.sample(seed=key_d, sample_shape=(B,))`.

  Args:
    variables: the model's variables ({"params": ..., optionally "batch_stats": ...}).
    x_BxX: batch of data, leading axis B.
    key: PRNG key of this step.
    model: object with `encode(variables, x, train=)` and `decode(variables, z, train=)`, each returning
      `(distribution, updates)` (see `decompvae.vae.VAE`).
    pz: prior, a distrax distribution with event shape (D,).
    beta: KL weight β (float or traced scalar).
    alpha: divergence weight α (float or traced scalar).
    divergence: one of DIVERGENCES.
    analytic_kl: use the closed-form KL when it exists.
    train: passed to the model (BatchNorm uses batch statistics and returns updated running averages).

  Returns:
    `(loss, (metrics, updates))`: scalar loss; metrics = {"loss", "elbo", "lpx_z", "kl", "reg"}, batch means
    of scalars, with elbo = mean(lpx_z − kl) the β = 1 ELBO; updates = the models' updated non-parameter
    collections ({"batch_stats": ...} when training a BatchNorm model, else {}).

  Raises:
    ValueError: `divergence` is not one of DIVERGENCES.

  References:
    Mathieu et al. (2019) (docs/science.md §1, §3); Kingma & Welling (2014), "Auto-Encoding Variational Bayes".
  """
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES}")
  key_z, key_d = jax.random.split(key)
  qz_x, enc_updates = model.encode(variables, x_BxX, train=train)
  z_BxD = qz_x.sample(seed=key_z)
  # Decode with the encoder's updated statistics so that the decoder's updates (whether they hold the whole
  # collection or only the decoder's part) merge into one consistent collection.
  px_z, dec_updates = model.decode(_merge(variables, enc_updates), z_BxD, train=train)
  lpx_z = px_z.log_prob(x_BxX)
  kl = divergences.kl_qp(qz_x, pz, z_BxD, analytic=analytic_kl)
  skip_reg = isinstance(alpha, numbers.Real) and alpha == 0  # a Python/NumPy 0, not a traced one
  reg = jnp.zeros((), lpx_z.dtype) if skip_reg else _divergence(divergence, qz_x, z_BxD, pz, key_d)
  loss = -jnp.mean(decomposition_objective(lpx_z, kl, reg, beta=beta, alpha=alpha))
  metrics = {"loss": loss, "elbo": jnp.mean(lpx_z - kl), "lpx_z": jnp.mean(lpx_z), "kl": jnp.mean(kl),
             "reg": reg}
  return loss, (metrics, _merge(enc_updates, dec_updates))


def iwae_log_sums(variables, x_BxX: jax.Array, qz_x: distrax.Distribution, z_CxBxD: jax.Array, *, model,
                  pz: distrax.Distribution) -> tuple[jax.Array, jax.Array]:
  """Sums of importance weights over C samples per data point, in log space: one chunk of an IWAE estimate.

      log w_cb = log p(z_cb) + log p(x_b|z_cb) − log q(z_cb|x_b),
      returns  ( log Σ_c w_cb,  log Σ_c w_cb² ),  each [B].

  The C × B decoder passes run as one batched call. Chunks over disjoint samples combine by log-sum-exp
  (`iwae_from_log_sums`), so an estimate with K samples can be computed in any number of chunks.

  Args:
    variables: the model's variables.
    x_BxX: batch of data, leading axis B.
    qz_x: q(z|x_BxX), batch shape (B,), event shape (D,) (what `model.encode` returned for `x_BxX`).
    z_CxBxD: C samples of z per data point, drawn from `qz_x`.
    model: object with `decode` (called with train=False).
    pz: prior, event shape (D,).

  Returns:
    `(log_sum_w [B], log_sum_w2 [B])`.

  References:
    Burda et al. (2016), "Importance Weighted Autoencoders"; docs/science.md §3.
  """
  # The decoder sees the latents example-major ([B, C] flattened), so that when the batch is split over
  # devices each device decodes its own examples' samples and no latents move between devices.
  px_z, _ = model.decode(variables, jnp.swapaxes(z_CxBxD, 0, 1), train=False)
  log_px_z_CxB = px_z.log_prob(x_BxX[:, None]).T
  log_w_CxB = pz.log_prob(z_CxBxD) + log_px_z_CxB - qz_x.log_prob(z_CxBxD)
  return jax.nn.logsumexp(log_w_CxB, axis=0), jax.nn.logsumexp(2.0 * log_w_CxB, axis=0)


def iwae_from_log_sums(log_sum_w, log_sum_w2, num_samples: int):
  """The IWAE estimate log p̂(x) and its Monte-Carlo standard error from the sums of K importance weights.

      log p̂ = log Σ_k w_k − log K,
      se(log p̂)² ≈ Var̂(w) / (K w̄²) = (K Σ_k w̃_k² − 1) / (K − 1),   w̃_k = w_k / Σ_j w_j,

  the delta-method variance of log p̂ over repeated draws of the K samples, with the unbiased sample variance of
  the weights (1/K ≤ Σ w̃² ≤ 1, so 0 ≤ se² ≤ 1; K Σ w̃² = K / ESS, ESS = 1 / Σ w̃² the effective sample size).
  It describes the spread of the estimate, not its bias (E[log p̂] ≤ log p(x), a gap that shrinks with K).
  With heavy-tailed weights (an encoder narrower than the posterior; a small ESS is the sign) it underestimates
  the spread: for a briefly trained dSprites model (median ESS 3 at K = 100) the spread over independent draws
  was 2–3× larger (BUILD_NOTES.md, "Evaluation speed"). K = 1 gives se = NaN.

  Works on numpy (float64 on the host) and jax arrays alike.

  Args:
    log_sum_w: log Σ_k w_k, any shape.
    log_sum_w2: log Σ_k w_k², same shape.
    num_samples: K.

  Returns:
    `(log_p_hat, stderr)`, each of the inputs' shape.

  References:
    Burda et al. (2016); Owen (2013), "Monte Carlo theory, methods and examples", §9.2 (effective sample size)
    and §2.7 (delta method); docs/science.md §3.
  """
  xp = jnp if isinstance(log_sum_w, jax.Array) else np
  k = num_samples
  squared_share = xp.exp(log_sum_w2 - 2.0 * log_sum_w)  # Σ w̃²
  variance = xp.maximum(k * squared_share - 1.0, 0.0) / (k - 1) if k > 1 else xp.full_like(squared_share, np.nan)
  return log_sum_w - np.log(k), xp.sqrt(variance)


def iwae_bound(variables, x_BxX: jax.Array, key: jax.Array, *, model, pz: distrax.Distribution,
               num_samples: int = 1000, chunk_size: int = 100, return_stderr: bool = False):
  """Importance-weighted lower bound on log p(x) with K posterior samples (evaluation mode).

      log p̂(x) = log (1/K) Σ_k p(z_k) p(x|z_k) / q(z_k|x),   z_k ~ q(z|x),
      E[log p̂(x)] ≤ log p(x), increasing in K; K = 1 gives the ELBO (in expectation).

  The K samples are processed `chunk_size` at a time: each chunk is one decoder call on chunk_size × B
  latents (`iwae_log_sums`), chunks run under `lax.map` and combine by log-sum-exp, so memory grows with
  chunk_size × B, not K (forward convolutions in a `lax.map` body run as fast on XLA:CPU as unrolled chunks or
  separate calls; BUILD_NOTES.md, "Evaluation speed"). Sample k uses key `jax.random.split(key, K)[k]` for the
  whole batch, so the result does not depend on `chunk_size`. For whole data sets, `decompvae.inference.iwae`
  dispatches the chunks as separate calls with one key per example.

  Args:
    variables: the model's variables.
    x_BxX: batch of data, leading axis B.
    key: PRNG key.
    model: object with `encode`/`decode` (called with train=False).
    pz: prior, event shape (D,).
    num_samples: K.
    chunk_size: samples per chunk; must divide K (clipped to K).
    return_stderr: also return the Monte-Carlo standard error of each estimate (see `iwae_from_log_sums`).

  Returns:
    [B] bound per data point; with `return_stderr`, `(bound [B], stderr [B])`.

  Raises:
    ValueError: `chunk_size` does not divide `num_samples`, or either is not positive.

  References:
    Burda et al. (2016), "Importance Weighted Autoencoders"; Mathieu et al. (2019); docs/science.md §3, §6.
  """
  chunk_size = min(chunk_size, num_samples)
  if chunk_size < 1 or num_samples % chunk_size:
    raise ValueError(f"chunk_size ({chunk_size}) must be positive and divide num_samples ({num_samples})")
  qz_x, _ = model.encode(variables, x_BxX, train=False)
  keys = jax.random.split(key, num_samples).reshape(num_samples // chunk_size, chunk_size)

  def chunk_sums(keys_C):
    z_CxBxD = jax.vmap(lambda k: qz_x.sample(seed=k))(keys_C)
    return iwae_log_sums(variables, x_BxX, qz_x, z_CxBxD, model=model, pz=pz)

  log_sum_w, log_sum_w2 = (jax.nn.logsumexp(s, axis=0) for s in jax.lax.map(chunk_sums, keys))
  bound, stderr = iwae_from_log_sums(log_sum_w, log_sum_w2, num_samples)
  return (bound, stderr) if return_stderr else bound
