"""The figures people look at: reconstructions, prior samples, traversals, pinwheel densities, class magnitudes."""

import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


from decompvae.data import fashion_mnist as fashion_mnist_lib

_NUM_IMAGES = 8
_TRAVERSAL_STEPS = 7




def _decode_mean(run, state, z):
  px_z, _ = run.model.decode(run.variables(state), z, train=False)
  return np.asarray(px_z.mean())


def _image_grid(images_RxCxHxW: np.ndarray, path: str, title: str, row_labels=None) -> None:
  rows, cols = images_RxCxHxW.shape[:2]
  fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
  for r in range(rows):
    for col in range(cols):
      ax = axes[r, col]
      ax.imshow(images_RxCxHxW[r, col], cmap="gray", vmin=0.0, vmax=1.0)
      ax.set_xticks([]), ax.set_yticks([])
    if row_labels is not None:
      axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def reconstructions(run, state, x, path):
  qz_x, _ = run.model.encode(run.variables(state), x, train=False)
  recon = _decode_mean(run, state, qz_x.mean())
  _image_grid(np.stack([x[..., 0], recon[..., 0]]), path, "data (top) and reconstructions from E[z|x]")


def prior_samples(run, state, key, path):
  z = run.pz(state).sample(seed=key, sample_shape=(2, _NUM_IMAGES))
  _image_grid(_decode_mean(run, state, z)[..., 0], path, "decoded samples z ~ p(z)")


def traversals(run, state, x, path):
  """Each latent dimension swept over ±2 prior standard deviations around E[z|x] of one image."""
  qz_x, _ = run.model.encode(run.variables(state), x[:1], train=False)
  z0 = np.asarray(qz_x.mean())[0]
  std = np.asarray(run.pz(state).stddev()) if _has_stddev(run, state) else np.ones_like(z0)
  d = z0.shape[0]
  offsets = np.linspace(-2.0, 2.0, _TRAVERSAL_STEPS)
  z = np.repeat(z0[None, None], d, 0).repeat(_TRAVERSAL_STEPS, 1)
  z[np.arange(d), :, np.arange(d)] = z0[:, None] + offsets[None] * std[:, None]
  images = _decode_mean(run, state, jnp.asarray(z, jnp.float32))[..., 0]
  _image_grid(images, path, "latent traversals (rows: dimensions, ±2 prior std)",
              row_labels=[f"z{i}" for i in range(d)])


def _has_stddev(run, state) -> bool:
  try:
    return bool(np.all(np.isfinite(np.asarray(run.pz(state).stddev()))))
  except (NotImplementedError, TypeError):
    return False


def pinwheel_density(run, state, x, labels, z_mean, path):
  """Aggregate posterior q(z) = mean_n q(z|x_n) on a grid (log scale), and E[z|x] coloured by arm."""
  qz_x, _ = run.model.encode(run.variables(state), x, train=False)
  lim = float(np.max(np.abs(z_mean))) * 1.3 + 0.5
  g = np.linspace(-lim, lim, 120, dtype=np.float32)
  grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
  log_q = jax.nn.logsumexp(qz_x.log_prob(grid[:, None, :]), axis=1) - np.log(x.shape[0])
  log_p = run.pz(state).log_prob(grid)
  fig, axes = plt.subplots(1, 3, figsize=(12, 4))
  for ax, values, title in ((axes[0], log_q, "log q(z), aggregate posterior"), (axes[1], log_p, "log p(z), prior")):
    im = ax.imshow(np.asarray(values).reshape(g.size, g.size), origin="lower", extent=(-lim, lim, -lim, lim),
                   vmin=float(np.max(values)) - 12.0, cmap="viridis")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
  axes[2].scatter(z_mean[:, 0], z_mean[:, 1], c=labels, cmap="tab10", s=6)
  axes[2].set_xlim(-lim, lim), axes[2].set_ylim(-lim, lim), axes[2].set_aspect("equal")
  axes[2].set_title("E[z|x] of test points, coloured by arm")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def class_magnitudes(magnitude_KxD: np.ndarray, path):
  """The paper's bar plot: average |E[z_d|x]| per class, one panel per class."""
  k, d = magnitude_KxD.shape
  fig, axes = plt.subplots(k, 1, figsize=(max(6, d * 0.15), 1.1 * k), sharex=True, sharey=True)
  for i, ax in enumerate(np.atleast_1d(axes)):
    ax.bar(np.arange(d), magnitude_KxD[i], color="tab:blue")
    name = fashion_mnist_lib.CLASSES[i] if k == len(fashion_mnist_lib.CLASSES) else str(i)
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
  np.atleast_1d(axes)[-1].set_xlabel("latent dimension")
  fig.suptitle("average latent magnitude per class", fontsize=9)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def draw_all(run, state, data, z_mean, directory: str) -> list[str]:
  """Draws every figure of the run's experiment into `directory`; returns the paths."""
  os.makedirs(directory, exist_ok=True)
  c = run.config
  n = min(_NUM_IMAGES, data.eval.num_examples)
  idx = np.linspace(0, data.eval.num_examples - 1, n).astype(np.int32)
  rows = idx if data.eval.indices is None else np.asarray(data.eval.indices)[idx]
  x = data.eval.decode(data.eval.storage[rows])
  key = jax.random.key(c.seed)
  paths = []
  if c.experiment == "pinwheel":
    x_all = data.eval.decode(data.eval.storage)
    paths.append(os.path.join(directory, "aggregate_posterior.png"))
    pinwheel_density(run, state, x_all, data.labels, z_mean, paths[-1])
    return paths
  for name, draw in (("reconstructions", lambda p: reconstructions(run, state, x, p)),
                     ("prior_samples", lambda p: prior_samples(run, state, key, p)),
                     ("traversals", lambda p: traversals(run, state, x, p))):
    paths.append(os.path.join(directory, f"{name}.png"))
    draw(paths[-1])
  if c.experiment == "fashion_mnist":
    from decompvae import metrics  # pylint: disable=g-import-not-at-top
    paths.append(os.path.join(directory, "class_magnitudes.png"))
    class_magnitudes(np.asarray(metrics.latent_magnitude_per_class(z_mean, data.labels)), paths[-1])
  return paths
