"""`train_and_evaluate(config, workdir)`: mesh, init or resume, fused step loop, checkpoints, evaluation."""

import contextlib
import dataclasses
import datetime
import functools
import json
import os
import signal
import time
from typing import Any

import jax
import numpy as np
from absl import logging
import ml_collections

from decompvae import parallel
from decompvae import priors
from decompvae import train
from decompvae import vae
from experiments import checkpointing
from experiments import evaluation
from experiments import tasks
from experiments import writer as writer_lib

# Fields that may change between a run and its resumption: they do not change what is trained.
_RESUMABLE_PREFIXES = ("train.", "eval.", "optim.num_epochs", "optim.num_steps", "data.path", "data.data_dir",
                       "data.cache_dir", "data.download", "data.source")


class RunError(RuntimeError):
  """A problem the user must resolve (config mismatch, bad setting); the message says how."""


@dataclasses.dataclass(frozen=True)
class Run:
  """The static parts of one training run, derived from its config and data."""
  config: ml_collections.ConfigDict
  model: Any
  prior_hp: dict          # fixed prior hyperparameters (arrays included)
  prior_params: dict      # initial learnable prior arrays ({} when fixed)
  train_step: Any         # pure (state, x, key, *, beta, alpha) -> (state, metrics)
  num_steps: int
  steps_per_epoch: int

  def variables(self, state: train.TrainState) -> dict:
    """The flax variables of the model in `state`."""
    return train.model_variables(state.params["model"], state.batch_stats)

  def pz(self, state: train.TrainState):
    c = self.config
    return priors.make_prior(c.prior.name, c.model.latent_dim, **self.prior_hp, **state.params["prior"])


def make_run(config: ml_collections.ConfigDict, data: tasks.TaskData) -> Run:
  """Model, prior and step function of `config`; validates the settings against the data."""
  c = config
  model = vae.make_model(c.model.name, c.model.latent_dim)
  prior_hp = tasks.prior_hyperparameters(c, data)
  prior_params = {}
  if c.prior.learnable:
    prior_params = priors.init_prior_params(c.prior.name, c.model.latent_dim, **prior_hp)
    prior_hp = {k: v for k, v in prior_hp.items() if k not in prior_params and k != "variances"}
  step = train.make_train_step(model=model, prior_name=c.prior.name, latent_dim=c.model.latent_dim,
                               prior_hp=prior_hp, optimizer=train.make_optimizer(c.optim.learning_rate),
                               divergence=c.objective.divergence, analytic_kl=c.objective.analytic_kl)
  steps_per_epoch = data.num_train // c.optim.batch_size
  if steps_per_epoch == 0:
    raise RunError(f"batch size {c.optim.batch_size} exceeds the {data.num_train} training examples")
  num_steps = c.optim.num_steps or c.optim.num_epochs * steps_per_epoch
  return Run(c, model, prior_hp, prior_params, step, num_steps, steps_per_epoch)


def init_state(run: Run, data: tasks.TaskData) -> train.TrainState:
  init_key, _ = train.seed_keys(run.config.seed)
  return train.init_state(init_key, data.x_example, model=run.model, prior_params=run.prior_params,
                          optimizer=train.make_optimizer(run.config.optim.learning_rate))


def member_steps(run: Run, data: tasks.TaskData, mesh, num_steps: int):
  """Un-jitted `(state, arrays, seed, **hp) -> (state, metrics[num_steps])`: `num_steps` fused steps.

  Batches are split over `mesh`'s 'data' axis; `mesh=None` leaves their placement to the caller (a
  sweep runs whole members per device).

  `hp` overrides β, α or prior hyperparameters of the config (a sweep passes traced values; a single run
  passes none, so its Python floats stay static and α = 0 skips the divergence).
  """
  c = run.config
  shard = (functools.partial(jax.lax.with_sharding_constraint, shardings=parallel.batch_sharded(mesh))
           if mesh is not None else lambda x: x)

  def steps(state, arrays, seed, **hp):
    step = functools.partial(run.train_step, **{"beta": c.objective.beta, "alpha": c.objective.alpha, **hp})
    batch_fn = lambda s: shard(data.batch_fn(arrays, seed, s))
    fused = train.make_fused_steps(step, batch_fn, num_steps)
    return fused(state, train.seed_keys(seed)[1])

  return steps


