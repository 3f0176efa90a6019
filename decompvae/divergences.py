"""Divergences of the objective: KL(q(z|x) ‖ p(z)) and the minibatch estimates of D(q(z), p(z))."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np

DIVERGENCES = ("mmd_dim", "mmd_full", "kl_inclusive")

# Scales s of the inverse-multiquadric kernels k_s(a, b) = C / (C + ‖a - b‖²), C = 2s (docs/science.md §3).
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def kl_qp(qz_x: distrax.Distribution, pz: distrax.Distribution, z=None, *, analytic: bool = True) -> jax.Array:
  """KL(q(z|x) ‖ p(z)) per data point: analytic for two diagonal Gaussians, else one Monte-Carlo sample.

      KL = E_q[log q(z|x) − log p(z)]  ≈  log q(z|x) − log p(z)  at the given z ~ q(z|x)

  The analytic form is used when `analytic` is true and both `qz_x` and `pz` are
  `distrax.MultivariateNormalDiag` (a batch of posteriors against an unbatched prior broadcasts). Otherwise `z`
  must be the reparameterised sample used for the reconstruction, so that the estimate is unbiased and
  differentiable.

  Args:
    qz_x: posterior, batch shape (B,), event shape (D,).
    pz: prior, event shape (D,).
    z: posterior sample [B, D]; required when the analytic form is not used.
    analytic: use the closed form when it exists.

  Returns:
    [B] KL values (or single-sample estimates).

  Raises:
    ValueError: the Monte-Carlo estimate is needed and `z` is None.

  References:
    Mathieu et al. (2019), "Disentangling Disentanglement in Variational Autoencoders", ICML (docs/science.md §3).
  """
  if analytic and isinstance(qz_x, distrax.MultivariateNormalDiag) and isinstance(pz, distrax.MultivariateNormalDiag):
    return qz_x.kl_divergence(pz)
  if z is None:
    raise ValueError(
        f"no analytic KL for {type(qz_x).__name__} ‖ {type(pz).__name__} (analytic={analytic}): "
        "pass the reparameterised posterior sample z for the Monte-Carlo estimate")
  return qz_x.log_prob(z) - pz.log_prob(z)


def _imq(u):
  """Σ_s C_s / (C_s + u) and its derivative in u, elementwise, for u ≥ 0.

  The six scales are summed in pairs, C1/(C1+u) + C2/(C2+u) = (a u + 2c) / (u² + a u + c) with a = C1 + C2 and
  c = C1 C2, whose u-derivative is −(a u² + 4c u + a c) / (u² + a u + c)². Every polynomial has positive
  coefficients, so there is no cancellation, and the evaluation order keeps it finite for any |a − b| < 1e9.
  Three divisions instead of six: the kernel sum is the inner loop of the MMD.
  """
  cs = [2.0 * s for s in IMQ_SCALES]
  k = dk_du = 0.0
  for c1, c2 in zip(cs[0::2], cs[1::2]):
    a, c = c1 + c2, c1 * c2
    r = 1.0 / ((u + a) * u + c)
    k = k + (a * u + 2.0 * c) * r
    dk_du = dk_du - ((a * u + 4.0 * c) * u + a * c) * r * r
  return k, dk_du


def _kernel_sums(a_SxA, y_B):
  """Σ_i k(y_j − a_si) and Σ_i ∂k(y_j − a_si)/∂y_j for every (s, j), both [S, B] (one dimension d).

  One fused pass over the [S, B, A] differences: a variadic reduce, so that XLA neither materialises them
  nor evaluates the kernel twice. The summed axis is the last one, which XLA:CPU also reduces fast when only
  the value is used (no gradient) and the gradient output is dropped.
  """
  delta = y_B[None, :, None] - a_SxA[:, None, :]
  k, dk_du = _imq(delta * delta)
  zero = jnp.zeros((), delta.dtype)
  return jax.lax.reduce((k, 2.0 * delta * dk_du), (zero, zero), lambda s, t: (s[0] + t[0], s[1] + t[1]), (2,))


def _mmd_dim_and_grad(zq_BxD, zp_BxD):
  """The value of `mmd_dim` and its gradient with respect to zq_BxD."""
  batch, dim = zq_BxD.shape
  x_DxB, y_DxB = zp_BxD.T, zq_BxD.T
  w_within, w_cross = 1.0 / (batch * (batch - 1)), 2.0 / batch**2
  # Posterior-posterior (s = 0) and prior-posterior (s = 1) terms in one pass. Keep them stacked: as two
  # separate passes, XLA:CPU (jax 0.10) shares broadcast constants between them and materialises B×B×D arrays,
  # which is 3× slower.
  # One dimension per loop iteration: the loop body is its own computation, so XLA computes the samples once.
  # Fused into one loop-free reduction, XLA fused their producers (the encoder heads' softplus, the
  # reparameterisation, the normal sampler's erf_inv) into it and recomputed them for every pair, which made
  # the MMD ~3x dearer inside the Fashion-MNIST step than alone. (An optimization_barrier does not survive
  # XLA:CPU's pipeline.)
  k_DxSxB, g_DxSxB = jax.lax.map(lambda ay: _kernel_sums(*ay), (jnp.stack([y_DxB, x_DxB], axis=1), y_DxB))
  kxx = _imq(jnp.square(x_DxB[:, :, None] - x_DxB[:, None, :]))[0].sum()  # prior-prior: no gradient needed
  k_diag = float(len(IMQ_SCALES))  # Σ_s k_s(a, a), removed from the within-set sums (i ≠ j)
  value = (w_within * (kxx + k_DxSxB[:, 0].sum() - 2 * batch * dim * k_diag) - w_cross * k_DxSxB[:, 1].sum())
  # y_j appears in row j and in column j of the symmetric within-set sum, hence the factor 2.
  grad_zq = (2.0 * w_within * g_DxSxB[:, 0] - w_cross * g_DxSxB[:, 1]).T
  return value, grad_zq


@jax.custom_vjp
def _mmd_dim(zq_BxD, zp_BxD):
  return _mmd_dim_and_grad(zq_BxD, zp_BxD)[0]


def _mmd_dim_bwd(grad_zq_BxD, cotangent):
  return cotangent * grad_zq_BxD, jnp.zeros_like(grad_zq_BxD)  # the prior samples get no gradient


_mmd_dim.defvjp(_mmd_dim_and_grad, _mmd_dim_bwd)


def _check_samples(zq_BxD, zp_BxD):
  if zq_BxD.ndim != 2 or zq_BxD.shape != zp_BxD.shape or zq_BxD.shape[0] < 2:
    raise ValueError(f"expected two [B, D] arrays of the same shape with B >= 2, got {zq_BxD.shape} and "
                     f"{zp_BxD.shape}")


def mmd_dim(zq_BxD: jax.Array, zp_BxD: jax.Array) -> jax.Array:
  """Dimension-wise inverse-multiquadric MMD between posterior samples and prior samples (unbiased).

      MMD = Σ_d Σ_s [ 1/(B(B−1)) Σ_{i≠j} (k_s(x_id, x_jd) + k_s(y_id, y_jd)) − 2/B² Σ_{i,j} k_s(x_id, y_jd) ],
      k_s(a, b) = C / (C + (a − b)²),  C = 2s,  s ∈ IMQ_SCALES = (0.1, 0.2, 0.5, 1, 2, 5),

  with x = prior samples, y = posterior samples. It matches the marginals q(z_d) to p(z_d) only.

  The prior samples are constants (no gradient, as `stop_gradient`). The value and the gradient are computed in
  one pass over the B×B×D pairs with the analytic derivative of the kernel sum (a `custom_vjp`), without
  materialising any [B, B, D] array; forward-mode differentiation (`jax.jvp`) is therefore not supported.

  Args:
    zq_BxD: samples of the aggregate posterior q(z), one per data point of the batch.
    zp_BxD: samples of the prior p(z), as many as `zq_BxD`.

  Returns:
    Scalar MMD estimate (can be slightly negative, being unbiased).

  Raises:
    ValueError: the inputs are not two [B, D] arrays of the same shape with B >= 2.

  References:
    Mathieu et al. (2019), the sparsity experiments (docs/science.md §3, §5); Gretton et al. (2012), "A Kernel
    Two-Sample Test" (the unbiased MMD estimate).
  """
  _check_samples(zq_BxD, zp_BxD)
  return _mmd_dim(zq_BxD, jax.lax.stop_gradient(zp_BxD))


def mmd_full(zq_BxD: jax.Array, zp_BxD: jax.Array) -> jax.Array:
  """Full-dimensional inverse-multiquadric MMD between posterior samples and prior samples (unbiased).

      MMD = Σ_s [ 1/(B(B−1)) Σ_{i≠j} (k_s(x_i, x_j) + k_s(y_i, y_j)) − 2/B² Σ_{i,j} k_s(x_i, y_j) ],
      k_s(a, b) = C / (C + ‖a − b‖²),  C = 2s,  s ∈ IMQ_SCALES,

  with x = prior samples (no gradient) and y = posterior samples. Unlike `mmd_dim` it compares the joint
  distributions, not only the marginals.

  Args:
    zq_BxD: samples of the aggregate posterior q(z), one per data point of the batch.
    zp_BxD: samples of the prior p(z), as many as `zq_BxD`.

  Returns:
    Scalar MMD estimate.

  Raises:
    ValueError: the inputs are not two [B, D] arrays of the same shape with B >= 2.

  References:
    Mathieu et al. (2019) (docs/science.md §3); Gretton et al. (2012), "A Kernel Two-Sample Test"; Tolstikhin et al.
    (2018), "Wasserstein Auto-Encoders" (IMQ kernels).
  """
  _check_samples(zq_BxD, zp_BxD)
  batch = zq_BxD.shape[0]
  zp_BxD = jax.lax.stop_gradient(zp_BxD)
  off_diagonal = 1.0 - jnp.eye(batch, dtype=zq_BxD.dtype)

  def kernel_sum(a_BxD, b_BxD, within):
    sq_dist = jnp.sum(a_BxD**2, -1)[:, None] + jnp.sum(b_BxD**2, -1)[None, :] - 2.0 * a_BxD @ b_BxD.T
    # Rounding can make the expansion slightly negative, and the kernel has poles at −C.
    k_BxB = _imq(jnp.maximum(sq_dist, 0.0))[0]
    return jnp.sum(k_BxB * off_diagonal) if within else jnp.sum(k_BxB)

  within = kernel_sum(zp_BxD, zp_BxD, True) + kernel_sum(zq_BxD, zq_BxD, True)
  return within / (batch * (batch - 1)) - 2.0 * kernel_sum(zp_BxD, zq_BxD, False) / batch**2


def kl_inclusive(qz_x: distrax.Distribution, pz: distrax.Distribution, key: jax.Array) -> jax.Array:
  """Minibatch estimate of the inclusive KL(p(z) ‖ q(z)) to the aggregate posterior of the batch.

      z_i ~ p(z), i = 1..B;   log q̂(z_i) = log (1/B) Σ_j q(z_i | x_j);
      D̂ = (1/B) Σ_i [ log p(z_i) − log q̂(z_i) ]

  The samples are `pz.sample(seed=key, sample_shape=(B,))` (reparameterised when the prior allows it, so a
  learnable prior gets gradients through them). It needs the B×B matrix of log q(z_i | x_j).

  Args:
    qz_x: the batch's posteriors, batch shape (B,), event shape (D,).
    pz: prior, event shape (D,), batch shape ().
    key: PRNG key for the prior samples.

  Returns:
    Scalar estimate.

  References:
    Mathieu et al. (2019), the clustering experiments (docs/science.md §3, §5).
  """
  batch = qz_x.batch_shape[0]
  z_BxD = pz.sample(seed=key, sample_shape=(batch,))
  lqz_x_BxB = qz_x.log_prob(z_BxD[:, None, :])  # [i, j] = log q(z_i | x_j)
  lqz = jax.nn.logsumexp(lqz_x_BxB, axis=1) - np.log(batch)
  return jnp.mean(pz.log_prob(z_BxD) - lqz)
