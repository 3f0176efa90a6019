"""VAE models: `encode -> q(z|x)` and `decode -> p(x|z)` as distrax distributions around the networks of docs/science.md §4."""

import dataclasses
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from decompvae import networks

MODELS = ("dsprites", "fashion_mnist", "pinwheel")
LIKELIHOODS = ("bernoulli", "laplace", "normal")

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class VAE:
  """A VAE whose methods are pure functions of `variables = {"params": ..., ["batch_stats": ...]}`.

  Variables hold one subtree per network: `params = {"encoder": ..., "decoder": ...}` and, for BatchNorm
  models, `batch_stats = {"encoder": ..., "decoder": ...}`. `encode`/`decode` return, next to the distribution,
  `updates`: `{}` unless `train` and the model has BatchNorm; then `{"batch_stats": {part: new}}` with only the
  part (encoder or decoder) that ran, so the two halves' updates are merged as nested dicts (and `decode` after
  `encode` may be given the merged variables, as `objectives.vae_loss` does). Frozen and hashable, so it can
  be closed over or be a static argument under `jax.jit`.

  Attributes:
    name: one of MODELS.
    latent_dim: D.
    data_shape: shape of one data point: (64, 64, 1), (32, 32, 1) or (2,).
    likelihood: one of LIKELIHOODS; the decoder returns the logits, the Laplace location, or (mean, std).
    encoder: module x_BxX -> (loc, scale) of q(z|x), each [B, D].
    decoder: module z_NxD -> the likelihood's parameters, [N, *data_shape] each.
    laplace_scale: the fixed Laplace scale (docs/science.md §3: 0.1).
  """
  name: str
  latent_dim: int
  data_shape: tuple[int, ...]
  likelihood: str
  encoder: nn.Module
  decoder: nn.Module
  laplace_scale: float = 0.1

  def init(self, key: jax.Array, x_BxX: jax.Array) -> Variables:
    """Initial variables for inputs shaped like `x_BxX` (BatchNorm statistics start at mean 0, variance 1)."""
    self._check_x(x_BxX)
    key_enc, key_dec = jax.random.split(key)
    enc = self.encoder.init(key_enc, x_BxX)
    dec = self.decoder.init(key_dec, jnp.zeros((x_BxX.shape[0], self.latent_dim), x_BxX.dtype))
    variables = {"params": {"encoder": enc["params"], "decoder": dec["params"]}}
    if "batch_stats" in enc or "batch_stats" in dec:
      variables["batch_stats"] = {"encoder": enc.get("batch_stats", {}), "decoder": dec.get("batch_stats", {})}
    return variables

  def encode(self, variables: Variables, x_BxX: jax.Array, *,
             train: bool = False) -> tuple[distrax.MultivariateNormalDiag, Variables]:
    """q(z|x) = N(μ(x), diag σ(x)²), batch shape (B,), event shape (D,); and the BatchNorm updates.

    Raises:
      ValueError: `x_BxX` is not shaped [B, *data_shape].
    """
    self._check_x(x_BxX)
    (loc_BxD, scale_BxD), updates = self._apply("encoder", variables, x_BxX, train)
    return distrax.MultivariateNormalDiag(loc_BxD, scale_BxD), updates

  def decode(self, variables: Variables, z_xD: jax.Array, *,
             train: bool = False) -> tuple[distrax.Independent, Variables]:
    """p(x|z) for z of any leading shape [...] + [D]: batch shape [...], event shape `data_shape`.

    Bernoulli(logits) (dSprites), Laplace(loc, laplace_scale) (Fashion-MNIST) or Normal(mean, std)
    (pinwheel), independent over pixels/coordinates, so `log_prob` sums over them. The leading axes are
    flattened into one batch for the network (in training, BatchNorm's statistics are over all of them).

    Raises:
      ValueError: the last axis of `z_xD` is not D.
    """
    if z_xD.ndim < 1 or z_xD.shape[-1] != self.latent_dim:
      raise ValueError(f"{self.name} model expects z shaped [..., {self.latent_dim}], got {tuple(z_xD.shape)}")
    lead = z_xD.shape[:-1]
    out, updates = self._apply("decoder", variables, z_xD.reshape(-1, self.latent_dim), train)
    out = jax.tree.map(lambda a: a.reshape(*lead, *self.data_shape), out)
    if self.likelihood == "bernoulli":
      px_z = distrax.Bernoulli(logits=out)
    elif self.likelihood == "laplace":
      px_z = distrax.Laplace(out, self.laplace_scale)
    else:
      px_z = distrax.Normal(*out)
    return distrax.Independent(px_z, len(self.data_shape)), updates

  def _apply(self, part: str, variables: Variables, inputs: jax.Array, train: bool):
    module = self.encoder if part == "encoder" else self.decoder
    stats = variables.get("batch_stats", {}).get(part)
    v = {"params": variables["params"][part], **({"batch_stats": stats} if stats else {})}
    if train and stats:
      out, new = module.apply(v, inputs, train=True, mutable=["batch_stats"])
      return out, {"batch_stats": {part: new["batch_stats"]}}
    return module.apply(v, inputs, train=False), {}

  def _check_x(self, x: jax.Array):
    if x.ndim != len(self.data_shape) + 1 or tuple(x.shape[1:]) != self.data_shape:
      raise ValueError(f"{self.name} model expects x shaped [B, {', '.join(map(str, self.data_shape))}], "
                       f"got {tuple(x.shape)}")


