"""Input-pipeline speed, as JSON: rendering dSprites, and compiling and producing batches on the device.

  python -m benchmarks.bench_data                        # coarse grid, batch 64, one device
  python -m benchmarks.bench_data --full                 # also render all 737,280 images, and batch from them
  python -m benchmarks.bench_data --mesh --batch_size=64 # batches split over every device (one per CPU core)

The coarse grid is the smoke preset's full-factorial sub-grid (3·6·10·8·8 = 11,520 images, strides 1,1,4,4,4).
Batches come from `pipeline.make_batch_fn` on the device-resident, bit-packed data: `compile_s` is the first
call, `batch_ms` the median over `--repeats` of the mean time per batch over `--steps` consecutive steps
(dispatch and device time, pipelined, as in training).
"""

import json
import os
import platform
import statistics
import time

from absl import app, flags

flags.DEFINE_bool("full", False, "Also render the full 737,280-image set (about a minute on 2 cores) and time "
                  "batches from it instead of from the coarse grid.")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_integer("steps", 200, "Timed batches per repeat.")
flags.DEFINE_integer("repeats", 3, "Repeats; the median is reported.")
flags.DEFINE_integer("seed", 0, "Data seed.")
flags.DEFINE_bool("mesh", False, "Split each batch over a mesh of every device (on CPU: one per core).")
flags.DEFINE_integer("cpu_devices", 0, "With --mesh, XLA devices the CPU is split into (0: one per core).")
FLAGS = flags.FLAGS


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from decompvae import parallel  # pylint: disable=g-import-not-at-top
  from experiments import dsprites  # pylint: disable=g-import-not-at-top
  from experiments.runner import devices  # pylint: disable=g-import-not-at-top
  if FLAGS.mesh:
    devices.use_cpu_cores(FLAGS.cpu_devices)
  from decompvae import data as data_lib  # pylint: disable=g-import-not-at-top
  from decompvae.data import pipeline  # pylint: disable=g-import-not-at-top

  result = {"backend": jax.default_backend(), "devices": len(jax.devices()), "jax": jax.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_1min_at_start": os.getloadavg()[0], "batch_size": FLAGS.batch_size}
  ground_truth, seconds = _timed(dsprites.coarse_grid)
  result[f"render_coarse_{ground_truth.num_examples}_s"] = seconds
  if FLAGS.full:
    packed, result[f"render_full_{data_lib.dsprites.NUM_EXAMPLES}_s"] = _timed(data_lib.render_dsprites)
    ground_truth = data_lib.DSprites(packed)
  result["batched_from"] = ground_truth.num_examples

  mesh = parallel.make_mesh() if FLAGS.mesh else None
  result["mesh"] = None if mesh is None else dict(mesh.shape)
  device_data, result["to_device_s"] = _timed(
      lambda: jax.block_until_ready(pipeline.to_device(ground_truth, mesh=mesh)))
  batch_fn = pipeline.make_batch_fn(FLAGS.batch_size, mesh=mesh)
  _, result["compile_s"] = _timed(lambda: jax.block_until_ready(batch_fn(device_data, FLAGS.seed, 0)))
  times, step = [], 1
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      x = batch_fn(device_data, FLAGS.seed, step)
      step += 1
    jax.block_until_ready(x)
    times.append((time.perf_counter() - start) / FLAGS.steps)
  result["batch_ms"] = 1e3 * statistics.median(times)
  result["load_average_1min_at_end"] = os.getloadavg()[0]
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