def make_step_fn(run: Run, data: tasks.TaskData, mesh, num_steps: int):
  """`(state, train_arrays) -> (state, metrics[num_steps])`: `num_steps` steps, donating the state.

  One jitted `lax.scan` on GPU/TPU; on CPU, `num_steps` calls of the jitted one-step program (see
  `fused_calls`).
  """
  rep = parallel.replicated(mesh)
  compile_steps = lambda k: jax.jit(lambda state, arrays: member_steps(run, data, mesh, k)(
      state, arrays, run.config.seed), donate_argnums=0, in_shardings=(rep, rep), out_shardings=(rep, rep))
  return fused_calls(compile_steps, num_steps)


def on_cpu() -> bool:
  """Whether JAX runs on XLA:CPU, whose loops and vmapped convolutions are slow (see `fused_calls`, sweeps)."""
  return jax.default_backend() == "cpu"


def fused_calls(compile_steps, num_steps: int):
  """`compile_steps(num_steps)` on GPU/TPU; on CPU, a function making `num_steps` calls of `compile_steps(1)`.

  XLA:CPU runs convolution gradients 5–30x slower inside a loop body (a rolled `lax.scan`), and a
  trace-time unrolled loop both compiled for long and ran slower than the one-step program, so on CPU the
  one-step program is dispatched `num_steps` times (asynchronously: the host does not wait between calls)
  and its metrics, shape [..., 1], are concatenated on the device into [..., num_steps], fetched once.
  """
  if not on_cpu() or num_steps == 1:
    return compile_steps(num_steps)
  one = compile_steps(1)

  def calls(state, *args):
    history = []
    for _ in range(num_steps):
      state, metrics = one(state, *args)
      history.append(metrics)
    return state, jax.tree.map(lambda *m: jax.numpy.concatenate(m, axis=-1), *history)

  return calls


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, *, start_over: bool) -> None:
  """Refuses a workdir holding another config (naming the differences), or moves it aside if asked.

  Every process reads the saved config before process 0 replaces it (atomically), so no process can
  read a half-written file.
  """
  path = os.path.join(workdir, "config.json")
  diffs = []
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except ValueError as e:   # not JSON, or not UTF-8
      diffs = [f"{path} is not a readable config ({e})"]
    else:
      diffs = config_differences(saved, json.loads(config.to_json_best_effort()))
    if diffs and not start_over:
      raise RunError(f"{workdir} holds a run with a different config:\n  " + "\n  ".join(diffs)
                     + "\nUse another --workdir, or pass --start_over to move the old run aside.")
  _sync("prepare_workdir: read")
  if jax.process_index() == 0:
    if diffs:
      backup = os.path.join(workdir, "previous-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
      os.makedirs(backup)
      for name in os.listdir(workdir):
        if not name.startswith("previous-"):
          os.rename(os.path.join(workdir, name), os.path.join(backup, name))
      logging.warning("Moved the previous run in %s to %s.", workdir, backup)
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(path + ".tmp", path)
  _sync("prepare_workdir: written")


def config_differences(saved: dict, requested: dict) -> list[str]:
  """Human-readable `field: saved -> requested` lines for fields that change what is trained."""
  a, b = _flatten(saved), _flatten(requested)
  return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and not k.startswith(_RESUMABLE_PREFIXES)]


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def _stop_on_signals():
  """Turns SIGTERM/SIGINT (preemption, Ctrl-C) into a flag the loop checks after each call."""
  requested = []
  handler = lambda signum, frame: requested.append(signum)
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield requested
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def make_mesh(config: ml_collections.ConfigDict):
  """The run's data-parallel mesh over the first `config.train.num_devices` devices.

  0 means all devices; in a single process, as many as split the global batch evenly (so a 6-core host
  still runs batch 64, on 4 devices). A batch that does not split over the devices is a RunError.
  """
  devices, n = jax.devices(), config.train.num_devices
  if not n and jax.process_count() == 1:
    n = parallel.largest_divisor(config.optim.batch_size, len(devices))
    if n < len(devices):
      logging.info("Batch %d splits over %d of the %d devices.", config.optim.batch_size, n, len(devices))
  mesh = parallel.make_mesh(devices[:n] if n else None)
  try:
    parallel.check_batch_size(config.optim.batch_size, mesh)
  except ValueError as e:
    raise RunError(str(e)) from e
  return mesh


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, start_over: bool = False) -> dict:
  """Trains `config` in `workdir` (resuming if a checkpoint exists), evaluates, returns the summary."""
  mesh = make_mesh(config)
  prepare_workdir(workdir, config, start_over=start_over)
  data = tasks.load_data(config, mesh)
  run = make_run(config, data)
  state, interrupted = train_loop(run, data, mesh, workdir)
  if interrupted:
    return {"interrupted_at_step": int(state.step)}
  return evaluation.evaluate_and_report(run, state, data, workdir)


