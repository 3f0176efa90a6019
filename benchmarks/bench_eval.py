"""Times each part of a dSprites evaluation at the default settings, with the library only, and prints JSON.

  python -m benchmarks.bench_eval                     # all 737,280 images; the suite on a CodeTable
  python -m benchmarks.bench_eval --train_steps=300   # a briefly trained model instead of a random one
  python -m benchmarks.bench_eval --heldout           # also the suite through a representation_fn (slow)
  python -m benchmarks.bench_eval --cpu_devices=1     # one XLA:CPU device

Parts: rendering/loading the full dSprites set (cached after the first run), the encoder means of every image
(`inference.encode_means`), the ELBO terms and the IWAE estimate on random subsets (`inference.elbo_terms`,
`inference.iwae`, at the library's default K and N), the paper's score on all codes, and each of
disentanglement_lib's metrics (FactorVAE, BetaVAE, MIG, DCI, SAP, modularity) on a `CodeTable` of the codes,
the way the evaluation of a full-grid run computes them. With --heldout the same metrics also run the way a
held-out split does: sampled images rendered on the host and encoded by a jitted representation_fn (and
whether the numbers equal the CodeTable's is reported).
Every part reports wall seconds and the CPU seconds of this process (the CPU may be shared). The model is
dSprites' (10 latent dimensions, isotropic prior), randomly initialised unless --train_steps > 0, when it is
first trained that many steps on the full set (batch 64, not timed).
"""

import json
import os
import platform
import time

from absl import app, flags

flags.DEFINE_integer("cpu_devices", 0, "XLA devices the CPU is split into (0: one per core, as the experiments).")
flags.DEFINE_integer("train_steps", 0, "Train the model this many steps first (0: random initialisation).")
flags.DEFINE_integer("iwae_samples", None, "K (default: inference.IWAE_SAMPLES).")
flags.DEFINE_integer("iwae_examples", None, "N (default: inference.IWAE_EXAMPLES).")
flags.DEFINE_integer("elbo_examples", 10_000, "Examples of the ELBO terms (the experiments' default).")
flags.DEFINE_bool("heldout", False, "Also time the standard metrics through a representation_fn (15+ minutes).")
flags.DEFINE_list("skip", [], "Parts to skip, e.g. dci,heldout_dci.")
FLAGS = flags.FLAGS

_METRICS = ("factor_vae_score", "beta_vae_score", "mig", "dci", "sap", "modularity_explicitness")


def _timed(fn):
  start, start_cpu = time.perf_counter(), time.process_time()
  result = fn()
  return {"seconds": round(time.perf_counter() - start, 2),
          "cpu_seconds": round(time.process_time() - start_cpu, 2), **({} if result is None else result)}


def main(argv):
  del argv
  from decompvae import parallel  # pylint: disable=g-import-not-at-top
  num_devices = parallel.use_cpu_cores(FLAGS.cpu_devices)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from decompvae import inference, make_model, make_prior, metrics, train  # pylint: disable=g-import-not-at-top
  import decompvae.data as data_lib  # pylint: disable=g-import-not-at-top
  from decompvae.data import pipeline  # pylint: disable=g-import-not-at-top

  report = {"platform": platform.processor() or platform.machine(), "cpu_cores": len(os.sched_getaffinity(0)),
            "xla_devices": num_devices, "load_average_before": os.getloadavg()}
  t = time.perf_counter()
  gt = data_lib.load_dsprites("render")
  report["load_dsprites_s"] = round(time.perf_counter() - t, 2)
  mesh = parallel.make_mesh()
  data = pipeline.to_device(gt, mesh=mesh)
  model, pz = make_model("dsprites", 10), make_prior("isotropic", 10)
  optimizer = train.make_optimizer(5e-4)
  init_key, steps_key = train.seed_keys(0)
  state = train.init_state(init_key, gt.images([0]), model=model, optimizer=optimizer)
  if FLAGS.train_steps:
    train_step = train.make_train_step(model=model, prior_name="isotropic", latent_dim=10, prior_hp={},
                                       optimizer=optimizer)
    sharding = parallel.batch_sharded(mesh)

    @jax.jit
    def step(state, data):
      x = pipeline.get_batch(data, 0, state.step, batch_size=64, sharding=sharding)
      return train_step(state, x, train.step_key(steps_key, state.step), beta=1.0, alpha=0.0)

    state = parallel.replicate(state, mesh)
    t = time.perf_counter()
    for _ in range(FLAGS.train_steps):
      # One step at a time: with hundreds of data-parallel steps queued on a loaded machine, XLA:CPU's
      # all-reduce rendezvous timed out (40 s) and aborted the process, twice.
      state, m = jax.block_until_ready(step(state, data))
    report["training"] = {"steps": FLAGS.train_steps, "seconds": round(time.perf_counter() - t, 1),
                          "last_elbo": float(m["elbo"])}
  variables = parallel.replicate(train.model_variables(state.params["model"], state.batch_stats), mesh)
  report["model"] = f"dsprites, {'trained %d steps' % FLAGS.train_steps if FLAGS.train_steps else 'random init'}"
  key = jax.random.key(0)
  num_samples = FLAGS.iwae_samples or inference.IWAE_SAMPLES
  num_examples = FLAGS.iwae_examples or inference.IWAE_EXAMPLES
  parts = {}
  codes = {}

  parts["encode_means_all"] = _timed(lambda: codes.update(z=inference.encode_means(model, variables, data)))
  parts["encode_means_all"]["images_per_s"] = round(gt.num_examples / parts["encode_means_all"]["seconds"])
  parts["elbo_terms"] = _timed(lambda: inference.elbo_terms(model, variables, pz, data, key,
                                                            num_examples=FLAGS.elbo_examples))
  parts["iwae"] = _timed(lambda: inference.iwae(model, variables, pz, data, key, num_samples=num_samples,
                                                num_examples=num_examples))
  z, classes = codes["z"], gt.factor_classes
  parts["paper_score"] = _timed(lambda: metrics.paper_disentanglement(z, classes, random_state=0))
  table = metrics.CodeTable(z, classes, gt.factor_sizes)
  for name in _METRICS:
    if name.split("_")[0] not in FLAGS.skip and name not in FLAGS.skip:
      parts[name] = _timed(lambda name=name: getattr(metrics, name)(table, random_state=0))
  if FLAGS.heldout:
    encoder = jax.jit(lambda v, x: model.encode(v, x, train=False)[0].mean())
    calls = []

    def representation_fn(x):
      calls.append(len(x))
      return np.asarray(encoder(variables, jax.numpy.asarray(x)))

    for name in _METRICS:
      if "heldout_" + name not in FLAGS.skip:
        calls.clear()
        parts["heldout_" + name] = _timed(lambda name=name: getattr(metrics, name)(gt, representation_fn,
                                                                                   random_state=0))
        parts["heldout_" + name]["representation_calls"] = len(calls)
        parts["heldout_" + name]["images_encoded"] = sum(calls)
        if name in parts:  # the encoder is deterministic and batch-independent: the numbers must agree
          result = lambda part: {k: v for k, v in part.items() if "seconds" not in k and "calls" not in k
                                 and "images" not in k}
          parts["heldout_" + name]["equals_code_table"] = result(parts[name]) == result(parts["heldout_" + name])
  report["parts"] = parts
  report["total_seconds_full_grid"] = round(sum(v["seconds"] for k, v in parts.items()
                                                if not k.startswith("heldout_")), 1)
  report["load_average_after"] = os.getloadavg()
  print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
  app.run(main)
