"""The training step: AMSGrad update, learnable prior, fused loop, and 8 devices against 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decompvae import parallel
from decompvae import priors
from decompvae import train
from decompvae import vae

LR = 1e-3


def _setup(prior="anisotropic", learnable=True, divergence="mmd_dim", model_name="pinwheel", latent_dim=2,
           x_shape=(2,)):
  model = vae.make_model(model_name, latent_dim)
  hp = {"scale": 1.0} if prior == "anisotropic" else {}
  prior_params = priors.init_prior_params(prior, latent_dim, logits=jnp.array([0.3, -0.3])) if learnable else {}
  if prior == "anisotropic" and not learnable:
    hp["logits"] = jnp.array([0.3, -0.3])
  optimizer = train.make_optimizer(LR)
  x = jax.random.normal(jax.random.key(1), (32, *x_shape))
  state = train.init_state(jax.random.key(0), x[:1], model=model, optimizer=optimizer, prior_params=prior_params)
  step = train.make_train_step(model=model, prior_name=prior, latent_dim=latent_dim, prior_hp=hp,
                               optimizer=optimizer, divergence=divergence)
  return state, step, x


def test_first_step_is_amsgrad_sign_update():
  # The first Adam/AMSGrad update is -lr * g / (|g| + eps) elementwise (bias-corrected moments equal g, g²).
  state, step, x = _setup()
  key = jax.random.key(2)
  new, metrics = jax.jit(functools.partial(step, beta=1.0, alpha=0.0))(state, x, key)
  grads = jax.grad(lambda p: _loss(step, state, p, x, key))(state.params)
  expected = jax.tree.map(lambda p, g: p - LR * g / (np.abs(g) + 1e-8), state.params, grads)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert int(new.step) == 1
  assert np.isfinite(metrics["loss"]) and float(metrics["grad_norm"]) > 0


def _loss(step, state, params, x, key):
  # The objective seen by the step, recomputed from its public pieces.
  from decompvae import objectives  # pylint: disable=g-import-not-at-top
  pz = priors.make_prior("anisotropic", 2, scale=1.0, **params["prior"])
  loss, _ = objectives.vae_loss({"params": params["model"]}, x, key, model=vae.make_model("pinwheel", 2), pz=pz,
                                beta=1.0, alpha=0.0, divergence="mmd_dim", train=True)
  return loss


@pytest.mark.parametrize("learnable", [True, False])
def test_prior_variances_learn_only_when_asked(learnable):
  state, step, x = _setup(learnable=learnable)
  new, _ = jax.jit(functools.partial(step, beta=1.0, alpha=0.0))(state, x, jax.random.key(2))
  if learnable:
    change = np.abs(np.asarray(new.params["prior"]["logits"]) - np.array([0.3, -0.3]))
    np.testing.assert_allclose(change, LR, rtol=1e-3)   # the sign update moves each logit by lr
  else:
    assert new.params["prior"] == {}


def test_fused_steps_equal_single_steps():
  state, step, x = _setup(divergence="kl_inclusive")
  step = functools.partial(step, beta=0.5, alpha=1.0)
  batch_fn = lambda s: jnp.roll(x, s, axis=0)
  _, steps_key = train.seed_keys(0)
  fused_state, fused_metrics = jax.jit(train.make_fused_steps(step, batch_fn, 4))(state, steps_key)
  one = jax.jit(step)
  s = state
  losses = []
  for t in range(4):
    s, m = one(s, batch_fn(t), train.step_key(steps_key, t))
    losses.append(m["loss"])
  np.testing.assert_allclose(fused_metrics["loss"], losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(fused_state.params), jax.tree.leaves(s.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha,divergence", [(0.0, "mmd_dim"), (3.0, "mmd_dim"), (1.0, "kl_inclusive")])
def test_eight_devices_equal_one(alpha, divergence):
  assert jax.device_count() == 8
  state, step, x = _setup(divergence=divergence)
  step = functools.partial(step, beta=1.0, alpha=alpha)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    fn = jax.jit(step, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh), None),
                 out_shardings=parallel.replicated(mesh))
    s = parallel.replicate(state, mesh)
    xs = jax.device_put(x, parallel.batch_sharded(mesh))
    for t in range(3):
      s, m = fn(s, xs, jax.random.key(t))
    results.append((s, m))
  (s1, m1), (s8, m8) = results
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["reg"], m8["reg"], rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_batch_size_must_split_over_devices():
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match="does not split evenly over 8 devices"):
    parallel.check_batch_size(60, mesh)
  parallel.check_batch_size(64, mesh)
