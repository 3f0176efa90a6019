"""Train and evaluate one run, or a sweep of runs, in a workdir: the runner's top level.

A sweep on CPU is a sequence of ordinary runs, one per member directory (XLA:CPU gains nothing from
training members together: BUILD_NOTES.md, "Sweeps"); on GPU/TPU its members train together in one
vmapped program and are then written out as ordinary run directories. Both use the one loop (`loop.train`).
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from decompvae import parallel
from experiments.runner import checkpointing
from experiments.runner import config as config_lib
from experiments.runner import devices
from experiments.runner import evaluation
from experiments.runner import loop
from experiments.runner import run as run_lib
from experiments.runner import steps
from experiments.runner import task as task_lib
from experiments.runner import workdir as workdir_lib
from experiments.runner import writer as writer_lib
from experiments.runner.errors import RunError


def load_data(task: task_lib.Task, config: ml_collections.ConfigDict, mesh) -> task_lib.TaskData:
  """The task's data on the devices of `mesh`; a batch larger than the training set is a RunError."""
  data = task.load_data(config, mesh)
  if data.num_train < config.optim.batch_size:
    raise RunError(f"batch size {config.optim.batch_size} exceeds the {data.num_train} training examples")
  return data


def _periodic(task, run, data):
  """The periodic evaluation of one run: its scalar metrics."""
  def evaluate(state):
    out, _ = evaluation.evaluate(task, run, state, data)
    return {k: v for k, v in out.items() if np.ndim(v) == 0}
  return evaluate


def train_and_evaluate(task: task_lib.Task, config: ml_collections.ConfigDict, workdir: str, *,
                       start_over: bool = False, mesh=None, data: task_lib.TaskData | None = None) -> dict:
  """Trains `config` in `workdir` (resuming from its checkpoints), evaluates, returns the summary.

  `mesh` and `data` may be passed in when several runs share them (a CPU sweep). A run stopped by a signal
  returns {"interrupted_at_step": step}.
  """
  workdir = workdir_lib.resolve(workdir)
  with workdir_lib.locked(workdir), writer_lib.log_file(workdir):
    workdir_lib.prepare(workdir, config, start_over=start_over)
    mesh = mesh or devices.make_mesh(config)
    data = data or load_data(task, config, mesh)
    run = run_lib.make_run(task, config, data)
    trainee = loop.Trainee(
        run=run, members=("",), init=lambda: parallel.replicate(run_lib.init_state(run, data), mesh),
        make_steps=lambda k: steps.run_steps(run, data, mesh, k), writers=[writer_lib.MetricWriter(workdir)],
        evaluate=lambda state: [_periodic(task, run, data)(state)])
    state, interrupted = loop.train(trainee, data.train, workdir)
    if interrupted:
      return {"interrupted_at_step": int(state.step)}
    return evaluation.evaluate_and_report(task, run, state, data, workdir)


def train_sweep(task: task_lib.Task, config: ml_collections.ConfigDict, members: dict, workdir: str, *,
                start_over: bool = False, vectorise: bool | None = None) -> dict:
  """Trains and evaluates the members of a sweep under `workdir/members/<name>/`; returns their summaries.

  `vectorise`: train the members together in one vmapped program (default: on GPU/TPU, not on CPU).
  The sweep's config.json records its members, so another sweep (or a single run) there is refused.
  A member already trained and evaluated is not trained again when the sweep is resumed.
  """
  workdir = workdir_lib.resolve(workdir)
  vectorise = not devices.on_cpu() if vectorise is None else vectorise
  record = ml_collections.ConfigDict(config.to_dict())
  record.sweep_members = list(members)
  with workdir_lib.locked(workdir), writer_lib.log_file(workdir):
    workdir_lib.prepare(workdir, record, start_over=start_over)
    logging.info("Sweep of %d members%s: %s", len(members), " (vectorised)" if vectorise else "", list(members))
    if vectorise:
      summaries = _train_together(task, members, workdir)
    else:
      summaries = _train_in_turn(task, config, members, workdir)
    if summaries is not None:
      writer_lib.write_json(os.path.join(workdir, "sweep_summary.json"), summaries)
  return summaries or {"interrupted": True}


def _member_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, "members", name)


def _finished_summary(member_dir: str, config, data) -> dict | None:
  """The member's summary if it was trained to its last step and evaluated (a resumed sweep skips it)."""
  path = os.path.join(member_dir, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  same = summary.get("config") == json.loads(config.to_json_best_effort())
  return summary if same and summary.get("step") == run_lib.num_steps(config, data.num_train) else None


def _train_in_turn(task, config, members, workdir):
  mesh = devices.make_mesh(config)
  data = load_data(task, config, mesh)
  summaries = {}
  for i, (name, member) in enumerate(members.items()):
    member_dir = _member_dir(workdir, name)
    summary = _finished_summary(member_dir, member, data)
    if summary is not None:
      logging.info("Member %d/%d %s: already trained and evaluated.", i + 1, len(members), name)
    else:
      logging.info("Member %d/%d: %s", i + 1, len(members), name)
      summary = train_and_evaluate(task, member, member_dir, mesh=mesh, data=data)
      if "interrupted_at_step" in summary:
        return None
    summaries[name] = summary
  return summaries


def _train_together(task, members, workdir):
  names, configs = list(members), list(members.values())
  config = configs[0]
  mesh = devices.member_mesh(len(names), config.train.num_devices)
  data = load_data(task, config, mesh)
  runs = [run_lib.make_run(task, c, data) for c in configs]
  swept = [path for path in run_lib.SWEEPABLE.values() if len({config_lib.get(c, path) for c in configs}) > 1]
  hparams = {path.split(".")[-1]: jnp.asarray([config_lib.get(c, path) for c in configs], jnp.float32) for path in swept}
  seeds = jnp.asarray([c.seed for c in configs], jnp.uint32)
  member_dirs = [_member_dir(workdir, n) for n in names]
  for member_dir, c in zip(member_dirs, configs):
    os.makedirs(member_dir, exist_ok=True)
    workdir_lib.prepare(member_dir, c, start_over=False)

  def init():
    states = [run_lib.init_state(r, data) for r in runs]
    return jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), parallel.member_sharded(mesh))

  def evaluate(states):
    return [_periodic(task, r, data)(_member(states, i)) for i, r in enumerate(runs)]

  trainee = loop.Trainee(run=runs[0], members=names, init=init, evaluate=evaluate,
                         make_steps=lambda k: steps.sweep_steps(runs[0], data, mesh, k, seeds, hparams),
                         writers=[writer_lib.MetricWriter(d) for d in member_dirs])
  states, interrupted = loop.train(trainee, data.train, workdir)
  if interrupted:
    return None
  states = jax.jit(lambda s: s, out_shardings=parallel.replicated(mesh))(states)   # on every device and host
  summaries = {}
  for i, (name, member_dir) in enumerate(zip(names, member_dirs)):
    state = _member(states, i)
    checkpointing.save_to(os.path.join(member_dir, "checkpoints"), state)
    summaries[name] = evaluation.evaluate_and_report(task, runs[i], state, data, member_dir)
  return summaries


def _member(states, i: int):
  return jax.tree.map(lambda x: x[i], states)

