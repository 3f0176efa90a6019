"""What an experiment gives the runner: presets, flags, data, metrics and figures (`Task`), and its data (`TaskData`)."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
import numpy as np

from decompvae.data import pipeline


@dataclasses.dataclass(frozen=True)
class Shortcut:
  """A command-line flag that sets one config field, e.g. `--beta` for `objective.beta`."""
  path: str
  kind: type
  help: str


@dataclasses.dataclass(frozen=True)
class TaskData:
  """What a run needs from its data.

  Attributes:
    train: the training set on the devices (replicated), compact storage decoded per batch.
    eval: the evaluation set on the devices (dSprites: all images, or the held-out split; others: test).
    batch_size: the global batch size.
    x_example: float32 [1, ...], for model initialisation.
    labels: int [num eval] class labels of the evaluation set (Fashion-MNIST, pinwheel), else None.
    ground_truth: the ground-truth factors of the data (dSprites: `DSprites`), else None.
    pca_source: float32 [n, P] flattened training examples for the anisotropic prior's "pca" initialisation.
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


@dataclasses.dataclass(frozen=True)
class Task:
  """One experiment of the paper, as the runner sees it.

  Attributes:
    name: the experiment's name, `config.experiment` and the default workdir's prefix.
    usage: the entry module's docstring (the commands that reproduce the paper), shown by `--help`.
    priors: the priors this experiment offers; the first is the default.
    data_sources: accepted values of `config.data.source`.
    preset: sets the experiment's fields on the common config (`config.prior.name` is already set).
    smoke: shrinks the experiment's fields for a seconds-long check (after the common shrinking).
    load_data: `(config, mesh) -> TaskData`; raises `decompvae.data.DataError` when the data cannot be had.
    metrics: `(evaluation) -> {name: value}`: the experiment's own measures of a trained model, named
      `family/metric` (e.g. "paper/disentanglement"); the runner adds them to the test metrics.
    figures: `(evaluation, directory) -> paths`: the figures people look at.
    shortcuts: flags of this experiment beyond the common ones.
    model_options: `config -> {option: value}`: keyword options of `decompvae.vae.make_model`.
  """
  name: str
  usage: str
  priors: tuple[str, ...]
  data_sources: tuple[str, ...]
  preset: Callable[[ml_collections.ConfigDict], None]
  smoke: Callable[[ml_collections.ConfigDict], None]
  load_data: Callable[..., TaskData]
  metrics: Callable[..., dict]
  figures: Callable[..., list[str]]
  shortcuts: Mapping[str, Shortcut] = dataclasses.field(default_factory=dict)
  model_options: Callable[[ml_collections.ConfigDict], dict] = lambda config: {}
