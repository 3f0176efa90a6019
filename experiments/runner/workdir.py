"""The run directory: an absolute path, one run at a time (a lock), and the config it belongs to."""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket

import jax
import ml_collections
from absl import logging

from experiments.runner import config as config_lib
from experiments.runner import writer as writer_lib
from experiments.runner.errors import RunError

# Fields that may change between a run and its resumption: they do not change what is trained.
RESUMABLE_PREFIXES = ("train.", "eval.", "optim.num_epochs", "optim.num_steps", "data.path", "data.data_dir",
                      "data.cache_dir", "data.download", "data.source")
_LOCK = ".lock"


def resolve(workdir: str) -> str:
  """The absolute path of `workdir` (orbax needs absolute paths; a relative one means the current directory)."""
  return os.path.abspath(os.path.expanduser(workdir))


@contextlib.contextmanager
def locked(workdir: str):
  """Creates `workdir` if needed and holds its lock for the block: a second run there is refused.

  Process 0 takes the lock (the other processes of a multi-process run are the same run). The lock is
  released when the block ends or the process dies.
  """
  if jax.process_index() != 0:
    yield
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise RunError(f"cannot write to the workdir {workdir} ({e.strerror}); choose a writable --workdir") from e
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      raise RunError(f"{workdir} is in use by another run ({holder}); wait for it to finish, or use "
                     "another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
    yield
  finally:
    os.close(fd)   # releases the lock


def prepare(workdir: str, config: ml_collections.ConfigDict, *, start_over: bool) -> None:
  """Refuses a workdir holding another config (naming the differences), or moves that run aside if asked.

  Every process reads the saved config before process 0 replaces it (atomically), so no process can read a
  half-written file. Moving aside keeps everything: the old run goes to workdir/previous-<time>/.
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
  sync("workdir.prepare: read")
  if jax.process_index() == 0:
    if diffs:
      backup = os.path.join(workdir, "previous-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
      os.makedirs(backup)
      for name in os.listdir(workdir):
        if not name.startswith("previous-") and name != _LOCK:
          os.rename(os.path.join(workdir, name), os.path.join(backup, name))
      logging.warning("Moved the previous run in %s to %s.", workdir, backup)
    writer_lib.write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))
  sync("workdir.prepare: written")


def config_differences(saved: dict, requested: dict) -> list[str]:
  """Human-readable `field: saved -> requested` lines for fields that change what is trained."""
  a, b = config_lib.flatten(saved), config_lib.flatten(requested)
  return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_PREFIXES)]


def sync(name: str) -> None:
  """A barrier across processes (nothing in a single process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
