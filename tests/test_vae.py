"""Tests for decompvae.vae: posteriors and likelihoods against scipy, leading sample axes, functional BatchNorm,
and input validation."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from decompvae import vae

LATENT = {"dsprites": 3, "fashion_mnist": 4, "pinwheel": 2}


def _data(name, batch, rng):
  shape = vae.make_model(name, LATENT[name]).data_shape
  if name == "dsprites":
    return jnp.asarray(rng.random((batch, *shape)) < 0.3, jnp.float32)
  if name == "fashion_mnist":
    return jnp.asarray(np.clip(rng.random((batch, *shape)), 1e-6, 1 - 1e-6), jnp.float32)
  return jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)


def _net_variables(variables, part):
  return {k: v[part] for k, v in variables.items()}


def _random_variables(model, x, rng):
  """Variables shaped like `model.init`'s (found without compiling it), filled with random values: weights
  N(0, 0.1²), BatchNorm scales and running variances U(0.5, 1.5), running means U(−0.5, 0.5)."""
  def fill(path, a):
    path = jax.tree_util.keystr(path)
    if "'var'" in path or "'scale'" in path:
      return rng.uniform(0.5, 1.5, a.shape)
    return rng.uniform(-0.5, 0.5, a.shape) if "'mean'" in path else 0.1 * rng.normal(size=a.shape)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  return jax.tree_util.tree_map_with_path(lambda path, a: jnp.asarray(fill(path, a), jnp.float32), shapes)


@pytest.fixture(scope="module", params=["dsprites", "fashion_mnist", "pinwheel"])
def setup(request):
  """A model, its variables, data, and every number the tests below check, computed in one jitted call."""
  name = request.param
  model = vae.make_model(name, LATENT[name])
  rng = np.random.default_rng(0)
  x = _data(name, 3, rng)
  z_SxBxD = jnp.asarray(rng.normal(size=(2, 3, LATENT[name])), jnp.float32)
  variables = _random_variables(model, x, rng)

  static = {}   # shapes and types, recorded while tracing

  @jax.jit
  def run(variables, x, z_SxBxD):
    qz_x, enc_updates = model.encode(variables, x)
    _, inter = model.encoder.apply(_net_variables(variables, "encoder"), x, capture_intermediates=True,
                                   mutable=["intermediates"])
    dense = sorted(k for k in inter["intermediates"] if k.startswith("Dense_"))
    px_z, dec_updates = model.decode(variables, z_SxBxD[0])
    px_z_slice1, _ = model.decode(variables, z_SxBxD[1])
    px_z_single, _ = model.decode(variables, z_SxBxD[0, 0])

    def loss(params):
      v = {**variables, "params": params}
      qz_x, _ = model.encode(v, x, train=True)
      px_z, _ = model.decode(v, qz_x.sample(seed=jax.random.key(3)), train=True)
      return -jnp.sum(px_z.log_prob(x))

    static.update(qz_shapes=(qz_x.batch_shape, qz_x.event_shape), px_shapes=(px_z.batch_shape, px_z.event_shape),
                  single_shapes=(px_z_single.batch_shape, px_z_single.event_shape), updates=(enc_updates, dec_updates),
                  is_mvn_diag=isinstance(qz_x, distrax.MultivariateNormalDiag))
    return {
        "loc": qz_x.mean(), "std": qz_x.stddev(),
        "heads": [inter["intermediates"][k]["__call__"][0] for k in dense[-2:]],
        "decoder_out": model.decoder.apply(_net_variables(variables, "decoder"), z_SxBxD[0]),
        "lpx_z": px_z.log_prob(x), "lpx_z_slice1": px_z_slice1.log_prob(x),
        "lpx_z_SxB": model.decode(variables, z_SxBxD)[0].log_prob(x),
        "lpx_z_single": px_z_single.log_prob(x[0]), "grads": jax.grad(loss)(variables["params"]),
    }

  return name, model, variables, x, {**run(variables, x, z_SxBxD), **static}


def test_model_shapes(setup):
  name, model, variables, x, out = setup
  assert model.data_shape == {"dsprites": (64, 64, 1), "fashion_mnist": (32, 32, 1), "pinwheel": (2,)}[name]
  assert set(variables["params"]) == {"encoder", "decoder"}
  assert ("batch_stats" in variables) == (name == "fashion_mnist")
  assert out["is_mvn_diag"] and out["qz_shapes"] == ((3,), (LATENT[name],))
  assert out["px_shapes"] == ((3,), model.data_shape) and out["single_shapes"] == ((), model.data_shape)
  assert out["updates"] == ({}, {})                                   # train=False: nothing to update
  hash(model)                                                          # usable as a static argument


def test_posterior_scale_parameterisation(setup):
  """dSprites: std = exp(½·logvar) + 1e-6; the others: softplus(·) + 1e-6 (docs/science.md §3), from the raw heads."""
  name, _, _, _, out = setup
  loc_raw, scale_raw = (np.asarray(h, np.float64) for h in out["heads"])
  expected = np.exp(0.5 * scale_raw) + 1e-6 if name == "dsprites" else np.logaddexp(0, scale_raw) + 1e-6
  np.testing.assert_allclose(out["loc"], loc_raw, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["std"], expected, rtol=1e-5)


def test_likelihood_log_prob_against_scipy(setup):
  """log p(x|z) summed over pixels: Bernoulli(logits) / Laplace(loc, 0.1) / Normal(mean, std), by scipy."""
  name, _, _, x, out = setup
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), out["decoder_out"])
  xn = np.asarray(x, np.float64)
  if name == "dsprites":
    expected = stats.bernoulli.logpmf(xn, special.expit(params))
  elif name == "fashion_mnist":
    expected = stats.laplace.logpdf(xn, loc=params, scale=0.1)
  else:
    expected = stats.norm.logpdf(xn, loc=params[0], scale=params[1])
  np.testing.assert_allclose(out["lpx_z"], expected.reshape(3, -1).sum(axis=1), rtol=2e-5)


def test_decode_leading_axes_equal_per_slice(setup):
  _, _, _, _, out = setup
  assert out["lpx_z_SxB"].shape == (2, 3)
  np.testing.assert_allclose(out["lpx_z_SxB"][0], out["lpx_z"], rtol=1e-5)
  np.testing.assert_allclose(out["lpx_z_SxB"][1], out["lpx_z_slice1"], rtol=1e-5)
  np.testing.assert_allclose(out["lpx_z_single"], out["lpx_z"][0], rtol=1e-5)


def test_gradients_reach_every_parameter(setup):
  _, _, _, _, out = setup
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(jax.device_get(out["grads"])))


def test_bad_inputs_raise(setup):
  name, model, variables, x, _ = setup
  with pytest.raises(ValueError, match=r"expects x shaped \[B, "):
    model.encode(variables, x[0])                                   # no batch axis
  with pytest.raises(ValueError, match="expects x shaped"):
    model.encode(variables, jnp.zeros((3, 5)))
  with pytest.raises(ValueError, match="expects x shaped"):
    model.init(jax.random.key(0), jnp.zeros((3, 7, 7, 1)))
  with pytest.raises(ValueError, match=rf"expects z shaped \[\.\.\., {LATENT[name]}\]"):
    model.decode(variables, jnp.zeros((3, LATENT[name] + 1)))


def test_pinwheel_init_is_pytorch_default():
  model = vae.make_model("pinwheel", 2, hidden=(64,))
  params = model.init(jax.random.key(0), jnp.zeros((5, 2)))["params"]
  for part in ("encoder", "decoder"):
    for layer, fan_in in (("Dense_0", 2), ("Dense_1", 64), ("Dense_2", 64)):
      for leaf in params[part][layer].values():
        assert 0 < np.abs(leaf).max() <= fan_in ** -0.5


def test_make_model_validation():
  with pytest.raises(ValueError, match="choose one of"):
    vae.make_model("mnist", 10)
  for bad in (0, -1, 2.0):
    with pytest.raises(ValueError, match="positive integer"):
      vae.make_model("dsprites", bad)
  with pytest.raises(ValueError, match=r"unknown options \['hidden'\]"):
    vae.make_model("dsprites", 10, hidden=(5,))
  with pytest.raises(ValueError, match="positive integer widths"):
    vae.make_model("pinwheel", 2, hidden=(100, 0))
  with pytest.raises(ValueError, match="laplace_scale"):
    vae.make_model("fashion_mnist", 10, laplace_scale=0.0)
  model = vae.make_model("pinwheel", 2, hidden=[20, 30])
  assert model.encoder.hidden == (20, 30) and model == vae.make_model("pinwheel", 2, hidden=(20, 30))
  assert vae.make_model("fashion_mnist", 5, laplace_scale=0.05).laplace_scale == 0.05


# ---- BatchNorm (Fashion-MNIST), functional ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion():
  model = vae.make_model("fashion_mnist", 4)
  rng = np.random.default_rng(4)
  x = _data("fashion_mnist", 6, rng)
  return model, _random_variables(model, x, rng), x


@functools.partial(jax.jit, static_argnums=(0, 3))
def _encoder_bn_io(model, variables, x, train):
  """Input and output of the encoder's first BatchNorm, and its new statistics, from captured intermediates."""
  _, state = model.encoder.apply(_net_variables(variables, "encoder"), x, train=train, capture_intermediates=True,
                                 mutable=["intermediates", "batch_stats"])
  inter = state["intermediates"]
  return inter["Conv4x4s2_1"]["__call__"][0], inter["BatchNorm_0"]["__call__"][0], state["batch_stats"]["BatchNorm_0"]


