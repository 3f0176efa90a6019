"""Times the default end-of-run evaluation of a dSprites run, part by part, and prints JSON.

  python -m benchmarks.bench_eval --train_steps=300   # the measurement in BUILD_NOTES.md, "Evaluation speed"
  python -m benchmarks.bench_eval                     # a randomly initialised model (same work, quicker)
  python -m benchmarks.bench_eval --config.eval.iwae_samples=1000 --config.eval.iwae_examples=10000

The evaluation is the runner's own (`experiments.runner.evaluation.evaluate`, what `python -m
experiments.dsprites` runs after training), on the full default config of `experiments.dsprites` (isotropic
prior, 10 latent dimensions, the paper's score with M = 20,000 votes of L = 1,000 points, disentanglement_lib's
suite at its default sizes, the default IWAE K and N) and the full rendered dSprites set (737,280 images,
cached in ~/.cache/decompvae after the first render). Figures are not drawn (they are not part of the
metrics). The model is randomly initialised, or first trained `--train_steps` steps (batch 64, data-parallel
over the run's devices as in a run; not timed). Each part reports wall seconds and the CPU seconds of this
process; the load average before and after says how much else the CPU was doing.
"""

import json
import os
import platform
import time

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from decompvae import parallel
from experiments import dsprites
from experiments.runner import config as config_lib
from experiments.runner import devices
from experiments.runner import evaluation
from experiments.runner import run as run_lib
from experiments.runner import steps
from experiments.runner import training

flags.DEFINE_integer("cpu_devices", 0, "XLA devices the CPU is split into (0: one per core, as the experiments).")
flags.DEFINE_integer("train_steps", 0, "Train the model this many steps first (0: random initialisation).")
flags.DEFINE_string("prior", "isotropic", "The dSprites prior (isotropic, anisotropic, student_t).")
_EVAL_FIELDS = ml_collections.ConfigDict({"eval": config_lib.make_config(dsprites.TASK).eval})
config_flags.DEFINE_config_dict("config", _EVAL_FIELDS, "Evaluation settings, e.g. --config.eval.iwae_samples=1000.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  num_devices = devices.use_cpu_cores(FLAGS.cpu_devices)
  # (JAX's backends start with the first computation, below: after the CPU is split into devices.)
  c = config_lib.make_config(dsprites.TASK, FLAGS.prior)
  c.data.source = "render"
  c.eval.figures = False
  c.update_from_flattened_dict(_overrides())
  config_lib.check(c, dsprites.TASK)
  report = {"platform": platform.processor() or platform.machine(), "cpu_cores": len(os.sched_getaffinity(0)),
            "xla_devices": num_devices, "eval_config": c.eval.to_dict(), "load_average_before": os.getloadavg()}
  mesh = devices.make_mesh(c)
  t = time.perf_counter()
  data = training.load_data(dsprites.TASK, c, mesh)
  report["load_data_s"] = round(time.perf_counter() - t, 1)
  run = run_lib.make_run(dsprites.TASK, c, data)
  state = parallel.replicate(run_lib.init_state(run, data), mesh)
  if FLAGS.train_steps:
    step = steps.run_steps(run, data, mesh, 1)
    t = time.perf_counter()
    for _ in range(FLAGS.train_steps):
      state, metrics = step(state, data.train)
    report["training"] = {"steps": FLAGS.train_steps, "seconds": round(time.perf_counter() - t, 1),
                          "last_elbo": float(jax.device_get(metrics["elbo"]).ravel()[-1])}
  report["model"] = (f"dsprites, {c.prior.name} prior, "
                     f"{'trained %d steps' % FLAGS.train_steps if FLAGS.train_steps else 'random init'}")
  load_before = os.getloadavg()
  t, t_cpu = time.perf_counter(), time.process_time()
  out, ev = evaluation.evaluate(dsprites.TASK, run, state, data)
  report["total_seconds"] = round(time.perf_counter() - t, 1)
  report["total_cpu_seconds"] = round(time.process_time() - t_cpu, 1)
  report["parts"] = {name: {"seconds": round(s, 2), "cpu_seconds": round(ev.parts.cpu_seconds[name], 2)}
                     for name, s in ev.parts.seconds.items()}
  report["load_average_during"] = {"before": load_before, "after": os.getloadavg()}
  report["metrics"] = {k: v for k, v in out.items() if isinstance(v, float)}
  print(json.dumps(report, indent=1, default=float))


def _overrides() -> dict:
  """--config.eval.<field>=value flags, as {"eval.<field>": value}."""
  return dict(config_flags.get_override_values(FLAGS["config"]))


if __name__ == "__main__":
  app.run(main)
