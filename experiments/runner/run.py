"""One run's static parts, built from its config and data: model, prior, pure training step, step counts."""

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from decompvae import priors
from decompvae import train
from decompvae import vae
from experiments.runner import task as task_lib
from experiments.runner.errors import RunError

# Prior hyperparameters that a sweep may vary: they enter the training step as arguments.
SWEEPABLE = {"beta": "objective.beta", "alpha": "objective.alpha", "gamma": "prior.gamma"}

_PCA_LOGITS = {}   # (id of the pca_source array, D) -> (that array, logits): computed once per data set


@dataclasses.dataclass(frozen=True)
class Run:
  """The static parts of one training run, derived from its config and data."""
  config: ml_collections.ConfigDict
  model: Any
  prior_hp: dict          # fixed prior hyperparameters (arrays included)
  prior_params: dict      # initial learnable prior arrays ({} when fixed)
  train_step: Any         # pure (state, x, key, *, beta, alpha, **prior_hp) -> (state, metrics)
  num_steps: int
  steps_per_epoch: int

  def variables(self, state: train.TrainState) -> dict:
    """The flax variables of the model in `state`."""
    return train.model_variables(state.params["model"], state.batch_stats)

  def pz(self, state: train.TrainState, **hp):
    """The prior p(z) of `state` (learnable arrays from it), `hp` overriding the config's hyperparameters."""
    c = self.config
    return priors.make_prior(c.prior.name, c.model.latent_dim, **{**self.prior_hp, **hp}, **state.params["prior"])

  @property
  def log_every_steps(self) -> int:
    """The progress interval: the config's, or about 20 lines per run (at most every 500 steps)."""
    return self.config.train.log_every_steps or min(500, max(1, self.num_steps // 20))


def prior_hyperparameters(config: ml_collections.ConfigDict, data: task_lib.TaskData) -> dict:
  """The prior's hyperparameters from the config (and, for the "pca" initialisation, from the data)."""
  p, d = config.prior, config.model.latent_dim
  if p.name == "anisotropic":
    if p.init == "uniform":
      logits = np.zeros(d, np.float32)
    else:
      source, logits = _PCA_LOGITS.get((id(data.pca_source), d), (None, None))
      if source is not data.pca_source:
        logits = priors.pca_logits(data.pca_source, d)
        _PCA_LOGITS[(id(data.pca_source), d)] = (data.pca_source, logits)
    return {"logits": jnp.asarray(logits, jnp.float32), "scale": p.scale}
  return {"isotropic": {}, "student_t": {"df": p.df}, "sparse": {"gamma": p.gamma, "sigma0": p.sigma0},
          "mixture": {"variance": p.variance}}[p.name]


def make_run(task: task_lib.Task, config: ml_collections.ConfigDict, data: task_lib.TaskData) -> Run:
  """Model, prior and step function of `config`; a setting the data or model refuse is a RunError."""
  c = config
  try:
    model = vae.make_model(c.model.name, c.model.latent_dim, **task.model_options(c))
    prior_hp = prior_hyperparameters(c, data)
    priors.make_prior(c.prior.name, c.model.latent_dim, **prior_hp)   # checks the hyperparameters
  except ValueError as e:
    raise RunError(f"invalid model or prior settings: {e}") from e
  prior_params = {}
  if c.prior.learnable:
    prior_params = priors.init_prior_params(c.prior.name, c.model.latent_dim, **prior_hp)
    prior_hp = {k: v for k, v in prior_hp.items() if k not in prior_params}
  step = train.make_train_step(model=model, prior_name=c.prior.name, latent_dim=c.model.latent_dim,
                               prior_hp=prior_hp, optimizer=train.make_optimizer(c.optim.learning_rate),
                               divergence=c.objective.divergence, analytic_kl=c.objective.analytic_kl)
  steps_per_epoch = data.num_train // c.optim.batch_size
  if steps_per_epoch == 0:
    raise RunError(f"batch size {c.optim.batch_size} exceeds the {data.num_train} training examples")
  return Run(c, model, prior_hp, prior_params, step, num_steps(c, data.num_train), steps_per_epoch)


def num_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
  """The run's length: `optim.num_steps`, or `optim.num_epochs` epochs of full batches."""
  return config.optim.num_steps or config.optim.num_epochs * (num_train // config.optim.batch_size)


def init_state(run: Run, data: task_lib.TaskData) -> train.TrainState:
  """The initial state of `run` (from its seed), on the default device."""
  init_key, _ = train.seed_keys(run.config.seed)
  return train.init_state(init_key, data.x_example, model=run.model, prior_params=run.prior_params,
                          optimizer=train.make_optimizer(run.config.optim.learning_rate))
