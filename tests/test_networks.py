"""Tests for decompvae.networks: the 4×4 stride-2 convolutions against their definitions and `lax`, and the
three architectures of docs/science.md §4 against hand-counted parameters and reference forward passes."""

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from decompvae import networks

DN = ("NHWC", "HWIO", "NHWC")


def _rand(rng, *shape):
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _numpy_conv_transpose(x, w):
  """PyTorch ConvTranspose2d(C, O, 4, 2, 1) by its definition: y[2i+ky−1, 2j+kx−1] += x[i, j] · W[ky, kx]."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  b, h, wd, _ = x.shape
  y = np.zeros((b, 2 * h + 2, 2 * wd + 2, w.shape[-1]))   # one extra row/column each side, cropped below
  for ky in range(4):
    for kx in range(4):
      y[:, ky:ky + 2 * h:2, kx:kx + 2 * wd:2] += x @ w[ky, kx]
  return y[:, 1:-1, 1:-1]


def _numpy_conv(x, w):
  """PyTorch Conv2d(C, O, 4, 2, 1) by its definition: y[i, j] = Σ xpad[2i+ky, 2j+kx] · W[ky, kx]."""
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  w = np.asarray(w, np.float64)
  ho, wo = (xp.shape[1] - 2) // 2, (xp.shape[2] - 2) // 2
  return sum(xp[:, ky:ky + 2 * ho:2, kx:kx + 2 * wo:2] @ w[ky, kx] for ky in range(4) for kx in range(4))


def _lax_conv_transpose(x, w):   # the zero-dilated-input formulation
  return lax.conv_general_dilated(x, w[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                  dimension_numbers=DN)


def _lax_conv(x, w):
  return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)


# (x shape, O): odd/non-square, 1 channel, and two whose kernel gradient runs in slices of channels on CPU (a
# layer input, or a convolution's output, over 32 KiB per image: 8·8·136 floats, sliced 128 + 8).
SHAPES = [((2, 5, 6, 3), 2), ((3, 4, 4, 1), 1), ((1, 2, 8, 4), 5), ((2, 8, 8, 136), 2), ((2, 8, 8, 3), 136)]


@pytest.mark.parametrize("x_shape, o", SHAPES)
def test_conv_transpose_equals_definition_and_lax(x_shape, o):
  rng = np.random.default_rng(0)
  x, w = _rand(rng, *x_shape), _rand(rng, 4, 4, x_shape[-1], o) / np.sqrt(16 * x_shape[-1])   # y ~ 1
  y = jax.jit(networks.conv_transpose4x4s2)(x, w)
  np.testing.assert_allclose(y, _numpy_conv_transpose(x, w), atol=1e-5)
  np.testing.assert_allclose(y, _lax_conv_transpose(x, w), atol=1e-5)
  # lax.conv_transpose's "gradient of a convolution" convention takes the kernel in forward layout [4, 4, O, C].
  np.testing.assert_allclose(y, lax.conv_transpose(x, jnp.swapaxes(w, 2, 3), (2, 2), ((2, 2), (2, 2)),
                                                   dimension_numbers=DN, transpose_kernel=True), atol=1e-5)
  r = _rand(rng, *y.shape)
  grads = jax.jit(jax.grad(lambda x, w: jnp.vdot(networks.conv_transpose4x4s2(x, w), r), (0, 1)))(x, w)
  expected = jax.grad(lambda x, w: jnp.vdot(_lax_conv_transpose(x, w), r), (0, 1))(x, w)
  for g, e in zip(grads, expected):
    np.testing.assert_allclose(g, e, atol=1e-4)


@pytest.mark.parametrize("x_shape, o", SHAPES)
def test_conv_equals_definition_and_lax(x_shape, o):
  rng = np.random.default_rng(1)
  b, h, w_, c = x_shape
  x, w = _rand(rng, b, 2 * h, 2 * w_, c), _rand(rng, 4, 4, c, o) / np.sqrt(16 * c)
  y = jax.jit(networks.conv4x4s2)(x, w)
  np.testing.assert_allclose(y, _numpy_conv(x, w), atol=1e-5)
  r = _rand(rng, *y.shape)
  grads = jax.jit(jax.grad(lambda x, w: jnp.vdot(networks.conv4x4s2(x, w), r), (0, 1)))(x, w)
  expected = jax.grad(lambda x, w: jnp.vdot(_lax_conv(x, w), r), (0, 1))(x, w)
  for g, e in zip(grads, expected):
    np.testing.assert_allclose(g, e, atol=1e-4)


def test_conv_rejects_odd_sizes():
  with pytest.raises(ValueError, match="even height and width"):
    networks.conv4x4s2(jnp.zeros((1, 5, 4, 1)), jnp.zeros((4, 4, 1, 1)))


@pytest.mark.parametrize("fn, ref", [(networks.conv4x4s2, _lax_conv),
                                     (networks.conv_transpose4x4s2, _lax_conv_transpose)])
def test_convs_vmap_over_kernels(fn, ref):
  """A sweep vmaps the train step over stacked parameters: outputs and gradients must be per member."""
  rng = np.random.default_rng(2)
  xs, ws = _rand(rng, 3, 2, 8, 8, 2), _rand(rng, 3, 4, 4, 2, 3)
  loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w))))
  grads = jax.jit(jax.vmap(jax.grad(loss(fn), (0, 1))))(xs, ws)
  for m in range(3):
    np.testing.assert_allclose(jax.vmap(fn)(xs, ws)[m], ref(xs[m], ws[m]), atol=1e-5)
    for g, e in zip(grads, jax.grad(loss(ref), (0, 1))(xs[m], ws[m])):
      np.testing.assert_allclose(g[m], e, atol=1e-4)


@pytest.mark.parametrize("transpose", [False, True])
def test_conv_module_parameters_and_default_init(transpose):
  x = jnp.ones((1, 8, 8, 16))
  module = networks.Conv4x4s2(64, transpose=transpose)
  params = module.init(jax.random.key(0), x)["params"]
  assert params["kernel"].shape == (4, 4, 16, 64) and params["bias"].shape == (64,)
  # PyTorch: U(±1/√fan_in), fan_in = 16·C for Conv2d but 16·O for ConvTranspose2d (its weight's axis 1).
  bound = 1 / np.sqrt(16 * (64 if transpose else 16))
  for p in (params["kernel"], params["bias"]):
    assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
  np.testing.assert_allclose(np.std(params["kernel"]), bound / np.sqrt(3), rtol=0.05)
  y = module.apply({"params": params}, x)
  assert y.shape == ((1, 16, 16, 64) if transpose else (1, 4, 4, 64))


def _shapes(module, input_shape):
  return jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape))


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def test_dsprites_parameter_counts_by_hand():
  d = 10
  conv = lambda c, o: 16 * c * o + o          # 4×4 kernel + bias
  lin = lambda i, o: i * o + o
  enc = _shapes(networks.DSpritesEncoder(d), (1, 64, 64, 1))
  dec = _shapes(networks.DSpritesDecoder(), (1, d))
  assert _count(enc) == conv(1, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64) + lin(1024, 128) + 2 * lin(128, d)
  assert _count(enc) == 544 + 16_416 + 32_832 + 65_600 + 131_200 + 2 * 1_290
  assert _count(dec) == lin(d, 128) + lin(128, 1024) + conv(64, 64) + conv(64, 64) + conv(64, 32) + conv(32, 1)
  assert set(enc) == {"params"} and set(dec) == {"params"}


def test_fashion_parameter_counts_by_hand():
  d, w = 50, 32
  enc = _shapes(networks.FashionEncoder(d), (1, 32, 32, 1))
  dec = _shapes(networks.FashionDecoder(), (1, d))
  conv = lambda c, o: 16 * c * o               # no bias
  bn = lambda c: 2 * c                         # scale and bias (+ 2c running statistics)
  assert _count(enc["params"]) == (conv(1, w) + conv(w, 2 * w) + bn(2 * w) + conv(2 * w, 4 * w) + bn(4 * w)
                                   + 2 * (16 * 4 * w * d + d))
  assert _count(dec["params"]) == (16 * d * 4 * w + bn(4 * w) + conv(4 * w, 2 * w) + bn(2 * w) + conv(2 * w, w)
                                   + bn(w) + conv(w, 1))
  assert _count(enc["batch_stats"]) == 2 * (2 * w + 4 * w) and _count(dec["batch_stats"]) == 2 * (7 * w)


def test_pinwheel_mlp_parameter_counts_by_hand():
  enc = _shapes(networks.GaussianMLP(2, (100,)), (1, 2))
  deep = _shapes(networks.GaussianMLP(3, (100, 50)), (1, 2))
  assert _count(enc) == (2 * 100 + 100) + 2 * (100 * 2 + 2)
  assert _count(deep) == (2 * 100 + 100) + (100 * 50 + 50) + 2 * (50 * 3 + 3)


def _dense(p, h):
  return h @ p["kernel"] + p["bias"]


def _random_variables(module, input_shape, rng):
  """Variables of `module` filled with random values (variances positive), without compiling its init."""
  shapes = _shapes(module, input_shape)
  fill = lambda path, a: rng.uniform(0.5, 1.5, a.shape) if "var" in str(path) else 0.2 * rng.normal(size=a.shape)
  return jax.tree_util.tree_map_with_path(lambda path, a: jnp.asarray(fill(path, a), jnp.float32), shapes)


def _apply_both(enc, dec):
  return jax.jit(lambda ve, vd, x, z: (enc.apply(ve, x), dec.apply(vd, z)))


@jax.jit
def _reference_dsprites(pe, pd, x, z):
  """docs/science.md §4 written out with plain lax convolutions (PyTorch's NCHW flatten order aside)."""
  h = x
  for i in range(4):
    h = jax.nn.relu(_lax_conv(h, pe[f"Conv4x4s2_{i}"]["kernel"]) + pe[f"Conv4x4s2_{i}"]["bias"])
  h = _dense(pe["Dense_0"], h.reshape(h.shape[0], 1024))             # no nonlinearity after Linear 128
  loc, scale = _dense(pe["Dense_1"], h), jnp.exp(0.5 * _dense(pe["Dense_2"], h)) + 1e-6
  h = jax.nn.relu(_dense(pd["Dense_1"], jax.nn.relu(_dense(pd["Dense_0"], z)))).reshape(-1, 4, 4, 64)
  for i in range(4):
    h = _lax_conv_transpose(h, pd[f"Conv4x4s2_{i}"]["kernel"]) + pd[f"Conv4x4s2_{i}"]["bias"]
    h = jax.nn.relu(h) if i < 3 else h
  return loc, scale, h


def test_dsprites_networks_equal_reference_forward_pass():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.random((2, 64, 64, 1)) < 0.3, jnp.float32)
  z = _rand(rng, 2, 10)
  enc, dec = networks.DSpritesEncoder(10), networks.DSpritesDecoder()
  ve, vd = _random_variables(enc, x.shape, rng), _random_variables(dec, z.shape, rng)
  loc, scale, logits = _reference_dsprites(ve["params"], vd["params"], x, z)
  (enc_out, dec_out) = _apply_both(enc, dec)(ve, vd, x, z)
  np.testing.assert_allclose(enc_out, (loc, scale), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dec_out, logits, rtol=1e-4, atol=1e-4)
  assert logits.shape == (2, 64, 64, 1)


