"""Whole-dataset passes of a trained VAE: encoder means, ELBO terms and the IWAE bound of many examples.

Each pass cuts the examples into calls of one fixed shape (one compilation), keeps `MAX_CALLS_IN_FLIGHT`
calls dispatched ahead of the result it fetches, and fetches only small per-example results, so XLA runs the
calls back to back while the host fetches and reports progress as results arrive. The dataset stays on the
device (`pipeline.DeviceDataset`, rows decoded per call) and is an argument of the jitted function, never a
constant baked into it. With a mesh (by default the one the dataset is replicated on), each call's examples
are split over its 'data' axis.

Random numbers are drawn per example: example p (its position in the dataset) uses `fold_in(key, p)`, so a
result depends neither on the call size nor on the number of devices, and the same examples get the same
samples in every subset.

Measured speeds on a 2-core CPU: BUILD_NOTES.md, "Evaluation speed".
"""

import collections
import functools
from collections.abc import Callable, Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from scipy import special

from decompvae import divergences, objectives, parallel
from decompvae.data import pipeline

Progress = Callable[[int, int], None]

# Defaults chosen by measurement (BUILD_NOTES.md, "Evaluation speed"). Small calls: on XLA:CPU the dSprites
# encoder runs 2.4x faster per CPU-second at 64 images per call than at 2048 (whose activations, 268 MB in the
# first layer, leave the caches), the decoder 1.3x at 200 passes. (Not measured on GPU/TPU, where larger calls
# may be faster: pass batch_size / images_per_call.)
ENCODE_BATCH = 64            # images per encoder call
IWAE_SAMPLES = 100           # K
IWAE_EXAMPLES = 1000         # N
IWAE_IMAGES_PER_CALL = 256   # decoder passes per call (examples × samples)
# Calls dispatched and not yet fetched. A few keep the devices busy while the host fetches; dispatching every
# call at once made the host block in XLA:CPU's queue (32 programs per device) and fetch the first result only
# after most calls had run, so progress arrived in one burst at the end.
MAX_CALLS_IN_FLIGHT = 4


def select_examples(num_total: int, num: int | None = None, seed: int | Sequence[int] = 0) -> np.ndarray:
  """Positions of the examples an estimate averages over: all of them, or a uniformly random subset.

      se(mean) = std_n(v_n) / √N · √(1 − N / N_total)   for a simple random sample of N of N_total examples,

  so std_n/√N (what `elbo_terms` and `iwae` report; the correction is negligible for N ≪ N_total) is the
  standard error of the subset mean as an estimate of the whole dataset's mean. The first N examples of
  dSprites (all squares of the smallest scale) would give no such guarantee. The subset depends only on
  (num_total, num, seed), so every model is evaluated on the same examples.

  Args:
    num_total: the dataset's number of examples.
    num: how many; None, 0 or ≥ num_total: all, in order.
    seed: seed of the subset: an integer or a sequence of integers (`np.random.default_rng`), e.g. a run's seed
      with a number that keeps this use of it apart from others.

  Returns:
    int64 [N] positions in [0, num_total).

  References:
    Cochran (1977), "Sampling Techniques", §2.5 (the standard error of a mean under simple random sampling).
  """
  if not num or num >= num_total:
    return np.arange(num_total)
  return np.sort(np.random.default_rng(seed).choice(num_total, num, replace=False))


def _mesh_of(dataset: pipeline.DeviceDataset, mesh: Mesh | None) -> Mesh | None:
  """The given mesh, else the dataset's when it is replicated on a mesh with a 'data' axis of > 1 device.

  None (no split: every device computes each call whole) when that mesh has devices of other processes: the
  results must be readable in each process without a collective in every call.
  """
  if mesh is None:
    sharding = getattr(dataset.storage, "sharding", None)
    if isinstance(sharding, NamedSharding) and parallel.DATA_AXIS in sharding.mesh.shape:
      mesh = sharding.mesh
  if mesh is not None and (mesh.shape[parallel.DATA_AXIS] == 1
                           or any(d.process_index != jax.process_index() for d in mesh.devices.flat)):
    return None
  return mesh