def test_fashion_init_batch_statistics():
  model = vae.make_model("fashion_mnist", 4)
  stats = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 32, 32, 1)))["batch_stats"]
  assert set(stats) == {"encoder", "decoder"}
  assert {k: v["mean"].shape for k, v in stats["encoder"].items()} == {"BatchNorm_0": (64,), "BatchNorm_1": (128,)}
  assert len(stats["decoder"]) == 3


def test_batchnorm_train_uses_batch_statistics_and_momentum(fashion):
  model, variables, x = fashion
  h_in, h_out, new_stats = jax.tree.map(lambda a: np.asarray(a, np.float64), _encoder_bn_io(model, variables, x, True))
  mean, var = h_in.mean(axis=(0, 1, 2)), h_in.var(axis=(0, 1, 2))
  p, old = variables["params"]["encoder"]["BatchNorm_0"], variables["batch_stats"]["encoder"]["BatchNorm_0"]
  np.testing.assert_allclose(h_out, (h_in - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(new_stats["mean"], 0.9 * np.asarray(old["mean"]) + 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_stats["var"], 0.9 * np.asarray(old["var"]) + 0.1 * var, rtol=1e-5, atol=1e-6)
  # The same numbers come back from VAE.encode as the encoder's part of the updates.
  _, updates = jax.jit(lambda v, x: model.encode(v, x, train=True))(variables, x)
  assert set(updates) == {"batch_stats"} and set(updates["batch_stats"]) == {"encoder"}
  np.testing.assert_allclose(updates["batch_stats"]["encoder"]["BatchNorm_0"]["var"], new_stats["var"], rtol=1e-5)


def test_batchnorm_eval_uses_running_averages(fashion):
  model, variables, x = fashion
  h_in, h_out, _ = jax.tree.map(lambda a: np.asarray(a, np.float64), _encoder_bn_io(model, variables, x, False))
  p, s = variables["params"]["encoder"]["BatchNorm_0"], variables["batch_stats"]["encoder"]["BatchNorm_0"]
  expected = (h_in - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + 1e-5) * p["scale"] + p["bias"]
  np.testing.assert_allclose(h_out, expected, rtol=1e-4, atol=1e-4)


def test_batchnorm_train_ignores_running_statistics_eval_depends_on_them(fashion):
  model, variables, x = fashion
  shifted = {**variables, "batch_stats": jax.tree.map(lambda a: a + 0.3, variables["batch_stats"])}
  z = jnp.asarray(np.random.default_rng(5).normal(size=(6, 4)), jnp.float32)

  @jax.jit
  def outputs(v):
    (qz_tr, _), (qz_ev, _) = model.encode(v, x, train=True), model.encode(v, x, train=False)
    (px_tr, upd), (px_ev, _) = model.decode(v, z, train=True), model.decode(v, z, train=False)
    return qz_tr.mean(), qz_ev.mean(), px_tr.mean(), px_ev.mean(), upd

  a, b = outputs(variables), outputs(shifted)
  np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)      # train: batch statistics only
  np.testing.assert_allclose(a[2], b[2], rtol=1e-5, atol=1e-6)
  assert np.abs(a[1] - b[1]).max() > 1e-3 and np.abs(a[3] - b[3]).max() > 1e-3
  assert set(a[4]["batch_stats"]) == {"decoder"}
  assert jax.tree.structure(a[4]["batch_stats"]["decoder"]) == jax.tree.structure(variables["batch_stats"]["decoder"])
