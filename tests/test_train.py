"""The training step: PyTorch's AMSGrad update, learnable prior, fused loop, and 8 devices against 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
  # The first update of PyTorch's AMSGrad is -lr * g / (|g| + eps) elementwise: m_1 / (1 - b1) = g and
  # sqrt(max(0, v_1)) / sqrt(1 - b2) = |g|.
  state, step, x = _setup()
  key = jax.random.key(2)
  new, metrics = jax.jit(functools.partial(step, beta=1.0, alpha=0.0))(state, x, key)
  grads = jax.jit(jax.grad(lambda p: _loss(step, state, p, x, key)))(state.params)
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


# --- the optimiser against PyTorch's rule ---------------------------------------------------------------

NUM_STEPS = 200


def _decaying_grads():
  """[200, ...] gradients whose scale falls 10x over the first 100 steps, then stays; fixed signs per element."""
  rng = np.random.RandomState(0)
  scale_T = 10.0 ** (-np.minimum(np.arange(NUM_STEPS), 100) / 100)
  sign = {"w": np.sign(rng.randn(3, 4)), "b": np.sign(rng.randn(5))}
  return {k: scale_T.reshape(-1, *[1] * s.ndim) * s * (0.5 + rng.rand(NUM_STEPS, *s.shape))
          for k, s in sign.items()}


def _numpy_amsgrad(g_T, lr, b1=0.9, b2=0.999, eps=1e-8, max_of_bias_corrected=False):
  """Per-step parameter updates in float64. Default: torch.optim.Adam(amsgrad=True), the max over raw v_t;
  `max_of_bias_corrected`: the max over v_t / (1 - b2^t), optax.amsgrad's rule."""
  m = v = v_max = np.zeros_like(g_T[0])
  updates = []
  for t, g in enumerate(g_T, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    if max_of_bias_corrected:
      v_max = np.maximum(v_max, v / (1 - b2**t))
      denom = np.sqrt(v_max) + eps
    else:
      v_max = np.maximum(v_max, v)
      denom = np.sqrt(v_max) / np.sqrt(1 - b2**t) + eps
    updates.append(-lr * (m / (1 - b1**t)) / denom)
  return np.stack(updates)


def _run_optimizer(optimizer, grads):
  """All updates of `optimizer` on the gradient sequence, in one jitted scan: [T, ...] per leaf."""
  params = jax.tree.map(lambda g: jnp.zeros(g.shape[1:], jnp.float32), grads)

  @jax.jit
  def run(grads):
    def body(opt_state, g):
      updates, opt_state = optimizer.update(g, opt_state, params)
      return opt_state, updates
    return jax.lax.scan(body, optimizer.init(params), grads)

  opt_state, updates = run(jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads))
  return jax.tree.map(np.asarray, updates), opt_state


def test_optimizer_follows_pytorch_amsgrad_for_200_steps():
  grads = _decaying_grads()
  updates, opt_state = _run_optimizer(train.make_optimizer(LR), grads)
  for k, g_T in grads.items():
    expected = _numpy_amsgrad(g_T, LR)
    np.testing.assert_allclose(updates[k], expected, rtol=2e-6, atol=0)
    np.testing.assert_allclose(updates[k].sum(0), expected.sum(0), rtol=2e-6)   # the parameters after 200 steps
  amsgrad_state = opt_state[0]
  assert int(amsgrad_state.count) == NUM_STEPS
  np.testing.assert_allclose(amsgrad_state.nu_max["w"], _raw_v_max(grads["w"]), rtol=1e-5)


def _raw_v_max(g_T, b2=0.999):
  v = v_max = 0.0
  for g in g_T:
    v = b2 * v + (1 - b2) * g * g
    v_max = np.maximum(v_max, v)
  return v_max


def test_optax_amsgrad_takes_smaller_steps_once_gradients_shrink():
  # optax.amsgrad keeps max_t of v_t / (1 - b2^t), which is g_1² from step 1 on: its steps end up smaller.
  # (Its float32 1 - b2^t is 1.3e-5 off at t = 1, hence the tolerance.)
  grads = _decaying_grads()
  ours, _ = _run_optimizer(train.make_optimizer(LR), grads)
  theirs, _ = _run_optimizer(optax.amsgrad(LR, eps=1e-8), grads)
  for k, g_T in grads.items():
    np.testing.assert_allclose(theirs[k], _numpy_amsgrad(g_T, LR, max_of_bias_corrected=True), rtol=3e-5)
    np.testing.assert_allclose(ours[k][0], theirs[k][0], rtol=3e-5)   # both start with the sign update
    ratio_T = np.abs(ours[k]) / np.abs(theirs[k])
    expected_T = np.abs(_numpy_amsgrad(g_T, LR)) / np.abs(_numpy_amsgrad(g_T, LR, max_of_bias_corrected=True))
    np.testing.assert_allclose(ratio_T, expected_T, rtol=3e-5)
    assert np.all(ratio_T[-1] > 2.5), ratio_T[-1]   # several times larger steps at step 200


def test_optimizer_equals_torch_adam_amsgrad():
  torch = pytest.importorskip("torch")
  grads = _decaying_grads()
  updates, _ = _run_optimizer(train.make_optimizer(LR), grads)
  for k, g_T in grads.items():
    param = torch.zeros(g_T.shape[1:], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([param], lr=LR, amsgrad=True)
    path = []
    for g in g_T:
      param.grad = torch.from_numpy(g)
      opt.step()
      path.append(param.detach().numpy().copy())
    np.testing.assert_allclose(np.cumsum(updates[k], axis=0), np.stack(path), rtol=2e-6, atol=1e-12)


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
