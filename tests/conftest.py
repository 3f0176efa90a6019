"""Test set-up: 8 simulated CPU devices, and one persistent compilation cache for the whole session.

Most tests compile the same small programs again (every run builds its own jitted step); JAX's persistent
cache, shared by the test workers (pytest-xdist) and the subprocesses that the command-line tests start,
compiles each program once.
"""
import atexit
import os
import shutil
import tempfile

import jax

# The first process of the session (pytest itself, whose environment the test workers inherit) makes the cache
# and removes it when it exits; a cache directory set by the user is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="decompvae-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Must happen before any backend is initialised. Note: jax_numpy_rank_promotion="raise" is not set because
# distrax's bijectors broadcast ranks internally (see BUILD_NOTES.md).
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
