"""The training loop, for one run or the S members of a sweep stacked in one state.

Calls of k fused steps; metrics fetched one call late and checked finite; progress lines; checkpoints by
steps and by wall time, never of a non-finite state; SIGTERM/SIGINT save and stop; periodic evaluation.
"""

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments.runner import checkpointing
from experiments.runner import run as run_lib
from experiments.runner import writer as writer_lib


@dataclasses.dataclass(frozen=True)
class Trainee:
  """What the loop trains: one run (S = 1), or the S members of a sweep in one stacked state.

  Attributes:
    run: the run (a sweep's members share all of it but their seed, β, α and γ).
    members: the S member names ("" for a run), used in messages.
    init: `() -> state`: the initial state, placed on the devices.
    make_steps: `k -> (state, train_arrays) -> (state, metrics)`, each metric shaped [S, k].
    writers: one metric writer per member.
    evaluate: `state -> [scalars per member]`, the periodic evaluation.
  """
  run: run_lib.Run
  members: Sequence[str]
  init: Callable[[], Any]
  make_steps: Callable[[int], Callable]
  writers: Sequence[writer_lib.MetricWriter]
  evaluate: Callable[[Any], list[dict]]


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


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jax.tree.reduce(lambda a, b: a & b, jax.tree.map(lambda x: jnp.isfinite(x).all(), tree))


def restore_or_init(trainee: Trainee, mngr):
  """The newest good checkpoint, else the initial state; metric rows of steps to be re-run are dropped."""
  state = trainee.init()
  step, restored = checkpointing.restore_latest(mngr, checkpointing.abstract(state))
  if step is None:
    logging.info("Starting from scratch.")
  else:
    logging.info("Resumed from step %d.", step)
    state = restored
  for writer in trainee.writers:
    writer.drop_after(step or 0)
  return state


def train(trainee: Trainee, train_arrays, workdir: str) -> tuple[Any, bool]:
  """Trains `trainee` in `workdir` (resuming from its checkpoints) to the run's last step.

  Returns the final state and whether a signal stopped the run early (after saving a checkpoint).
  Raises FloatingPointError on a non-finite metric or parameter; the last checkpoint is then a good one.
  """
  mngr = checkpointing.manager(os.path.join(workdir, "checkpoints"),
                               max_to_keep=trainee.run.config.train.max_to_keep)
  try:
    return _train(trainee, train_arrays, mngr)
  finally:
    mngr.close()


def _train(trainee: Trainee, train_arrays, mngr):
  run, c = trainee.run, trainee.run.config
  state = restore_or_init(trainee, mngr)
  step = int(np.max(state.step))
  every, n = run.log_every_steps, c.train.steps_per_call
  eval_every = c.eval.every_epochs * run.steps_per_epoch
  step_fns = {}
  pending = None                       # (first step, metrics) of the last call, fetched after the next one
  last_save, t_log, step_log = time.time(), time.time(), step

  def flush():
    nonlocal pending, t_log, step_log
    if pending is None:
      return
    first, metrics = pending
    pending = None
    metrics = jax.device_get(metrics)
    for i in range(next(iter(metrics.values())).shape[1]):
      s = first + i + 1
      rows = [{k: v[m, i] for k, v in metrics.items()} for m in range(len(trainee.members))]
      for name, row in zip(trainee.members, rows):
        writer_lib.check_finite(s, row, name)
      if s % every == 0 or s == run.num_steps:
        for writer, row in zip(trainee.writers, rows):
          writer.write(s, {f"train/{k}": v for k, v in row.items()})
        rate = (s - step_log) / max(time.time() - t_log, 1e-9)
        mean = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
        writer_lib.log_progress(s, run.num_steps, mean, steps_per_sec=rate, batch_size=c.optim.batch_size)
        t_log, step_log = time.time(), s

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
      if not step_fns:
        logging.info("Compiling the training step, then training steps %d-%d...", step + 1, run.num_steps)
      if k not in step_fns:
        step_fns[k] = trainee.make_steps(k)
      state, metrics = step_fns[k](state, train_arrays)
      flush()
      pending = (step, metrics)
      step += k
      if signals:
        save(step)
        logging.warning("Signal %s: saved a checkpoint at step %d and stopped.", signals[0], step)
        return state, True
      if (step // c.train.checkpoint_every_steps != (step - k) // c.train.checkpoint_every_steps
          or time.time() - last_save > c.train.checkpoint_every_secs):
        save(step)
      if eval_every and step // eval_every != (step - k) // eval_every and step < run.num_steps:
        flush()
        for writer, scalars in zip(trainee.writers, trainee.evaluate(state)):
          writer.write(step, scalars)
    save(step)
  logging.info("Training finished at step %d.", step)
  return state, False
