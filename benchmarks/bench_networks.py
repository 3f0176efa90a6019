"""Images/s of one jitted training step of the networks alone (no prior regulariser), as JSON lines.

  python -m benchmarks.bench_networks                                   # dSprites B=64, Fashion-MNIST B=500
  python -m benchmarks.bench_networks --models=dsprites --impl=subpixel,direct

The step is value_and_grad of −(log p(x|z) − KL(q(z|x) ‖ N(0, I))) (one reparameterised sample, analytic
KL) followed by Adam/AMSGrad, on a fixed random batch. `--impl=direct` swaps the 4×4 stride-2 convolutions for
the plain `lax` formulations (strided convolution; transposed convolution as a zero-dilated input), i.e. what a
straightforward port computes, and `--impl=four_phases` keeps the strided convolution but computes the
transposed one as four stride-1 convolutions plus depth-to-space, differentiated by autodiff; so the variants
are timed side by side under the same load. Each line also gives the
allocator (LD_PRELOAD), XLA_FLAGS and the 1-minute load average, because all three move the numbers.
"""

import json
import os
import statistics
import time

from absl import app, flags
import distrax
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from decompvae import networks
from decompvae import vae

flags.DEFINE_list("models", ["dsprites", "fashion_mnist"], "Models to time.")
flags.DEFINE_list("impl", ["subpixel"], "subpixel (the library's), direct (plain lax convolutions) and/or "
                  "four_phases (transposed convolution as four 2×2 convolutions, plain autodiff).")
flags.DEFINE_integer("steps", 20, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 5, "Repeats; the median and the best are reported.")
FLAGS = flags.FLAGS

_BATCH = {"dsprites": 64, "fashion_mnist": 500}
_LATENT = {"dsprites": 10, "fashion_mnist": 50}
_DN = ("NHWC", "HWIO", "NHWC")


def _strided(x, k):
  return lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)


def _dilated(x, k):
  return lax.conv_general_dilated(x, k[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                  dimension_numbers=_DN)


def _four_phases(x, k):
  """Four stride-1 2×2 convolutions (one per output phase) + depth-to-space, differentiated by autodiff."""
  b, h, w, _ = x.shape
  xp, f = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), k[::-1, ::-1]
  rows = [jnp.stack([lax.conv_general_dilated(xp[:, py:py + h + 1, px:px + w + 1], f[py::2, px::2], (1, 1),
                                              "VALID", dimension_numbers=_DN) for px in (0, 1)], axis=3)
          for py in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, k.shape[-1])


_IMPLS = {"subpixel": (networks.conv4x4s2, networks.conv_transpose4x4s2), "direct": (_strided, _dilated),
          "four_phases": (_strided, _four_phases)}


def _allocator() -> str:
  preload = os.environ.get("LD_PRELOAD", "")
  return next((n for n in ("tcmalloc", "jemalloc", "mimalloc") if n in preload), "glibc malloc (default)")


def _bench(name: str, impl: str) -> dict:
  networks.conv4x4s2, networks.conv_transpose4x4s2 = _IMPLS[impl]   # looked up when the step is traced
  model = vae.make_model(name, _LATENT[name])
  batch = _BATCH[name]
  rng = np.random.default_rng(0)
  x = rng.random((batch, *model.data_shape), np.float32)
  x = jnp.asarray((x < 0.2).astype(np.float32) if name == "dsprites" else np.clip(x, 1e-6, 1 - 1e-6))
  variables = model.init(jax.random.key(0), x)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  optimizer = optax.amsgrad(5e-4)
  pz = distrax.MultivariateNormalDiag(jnp.zeros(model.latent_dim), jnp.ones(model.latent_dim))

  def loss_fn(params, batch_stats, key):
    v = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    qz_x, upd_q = model.encode(v, x, train=True)
    px_z, upd_p = model.decode(v, qz_x.sample(seed=key), train=True)
    stats = {**upd_q.get("batch_stats", {}), **upd_p.get("batch_stats", {})}
    return -jnp.mean(px_z.log_prob(x) - qz_x.kl_divergence(pz)), stats

  @jax.jit
  def step(params, batch_stats, opt_state, key):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  state = (params, batch_stats, optimizer.init(params))
  t = time.perf_counter()
  state = step(*state, jax.random.key(0))[:3]
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t
  times = []
  for r in range(FLAGS.repeats):
    t = time.perf_counter()
    for i in range(FLAGS.steps):
      *state, loss = step(*state, jax.random.key(r * FLAGS.steps + i))
    jax.block_until_ready(loss)
    times.append((time.perf_counter() - t) / FLAGS.steps)
  return {"model": name, "impl": impl, "batch": batch, "images_per_s": round(batch / statistics.median(times), 1),
          "images_per_s_best": round(batch / min(times), 1), "step_ms": round(1e3 * statistics.median(times), 2),
          "compile_s": round(compile_s, 1), "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
          "cpus": os.cpu_count(), "allocator": _allocator(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "load_1min": os.getloadavg()[0], "jax": jax.__version__}


def main(argv):
  del argv
  for name in FLAGS.models:
    for impl in FLAGS.impl:
      print(json.dumps(_bench(name, impl)), flush=True)


if __name__ == "__main__":
  app.run(main)
