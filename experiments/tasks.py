"""From a config to the data of a run: device-resident training set, evaluation set, prior hyperparameters."""

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from decompvae import data as data_lib
from decompvae import priors
from decompvae.data import pipeline

# The smoke preset's coarse dSprites grid: every shape and scale, a subset of the rest (3·6·10·8·8 images).
_COARSE_STRIDES = (1, 1, 4, 4, 4)


class DataError(RuntimeError):
  """The requested data cannot be loaded; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class TaskData:
  """What a run needs from its data.

  Attributes:
    train: the training set on the device (replicated), compact storage decoded per batch.
    eval: the evaluation set on the device (dSprites: all images, or the held-out split; others: test).
    batch_size: the global batch size.
    x_example: float32 [1, ...], for model initialisation.
    labels: int [num eval] class labels of the evaluation set (Fashion-MNIST, pinwheel), else None.
    ground_truth: the dSprites `GroundTruthData` (metrics), else None.
    pca_source: float32 [n, P] flattened training examples for the "pca" prior initialisation.
  """
  train: pipeline.DeviceDataset
  eval: pipeline.DeviceDataset
  batch_size: int
  x_example: np.ndarray
  labels: np.ndarray | None = None
  ground_truth: Any = None
  pca_source: np.ndarray | None = None

  @property
  def num_train(self) -> int:
    return self.train.num_examples

  def batch_fn(self, arrays: pipeline.DeviceDataset, seed, step):
    """Training batch `step` of `seed` from the device arrays (pure, jittable)."""
    return pipeline.get_batch(arrays, seed, step, batch_size=self.batch_size)


def _subset(n: int, max_examples: int) -> np.ndarray | None:
  if not max_examples or max_examples >= n:
    return None
  return np.linspace(0, n - 1, max_examples).round().astype(np.int64)


def _dsprites(c: ml_collections.ConfigDict, mesh):
  if c.data.max_examples and c.data.source in ("auto", "render") and not c.data.path:
    gt = _coarse_dsprites()
  else:
    gt = data_lib.load_dsprites(c.data.source, path=c.data.path or None, data_dir=c.data.data_dir or None,
                                cache_dir=c.data.cache_dir or None, download=c.data.download)
  n = gt.num_examples
  if c.data.heldout_fraction:
    train_idx, eval_idx = pipeline.holdout_split(n, c.data.heldout_fraction, seed=c.seed)
  else:
    train_idx, eval_idx = np.arange(n), None   # the authors train and evaluate on every image
  sub = _subset(len(train_idx), c.data.max_examples)
  train_idx = train_idx if sub is None else train_idx[sub]
  train = pipeline.to_device(gt, indices=None if len(train_idx) == n else train_idx, mesh=mesh)
  evaluation = pipeline.to_device(gt, indices=eval_idx, mesh=mesh) if eval_idx is not None else train
  pca_idx = np.random.default_rng(c.seed).choice(train_idx, min(c.prior.pca_examples, len(train_idx)),
                                                 replace=False)
  return TaskData(train, evaluation, c.optim.batch_size, gt.images(train_idx[:1]), ground_truth=gt,
                  pca_source=gt.images(np.sort(pca_idx)).reshape(len(pca_idx), -1))


def _coarse_dsprites():
  """A small full-factorial dSprites (11,520 images), rendered in seconds: the smoke preset's data."""
  sizes = tuple(s // k for s, k in zip(data_lib.FACTOR_SIZES, _COARSE_STRIDES))
  grid = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), 1) * np.asarray(_COARSE_STRIDES)
  tables = tuple(t[::k] for t, k in zip(data_lib.factor_value_tables(), _COARSE_STRIDES))
  logging.info("dSprites source: rendered coarse grid %s (smoke preset)", sizes)
  return data_lib.DSprites(data_lib.render_dsprites(grid), factor_sizes=sizes, value_tables=tables,
                           source="render-coarse")


def _fashion_mnist(c: ml_collections.ConfigDict, mesh):
  source = "idx" if c.data.source == "auto" and c.data.path else c.data.source
  kw = dict(source=source, data_dir=c.data.path or None, tfds_data_dir=c.data.data_dir or None,
            download=c.data.download)
  train, test = (data_lib.load_fashion_mnist(split, **kw) for split in ("train", "test"))
  sub = _subset(len(train.labels), c.data.max_examples)
  if sub is not None:
    train = data_lib.LabelledImages(train.images[sub], train.labels[sub])
    test_sub = _subset(len(test.labels), c.data.max_examples)
    test = data_lib.LabelledImages(test.images[test_sub], test.labels[test_sub])
  x_example = np.asarray(data_lib.to_unit_interval(train.images[:1]))
  return TaskData(pipeline.to_device(train, mesh=mesh), pipeline.to_device(test, mesh=mesh),
                  c.optim.batch_size, x_example, labels=np.asarray(test.labels))


def _pinwheel(c: ml_collections.ConfigDict, mesh):
  (x_train, _), (x_test, y_test) = data_lib.load_pinwheel(c.seed)
  return TaskData(pipeline.to_device(x_train, mesh=mesh), pipeline.to_device(x_test, mesh=mesh),
                  c.optim.batch_size, x_train[:1], labels=y_test)


_LOADERS = {"dsprites": _dsprites, "fashion_mnist": _fashion_mnist, "pinwheel": _pinwheel}


def load_data(config: ml_collections.ConfigDict, mesh=None) -> TaskData:
  """Loads the experiment's data onto the devices of `mesh`; missing data raises DataError saying how."""
  try:
    data = _LOADERS[config.experiment](config, mesh)
  except (FileNotFoundError, ValueError) as e:
    raise DataError(str(e)) from e
  if data.num_train < config.optim.batch_size:
    raise DataError(f"batch size {config.optim.batch_size} exceeds the {data.num_train} training examples")
  return data


def prior_hyperparameters(config: ml_collections.ConfigDict, data: TaskData) -> dict:
  """The prior's hyperparameters from the config (and, for the "pca" initialisation, from the data)."""
  p, d = config.prior, config.model.latent_dim
  if p.name == "anisotropic":
    if p.init == "pca":
      logits = priors.pca_logits(data.pca_source, d)
    elif p.init == "uniform":
      logits = np.zeros(d, np.float32)
    else:
      raise ValueError(f"prior.init must be 'pca' or 'uniform', got {p.init!r}")
    return {"logits": jax.numpy.asarray(logits, jax.numpy.float32), "scale": p.scale}
  return {"isotropic": {}, "student_t": {"df": p.df},
          "sparse": {"gamma": p.gamma, "sigma0": p.sigma0}, "mixture": {"variance": p.variance}}[p.name]
