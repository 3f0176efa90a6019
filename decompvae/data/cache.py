"""A checksum-verified on-disk cache of one uint8 array: an .npy file, a .json sidecar with its sha256."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Callable

import numpy as np
from absl import logging


def sha256(array: np.ndarray) -> str:
  """Hex sha256 of the array's bytes in C order."""
  return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def atomic_write(path: pathlib.Path, write: Callable) -> None:
  """Writes through `write(file)` to a temporary name, then renames: no half-written file ever looks complete."""
  tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
  try:
    with open(tmp, "wb") as f:
      write(f)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def cached_array(path, build: Callable[[], np.ndarray], shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
  """uint8 array `shape` read from `path` (an .npy with a .json sidecar holding its sha256), else `build()`.

  A cache that cannot be read, has another dtype or shape, or fails its checksum is not trusted: a warning
  says why, and the array is built again and the files replaced. Both files are written atomically
  (temporary name, then rename), so a run killed mid-write leaves no file that looks complete.

  Args:
      path: the .npy file; its sidecar is the same path with suffix .json. Its directory is created.
      build: makes the array when the cache is absent or bad.
      shape: the expected shape (dtype uint8).

  Returns:
      The array, and whether it came from the cache.
  """
  path = pathlib.Path(path).expanduser()
  meta_path = path.with_suffix(".json")
  if path.exists():
    try:
      array = np.load(path, allow_pickle=False)
      if array.dtype != np.uint8 or array.shape != shape:
        problem = f"holds {array.dtype} {array.shape}, expected uint8 {shape}"
      elif sha256(array) != json.loads(meta_path.read_text())["sha256"]:
        problem = "fails its sha256 checksum"
      else:
        return array, True
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:  # unreadable, truncated, no or bad .json
      problem = f"cannot be read ({type(e).__name__}: {e})"
    logging.warning("Cache %s %s: not trusted, building it again.", path, problem)
  array = build()
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write(path, lambda f: np.save(f, array))
  atomic_write(meta_path, lambda f: f.write(json.dumps({"sha256": sha256(array),
                                                         "shape": list(array.shape)}).encode()))
  return array, False