def make_model(name: str, latent_dim: int, **kw) -> VAE:
  """The VAE of docs/science.md §3–4 for `name` in MODELS with `latent_dim` latent dimensions.

  dsprites: conv encoder/decoder, Bernoulli likelihood, data (64, 64, 1).
  fashion_mnist: DCGAN encoder/decoder with BatchNorm, Laplace(·, 0.1) likelihood, data (32, 32, 1);
    options `width` (base channels, 32) and `laplace_scale` (0.1).
  pinwheel: MLP encoder/decoder, Gaussian likelihood with learnt std, data (2,); option `hidden` (hidden
    layer widths, (100,): one layer of 100; e.g. (100, 100) for two).

  Raises:
    ValueError: unknown `name` or option, `latent_dim` not a positive integer, or a bad option value.

  References:
    Mathieu et al. (2019), "Disentangling Disentanglement in Variational Autoencoders", §5 and appendix.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
  if not isinstance(latent_dim, int) or latent_dim < 1:
    raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
  allowed = {"dsprites": (), "fashion_mnist": ("width", "laplace_scale"), "pinwheel": ("hidden",)}[name]
  if unknown := sorted(set(kw) - set(allowed)):
    raise ValueError(f"unknown options {unknown} for model {name!r}; allowed: {list(allowed)}")
  if name == "dsprites":
    return VAE(name, latent_dim, (64, 64, 1), "bernoulli", networks.DSpritesEncoder(latent_dim),
               networks.DSpritesDecoder())
  if name == "fashion_mnist":
    width, laplace_scale = kw.get("width", 32), kw.get("laplace_scale", 0.1)
    if not isinstance(width, int) or width < 1 or not laplace_scale > 0:
      raise ValueError(f"fashion_mnist needs a positive integer width and laplace_scale > 0, "
                       f"got width={width!r}, laplace_scale={laplace_scale!r}")
    return VAE(name, latent_dim, (32, 32, 1), "laplace", networks.FashionEncoder(latent_dim, width),
               networks.FashionDecoder(width), float(laplace_scale))
  hidden = tuple(kw.get("hidden", (100,)))
  if not all(isinstance(h, int) and h > 0 for h in hidden):
    raise ValueError(f"pinwheel hidden must be positive integer widths, got {hidden!r}")
  return VAE(name, latent_dim, (2,), "normal", networks.GaussianMLP(latent_dim, hidden),
             networks.GaussianMLP(2, hidden))
