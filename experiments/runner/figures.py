"""Figures every image experiment draws: data and reconstructions, decoded prior samples, latent traversals."""

import importlib
import os

import jax
import numpy as np
from etils import epy


def _files_only(_):
  importlib.import_module("matplotlib").use("Agg")   # figures go to files: no display needed


with epy.lazy_imports(success_callback=_files_only):   # matplotlib loads when the first figure is drawn
  import matplotlib.pyplot as plt

NUM_IMAGES = 8
TRAVERSAL_STEPS = 7
GAP_COLOUR = (0.35, 0.55, 0.85)   # between the images of a grid: apart from any grey


def image_grid(images_RxCxHxW: np.ndarray, path: str, title: str, row_labels=None) -> str:
  """Saves a grid of grey images (values in [0, 1]), one row per first index, as one picture with coloured
  gaps between the images; returns `path`.

  (One image rather than R × C subplots: a 50-dimension traversal draws in a fraction of a second.)
  """
  rows, cols, h, w = images_RxCxHxW.shape
  gap = 1
  padded = np.pad(np.clip(images_RxCxHxW, 0.0, 1.0), ((0, 0), (0, 0), (0, gap), (0, gap)),
                  constant_values=np.nan)
  canvas = padded.transpose(0, 2, 1, 3).reshape(rows * (h + gap), cols * (w + gap))[:-gap, :-gap]
  rgb = np.where(np.isnan(canvas)[..., None], GAP_COLOUR, np.repeat(canvas[..., None], 3, axis=-1))
  fig, ax = plt.subplots(figsize=(cols * 0.9, rows * 0.9 + 0.4))
  ax.imshow(rgb, interpolation="nearest")
  labels = [] if row_labels is None else list(row_labels)
  ax.set_xticks([])
  ax.set_yticks(np.arange(len(labels)) * (h + gap) + (h - 1) / 2, labels, fontsize=7)
  for spine in ax.spines.values():
    spine.set_visible(False)
  ax.set_title(title, fontsize=9)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path


def sample_images(ev, num: int = NUM_IMAGES) -> np.ndarray:
  """`num` evaluation images spread evenly over the evaluation set (float32 [num, H, W, 1])."""
  data = ev.data.eval
  idx = np.linspace(0, data.num_examples - 1, min(num, data.num_examples)).astype(np.int32)
  rows = idx if data.indices is None else np.asarray(data.indices)[idx]
  return np.asarray(data.decode(data.storage[rows]))


def reconstructions(ev, x, directory: str) -> str:
  recon = ev.decoder_means(ev.encoder_means(x))
  return image_grid(np.stack([x[..., 0], recon[..., 0]]), os.path.join(directory, "reconstructions.png"),
                    "data (top) and reconstructions from E[z|x]")


def prior_samples(ev, directory: str) -> str:
  z = ev.run.pz(ev.state).sample(seed=jax.random.key(ev.run.config.seed), sample_shape=(2, NUM_IMAGES))
  return image_grid(ev.decoder_means(z)[..., 0], os.path.join(directory, "prior_samples.png"),
                    "decoded samples z ~ p(z)")


def traversals(ev, x, directory: str) -> str:
  """Each latent dimension swept over ±2 prior standard deviations around E[z|x] of one image."""
  z0 = ev.encoder_means(x[:1])[0]
  std = _prior_std(ev, z0.shape[0])
  d = z0.shape[0]
  offsets = np.linspace(-2.0, 2.0, TRAVERSAL_STEPS)
  z = np.repeat(z0[None, None], d, 0).repeat(TRAVERSAL_STEPS, 1)
  z[np.arange(d), :, np.arange(d)] = z0[:, None] + offsets[None] * std[:, None]
  return image_grid(ev.decoder_means(z)[..., 0], os.path.join(directory, "traversals.png"),
                    "latent traversals (rows: dimensions, ±2 prior std)", row_labels=[f"z{i}" for i in range(d)])


def _prior_std(ev, d: int) -> np.ndarray:
  """The prior's standard deviation per dimension (1 where it has none, e.g. a Student-t with ν ≤ 2)."""
  try:
    std = np.asarray(ev.run.pz(ev.state).stddev())
  except (NotImplementedError, TypeError):
    return np.ones(d)
  return np.where(np.isfinite(std), std, 1.0)


def image_figures(ev, directory: str) -> list[str]:
  """Reconstructions, prior samples and traversals of an image model."""
  x = sample_images(ev)
  return [reconstructions(ev, x, directory), prior_samples(ev, directory), traversals(ev, x, directory)]
