"""Encoders and decoders of docs/science.md §4 as Flax linen modules.

dSprites conv, Fashion-MNIST DCGAN, pinwheel MLP.
"""

from collections.abc import Sequence
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
_DCGAN_INIT = nn.initializers.normal(0.02)   # DCGAN: weights ~ N(0, 0.02²), biases 0


def torch_init(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default initialisation of weights and biases alike: U(−1/√fan_in, 1/√fan_in).

  (`kaiming_uniform_(a=√5)` gives this bound for weights, and PyTorch draws biases with the same bound.)
  The authors' dSprites and pinwheel models use it.

  References:
    PyTorch `nn.Linear.reset_parameters` / `nn.modules.conv._ConvNd.reset_parameters`.
  """
  bound = fan_in ** -0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


# ----------------------------------------------------------------------------------------------------------
# 4×4 convolutions with stride 2 and padding 1, the building block of both conv architectures:
#
#   conv4x4s2:            y[o] = Σ_k xpad[2o + k] · W[k]     (PyTorch Conv2d(C, O, 4, 2, 1); H → H/2)
#   conv_transpose4x4s2:  y[2i + k − 1] += x[i] · W[k]       (PyTorch ConvTranspose2d(C, O, 4, 2, 1); H → 2H)
#
# (1-D indices shown; in 2-D they apply to rows and columns, and W[ky, kx] is a C×O matrix.) The two are
# adjoint: the input gradient of one is the other with W's channel axes swapped, and their kernel gradients
# are the same correlation. XLA:CPU computes a strided convolution fast, but writes a transposed one, and the
# input gradient of a strided one, as a convolution of a zero-dilated input (3/4 of the multiply-adds hit
# zeros), and differentiates that slowly. So:
#   - the transposed convolution is computed in sub-pixel form: its four output phases (row parity × column
#     parity) are one stride-1 2×2 convolution of the padded input with 4·O output channels, interleaved;
#   - custom VJPs send each input gradient through the other function's fast form and take both kernel
#     gradients from the strided convolution.
# Both remain exactly the functions above (tests compare outputs and gradients with `lax`); on this repo's
# 2-core CPU a dSprites training step runs about 3–4× faster than with the plain `lax` forms.
# ----------------------------------------------------------------------------------------------------------


def _conv_strided(x_BxHxWxC, kernel_4x4xCxO):
  return lax.conv_general_dilated(x_BxHxWxC, kernel_4x4xCxO, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)


def _conv_transpose_subpixel(x_BxHxWxC, kernel_4x4xCxO):
  # With F[t] = W[3 − t] and xpad = x padded by one: y[2m + p] = Σ_{t=0,1} xpad[m + p + t] · F[2t + p], i.e.
  # phase p at m is u[m + p, p], u = the 2×2 "valid" convolution of xpad with taps F[p], F[p + 2].
  b, h, w, c = x_BxHxWxC.shape
  o = kernel_4x4xCxO.shape[-1]
  f = kernel_4x4xCxO[::-1, ::-1].reshape(2, 2, 2, 2, c, o)          # [ty, py, tx, px, C, O]
  k = f.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, c, 4 * o)          # [ty, tx, C, (py, px, O)]
  u = lax.conv_general_dilated(x_BxHxWxC, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)
  u = u.reshape(b, h + 1, w + 1, 2, 2, o)
  rows = [jnp.stack([u[:, py:py + h, px:px + w, py, px] for px in (0, 1)], axis=3) for py in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, o)        # [B, H, py, W, px, O] -> [B, 2H, 2W, O]


def _swap_io(kernel):
  return jnp.swapaxes(kernel, -2, -1)


def _kernel_grad_whole(x, g, kernel):
  return jax.vjp(lambda k: _conv_strided(x, k), kernel)[1](g)[0]


# XLA:CPU computes a kernel gradient as a convolution over the batch; where g is large per image it runs
# faster in slices of g's channels (the dSprites decoder's third layer: 9 → 5 ms alone; the 2-device step
# +5%, median of 17 alternated process pairs; BUILD_NOTES "Networks"). One-channel inputs never gain. The rule is per image, so GSPMD's global
# shapes give the same split on any number of devices. The sums are the same, their rounding may differ.
_KERNEL_GRAD_SLICE_BYTES_PER_IMAGE = 32 << 10


def _kernel_grad_sliced(x, g, kernel):
  channel_bytes = math.prod(g.shape[1:-1]) * g.dtype.itemsize
  width = max(1, _KERNEL_GRAD_SLICE_BYTES_PER_IMAGE // channel_bytes)
  if x.shape[-1] == 1 or g.shape[-1] <= width:
    return _kernel_grad_whole(x, g, kernel)
  return jnp.concatenate([_kernel_grad_whole(x, g[..., i:i + width], kernel[..., i:i + width])
                          for i in range(0, g.shape[-1], width)], axis=-1)


def _kernel_grad(x, g, kernel):
  """∂⟨conv_strided(x, K), g⟩/∂K (linear in K, so `kernel` only gives the shape)."""
  return lax.platform_dependent(x, g, kernel, cpu=_kernel_grad_sliced, default=_kernel_grad_whole)


@jax.custom_vjp
def conv4x4s2(x_BxHxWxC: jax.Array, kernel_4x4xCxO: jax.Array) -> jax.Array:
  """Convolution, kernel 4, stride 2, padding 1: y[o] = Σ_k xpad[2o + k] · W[k] (per axis).

  This is PyTorch's `Conv2d(C, O, 4, 2, 1)` with its weight [O, C, 4, 4] stored as [4, 4, C, O].

  Args:
    x_BxHxWxC: input, H and W even.
    kernel_4x4xCxO: W[ky, kx, c, o].

  Returns:
    [B, H/2, W/2, O].

  Raises:
    ValueError: H or W is odd (the gradient, a transposed convolution, could not restore the size).

  References:
    Dumoulin & Visin (2016), "A guide to convolution arithmetic for deep learning".
  """
  if x_BxHxWxC.shape[1] % 2 or x_BxHxWxC.shape[2] % 2:
    raise ValueError(f"conv4x4s2 needs even height and width, got input shape {x_BxHxWxC.shape}")
  return _conv_strided(x_BxHxWxC, kernel_4x4xCxO)


@jax.custom_vjp
def conv_transpose4x4s2(x_BxHxWxC: jax.Array, kernel_4x4xCxO: jax.Array) -> jax.Array:
  """Transposed convolution, kernel 4, stride 2, padding 1: y[2i + k − 1] += x[i] · W[k] (per axis).

  This is PyTorch's `ConvTranspose2d(C, O, 4, 2, 1)` with its weight [C, O, 4, 4] stored as [4, 4, C, O], and
  `lax.conv_general_dilated(x, W[::-1, ::-1], 1, padding=2, lhs_dilation=2)`; computed in sub-pixel form.

  Args:
    x_BxHxWxC: input.
    kernel_4x4xCxO: W[ky, kx, c, o].

  Returns:
    [B, 2H, 2W, O].

  References:
    Shi et al. (2016), "Real-time single image and video super-resolution using an efficient sub-pixel
    convolutional neural network"; Dumoulin & Visin (2016).
  """
  return _conv_transpose_subpixel(x_BxHxWxC, kernel_4x4xCxO)


def _conv_bwd(res, g):
  x, kernel = res
  return _conv_transpose_subpixel(g, _swap_io(kernel)), _kernel_grad(x, g, kernel)


def _conv_transpose_bwd(res, g):
  x, kernel = res
  return _conv_strided(g, _swap_io(kernel)), _swap_io(_kernel_grad(g, x, _swap_io(kernel)))


conv4x4s2.defvjp(lambda x, k: (conv4x4s2(x, k), (x, k)), _conv_bwd)
conv_transpose4x4s2.defvjp(lambda x, k: (conv_transpose4x4s2(x, k), (x, k)), _conv_transpose_bwd)


class Conv4x4s2(nn.Module):
  """`conv4x4s2` (halves H and W) or, with `transpose`, `conv_transpose4x4s2` (doubles them), plus a bias.

  Parameters "kernel" [4, 4, C, O] and "bias" [O]. Default initialisation: PyTorch's (`torch_init`), with
  fan_in = 16·C for the convolution and 16·O for the transposed one (PyTorch counts its weight's second axis).
  """
  features: int
  transpose: bool = False
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer | None = None
  bias_init: nn.initializers.Initializer | None = None

  @nn.compact
  def __call__(self, x_BxHxWxC):
    default = torch_init(16 * (self.features if self.transpose else x_BxHxWxC.shape[-1]))
    kernel = self.param("kernel", self.kernel_init or default, (4, 4, x_BxHxWxC.shape[-1], self.features))
    y = (conv_transpose4x4s2 if self.transpose else conv4x4s2)(x_BxHxWxC, kernel)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init or default, (self.features,))
    return y


def _linear(x, features: int):
  """PyTorch's `nn.Linear`: weights and bias initialised with `torch_init`."""
  init = torch_init(x.shape[-1])
  return nn.Dense(features, kernel_init=init, bias_init=init)(x)


def _batch_norm(x, train: bool):
  # Batch statistics in training, running averages with decay 0.9 (PyTorch momentum 0.1) in evaluation.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)


class DSpritesEncoder(nn.Module):
  """conv 4×4/2 (32, 32, 64, 64) ReLU → flatten 1024 → Linear 128 → heads: mean, log-variance.

  Returns (loc, scale) of q(z|x), scale = exp(½·logvar) + 1e-6. PyTorch's default initialisation.
  """
  latent_dim: int

  @nn.compact
  def __call__(self, x_Bx64x64x1, train: bool = False):
    h = x_Bx64x64x1
    for c in (32, 32, 64, 64):
      h = nn.relu(Conv4x4s2(c)(h))
    h = _linear(h.reshape(h.shape[0], -1), 128)
    loc, logvar = _linear(h, self.latent_dim), _linear(h, self.latent_dim)
    return loc, jnp.exp(0.5 * logvar) + 1e-6


class DSpritesDecoder(nn.Module):
  """Linear 128 ReLU → Linear 1024 ReLU → 4×4×64 → transposed conv 4×4/2 (64, 64, 32, 1), ReLU between.

  Returns the Bernoulli logits [N, 64, 64, 1]. PyTorch's default initialisation.
  """

  @nn.compact
  def __call__(self, z_NxD, train: bool = False):
    h = nn.relu(_linear(nn.relu(_linear(z_NxD, 128)), 1024)).reshape(-1, 4, 4, 64)
    for c in (64, 64, 32):
      h = nn.relu(Conv4x4s2(c, transpose=True)(h))
    return Conv4x4s2(1, transpose=True)(h)


class FashionEncoder(nn.Module):
  """DCGAN encoder, base width w = 32: conv 4×4/2 without bias (w; 2w + BatchNorm; 4w + BatchNorm), each
  followed by LeakyReLU(0.2) → 4×4×4w → two heads, 4×4 "valid" convolutions to D: mean and softplus(·) + 1e-6.

  Weights ~ N(0, 0.02²), head biases 0. A 4×4 valid convolution of a 4×4 map is a linear map of the
  flattened map (same kernel, reshaped), so the heads are `Dense` layers.
  """
  latent_dim: int
  width: int = 32

  @nn.compact
  def __call__(self, x_Bx32x32x1, train: bool = False):
    down = lambda c, h: Conv4x4s2(c, use_bias=False, kernel_init=_DCGAN_INIT)(h)
    h = nn.leaky_relu(down(self.width, x_Bx32x32x1), 0.2)
    for c in (2 * self.width, 4 * self.width):
      h = nn.leaky_relu(_batch_norm(down(c, h), train), 0.2)
    h = h.reshape(h.shape[0], -1)
    head = lambda: nn.Dense(self.latent_dim, kernel_init=_DCGAN_INIT)
    return head()(h), jax.nn.softplus(head()(h)) + 1e-6


class FashionDecoder(nn.Module):
  """DCGAN decoder: transposed conv 4×4, stride 1, valid (D → 4w) of the 1×1 code, then transposed conv 4×4/2
  (2w, w, 1); all without bias, BatchNorm + ReLU after each but the last. Returns the Laplace location
  [N, 32, 32, 1]. Weights ~ N(0, 0.02²).

  The first layer maps a 1×1 input to 4×4: y[i, j] = z · W[i, j], a linear map to 4·4·4w features (`Dense`).
  """
  width: int = 32

  @nn.compact
  def __call__(self, z_NxD, train: bool = False):
    c = 4 * self.width
    h = nn.Dense(16 * c, use_bias=False, kernel_init=_DCGAN_INIT)(z_NxD).reshape(-1, 4, 4, c)
    h = nn.relu(_batch_norm(h, train))
    up = lambda c, h: Conv4x4s2(c, transpose=True, use_bias=False, kernel_init=_DCGAN_INIT)(h)
    for c in (2 * self.width, self.width):
      h = nn.relu(_batch_norm(up(c, h), train))
    return up(1, h)


class GaussianMLP(nn.Module):
  """Hidden ReLU layers (`hidden` widths) → two linear heads of `features`: (mean, softplus(·) + 1e-6).

  The pinwheel encoder (features = D) and decoder (features = 2). PyTorch's default initialisation.
  """
  features: int
  hidden: Sequence[int] = (100,)

  @nn.compact
  def __call__(self, x_NxF, train: bool = False):
    h = x_NxF
    for width in self.hidden:
      h = nn.relu(_linear(h, width))
    return _linear(h, self.features), jax.nn.softplus(_linear(h, self.features)) + 1e-6
