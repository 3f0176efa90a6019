"""Helpers of the runner and experiment tests: tiny configs and reading a run directory back."""

import json
import os

from decompvae import parallel
from experiments import dsprites, fashion_mnist, pinwheel
from experiments.runner import checkpointing
from experiments.runner import config as config_lib
from experiments.runner import devices
from experiments.runner import run as run_lib
from experiments.runner import training

TASKS = {t.name: t for t in (dsprites.TASK, fashion_mnist.TASK, pinwheel.TASK)}


def config(experiment="pinwheel", prior=None, steps=6, light_eval=True, **overrides):
  """The smoke preset of `experiment` for `steps` steps; `light_eval` skips IWAE and figures."""
  c = config_lib.make_config(TASKS[experiment], prior, smoke=True)
  c.optim.num_steps = steps
  if light_eval:
    c.eval.iwae_samples, c.eval.figures = 0, False
  c.update_from_flattened_dict(overrides)
  return c


def restore(workdir, c):
  """(step, state) of the newest checkpoint in `workdir`, restored independently of the training loop."""
  task = TASKS[c.experiment]
  mesh = devices.make_mesh(c)
  data = training.load_data(task, c, mesh)
  run = run_lib.make_run(task, c, data)
  abstract = checkpointing.abstract(parallel.replicate(run_lib.init_state(run, data), mesh))
  mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"))
  step, state = checkpointing.restore_latest(mngr, abstract)
  mngr.close()
  return step, state


def rows(workdir, key="train/loss"):
  """The steps of the metrics.jsonl rows holding `key`."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["step"] for r in map(json.loads, f) if key in r]
