"""Training state and the pure training step: (state, batch, key) -> (state, metrics)."""

from collections.abc import Callable, Mapping
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decompvae import objectives
from decompvae import priors

Metrics = dict[str, jax.Array]


class TrainState(NamedTuple):
  """Everything needed to continue training; a pytree, checkpointed as a whole.

  Attributes:
    step: int32 scalar, the number of updates applied so far.
    params: {"model": network parameters, "prior": learnable prior arrays ({} when the prior is fixed)}.
    batch_stats: BatchNorm running averages ({} for models without BatchNorm).
    opt_state: the optax state of `params`.
  """
  step: jax.Array
  params: dict[str, Any]
  batch_stats: dict[str, Any]
  opt_state: optax.OptState


def model_variables(params_model, batch_stats) -> dict[str, Any]:
  """The flax variables of the model: {"params": ...} plus {"batch_stats": ...} for BatchNorm models."""
  return {"params": params_model, **({"batch_stats": batch_stats} if batch_stats else {})}


class ScaleByAmsgradTorchState(NamedTuple):
  """State of `scale_by_amsgrad_torch`, a pytree.

  Attributes:
    count: int32 scalar, the number of updates so far (t − 1 before update t).
    mu: first moments m_{t−1}, like the parameters.
    nu: raw (not bias-corrected) second moments v_{t−1}.
    nu_max: running maximum of the raw second moments, v^max_{t−1}.
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates


def _bias_correction(decay: float, count: jax.Array) -> jax.Array:
  """1 − decayᵗ as −expm1(t · log decay), log in float64: float32 1 − 0.999ᵗ is 1.3e-5 off at t = 1."""
  return -jnp.expm1(count.astype(jnp.float32) * jnp.float32(math.log(decay)))


def scale_by_amsgrad_torch(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  """AMSGrad scaling as `torch.optim.Adam(amsgrad=True)` computes it: the maximum is over raw second moments.

    m_t = β₁ m_{t−1} + (1 − β₁) g_t,       v_t = β₂ v_{t−1} + (1 − β₂) g_t²,
    v^max_t = max(v^max_{t−1}, v_t),
    u_t = (m_t / (1 − β₁ᵗ)) / (sqrt(v^max_t) / sqrt(1 − β₂ᵗ) + ε)

  (elementwise; the parameter update is −lr · u_t). This is the algorithm of PyTorch's current `Adam`
  documentation (v^max_t = max(v^max_{t−1}, v_t), v̂_t = v^max_t / (1 − β₂ᵗ), θ_t = θ_{t−1} − lr m̂_t / (sqrt(v̂_t)
  + ε)), and what its code computes: the running maximum `max_exp_avg_sq` is taken over the raw `exp_avg_sq`.
  Two caveats on PyTorch's own history: its 1.11–1.13 documentation wrote the maximum over the bias-corrected
  v̂_t, which the code did not do; and its releases of 2018–2019 added ε before dividing by sqrt(1 − β₂ᵗ), i.e.
  used ε / sqrt(1 − β₂ᵗ) in place of ε, which matters only where sqrt(v̂) is below ~1e-6.

  `optax.amsgrad` instead keeps the maximum of the bias-corrected v̂_t = v_t / (1 − β₂ᵗ). Since v̂_1 = g_1²
  exactly, with gradients that shrink after the first steps the first gradients stay in its denominator for
  ever and its steps become several times smaller than the authors'. Here the raw v_t of the first steps are
  small (v_1 = (1 − β₂) g_1²), so they do not dominate the maximum, and the current bias correction divides it.

  Args:
    b1: β₁, decay of the first moment.
    b2: β₂, decay of the second moment.
    eps: ε, added to the denominator after the square root (PyTorch's placement).

  Returns:
    An optax `GradientTransformation` (pure, jit-able) whose state is a `ScaleByAmsgradTorchState`.

  References:
    Reddi, Kale, Kumar, "On the Convergence of Adam and Beyond", ICLR 2018; PyTorch `torch.optim.Adam`
    documentation, `amsgrad=True`; Mathieu et al. (2019), the optimiser of every experiment
    (docs/science.md §5).
  """

  def init_fn(params):
    zeros = lambda: optax.tree.zeros_like(params)
    return ScaleByAmsgradTorchState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(), nu_max=zeros())

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
    count = optax.safe_increment(state.count)
    bc1, sqrt_bc2 = _bias_correction(b1, count), jnp.sqrt(_bias_correction(b2, count))
    updates = jax.tree.map(
        lambda m, v: ((m / bc1) / (jnp.sqrt(v) / sqrt_bc2 + eps)).astype(m.dtype), mu, nu_max)
    return updates, ScaleByAmsgradTorchState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformation:
  """Adam with AMSGrad exactly as `torch.optim.Adam(amsgrad=True)`, the authors' optimiser in every experiment.

    θ_t = θ_{t−1} − lr · u_t,   u_t from `scale_by_amsgrad_torch` (maximum over the raw second moments)

  Not `optax.amsgrad`, which takes the maximum over bias-corrected second moments and so takes smaller steps
  once gradients shrink (see `scale_by_amsgrad_torch`).

  Args:
    learning_rate: lr.
    b1: β₁.
    b2: β₂.
    eps: ε (PyTorch's default 1e-8).

  Returns:
    An optax `GradientTransformation`: `chain(scale_by_amsgrad_torch(b1, b2, eps), scale(−learning_rate))`.

  References:
    Mathieu et al. (2019), the training set-up of its experiments (docs/science.md §5); PyTorch `torch.optim.Adam`.
  """
  return optax.chain(scale_by_amsgrad_torch(b1=b1, b2=b2, eps=eps), optax.scale(-learning_rate))


def init_state(key: jax.Array, x_example, *, model, optimizer: optax.GradientTransformation,
               prior_params: Mapping[str, jax.Array] | None = None) -> TrainState:
  """Initialises the model on `x_example` and the optimiser on model and (learnable) prior parameters."""
  variables = dict(model.init(key, x_example))
  params = {"model": variables.pop("params"), "prior": dict(prior_params or {})}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=optimizer.init(params))


def make_train_step(*, model, prior_name: str, latent_dim: int, prior_hp: Mapping[str, Any],
                    optimizer: optax.GradientTransformation, divergence: str = "mmd_dim",
                    analytic_kl: bool = True) -> Callable[..., tuple[TrainState, Metrics]]:
  """Builds the pure training step `train_step(state, x, key, *, beta, alpha, **prior_hp) -> (state, metrics)`.

  One update of  min_θ  −mean_b[ E_q log p(x_b|z) − β KL(q(z|x_b) ‖ p(z)) ] + α D(q(z), p(z))  (docs/science.md §1)
  with respect to the network parameters and, when `state.params["prior"]` is non-empty, the prior's
  learnable arrays, which `make_prior(prior_name, latent_dim, **prior_hp, **prior_params)` consumes.

  `beta`, `alpha` and keyword prior hyperparameters (overriding `prior_hp`, e.g. `gamma`) are arguments
  rather than closure constants so that a sweep can `jax.vmap` the step over them; bind Python floats
  with `functools.partial` for a single run (then `alpha=0.0` skips the divergence entirely). The returned function is pure and un-jitted: callers choose jit, shardings,
  donation, vmap or scan.
  """

  def loss_fn(params, batch_stats, x, key, beta, alpha, hp):
    pz = priors.make_prior(prior_name, latent_dim, **{**prior_hp, **hp}, **params["prior"])
    variables = model_variables(params["model"], batch_stats)
    loss, (metrics, updates) = objectives.vae_loss(
        variables, x, key, model=model, pz=pz, beta=beta, alpha=alpha, divergence=divergence,
        analytic_kl=analytic_kl, train=True)
    return loss, (metrics, updates.get("batch_stats", batch_stats))

  def train_step(state: TrainState, x, key, *, beta, alpha, **hp) -> tuple[TrainState, Metrics]:
    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, x, key, beta, alpha, hp)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return TrainState(state.step + 1, params, batch_stats, opt_state), metrics

  return train_step


def seed_keys(seed) -> tuple[jax.Array, jax.Array]:
  """`(init_key, steps_key)` of a run: every random choice derives from the one seed (traceable)."""
  init_key, steps_key = jax.random.split(jax.random.key(seed))
  return init_key, steps_key


def step_key(steps_key: jax.Array, step) -> jax.Array:
  """The key of training step `step`: `fold_in(steps_key, step)`: resumption is exact, so no key is ever checkpointed."""
  return jax.random.fold_in(steps_key, step)


def make_fused_steps(train_step: Callable[..., tuple[TrainState, Metrics]],
                     batch_fn: Callable[[jax.Array], jax.Array],
                     num_steps: int) -> Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]]:
  """`num_steps` training steps in one `lax.scan`, on device-resident data: `(state, steps_key) -> (state, metrics)`.

  Step t uses batch `batch_fn(t)` and key `step_key(steps_key, t)`, exactly as the one-step loop does, so
  the result equals `num_steps` single calls. Metrics come back stacked, shape [num_steps], fetched once
  per call. This is the fused loop for GPU/TPU; XLA:CPU runs convolution gradients 5–30x slower inside a
  loop body, and slower even when the steps are unrolled, so on CPU the experiments call the one-step
  program repeatedly instead (`experiments.loop.make_step_fn`; BUILD_NOTES.md, "Fused loop").
  """

  def fused(state: TrainState, steps_key: jax.Array) -> tuple[TrainState, Metrics]:
    def body(state, _):
      return train_step(state, batch_fn(state.step), step_key(steps_key, state.step))

    if num_steps == 1:   # no loop at all: XLA:CPU slows convolutions even in a one-iteration loop body
      state, metrics = body(state, None)
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(body, state, None, length=num_steps)

  return fused
