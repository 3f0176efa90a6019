"""The command line of every experiment: its flags, the config they select, and errors without tracebacks."""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from decompvae import data as data_lib
from decompvae import divergences
from experiments.runner import config as config_lib
from experiments.runner import devices
from experiments.runner import sweep as sweep_lib
from experiments.runner import task as task_lib
from experiments.runner import training
from experiments.runner import writer as writer_lib
from experiments.runner.errors import RunError

# The flags defined below belong to the entry module that calls `run`, so that its --help lists them.
flags.disclaim_key_flags()

Shortcut = task_lib.Shortcut
COMMON_SHORTCUTS = {
    "beta": Shortcut("objective.beta", float, "β, the weight of KL(q(z|x) ‖ p(z)) (overlap)."),
    "alpha": Shortcut("objective.alpha", float, "α, the weight of the divergence D(q(z), p(z)) (structure)."),
    "latent_dim": Shortcut("model.latent_dim", int, "Number of latent dimensions D."),
    "batch_size": Shortcut("optim.batch_size", int, "Global batch size, split over the devices."),
    "learning_rate": Shortcut("optim.learning_rate", float, "Adam (AMSGrad) learning rate."),
    "epochs": Shortcut("optim.num_epochs", int, "Training epochs."),
    "steps": Shortcut("optim.num_steps", int, "Training steps; overrides --epochs when > 0."),
    "seed": Shortcut("seed", int, "The run's only seed (initialisation, data order, sampling)."),
    "data_path": Shortcut("data.path", str, "A data file or directory (see the data notes above)."),
    "data_dir": Shortcut("data.data_dir", str, "TFDS data_dir holding a prepared dataset."),
}
_DEFINE = {float: flags.DEFINE_float, int: flags.DEFINE_integer, str: flags.DEFINE_string, bool: flags.DEFINE_bool}
USER_ERRORS = (RunError, data_lib.DataError, FloatingPointError)


def define_flags(task: task_lib.Task) -> dict[str, str]:
  """Defines the experiment's flags; returns {flag name: config path} of its shortcuts."""
  flags.DEFINE_enum("prior", task.priors[0], task.priors, "The prior p(z).")
  flags.DEFINE_string("workdir", None, "Run directory: config, checkpoints, metrics, figures, log. "
                      f"Default: workdirs/{task.name}-<prior>[-smoke] in the current directory.")
  flags.DEFINE_bool("smoke", False, "Tiny settings that run in seconds (a check, not a result).")
  flags.DEFINE_bool("start_over", False, "If --workdir holds a run with another config, move it aside "
                    "into workdir/previous-<time>/ and start afresh (nothing is deleted).")
  flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() (multi-host TPU/GPU); on "
                    "Cloud TPU and SLURM it finds its peers itself, elsewhere give the three flags below.")
  flags.DEFINE_string("coordinator_address", None, "--multiprocess: host:port of process 0.")
  flags.DEFINE_integer("num_processes", None, "--multiprocess: number of processes.")
  flags.DEFINE_integer("process_id", None, "--multiprocess: this process's index.")
  flags.DEFINE_integer("cpu_devices", None, "When JAX runs on the CPU, split it into this many devices for "
                       "data parallelism (default: one per core; with --multiprocess, JAX's default).",
                       lower_bound=1)
  devices.define_compilation_cache_flag()
  flags.DEFINE_enum("data_source", None, task.data_sources, "Where the data come from (see above).")
  flags.DEFINE_enum("divergence", None, divergences.DIVERGENCES, "The divergence D(q(z), p(z)).")
  shortcuts = {**COMMON_SHORTCUTS, **task.shortcuts}
  for name, s in shortcuts.items():
    _DEFINE[s.kind](name, None, s.help)
  config_flags.DEFINE_config_dict("config", config_lib.make_config(task),
                                  "Any config field: --config.<group>.<field>=value, e.g. "
                                  "--config.train.steps_per_call=100; the groups data, model, prior, objective, "
                                  "optim, train and eval are listed in experiments/runner/config.py.")
  config_flags.DEFINE_config_dict("sweep", sweep_lib.sweep_config(),
                                  "Train several members, e.g. --sweep.beta=1,2,4,8 --sweep.seeds=3.")
  for name in ("config", "sweep"):
    flags.declare_key_flag(name)
    flags.FLAGS[name].default_as_str = None   # --help shows the description, not the whole preset
  return {name: s.path for name, s in shortcuts.items()} | {"data_source": "data.source",
                                                            "divergence": "objective.divergence"}


def resolve_config(task: task_lib.Task, shortcuts: dict[str, str]):
  """The chosen preset, then the --config.* overrides, then the shortcut flags; checked."""
  fl = flags.FLAGS
  config = config_lib.make_config(task, fl.prior, smoke=fl.smoke)
  config.update_from_flattened_dict(config_flags.get_override_values(fl["config"]))
  for name, path in shortcuts.items():
    if fl[name].value is not None:
      config.update_from_flattened_dict({path: fl[name].value})
  config_lib.check(config, task)
  return config


def _start_jax() -> None:
  fl = flags.FLAGS
  cache = devices.use_compilation_cache(fl.compilation_cache)
  if fl.cpu_devices or not fl.multiprocess:
    devices.use_cpu_cores(fl.cpu_devices or 0)
  if fl.multiprocess:
    jax.distributed.initialize(fl.coordinator_address, fl.num_processes, fl.process_id)
  logging.info("process %d/%d, devices: %s; compilation cache: %s", jax.process_index(), jax.process_count(),
               jax.devices(), cache or "off")


def main(task: task_lib.Task, shortcuts: dict[str, str], argv) -> None:
  """Trains (and evaluates) the run or sweep the flags ask for."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  fl = flags.FLAGS
  if fl.verbosity < 1:
    writer_lib.quiet_console()
  _start_jax()   # first: checking the settings builds the prior, which starts JAX's backends
  try:
    config = resolve_config(task, shortcuts)
    members = sweep_lib.members(config, fl.sweep)
    workdir = fl.workdir or f"workdirs/{task.name}-{config.prior.name}{'-smoke' if fl.smoke else ''}"
    if members:
      training.train_sweep(task, config, members, workdir, start_over=fl.start_over)
    else:
      training.train_and_evaluate(task, config, workdir, start_over=fl.start_over)
  except USER_ERRORS as e:
    sys.exit(f"error: {e}")


def run(task: task_lib.Task) -> None:
  """The entry point of an experiment module: `if __name__ == "__main__": cli.run(TASK)`."""
  try:
    shortcuts = define_flags(task)
  except (AttributeError, KeyError, TypeError, ValueError) as e:   # ml_collections parses --config.* here
    message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
    sys.exit(f"error: a --config.* or --sweep.* flag names no setting or has a bad value: {message}")
  app.run(lambda argv: main(task, shortcuts, argv))
