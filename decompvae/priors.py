"""Priors p(z) of the paper (docs/science.md §3) as distrax distributions with event shape (D,), built by name.

Every prior is built by `make_prior(name, latent_dim, **hp)` from plain arrays, so it can be built inside a
jitted, differentiated function: gradients reach every array hyperparameter. Values are validated only when
they are concrete (shapes always); under `jit`/`grad` only the shapes are checked.

Fixed versus learnable: a prior has no state of its own. The learnable arrays are ordinary hyperparameters
that the caller keeps in its parameter tree: `init_prior_params(name, D, **hp)` returns them (only the
anisotropic prior has any: `{"logits": ...}`), and the train step calls
`make_prior(name, D, **fixed_hp, **prior_params)`. A fixed prior passes everything in `fixed_hp`.

The anisotropic prior N(0, diag(σ²)) takes either
  * `logits` [D] (and `scale`, default 1): σ² = scale · D · softmax(logits), the authors' parameterisation,
    so the variances always sum to scale · D (logits = 0 gives σ² = scale); or
  * `variances` [D]: σ² given directly (no `scale`).
`init_prior_params("anisotropic", D, variances=v)` returns logits = log v; since softmax(log v) = v / Σv, the
same variances come back from `make_prior(..., logits=log v, scale=mean(v))`. With the default scale = 1 they
are renormalised to sum to D, which is what the authors' "pca" initialisation does with `pca_logits`.
"""

from collections.abc import Mapping
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

PRIORS = ("isotropic", "anisotropic", "student_t", "sparse", "mixture")

# Hyperparameters each prior accepts, with their defaults (None: absent unless given).
_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "isotropic": {},
    "anisotropic": {"logits": None, "variances": None, "scale": None},
    "student_t": {"df": 2.0, "scale": 1.0},
    "sparse": {"gamma": 0.8, "sigma0": 0.05},
    "mixture": {"means": None, "variance": 0.03},
}

# The pinwheel experiment's four cluster centres (docs/science.md §3), [K=4, D=2].
_PINWHEEL_MEANS = ((0.0, -1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0))


def make_prior(name: str, latent_dim: int, **hp) -> distrax.Distribution:
  """Builds the prior p(z) called `name` over z ∈ R^D, D = `latent_dim`.

    isotropic:   p(z) = N(z; 0, I)
    anisotropic: p(z) = N(z; 0, diag(σ²)),  σ² = scale · D · softmax(logits)  or  σ² = variances
    student_t:   p(z) = Π_d Student-t(z_d; ν = df, 0, scale)
    sparse:      p(z) = Π_d [γ N(z_d; 0, σ₀²) + (1 − γ) N(z_d; 0, 1)]  (γ = gamma, σ₀ = sigma0, a std)
    mixture:     p(z) = (1/K) Σ_k N(z; μ_k, s_k² I)   (μ = means [K, D], s² = variance, scalar or [K])

  Args:
    name: one of `PRIORS`.
    latent_dim: D, a positive int.
    **hp: the prior's hyperparameters (see the module docstring and the defaults: student_t df=2, scale=1;
      sparse gamma=0.8, sigma0=0.05; mixture variance=0.03 and, for D = 2 only, the pinwheel means
      {(0,−1), (0,1), (1,0), (−1,0)}). df, scale, gamma and sigma0 may be scalars or [D] arrays.

  Returns:
    A distrax distribution with batch shape () and event shape (D,); `log_prob(z[..., D])` has shape [...].
    Isotropic and anisotropic priors are `distrax.MultivariateNormalDiag`, so analytic KLs apply.

  Raises:
    ValueError: for an unknown name or hyperparameter, a hyperparameter of the wrong shape (logits and
      variances not [D], means not [K, D], ...) or value (gamma outside [0, 1]; df, scale, variances, sigma0
      or variance not positive), both `variances` and `logits`/`scale`, or default means with D != 2.

  References:
    Mathieu et al., "Disentangling Disentanglement in Variational Autoencoders", ICML 2019 (arXiv
    1812.02833), the priors of its experiments; docs/science.md §3.
  """
  hp = _resolve(name, latent_dim, hp)
  return _BUILDERS[name](latent_dim, **hp)