def _bn_eval(h, p, s):
  return (h - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]


@jax.jit
def _reference_fashion(ve, vd, x, z):
  """The DCGAN encoder/decoder in evaluation mode (BatchNorm with the running statistics), by hand."""
  (pe, se), (pd, sd) = (ve["params"], ve["batch_stats"]), (vd["params"], vd["batch_stats"])
  h = jax.nn.leaky_relu(_lax_conv(x, pe["Conv4x4s2_0"]["kernel"]), 0.2)
  for i in (1, 2):
    h = _bn_eval(_lax_conv(h, pe[f"Conv4x4s2_{i}"]["kernel"]), pe[f"BatchNorm_{i - 1}"], se[f"BatchNorm_{i - 1}"])
    h = jax.nn.leaky_relu(h, 0.2)
  # The heads: 4×4 valid convolutions of the 4×4×128 map, i.e. full contractions with a [4, 4, 128, D] kernel.
  d = z.shape[-1]
  head = lambda p: jnp.einsum("bhwc,hwcd->bd", h, p["kernel"].reshape(4, 4, 128, d)) + p["bias"]
  loc, scale = head(pe["Dense_0"]), jax.nn.softplus(head(pe["Dense_1"])) + 1e-6
  # First layer: ConvTranspose2d(D, 128, 4, 1, 0) of a 1×1 input, y[i, j] = z · W[i, j].
  h = jnp.einsum("bd,ijdc->bijc", z, pd["Dense_0"]["kernel"].reshape(d, 4, 4, 128).transpose(1, 2, 0, 3))
  h = jax.nn.relu(_bn_eval(h, pd["BatchNorm_0"], sd["BatchNorm_0"]))
  for i in (0, 1):
    h = _bn_eval(_lax_conv_transpose(h, pd[f"Conv4x4s2_{i}"]["kernel"]), pd[f"BatchNorm_{i + 1}"],
                 sd[f"BatchNorm_{i + 1}"])
    h = jax.nn.relu(h)
  return loc, scale, _lax_conv_transpose(h, pd["Conv4x4s2_2"]["kernel"])