def restore_or_init(run: Run, data: tasks.TaskData, mesh, mngr):
  state = parallel.replicate(init_state(run, data), mesh)
  step, restored = checkpointing.restore_latest(mngr, checkpointing.abstract(state))
  if step is None:
    logging.info("Starting from scratch.")
    return state
  logging.info("Resumed from step %d.", step)
  return restored


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jax.tree.reduce(lambda a, b: a & b, jax.tree.map(lambda x: jax.numpy.isfinite(x).all(), tree))


def train_loop(run: Run, data: tasks.TaskData, mesh, workdir: str) -> tuple[train.TrainState, bool]:
  """The step loop: fused calls, metrics fetched one call late, periodic and final checkpoints.

  Returns the final state and whether a signal stopped the run early (after saving a checkpoint).
  """
  c = run.config
  mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"), max_to_keep=c.train.max_to_keep)
  state = restore_or_init(run, data, mesh, mngr)
  arrays = data.train
  writer = writer_lib.MetricWriter(workdir)
  n = max(1, c.train.steps_per_call)
  step_fns = {}
  step = int(state.step)
  pending = None                       # (first step, metrics) of the call before the last
  last_save, t_log, step_log = time.time(), time.time(), step

  def flush():
    nonlocal pending, t_log, step_log
    if pending is None:
      return
    first, metrics = pending
    pending = None
    metrics = jax.device_get(metrics)
    for i in range(len(next(iter(metrics.values())))):
      row = {k: v[i] for k, v in metrics.items()}
      writer_lib.check_finite(first + i + 1, row)
      if (first + i + 1) % c.train.log_every_steps == 0 or first + i + 1 == run.num_steps:
        rate = (first + i + 1 - step_log) / max(time.time() - t_log, 1e-9)
        writer.write(first + i + 1, {f"train/{k}": v for k, v in row.items()})
        writer_lib.log_progress(first + i + 1, run.num_steps, row, steps_per_sec=rate,
                                batch_size=c.optim.batch_size)
        t_log, step_log = time.time(), first + i + 1

  def save(step):
    nonlocal last_save
    flush()                            # never checkpoint a state whose metrics were not checked ...
    if not _all_finite(state.params):  # ... nor one whose last update was not finite
      raise FloatingPointError(f"parameters are not finite after step {step}; the last good checkpoint "
                               f"(step {mngr.latest_step()}) is kept")
    checkpointing.save(mngr, step, state)
    last_save = time.time()

  with _stop_on_signals() as signals:
    while step < run.num_steps:
      k = min(n, run.num_steps - step)
      if k not in step_fns:
        step_fns[k] = make_step_fn(run, data, mesh, k)
      state, metrics = step_fns[k](state, arrays)
      flush()
      pending = (step, metrics)
      step += k
      due = (step // c.train.checkpoint_every_steps != (step - k) // c.train.checkpoint_every_steps
             or time.time() - last_save > c.train.checkpoint_every_secs)
      if signals:
        save(step)
        logging.warning("Signal %s: saved a checkpoint at step %d and stopped.", signals[0], step)
        return state, True
      if due:
        save(step)
      every = c.eval.every_epochs * run.steps_per_epoch
      if every and step // every != (step - k) // every and step < run.num_steps:
        flush()
        periodic = evaluation.evaluate(run, state, data, workdir=None)
        writer.write(step, {name: v for name, v in periodic.items() if np.ndim(v) == 0})
    save(step)
  mngr.close()
  logging.info("Training finished at step %d.", step)
  return state, False
