"""Process-0 outputs of a run: metric rows as JSON lines, JSON files, progress lines, and where logs go."""

import contextlib
import json
import logging as std_logging
import math
import os
import time

import jax
import numpy as np
from absl import logging

_PROJECT_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), d)
                      + os.sep for d in ("experiments", "decompvae", "benchmarks"))
LOG_FILENAME = "log.txt"


class MetricWriter:
  """Appends `{"step": s, "time": t, name: value, ...}` lines to `workdir/metrics.jsonl` (process 0 only)."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self._active = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)

  def write(self, step: int, scalars: dict) -> None:
    if not self._active:
      return
    row = {"step": int(step), "time": time.time(), **{k: to_python(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def drop_after(self, step: int) -> None:
    """Removes the rows of steps after `step` (a resumed run writes them again); a torn last line goes too."""
    if not self._active or not os.path.exists(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if row.get("step", 0) <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
    write_text(self.path, "".join(kept))


def to_python(value):
  """Converts numpy/jax scalars and arrays into JSON-serialisable Python values (NaN becomes null)."""
  value = np.asarray(value)
  if value.ndim:
    return [to_python(v) for v in value]
  value = value.item()
  return None if isinstance(value, float) and not math.isfinite(value) else value


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (a temporary file, then a rename), process 0 only."""
  if jax.process_index() != 0:
    return
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON atomically (process 0 only)."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=to_python))


def check_finite(step: int, metrics: dict, member: str = "") -> None:
  """Raises FloatingPointError naming the step (and sweep member) and every non-finite term."""
  bad = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0 and not np.isfinite(v)}
  if bad:
    terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
    who = f" of member {member}" if member else ""
    raise FloatingPointError(f"non-finite training metrics{who} at step {step}: {terms}")


def log_progress(step: int, total: int, metrics: dict, *, steps_per_sec: float, batch_size: int) -> None:
  """One human-readable progress line: step, rates, ETA and the loss terms."""
  eta = (total - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
  terms = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
  logging.info("step %d/%d (%.0f%%) | %.1f steps/s %.0f img/s | ETA %s | %s", step, total,
               100.0 * step / max(total, 1), steps_per_sec, steps_per_sec * batch_size,
               format_seconds(eta), terms)


def format_seconds(seconds: float) -> str:
  """h:mm:ss, or "?" when unknown."""
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _ConsoleFilter(std_logging.Filter):
  """The console shows this project's messages, and other libraries' warnings and errors only."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PROJECT_DIRS)


def quiet_console() -> None:
  """Hides other libraries' INFO messages (orbax's are many and long) from the console."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _ConsoleFilter) for f in handler.filters):
    handler.addFilter(_ConsoleFilter())


@contextlib.contextmanager
def log_file(workdir: str):
  """Within the block, every log message at INFO and above (the libraries' too) also goes to workdir/log.txt."""
  if jax.process_index() != 0:
    yield
    return
  handler = std_logging.FileHandler(os.path.join(workdir, LOG_FILENAME))
  handler.setLevel(std_logging.INFO)
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s"))
  root = std_logging.getLogger()
  root.addHandler(handler)
  try:
    yield
  finally:
    root.removeHandler(handler)
    handler.close()