def init_prior_params(name: str, latent_dim: int, **hp) -> dict[str, jax.Array]:
  """Returns the learnable arrays of the prior, initialised from `hp` (the same arguments as `make_prior`).

  anisotropic: {"logits": logits} if given, else {"logits": log(variances)} if given, else {"logits": 0_D};
  every other prior: {}. Pass the remaining (fixed) hyperparameters, without `logits`/`variances`, to
  `make_prior` next to these: with initial variances v, use scale = mean(v) to start from exactly v,
  because scale · D · softmax(log v) = scale · D · v / Σ v.

  Args:
    name: one of `PRIORS`.
    latent_dim: D.
    **hp: hyperparameters of the prior, validated as by `make_prior`.

  Returns:
    A dict of float32 arrays (empty for priors without learnable parameters).

  References:
    Mathieu et al., ICML 2019 (arXiv 1812.02833), the learned anisotropic prior; docs/science.md §3.
  """
  make_prior(name, latent_dim, **hp)  # Validates name and hyperparameters.
  if name != "anisotropic":
    return {}
  if hp.get("logits") is not None:
    return {"logits": jnp.asarray(hp["logits"], jnp.float32)}
  if hp.get("variances") is not None:
    return {"logits": jnp.log(jnp.asarray(hp["variances"], jnp.float32))}
  return {"logits": jnp.zeros((latent_dim,), jnp.float32)}


def pca_logits(data_NxP: np.ndarray, latent_dim: int) -> np.ndarray:
  """Log of the D largest eigenvalues, in descending order, of the centred data covariance.

    C = (1/(N−1)) Σ_n (x_n − x̄)(x_n − x̄)ᵀ,   logits_d = log λ_d(C),  λ_1 ≥ … ≥ λ_D

  Used as the anisotropic prior's "pca" initialisation (σ² = scale · D · softmax(logits)). Unlike the
  authors' unused helper (uncentred data, ascending singular values), the data are centred and the largest
  eigenvalues come first (docs/science.md §3, PCA note). The covariance is accumulated in float64 chunks, so uint8
  images need no float copy, but its cost is N·P² (N²·P through the Gram matrix when N < P): a random
  subset of a large data set is enough.

  Args:
    data_NxP: N data points; trailing axes are flattened to P features (e.g. [N, 64, 64, 1] images).
    latent_dim: D <= P.

  Returns:
    float32 array [D].

  Raises:
    ValueError: if N < 2, D > P, or the centred data have rank < D (a zero top-D eigenvalue).

  References:
    Mathieu et al., ICML 2019 (arXiv 1812.02833), the anisotropic prior's PCA initialisation; docs/science.md §3.
  """
  data_NxP = np.asarray(data_NxP)
  data_NxP = data_NxP.reshape(len(data_NxP), -1)
  n, p = data_NxP.shape
  if n < 2:
    raise ValueError(f"pca_logits needs at least 2 data points, got {n}")
  if not 1 <= latent_dim <= p:
    raise ValueError(f"latent_dim must be in [1, {p}] (the number of features), got {latent_dim}")
  mean_P = data_NxP.mean(axis=0, dtype=np.float64)
  if n < p:   # the non-zero eigenvalues of XᵀX are those of the smaller Gram matrix XXᵀ
    centred_NxP = data_NxP.astype(np.float64) - mean_P
    scatter = centred_NxP @ centred_NxP.T
  else:
    scatter = np.zeros((p, p))
    for start in range(0, n, 4096):
      chunk = data_NxP[start:start + 4096].astype(np.float64) - mean_P
      scatter += chunk.T @ chunk
  eigvals = np.linalg.eigvalsh(scatter / (n - 1))[::-1]  # Descending.
  top = eigvals[:latent_dim]
  if top[-1] <= eigvals[0] * p * np.finfo(np.float64).eps:
    raise ValueError(f"the centred data have rank < latent_dim={latent_dim}; eigenvalues: {top}")
  return np.log(top).astype(np.float32)


# --- validation ------------------------------------------------------------------------------------------


def _resolve(name: str, latent_dim: int, hp: Mapping[str, Any]) -> dict[str, Any]:
  """Checks name, latent_dim and hyperparameter names; returns hp merged into the prior's defaults."""
  if name not in _DEFAULTS:
    raise ValueError(f"unknown prior {name!r}; allowed: {', '.join(PRIORS)}")
  if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)) or latent_dim < 1:
    raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
  unknown = sorted(set(hp) - set(_DEFAULTS[name]))
  if unknown:
    allowed = ", ".join(_DEFAULTS[name]) or "none"
    raise ValueError(f"unknown hyperparameter(s) {unknown} for prior {name!r}; allowed: {allowed}")
  return {**_DEFAULTS[name], **hp}


