"""Sparsity on Fashion-MNIST: the paper's Figures 5 and 6 (docs/science.md §5).

  python -m experiments.fashion_mnist --prior=sparse --gamma=0.8 --alpha=100   # spike-and-slab + MMD
  python -m experiments.fashion_mnist --prior=sparse --gamma=0.8 --alpha=0     # no divergence
  python -m experiments.fashion_mnist --prior=sparse --gamma=0 --alpha=0       # the authors' γ = 0 baseline
  python -m experiments.fashion_mnist --prior=sparse --sweep.alpha=0,10,100,1000 --sweep.gamma=0,0.8

Data: Debian's dataset-fashion-mnist files by default, --data_path=DIR for a directory of IDX files
(train-images-idx3-ubyte.gz, ...), --data_source=tfds --data_dir=DIR for TFDS `fashion_mnist`.
"""

import os

import numpy as np
from etils import epy

from decompvae import data as data_lib
from decompvae.data import fashion_mnist as fashion_lib
from decompvae.data import pipeline
from experiments.runner import cli
from experiments.runner import figures
from experiments.runner import task as task_lib

with epy.lazy_imports():   # scikit-learn and SciPy (~1 s) load at evaluation: a bad flag fails at once
  from decompvae import metrics


def preset(c) -> None:
  c.model.latent_dim = 50
  c.optim.batch_size, c.optim.num_epochs = 500, 80
  c.objective.alpha = 100.0 if c.prior.name == "sparse" else 0.0
  c.eval.iwae_examples = 0            # the whole test set
  if c.prior.name == "isotropic":
    c.prior.gamma = 0.0


def smoke(c) -> None:
  c.data.max_examples = 2000


def _subset(n: int, max_examples: int) -> np.ndarray:
  if not max_examples or max_examples >= n:
    return np.arange(n)
  return np.linspace(0, n - 1, max_examples).round().astype(np.int64)


def load_data(c, mesh) -> task_lib.TaskData:
  source = "idx" if c.data.source == "auto" and c.data.path else c.data.source
  kw = dict(source=source, data_dir=c.data.path or None, tfds_data_dir=c.data.data_dir or None,
            download=c.data.download)
  try:
    train, test = (data_lib.load_fashion_mnist(split, **kw) for split in ("train", "test"))
  except data_lib.DataError as e:
    raise data_lib.DataError(f"{e}\n(flags: --data_path=DIR of IDX files, or --data_source=tfds "
                             "--data_dir=DIR)") from e
  keep_train, keep_test = _subset(len(train.labels), c.data.max_examples), _subset(len(test.labels),
                                                                                   c.data.max_examples)
  train = data_lib.LabelledImages(train.images[keep_train], train.labels[keep_train])
  test = data_lib.LabelledImages(test.images[keep_test], test.labels[keep_test])
  x_example = np.asarray(data_lib.to_unit_interval(train.images[:1]))
  return task_lib.TaskData(pipeline.to_device(train, mesh=mesh), pipeline.to_device(test, mesh=mesh),
                           c.optim.batch_size, x_example, labels=np.asarray(test.labels))


def compute_metrics(ev) -> dict:
  """Normalised Hoyer sparsity of E[z|x] on the test set, and the mean |E[z_d|x]| per class."""
  return {"sparsity/hoyer": metrics.hoyer_sparsity(ev.z_mean),
          "sparsity/per_class_magnitude": metrics.latent_magnitude_per_class(ev.z_mean, ev.data.labels).tolist()}


def class_magnitudes(magnitude_KxD: np.ndarray, path: str) -> str:
  """The paper's bar plot: average |E[z_d|x]| per class, one panel per class."""
  plt = figures.plt
  k, d = magnitude_KxD.shape
  fig, axes = plt.subplots(k, 1, figsize=(max(6, d * 0.15), 1.1 * k), sharex=True, sharey=True)
  for i, ax in enumerate(np.atleast_1d(axes)):
    ax.bar(np.arange(d), magnitude_KxD[i], color="tab:blue")
    name = fashion_lib.CLASSES[i] if k == len(fashion_lib.CLASSES) else str(i)
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
  np.atleast_1d(axes)[-1].set_xlabel("latent dimension")
  fig.suptitle("average latent magnitude per class", fontsize=9)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path


def draw_figures(ev, directory: str) -> list[str]:
  magnitude = np.asarray(metrics.latent_magnitude_per_class(ev.z_mean, ev.data.labels))
  return figures.image_figures(ev, directory) + [class_magnitudes(magnitude,
                                                                  os.path.join(directory, "class_magnitudes.png"))]


TASK = task_lib.Task(
    name="fashion_mnist", usage=__doc__, priors=("sparse", "isotropic"), data_sources=("auto", "idx", "tfds"),
    preset=preset, smoke=smoke, load_data=load_data, metrics=compute_metrics, figures=draw_figures,
    shortcuts={"gamma": task_lib.Shortcut("prior.gamma", float, "Spike-and-slab weight γ of the spike "
                                          "(0 gives N(0, I))."),
               "sigma0": task_lib.Shortcut("prior.sigma0", float, "Standard deviation σ₀ of the spike.")})

if __name__ == "__main__":
  cli.run(TASK)
