"""Process-0 metric writer: JSON lines in the workdir plus a log line; fails loudly on non-finite loss."""

import json
import math
import os
import time

import jax
import numpy as np
from absl import logging


class MetricWriter:
  """Appends `{"step": s, "time": t, name: value, ...}` lines to `workdir/metrics.jsonl` (process 0 only)."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self._active = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)
    if self._active:
      os.makedirs(workdir, exist_ok=True)

  def write(self, step: int, scalars: dict) -> None:
    if not self._active:
      return
    row = {"step": int(step), "time": time.time(), **{k: to_python(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")


def to_python(value):
  """Converts numpy/jax scalars and arrays into JSON-serialisable Python values (NaN becomes null)."""
  value = np.asarray(value)
  if value.ndim:
    return [to_python(v) for v in value]
  value = value.item()
  return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=to_python)
  os.replace(tmp, path)


def check_finite(step: int, metrics: dict) -> None:
  """Raises FloatingPointError naming the step and every non-finite term."""
  bad = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0 and not np.isfinite(v)}
  if bad:
    terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
    raise FloatingPointError(f"non-finite training metrics at step {step}: {terms}")


def log_progress(step: int, total: int, metrics: dict, *, steps_per_sec: float, batch_size: int) -> None:
  """One human-readable progress line: step, rates, ETA and the loss terms."""
  eta = (total - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
  terms = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
  logging.info("step %d/%d (%.0f%%) | %.1f steps/s %.0f img/s | ETA %s | %s", step, total,
               100.0 * step / max(total, 1), steps_per_sec, steps_per_sec * batch_size,
               _format_seconds(eta), terms)


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
