"""Evaluate a saved run: `python -m experiments.evaluate --workdir=workdirs/dsprites-anisotropic`.

Restores the newest good checkpoint of the run in --workdir (a sweep member's directory works too) with the
run's own config.json, then writes the test metrics (a row in metrics.jsonl, summary.json) and the figures
into the run's directory, or into --output_dir (e.g. for a run on a read-only disk). Evaluation settings
may be changed with --iwae_samples, --iwae_examples, --standard_metrics or any --config.eval.<field>=value.
"""

import json
import os
import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from decompvae import parallel
from experiments import dsprites, fashion_mnist, pinwheel
from experiments.runner import checkpointing
from experiments.runner import cli
from experiments.runner import config as config_lib
from experiments.runner import devices
from experiments.runner import evaluation
from experiments.runner import run as run_lib
from experiments.runner import training
from experiments.runner import workdir as workdir_lib
from experiments.runner import writer as writer_lib
from experiments.runner.errors import RunError

TASKS = {t.name: t for t in (dsprites.TASK, fashion_mnist.TASK, pinwheel.TASK)}


def _eval_fields() -> ml_collections.ConfigDict:
  """Every experiment's `eval` fields (their union), the fields --config.eval.* may change."""
  fields = ml_collections.ConfigDict()
  for task in TASKS.values():
    for name, value in config_lib.make_config(task).eval.items():
      fields[name] = value
  return ml_collections.ConfigDict({"eval": fields})


_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory (holds config.json and checkpoints/).",
                               required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write the results (default: --workdir).")
_IWAE_SAMPLES = flags.DEFINE_integer("iwae_samples", None, "K of the IWAE bound (default: the run's config).")
_IWAE_EXAMPLES = flags.DEFINE_integer("iwae_examples", None, "Evaluation points for the ELBO terms and IWAE "
                                      "(0 = all).")
_STANDARD = flags.DEFINE_bool("standard_metrics", None, "dSprites: also compute disentanglement_lib's metrics.")
_MULTIPROCESS = flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() first.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "--multiprocess: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "--multiprocess: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "--multiprocess: this process's index.")
_COMPILATION_CACHE = devices.define_compilation_cache_flag()
config_flags.DEFINE_config_dict("config", _eval_fields(), "Evaluation settings, e.g. "
                                          "--config.eval.paper_votes=5000.")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of the run in `workdir`; RunError if there is no readable run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise RunError(f"{workdir} holds no run (no config.json); pass the --workdir of a training run")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except ValueError as e:
    raise RunError(f"{path} is not a readable config ({e})") from e
  if "sweep_members" in config:
    raise RunError(f"{workdir} is a sweep; evaluate one of its members: {workdir}/members/<name>")
  if config.get("experiment") not in TASKS:
    raise RunError(f"{path} names no known experiment ({config.get('experiment')!r}); "
                   f"known: {sorted(TASKS)}")
  return config


def _flag_overrides() -> dict:
  changes = dict(config_flags.get_override_values(flags.FLAGS["config"]))
  for name, flag in (("eval.iwae_samples", _IWAE_SAMPLES), ("eval.iwae_examples", _IWAE_EXAMPLES),
                     ("eval.standard_metrics", _STANDARD)):
    if flag.value is not None:
      changes[name] = flag.value
  return changes


def _override(config: ml_collections.ConfigDict, changes: dict) -> None:
  unknown = [k for k in changes if k.split(".")[-1] not in config.eval]
  if unknown:
    raise RunError(f"{unknown} are not evaluation settings of a {config.experiment} run; its settings: "
                   f"{sorted(config.eval)}")
  config.update_from_flattened_dict(changes)


def evaluate(workdir: str, output_dir: str | None = None, changes: dict | None = None) -> dict:
  """Evaluates the newest good checkpoint of the run in `workdir`; writes the results into `output_dir`.

  `changes` ({"eval.<field>": value}) change the evaluation settings of the run's config.
  """
  workdir = workdir_lib.resolve(workdir)
  output_dir = workdir_lib.resolve(output_dir or workdir)
  config = load_run_config(workdir)
  _override(config, changes or {})
  task = TASKS[config.experiment]
  config_lib.check(config, task)
  if not os.access(output_dir, os.W_OK) and os.path.isdir(output_dir):
    raise RunError(f"cannot write to {output_dir}; pass --output_dir=DIR to write the results elsewhere")
  with workdir_lib.locked(output_dir), writer_lib.log_file(output_dir):
    mesh = devices.make_mesh(config)
    data = training.load_data(task, config, mesh)
    run = run_lib.make_run(task, config, data)
    abstract = checkpointing.abstract(parallel.replicate(run_lib.init_state(run, data), mesh))
    mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"))
    try:
      step, state = checkpointing.restore_latest(mngr, abstract)
    finally:
      mngr.close()
    if step is None:
      raise RunError(f"{workdir} has no checkpoint yet")
    logging.info("Evaluating %s at step %d", workdir, step)
    return evaluation.evaluate_and_report(task, run, state, data, output_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if flags.FLAGS.verbosity < 1:
    writer_lib.quiet_console()
  devices.use_compilation_cache(_COMPILATION_CACHE.value)
  if _MULTIPROCESS.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  else:
    devices.use_cpu_cores()
  try:
    evaluate(_WORKDIR.value, _OUTPUT_DIR.value, _flag_overrides())
  except cli.USER_ERRORS as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
