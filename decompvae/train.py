"""Training state and the pure training step: (state, batch, key) -> (state, metrics)."""

from collections.abc import Callable, Mapping
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


def make_optimizer(learning_rate: float, b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
  """Adam with AMSGrad, the authors' optimiser in every experiment (SPEC §5)."""
  return optax.amsgrad(learning_rate, b1=b1, b2=b2)


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

  One update of  min_θ  −mean_b[ E_q log p(x_b|z) − β KL(q(z|x_b) ‖ p(z)) ] + α D(q(z), p(z))  (SPEC §1)
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
  """The key of training step `step`: `fold_in(steps_key, step)` (STYLE §5); never checkpointed."""
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