def _call_size(size: int, mesh: Mesh | None) -> int:
  """`size` rounded down to a multiple of the mesh's 'data' axis (at least one example per device)."""
  n = 1 if mesh is None else mesh.shape[parallel.DATA_AXIS]
  return max(n, size // n * n)


def _constrain(x, mesh: Mesh | None):
  """Inside jit, splits a call's examples over the mesh's 'data' axis (no mesh: as XLA chooses)."""
  return parallel.constrain(x, None if mesh is None else parallel.batch_sharded(mesh))


def _rows(dataset: pipeline.DeviceDataset, positions):
  rows = positions if dataset.indices is None else dataset.indices[positions]
  return dataset.decode(dataset.storage[rows])


def _padded(positions: np.ndarray, size: int) -> np.ndarray:
  """`positions` padded to a multiple of `size` by repeating the last one (its results are dropped)."""
  pad = -len(positions) % size
  return np.concatenate([positions, np.full(pad, positions[-1], positions.dtype)]).astype(np.int32)


def _run_calls(calls: Sequence[Callable[[], Any]], progress_of: Callable[[int], tuple[int, int]] | None = None,
               progress: Progress | None = None) -> list:
  """Dispatches the calls in order, at most `MAX_CALLS_IN_FLIGHT` ahead of the one being fetched, and returns
  their results as numpy, in order; after fetching call i, reports progress(*progress_of(i))."""
  pending, out = collections.deque(), []

  def fetch():
    out.append(jax.tree.map(np.asarray, pending.popleft()))
    if progress is not None:
      progress(*progress_of(len(out) - 1))

  for call in calls:
    pending.append(call())
    if len(pending) > MAX_CALLS_IN_FLIGHT:
      fetch()
  while pending:
    fetch()
  return out


def _examples_done(total: int, per_call: int) -> Callable[[int], tuple[int, int]]:
  return lambda i: (min((i + 1) * per_call, total), total)


def encode_means(model, variables, dataset: pipeline.DeviceDataset, *, batch_size: int = ENCODE_BATCH,
                 mesh: Mesh | None = None, progress: Progress | None = None) -> np.ndarray:
  """Posterior means of every example of `dataset`, in calls of `batch_size` images.

      z̄_n = E_q(z|x_n)[z] = μ(x_n),   n = 0, …, N − 1

  The calls run back to back (`MAX_CALLS_IN_FLIGHT` dispatched ahead); the last call is padded with repeats of the last
  example. The means do not depend on `batch_size` beyond floating-point rounding (the dSprites encoder gives
  bitwise identical means for batches of 64 to 8192 on XLA:CPU, 1 or 2 devices).

  Args:
    model: object with `encode(variables, x, train=False) -> (q(z|x), updates)` (e.g. `decompvae.vae.VAE`).
    variables: the model's variables (on the same devices as the dataset).
    dataset: the examples, resident on the device.
    batch_size: images per call (rounded down to a multiple of the mesh's device count).
    mesh: split each call over this mesh's 'data' axis (default: the mesh the dataset is replicated on).
    progress: called as progress(done, total) after each call's result is fetched (e.g. to log an ETA).

  Returns:
    numpy [N, D] means, in dataset order.

  References:
    Kingma & Welling (2014), "Auto-Encoding Variational Bayes"; docs/science.md §6 (the metrics use the means).
  """
  mesh = _mesh_of(dataset, mesh)
  total = dataset.num_examples
  size = _call_size(min(batch_size, total), mesh)
  encode = _encode_fn(model, mesh, size)
  calls = [functools.partial(encode, variables, dataset, start, total - 1) for start in range(0, total, size)]
  return np.concatenate(_run_calls(calls, _examples_done(total, size), progress))[:total]


# The jitted functions are built once per (model, prior, mesh, shapes), so repeated evaluations (and the
# evaluations of a sweep's members, which share a prior object only if the caller reuses it) compile once.
@functools.lru_cache(maxsize=32)
def _encode_fn(model, mesh: Mesh | None, size: int):
  @jax.jit
  def encode(variables, dataset, start, last):
    positions = _constrain(jnp.minimum(start + jnp.arange(size), last), mesh)
    qz_x, _ = model.encode(variables, _rows(dataset, positions), train=False)
    return qz_x.mean()
  return encode


def _sample_z(qz_x: distrax.Distribution, keys_BxC):
  """z [C, B, D] = μ + σ ⊙ ε, ε ~ N(0, I) drawn with key [b, c] for sample c of example b."""
  mean = qz_x.mean()
  eps = jax.vmap(jax.vmap(lambda k: jax.random.normal(k, mean.shape[-1:], mean.dtype)))(keys_BxC)
  return mean + qz_x.stddev() * jnp.swapaxes(eps, 0, 1)


def elbo_terms(model, variables, pz: distrax.Distribution, dataset: pipeline.DeviceDataset, key: jax.Array, *,
               num_examples: int | None = None, subset_seed: int | Sequence[int] = 0, analytic_kl: bool = True,
               batch_size: int = ENCODE_BATCH, mesh: Mesh | None = None,
               progress: Progress | None = None) -> dict[str, float]:
  """Means of the β = 1 ELBO terms over the examples, with one posterior sample per example, and of the
  posteriors' spread (the overlap of the encodings).

      ELBO(x) = log p(x|z) − KL(q(z|x) ‖ p(z)),   z = μ(x) + σ(x) ⊙ ε,  ε ~ N(0, I) drawn with fold_in(key, p)

  for the example at position p. The KL is analytic when `analytic_kl` and both distributions are diagonal
  Gaussians (`divergences.kl_qp`), else the single-sample estimate at the same z. The posterior entropy
  H[q(z|x)] and the mean per-dimension variance (1/D) Σ_d σ_d(x)² are exact.

  Args:
    model, variables: as for `encode_means`; q(z|x) must be a diagonal Gaussian (`mean()`, `stddev()`).
    pz: the prior, event shape (D,).
    dataset: the examples, resident on the device.
    key: PRNG key.
    num_examples, subset_seed: which examples (see `select_examples`; default all).
    analytic_kl: use the closed-form KL when it exists.
    batch_size, mesh, progress: as for `encode_means`.

  Returns:
    {"lpx_z", "kl", "elbo", "posterior_entropy", "posterior_variance": means over the examples,
    "elbo_stderr": std_n(ELBO)/√N, "num_examples": N}.

  References:
    Kingma & Welling (2014); Mathieu et al. (2019), §4 (overlap); docs/science.md §3, §6.9.
  """
  mesh = _mesh_of(dataset, mesh)
  positions = select_examples(dataset.num_examples, num_examples, subset_seed)
  size = _call_size(min(batch_size, len(positions)), mesh)
  padded = parallel.place(_padded(positions, size), mesh)
  terms = _elbo_fn(model, pz, mesh, size, analytic_kl)
  calls = [functools.partial(terms, variables, dataset, padded, start, key)
           for start in range(0, len(positions), size)]
  names = ("lpx_z", "kl", "posterior_entropy", "posterior_variance")
  results = _run_calls(calls, _examples_done(len(positions), size), progress)
  values = dict(zip(names, (np.concatenate(parts)[:len(positions)].astype(np.float64) for parts in zip(*results))))
  elbo = values["lpx_z"] - values["kl"]
  out = {name: float(v.mean()) for name, v in values.items()}
  return {**out, "elbo": float(elbo.mean()), "elbo_stderr": _stderr_of_mean(elbo), "num_examples": len(positions)}


@functools.lru_cache(maxsize=32)
def _elbo_fn(model, pz: distrax.Distribution, mesh: Mesh | None, size: int, analytic_kl: bool):
  @jax.jit
  def terms(variables, dataset, padded, start, key):
    pos = _constrain(jax.lax.dynamic_slice_in_dim(padded, start, size), mesh)
    x = _rows(dataset, pos)
    qz_x, _ = model.encode(variables, x, train=False)
    z = _sample_z(qz_x, jax.vmap(lambda p: jax.random.fold_in(key, p))(pos)[:, None])[0]
    px_z, _ = model.decode(variables, z, train=False)
    return (px_z.log_prob(x), divergences.kl_qp(qz_x, pz, z, analytic=analytic_kl), qz_x.entropy(),
            qz_x.variance().mean(axis=-1))
  return terms


def _stderr_of_mean(values: np.ndarray) -> float:
  return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def iwae_per_example(model, variables, pz: distrax.Distribution, dataset: pipeline.DeviceDataset,
                     key: jax.Array, positions: np.ndarray, *, num_samples: int = IWAE_SAMPLES,
                     images_per_call: int = IWAE_IMAGES_PER_CALL, mesh: Mesh | None = None,
                     progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
  """IWAE estimates log p̂(x) of the examples at `positions`, and their Monte-Carlo standard errors.

      log p̂(x_p) = log (1/K) Σ_k p(z_k) p(x_p|z_k) / q(z_k|x_p),  z_k = μ + σ ⊙ ε_k,
      ε_k ~ N(0, I) drawn with key  jax.random.split(fold_in(key, p), K)[k].

  Each call runs B examples × C samples through the decoder in one batch (B·C ≈ `images_per_call`, C the
  largest divisor of K that fits, B a multiple of the device count) and returns the chunk's log Σ w and
  log Σ w² (`objectives.iwae_log_sums`); the calls run back to back (`MAX_CALLS_IN_FLIGHT` dispatched ahead),
  and the chunks are combined on the host in float64. Memory grows with `images_per_call`, not with K or N,
  and the result does not depend on `images_per_call` or the device count (up to float32 rounding).

  Args:
    model, variables: as for `encode_means`; q(z|x) must be a diagonal Gaussian (`mean()`, `stddev()`).
    pz: the prior, event shape (D,).
    dataset: the examples, resident on the device.
    key: PRNG key.
    positions: int [N] positions of the examples in the dataset (e.g. from `select_examples`).
    num_samples: K.
    images_per_call: decoder passes per call.
    mesh: as for `encode_means`.
    progress: called as progress(examples done, N) as results arrive.

  Returns:
    `(log_p_hat [N], stderr [N])`, float64; stderr is the delta-method error of each estimate over repeated
    draws of its K samples (`objectives.iwae_from_log_sums`; NaN for K = 1).

  References:
    Burda et al. (2016), "Importance Weighted Autoencoders"; docs/science.md §3.
  """
  positions = np.asarray(positions)
  if positions.ndim != 1 or positions.size == 0:
    raise ValueError(f"positions must be a non-empty 1-d array, got shape {positions.shape}")
  if num_samples < 1 or images_per_call < 1:
    raise ValueError(f"num_samples ({num_samples}) and images_per_call ({images_per_call}) must be positive")
  mesh = _mesh_of(dataset, mesh)
  chunk = parallel.largest_divisor(num_samples, images_per_call)
  size = _call_size(min(max(1, images_per_call // chunk), len(positions)), mesh)
  num_chunks = num_samples // chunk
  padded = parallel.place(_padded(positions, size), mesh)
  log_sums = _iwae_fn(model, pz, mesh, size, chunk, num_samples)
  calls = [functools.partial(log_sums, variables, dataset, padded, start, c * chunk, key)
           for start in range(0, len(positions), size) for c in range(num_chunks)]
  # Progress in examples: call i completes the samples of its examples when it is the last of their chunks.
  done = lambda i: (min((i + 1) // num_chunks * size, len(positions)), len(positions))
  results = _run_calls(calls, done, progress)
  log_sum_w, log_sum_w2 = (
      np.concatenate([special.logsumexp(np.stack(s[e:e + num_chunks]).astype(np.float64), axis=0)
                      for e in range(0, len(s), num_chunks)])[:len(positions)]
      for s in zip(*results))
  return objectives.iwae_from_log_sums(log_sum_w, log_sum_w2, num_samples)


@functools.lru_cache(maxsize=32)
def _iwae_fn(model, pz: distrax.Distribution, mesh: Mesh | None, size: int, chunk: int, num_samples: int):
  @jax.jit
  def log_sums(variables, dataset, padded, start, chunk_start, key):
    pos = _constrain(jax.lax.dynamic_slice_in_dim(padded, start, size), mesh)
    x = _rows(dataset, pos)
    qz_x, _ = model.encode(variables, x, train=False)
    keys = jax.vmap(lambda p: jax.random.split(jax.random.fold_in(key, p), num_samples))(pos)
    z_CxBxD = _sample_z(qz_x, jax.lax.dynamic_slice_in_dim(keys, chunk_start, chunk, axis=1))
    return objectives.iwae_log_sums(variables, x, qz_x, z_CxBxD, model=model, pz=pz)
  return log_sums


def iwae(model, variables, pz: distrax.Distribution, dataset: pipeline.DeviceDataset, key: jax.Array, *,
         num_samples: int = IWAE_SAMPLES, num_examples: int | None = IWAE_EXAMPLES,
         subset_seed: int | Sequence[int] = 0,
         images_per_call: int = IWAE_IMAGES_PER_CALL, mesh: Mesh | None = None,
         progress: Progress | None = None) -> dict[str, float]:
  """The IWAE estimate of the mean log-likelihood over a dataset, with its standard errors.

      mean = (1/N) Σ_n log p̂(x_n)   (nats per example; `iwae_per_example` with K = `num_samples`),
      stderr = std_n(log p̂(x_n)) / √N,   mc_stderr = √(Σ_n se_n²) / N.

  `stderr` is the standard error of `mean` as an estimate of the whole dataset's average of E[log p̂] when the
  N examples are a random subset (`select_examples`); it contains the Monte-Carlo noise of the samples.
  `mc_stderr` estimates the part due to the K samples alone, the spread of `mean` between evaluations of the
  same examples with different keys, from the per-example delta-method errors; with heavy-tailed weights
  (small `median_ess`) it is too small (2–3× for a dSprites model), but it is far below `stderr` either way.
  Runs compared on the same subset (the default: it depends only on `subset_seed`) differ by less than
  `stderr` suggests, since the examples' own variation is shared. Neither covers the bias: E[log p̂] rises
  towards log p(x) with K (by ~1 nat from K = 100 to 1000 for a dSprites model; BUILD_NOTES.md, "Evaluation
  speed").

  Args:
    model, variables, pz, dataset, key: as for `iwae_per_example`.
    num_samples: K.
    num_examples: N, the size of the random subset (None or 0: every example).
    subset_seed: seed of the subset.
    images_per_call, mesh, progress: as for `iwae_per_example`.

  Returns:
    {"iwae": mean, "iwae_stderr", "iwae_mc_stderr", "iwae_median_ess": the median over examples of the
    effective sample size 1 / Σ_k w̃_k², "num_examples": N, "num_samples": K}.

  References:
    Burda et al. (2016); Mathieu et al. (2019), §5 (log-likelihoods of the priors); docs/science.md §3, §6.
  """
  positions = select_examples(dataset.num_examples, num_examples, subset_seed)
  log_p_hat, se = iwae_per_example(model, variables, pz, dataset, key, positions, num_samples=num_samples,
                                   images_per_call=images_per_call, mesh=mesh, progress=progress)
  ess = num_samples / (se**2 * (num_samples - 1) + 1)  # K / (K Σ w̃²), inverting iwae_from_log_sums
  return {"iwae": float(log_p_hat.mean()), "iwae_stderr": _stderr_of_mean(log_p_hat),
          "iwae_mc_stderr": float(np.sqrt(np.sum(se**2)) / len(se)), "iwae_median_ess": float(np.median(ess)),
          "num_examples": len(positions), "num_samples": num_samples}