def test_fashion_networks_equal_reference_forward_pass():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.random((3, 32, 32, 1)), jnp.float32)
  z = _rand(rng, 3, 6)
  enc, dec = networks.FashionEncoder(6), networks.FashionDecoder()
  ve, vd = _random_variables(enc, x.shape, rng), _random_variables(dec, z.shape, rng)
  assert "bias" not in vd["params"]["Conv4x4s2_2"]
  loc, scale, laplace_loc = _reference_fashion(ve, vd, x, z)
  (enc_out, dec_out) = _apply_both(enc, dec)(ve, vd, x, z)
  np.testing.assert_allclose(enc_out, (loc, scale), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dec_out, laplace_loc, rtol=1e-4, atol=1e-4)


def test_fashion_init_is_dcgan():
  params = jax.jit(networks.FashionDecoder().init)(jax.random.key(0), jnp.zeros((1, 50)))["params"]
  kernels = [np.ravel(k) for path, k in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(path)]
  np.testing.assert_allclose(np.std(np.concatenate(kernels)), 0.02, rtol=0.02)
  np.testing.assert_allclose(np.mean(np.concatenate(kernels)), 0, atol=2e-4)


def test_gaussian_mlp_reference_forward_pass():
  rng = np.random.default_rng(5)
  x = _rand(rng, 7, 2)
  mlp = networks.GaussianMLP(3, (16, 8))
  p = _random_variables(mlp, x.shape, rng)["params"]
  h = np.maximum(_dense(p["Dense_1"], np.maximum(_dense(p["Dense_0"], x), 0)), 0)
  mean, std = jax.jit(mlp.apply)({"params": p}, x)
  np.testing.assert_allclose(mean, _dense(p["Dense_2"], h), atol=1e-5)
  np.testing.assert_allclose(std, np.logaddexp(0, _dense(p["Dense_3"], h)) + 1e-6, atol=1e-5)