def _array(what: str, x, shapes: tuple[tuple[int, ...], ...], must_be: str | None = "> 0") -> jax.Array:
  """x as float32; checks its shape is one of `shapes` and, if x is concrete, that its values are `must_be`."""
  x = jnp.asarray(x, jnp.float32)
  if x.shape not in shapes:
    raise ValueError(f"{what} must have shape {' or '.join(map(str, shapes))}, got {x.shape}")
  concrete = not isinstance(x, jax.core.Tracer)  # Under jit/grad only shapes can be checked.
  if must_be is not None and concrete and not np.all(_CHECKS[must_be](np.asarray(x))):
    raise ValueError(f"{what} must be {must_be}, got {np.asarray(x)}")
  return x


_CHECKS = {"> 0": lambda v: v > 0, "in [0, 1]": lambda v: (v >= 0) & (v <= 1)}


# --- the priors -------------------------------------------------------------------------------------------


def _isotropic(d: int) -> distrax.Distribution:
  return distrax.MultivariateNormalDiag(jnp.zeros((d,)), jnp.ones((d,)))


def _anisotropic(d: int, logits, variances, scale) -> distrax.Distribution:
  if variances is not None:
    if logits is not None or scale is not None:
      raise ValueError("anisotropic prior: give either `variances`, or `logits` with an optional `scale`")
    var_D = _array("anisotropic variances", variances, ((d,),))
  else:
    logits_D = jnp.zeros((d,)) if logits is None else _array("anisotropic logits", logits, ((d,),), None)
    scale = _array("anisotropic scale", 1.0 if scale is None else scale, ((),))
    var_D = scale * d * jax.nn.softmax(logits_D)
  return distrax.MultivariateNormalDiag(jnp.zeros((d,)), jnp.sqrt(var_D))


def _student_t(d: int, df, scale) -> distrax.Distribution:
  df_D = jnp.broadcast_to(_array("student_t df", df, ((), (d,))), (d,))
  scale_D = jnp.broadcast_to(_array("student_t scale", scale, ((), (d,))), (d,))
  return distrax.Independent(tfp.distributions.StudentT(df=df_D, loc=jnp.zeros((d,)), scale=scale_D), 1)


def _sparse(d: int, gamma, sigma0) -> distrax.Distribution:
  gamma_D = jnp.broadcast_to(_array("sparse gamma", gamma, ((), (d,)), "in [0, 1]"), (d,))
  sigma0_D = jnp.broadcast_to(_array("sparse sigma0", sigma0, ((), (d,))), (d,))
  # Mixing per dimension: batch shape (D,), components on the trailing axis: [spike, slab].
  weights_Dx2 = jnp.stack([gamma_D, 1.0 - gamma_D], axis=-1)
  mixture_Dx2 = distrax.Categorical(logits=_safe_log(weights_Dx2))
  components_Dx2 = distrax.Normal(jnp.zeros((d, 2)), jnp.stack([sigma0_D, jnp.ones((d,))], axis=-1))
  return distrax.Independent(distrax.MixtureSameFamily(mixture_Dx2, components_Dx2), 1)


def _mixture(d: int, means, variance) -> distrax.Distribution:
  if means is None:
    if d != 2:
      raise ValueError(f"mixture prior: the default (pinwheel) means need latent_dim=2, got {d}; "
                       "give means [K, D]")
    means = _PINWHEEL_MEANS
  means = jnp.asarray(means, jnp.float32)
  if means.ndim != 2 or means.shape[1] != d or means.shape[0] < 1:
    raise ValueError(f"mixture means must have shape [K, {d}] with K >= 1, got {means.shape}")
  k = means.shape[0]
  var_K = _array("mixture variance", variance, ((), (k,)))
  scale_KxD = jnp.broadcast_to(jnp.sqrt(var_K).reshape(-1, 1), (k, d))
  return distrax.MixtureSameFamily(distrax.Categorical(logits=jnp.zeros((k,))),
                                   distrax.MultivariateNormalDiag(means, scale_KxD))


def _safe_log(x: jax.Array) -> jax.Array:
  """log x with log 0 = −inf and a zero gradient there (instead of 0 · ∞ = NaN), for γ ∈ {0, 1}.

  At γ = 0 or 1 the gradient with respect to γ is therefore 0, not the one-sided derivative; gradients with
  respect to z and σ₀ are exact.
  """
  positive = x > 0
  return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


_BUILDERS = {
    "isotropic": _isotropic,
    "anisotropic": _anisotropic,
    "student_t": _student_t,
    "sparse": _sparse,
    "mixture": _mixture,
}
