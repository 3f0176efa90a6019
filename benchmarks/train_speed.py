"""Training throughput (images/s) of the jitted step, fused loops, sweeps and simulated devices, as JSON.

  python -m benchmarks.train_speed                 # everything, on the devices present
  python -m benchmarks.train_speed --only=dsprites,mmd --steps=30
  python -m benchmarks.train_speed --only=dsprites --cpu_devices=1     # one XLA:CPU device

Each case runs the real experiment code (`experiments.runner.steps` on device-resident data), times
`--steps` steps after a warm-up call (compilation excluded) and reports the median of `--repeats`.
On CPU the host is split into `--cpu_devices` devices (default: one per core, as the experiments do).
The data are the coarse rendered dSprites grid (batch speed does not depend on the dataset's size) and
Debian's Fashion-MNIST files.
"""

import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

flags.DEFINE_list("only", [], "Cases to run: dsprites, fused, mmd, fashion_mnist, fashion_mnist_no_mmd, sweep "
                  "(default all). The input pipeline has its own benchmark: benchmarks.bench_data.")
flags.DEFINE_integer("steps", 40, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 3, "Repeats; the median is reported.")
flags.DEFINE_integer("fuse", 10, "Steps per call of the fused loop and the sweep.")
flags.DEFINE_integer("sweep_members", 8, "Members of the sweep case.")
flags.DEFINE_integer("cpu_devices", 0, "XLA devices the CPU is split into (0: one per core, as the experiments).")
FLAGS = flags.FLAGS


def _allocator() -> str:
  preload = os.environ.get("LD_PRELOAD", "")
  for name in ("tcmalloc", "jemalloc", "mimalloc"):
    if name in preload:
      return name
  return "glibc malloc (default)"


def _time(fn, steps_per_call: int, calls: int, repeats: int) -> float:
  """Median seconds per step of `fn()` (one call = steps_per_call steps), after one warm-up call."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t) / (calls * steps_per_call))
  return statistics.median(times)


def _setup(experiment, prior, batch_size, mesh_fn=None, **overrides):
  from experiments import dsprites, fashion_mnist  # pylint: disable=g-import-not-at-top
  from experiments.runner import config as config_lib, devices, run as run_lib, training  # pylint: disable=g-import-not-at-top
  task = {"dsprites": dsprites.TASK, "fashion_mnist": fashion_mnist.TASK}[experiment]
  c = config_lib.make_config(task, prior, smoke=True)
  c.optim.batch_size = batch_size
  c.data.max_examples = 0 if experiment == "fashion_mnist" else c.data.max_examples
  c.update_from_flattened_dict(overrides)
  mesh = (mesh_fn or devices.make_mesh)(c)
  data = training.load_data(task, c, mesh)
  run = run_lib.make_run(task, c, data)
  return c, mesh, data, run, run_lib.init_state(run, data)


def _run_case(experiment, prior, batch_size, steps_per_call, **overrides) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from decompvae import parallel  # pylint: disable=g-import-not-at-top
  from experiments.runner import steps  # pylint: disable=g-import-not-at-top
  c, mesh, data, run, state = _setup(experiment, prior, batch_size, **overrides)
  fn = steps.run_steps(run, data, mesh, steps_per_call)
  holder = [parallel.replicate(state, mesh)]

  def call():
    holder[0], metrics = fn(holder[0], data.train)
    return metrics

  t = time.perf_counter()
  jax.block_until_ready(call())
  compile_s = time.perf_counter() - t
  sec = _time(call, steps_per_call, max(1, FLAGS.steps // steps_per_call), FLAGS.repeats)
  return {"batch_size": batch_size, "steps_per_call": steps_per_call, "ms_per_step": 1e3 * sec,
          "images_per_s": batch_size / sec, "first_call_s": compile_s,
          "divergence": c.objective.divergence if c.objective.alpha else None}


def _mmd_case(batch_size=500, latent_dim=50) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from decompvae import divergences  # pylint: disable=g-import-not-at-top
  kq, kp = jax.random.split(jax.random.key(0))
  zq = jax.random.normal(kq, (batch_size, latent_dim))
  zp = jax.random.normal(kp, (batch_size, latent_dim))
  fn = jax.jit(jax.value_and_grad(divergences.mmd_dim))
  sec = _time(lambda: fn(zq, zp), 1, FLAGS.steps, FLAGS.repeats)
  return {"batch_size": batch_size, "latent_dim": latent_dim, "ms_value_and_grad": 1e3 * sec}


def _sweep_case(members: int) -> dict:
  """The vectorised sweep (the GPU/TPU program): `members` members of batch 64 in one vmapped program."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from decompvae import parallel  # pylint: disable=g-import-not-at-top
  from experiments.runner import devices, steps  # pylint: disable=g-import-not-at-top
  _, mesh, data, run, state = _setup("dsprites", "anisotropic", 64,
                                     mesh_fn=lambda c: devices.member_mesh(members))
  states = jax.device_put(jax.tree.map(lambda x: jnp.stack([x] * members), state), parallel.member_sharded(mesh))
  fn = steps.sweep_steps(run, data, mesh, FLAGS.fuse, jnp.arange(members, dtype=jnp.uint32),
                         {"beta": jnp.linspace(1.0, 8.0, members)})
  holder = [states]

  def call():
    holder[0], metrics = fn(holder[0], data.train)
    return metrics

  sec = _time(call, FLAGS.fuse, max(1, FLAGS.steps // FLAGS.fuse), FLAGS.repeats)
  return {"members": members, "batch_size": 64, "steps_per_call": FLAGS.fuse, "mesh": dict(mesh.shape),
          "ms_per_sweep_step": 1e3 * sec, "images_per_s_all_members": members * 64 / sec}


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from experiments.runner import devices  # pylint: disable=g-import-not-at-top
  devices.use_cpu_cores(FLAGS.cpu_devices)
  cases = {
      "dsprites": lambda: _run_case("dsprites", "anisotropic", 64, 1),
      "fused": lambda: _run_case("dsprites", "anisotropic", 64, FLAGS.fuse),
      "mmd": _mmd_case,
      "fashion_mnist": lambda: _run_case("fashion_mnist", "sparse", 500, 1),
      "fashion_mnist_no_mmd": lambda: _run_case("fashion_mnist", "sparse", 500, 1, **{"objective.alpha": 0.0}),
      "sweep": lambda: _sweep_case(FLAGS.sweep_members),
  }
  chosen = FLAGS.only or list(cases)
  result = {"devices": [str(d) for d in jax.devices()], "backend": jax.default_backend(),
            "jax": jax.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "allocator": _allocator(), "load_average_1min_at_start": os.getloadavg()[0], "cases": {}}
  for name in chosen:
    if name not in cases:
      sys.exit(f"unknown case {name!r}; choose from {sorted(cases)}")
    result["cases"][name] = cases[name]()
    print(json.dumps({name: result["cases"][name]}), file=sys.stderr)
  result["load_average_1min_at_end"] = os.getloadavg()[0]
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