def test_dsprites_networks_equal_the_pytorch_benchmark_port():
  """`benchmarks/torch_reference.py` (the speed baseline) computes our dSprites networks with PyTorch's layers.

  Runs where torch is installed. The port once had a lighter decoder (64, 32, 32, 1 channels: 28% fewer
  FLOPs), which made the side-by-side speed comparison unfair; this keeps the two the same function.
  """
  torch = pytest.importorskip("torch")
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  x = (rng.random((2, 64, 64, 1)) < 0.3).astype(np.float32)
  z = rng.normal(size=(2, 10)).astype(np.float32)
  enc, dec = networks.DSpritesEncoder(10), networks.DSpritesDecoder()
  small = lambda tree: jax.tree.map(lambda a: np.array(a) / 4, tree)   # keeps exp(½·logvar) finite
  pe = small(_random_variables(enc, x.shape, rng)["params"])
  pd = small(_random_variables(dec, z.shape, rng)["params"])
  (loc, scale), logits = _apply_both(enc, dec)({"params": pe}, {"params": pd}, x, z)

  t = lambda a: torch.from_numpy(np.array(a, np.float32))
  nhwc_to_nchw = lambda n: np.arange(n * 16).reshape(4, 4, n).transpose(2, 0, 1).ravel()  # torch index -> ours
  port = torch_reference.DSprites(d=10)
  convs = [m for m in port.enc if isinstance(m, torch.nn.Conv2d)]
  convs_t = [m for m in port.dec if isinstance(m, torch.nn.ConvTranspose2d)]
  linears = [m for m in port.dec if isinstance(m, torch.nn.Linear)]

  def load(module, weight, bias):
    module.weight.copy_(t(weight))
    module.bias.copy_(t(bias))

  with torch.no_grad():
    for i, m in enumerate(convs):                    # Conv2d weight [O, C, 4, 4]
      load(m, np.transpose(pe[f"Conv4x4s2_{i}"]["kernel"], (3, 2, 0, 1)), pe[f"Conv4x4s2_{i}"]["bias"])
    for i, m in enumerate(convs_t):                  # ConvTranspose2d weight [C, O, 4, 4]
      load(m, np.transpose(pd[f"Conv4x4s2_{i}"]["kernel"], (2, 3, 0, 1)), pd[f"Conv4x4s2_{i}"]["bias"])
    load(port.enc[-1], pe["Dense_0"]["kernel"][nhwc_to_nchw(64)].T, pe["Dense_0"]["bias"])
    load(port.heads, np.concatenate([pe["Dense_1"]["kernel"], pe["Dense_2"]["kernel"]], 1).T,
         np.concatenate([pe["Dense_1"]["bias"], pe["Dense_2"]["bias"]]))
    load(linears[0], pd["Dense_0"]["kernel"].T, pd["Dense_0"]["bias"])
    load(linears[1], pd["Dense_1"]["kernel"][:, nhwc_to_nchw(64)].T, pd["Dense_1"]["bias"][nhwc_to_nchw(64)])
    torch_loc, torch_logvar = port.heads(port.enc(t(x.transpose(0, 3, 1, 2)))).chunk(2, -1)
    torch_logits = port.dec(t(z)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(loc, torch_loc.numpy(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(scale, np.exp(0.5 * torch_logvar.numpy()) + 1e-6, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits, torch_logits, rtol=1e-4, atol=1e-4)
