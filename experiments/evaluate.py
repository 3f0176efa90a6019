"""Evaluate a saved run: `python -m experiments.evaluate --workdir=workdirs/dsprites-anisotropic`.

Restores the latest good checkpoint of the run in --workdir (a sweep member's directory works too) with the
run's own config.json, then writes test-set ELBO terms, the IWAE log-likelihood, the experiment's metrics
(metrics.jsonl, summary.json) and its figures. `--config.eval.*` overrides change only the evaluation.
"""

import json
import os
import sys

import jax
import ml_collections
from absl import app, flags, logging

from decompvae import parallel
from experiments import checkpointing
from experiments import evaluation
from experiments import loop
from experiments import tasks

flags.DEFINE_string("workdir", None, "The run directory (holds config.json and checkpoints/).", required=True)
flags.DEFINE_integer("iwae_samples", None, "K of the IWAE bound (default: the run's config, 1000).")
flags.DEFINE_integer("iwae_examples", None, "Test points for the IWAE bound (0 = all).")
flags.DEFINE_bool("standard_metrics", None, "dSprites: also compute disentanglement_lib's metrics.")
flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() first.")
FLAGS = flags.FLAGS


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise loop.RunError(f"{workdir} holds no run (no config.json); pass the --workdir of a training run")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def main(argv):
  del argv
  if FLAGS.multiprocess:
    jax.distributed.initialize()
  else:
    parallel.use_cpu_cores()
  try:
    config = load_run_config(FLAGS.workdir)
    for name, path in (("iwae_samples", "eval.iwae_samples"), ("iwae_examples", "eval.iwae_examples"),
                       ("standard_metrics", "eval.standard_metrics")):
      if FLAGS[name].value is not None:
        config.update_from_flattened_dict({path: FLAGS[name].value})
    mesh = loop.make_mesh(config)
    data = tasks.load_data(config, mesh)
    run = loop.make_run(config, data)
    abstract = checkpointing.abstract(parallel.replicate(loop.init_state(run, data), mesh))
    mngr = checkpointing.manager(os.path.join(FLAGS.workdir, "checkpoints"))
    step, state = checkpointing.restore_latest(mngr, abstract)
    mngr.close()
    if step is None:
      raise loop.RunError(f"{FLAGS.workdir} has no checkpoint yet")
  except (loop.RunError, tasks.DataError, checkpointing.CheckpointError) as e:
    sys.exit(f"error: {e}")
  logging.info("Evaluating %s at step %d", FLAGS.workdir, step)
  evaluation.evaluate_and_report(run, state, data, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
