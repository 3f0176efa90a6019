"""All orbax code in one place: save, restore-latest-good, keep the last few (orbax v0 "args" API)."""

import jax
import orbax.checkpoint as ocp
from absl import logging

from experiments.runner.errors import RunError


class CheckpointError(RunError):
  """No checkpoint in the directory could be restored into the expected state."""


def manager(directory: str, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """A checkpoint manager over `directory`; every process must create it and call save/restore."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
  """Saves `state` (a pytree of arrays) at `step`; a no-op if that step is already saved."""
  if step in mngr.all_steps():
    return
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()


def save_to(directory: str, state) -> None:
  """Saves `state` at its own step in `directory` (a checkpoint directory of its own)."""
  mngr = manager(directory)
  save(mngr, int(state.step), state)
  mngr.close()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """Restores the newest checkpoint that loads into `abstract_state`; returns (step, state) or (None, None).

  A checkpoint that fails to load (truncated or corrupt files, or a tree that does not match the
  requested model) is skipped with a warning and the previous one is tried. If checkpoints exist but
  none loads, raises CheckpointError rather than silently starting from scratch over them.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      state = mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # orbax raises many types (ValueError, KeyError, tensorstore errors...).
      logging.warning("Checkpoint at step %d could not be restored (%s: %s); trying an older one.",
                      step, type(e).__name__, e)
      errors.append(f"step {step}: {type(e).__name__}: {e}")
      continue
    if errors:
      logging.warning("Resumed from step %d, not from the newest checkpoint.", step)
    return step, state
  if errors:
    raise CheckpointError(
        f"None of the checkpoints in {mngr.directory} matches this model and config:\n  "
        + "\n  ".join(errors))
  return None, None


def abstract(state):
  """The shape/dtype/sharding skeleton of `state`, the restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
