"""The shared absl front end of `experiments.dsprites`, `experiments.fashion_mnist` and `experiments.pinwheel`."""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from decompvae import parallel
from experiments import checkpointing
from experiments import configs
from experiments import loop
from experiments import sweep as sweep_lib
from experiments import tasks

# Shortcut flags: name -> (config path, type, help). Each defaults to None, meaning "keep the preset";
# every other field is reachable as --config.<group>.<field>=value.
_SHORTCUTS = {
    "beta": ("objective.beta", float, "β, the weight of KL(q(z|x) ‖ p(z)) (overlap)."),
    "alpha": ("objective.alpha", float, "α, the weight of the divergence D(q(z), p(z)) (structure)."),
    "latent_dim": ("model.latent_dim", int, "Number of latent dimensions D."),
    "batch_size": ("optim.batch_size", int, "Global batch size, split over all devices."),
    "learning_rate": ("optim.learning_rate", float, "Adam (AMSGrad) learning rate."),
    "epochs": ("optim.num_epochs", int, "Training epochs."),
    "steps": ("optim.num_steps", int, "Training steps; overrides --epochs when > 0."),
    "seed": ("seed", int, "The run's only seed (initialisation, data order, sampling)."),
    "data_path": ("data.path", str, "dSprites .npz file or Fashion-MNIST IDX directory."),
    "data_dir": ("data.data_dir", str, "TFDS data_dir holding a prepared dataset."),
}
_PER_EXPERIMENT = {
    "dsprites": {
        "learn_prior": ("prior.learnable", bool, "Learn the anisotropic prior's variances."),
        "df": ("prior.df", float, "Student-t degrees of freedom ν."),
    },
    "fashion_mnist": {
        "gamma": ("prior.gamma", float, "Spike-and-slab weight γ of the spike (0 gives N(0, I))."),
        "sigma0": ("prior.sigma0", float, "Standard deviation σ₀ of the spike."),
    },
    "pinwheel": {},
}
_DEFINE = {float: flags.DEFINE_float, int: flags.DEFINE_integer, str: flags.DEFINE_string,
           bool: flags.DEFINE_bool}
_DATA_SOURCES = {"dsprites": ["auto", "render", "npz", "tfds"], "fashion_mnist": ["auto", "idx", "tfds"],
                 "pinwheel": ["auto"]}
_DIVERGENCES = ["mmd_dim", "mmd_full", "kl_inclusive"]


def define_flags(experiment: str) -> dict:
  """Defines this experiment's flags; returns the FLAGS object's shortcut table."""
  priors = configs.EXPERIMENT_PRIORS[experiment]
  flags.DEFINE_enum("prior", priors[0], priors, "The prior p(z).")
  flags.DEFINE_string("workdir", None, "Run directory: config, checkpoints, metrics, figures. "
                      "Default: workdirs/<experiment>-<prior>[-smoke].")
  flags.DEFINE_bool("smoke", False, "Tiny settings that run in seconds (a check, not a result).")
  flags.DEFINE_bool("start_over", False, "If --workdir holds a run with another config, move it aside "
                    "into workdir/previous-<time>/ and start afresh (nothing is deleted).")
  flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() (multi-host TPU/GPU); on "
                    "Cloud TPU and SLURM it finds its peers itself, elsewhere give the three flags below.")
  flags.DEFINE_integer("cpu_devices", None, "When JAX runs on the CPU, split it into this many devices for "
                       "data parallelism (default: one per core; with --multiprocess, JAX's default).",
                       lower_bound=1)
  flags.DEFINE_string("coordinator_address", None, "--multiprocess: host:port of process 0.")
  flags.DEFINE_integer("num_processes", None, "--multiprocess: number of processes.")
  flags.DEFINE_integer("process_id", None, "--multiprocess: this process's index.")
  flags.DEFINE_enum("data_source", None, _DATA_SOURCES[experiment], "Where the data comes from "
                    "(auto: the real file or prepared TFDS if given, else the offline default).")
  flags.DEFINE_enum("divergence", None, _DIVERGENCES, "The divergence D(q(z), p(z)).")
  shortcuts = {**_SHORTCUTS, **_PER_EXPERIMENT[experiment], "data_source": ("data.source", str, ""),
               "divergence": ("objective.divergence", str, "")}
  for name, (_, kind, help_) in {**_SHORTCUTS, **_PER_EXPERIMENT[experiment]}.items():
    _DEFINE[kind](name, None, help_)
  config_flags.DEFINE_config_dict("config", configs.get_config(experiment),
                                  "Any config field, e.g. --config.train.steps_per_call=100.")
  config_flags.DEFINE_config_dict("sweep", sweep_lib.sweep_config(),
                                  "Train several members together (one vmapped program on GPU/TPU), e.g. "
                                  "--sweep.beta=1,2,4,8 --sweep.seeds=3.")
  return shortcuts


def resolve_config(experiment: str, shortcuts: dict):
  """The chosen preset, then --config.* overrides, then the shortcut flags."""
  fl = flags.FLAGS
  config = configs.get_config(experiment, fl.prior, smoke=fl.smoke)
  config.update_from_flattened_dict(config_flags.get_override_values(fl["config"]))
  for name, (path, _, _) in shortcuts.items():
    value = fl[name].value
    if value is not None:
      config.update_from_flattened_dict({path: value})
  return config


def run(experiment: str) -> None:
  """Parses flags and trains (and evaluates) one run or one sweep."""
  shortcuts = define_flags(experiment)

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    fl = flags.FLAGS
    try:
      config = resolve_config(experiment, shortcuts)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
    if fl.cpu_devices or not fl.multiprocess:
      parallel.use_cpu_cores(fl.cpu_devices or 0)
    if fl.multiprocess:
      jax.distributed.initialize(fl.coordinator_address, fl.num_processes, fl.process_id)
    logging.info("process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
    workdir = fl.workdir or f"workdirs/{experiment}-{config.prior.name}{'-smoke' if fl.smoke else ''}"
    members = sweep_lib.members(config, fl.sweep)
    try:
      if members:
        sweep_lib.train_sweep(config, members, workdir, start_over=fl.start_over)
      else:
        loop.train_and_evaluate(config, workdir, start_over=fl.start_over)
    except (loop.RunError, tasks.DataError, checkpointing.CheckpointError, FloatingPointError) as e:
      logging.error("%s", e)
      sys.exit(f"error: {e}")

  app.run(main)
