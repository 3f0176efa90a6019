"""How JAX starts and which devices a run uses: the compilation cache, the CPU split into one XLA device per
core, and the run's mesh."""

import os

import jax
import ml_collections
from absl import flags
from absl import logging

from decompvae import parallel
from experiments.runner.errors import RunError

# Beside the rendered data's cache (config.DEFAULT_CACHE_DIR).
DEFAULT_COMPILATION_CACHE = "~/.cache/decompvae/jax"

# --compilation_cache belongs to the entry module that defines it, so that its --help lists it.
flags.disclaim_key_flags()


def define_compilation_cache_flag() -> flags.FlagHolder:
  """Defines --compilation_cache (every entry point has it)."""
  return flags.DEFINE_string(
      "compilation_cache", None, "Directory of JAX's persistent compilation cache, so that a rerun, a resumed "
      "run or an evaluation skips compiling what an earlier one compiled; '' turns it off. Default: "
      f"$JAX_COMPILATION_CACHE_DIR if set, else {DEFAULT_COMPILATION_CACHE}.")


def compilation_cache_dir(flag: str | None, environ=os.environ) -> str | None:
  """The persistent compilation cache's directory (None: off) for the --compilation_cache flag's value."""
  if flag is not None:
    return os.path.expanduser(flag) or None
  return environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser(DEFAULT_COMPILATION_CACHE)


def use_compilation_cache(flag: str | None) -> str | None:
  """Caches every compiled program in the directory `compilation_cache_dir(flag)`; returns it (None: off).

  Every program, however quick to compile, is kept (JAX's default keeps those over 1 s): a smoke run then
  starts 3x sooner the second time (BUILD_NOTES.md, "Compilation cache"). JAX warns and compiles again
  when an entry or the directory cannot be used. The cache is not bounded (about 2 MB per configuration);
  deleting the directory at any time is safe.
  """
  directory = compilation_cache_dir(flag)
  if directory is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


def use_cpu_cores(num_devices: int = 0) -> int:
  """Presents the host CPU as `num_devices` XLA devices (a global JAX setting); returns the number.

  0 means the JAX_NUM_CPU_DEVICES environment variable if set, else one per available core (at most 8).
  One XLA:CPU device runs one operation at a time and leaves cores idle with networks as small as the
  paper's; data parallelism over one device per core trains dSprites faster (BUILD_NOTES.md, "Speed").
  Affects only the CPU platform. Call it before JAX's backends are initialised (the first computation).
  """
  n = num_devices or int(os.environ.get("JAX_NUM_CPU_DEVICES", 0)) or min(8, len(os.sched_getaffinity(0)))
  jax.config.update("jax_num_cpu_devices", n)
  return n


def on_cpu() -> bool:
  """Whether JAX runs on XLA:CPU, whose loops and vmapped convolutions are slow (see `steps`)."""
  return jax.default_backend() == "cpu"


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
  if n > len(devices):
    raise RunError(f"train.num_devices={n}, but only {len(devices)} devices are visible")
  mesh = parallel.make_mesh(devices[:n] if n else None)
  try:
    parallel.check_batch_size(config.optim.batch_size, mesh)
  except ValueError as e:
    raise RunError(str(e)) from e
  return mesh


def member_mesh(num_members: int, max_devices: int = 0):
  """A 'members' mesh over as many devices (at most `max_devices`; 0: all) as split the members evenly."""
  devices = jax.devices()[:max_devices or None]
  return parallel.make_mesh(devices[:parallel.largest_divisor(num_members, len(devices))], parallel.MEMBER_AXIS)
