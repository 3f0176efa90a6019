"""Evaluation of a trained model: test ELBO terms, IWAE log-likelihood, posterior overlap, the task's metrics.

The ELBO terms and the IWAE bound use a seeded uniform random subset of `eval.iwae_examples` evaluation
points (the data sets are stored in factor or class order, so the first rows would not be representative);
the task's metrics see the posterior means E[z|x] of every evaluation point.
"""

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from decompvae import divergences
from decompvae import objectives
from decompvae.data import pipeline
from experiments.runner import run as run_lib
from experiments.runner import task as task_lib
from experiments.runner import writer as writer_lib

_ENCODE_BATCH = 2048
_IWAE_BATCH = 64
_SUBSET_STREAM = 0x5E7   # separates the evaluation subset's draws from other uses of the seed


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What a task's metrics and figures are computed from.

  Attributes:
    run: the run (model, prior, config).
    state: the trained state.
    data: the run's data.
    z_mean: float32 [N, D], E[z|x] of every evaluation point, in the evaluation set's order.
  """
  run: run_lib.Run
  state: Any
  data: task_lib.TaskData
  z_mean: np.ndarray

  @functools.cached_property
  def _encode(self):
    return jax.jit(lambda state, x: self.run.model.encode(self.run.variables(state), x, train=False)[0].mean())

  def encoder_means(self, x) -> np.ndarray:
    """E[z|x] of a batch of observations (numpy or jax), as numpy: the metrics' representation function."""
    return np.asarray(self._encode(self.state, jnp.asarray(x, jnp.float32)))


def _rows(dataset: pipeline.DeviceDataset, idx):
  rows = idx if dataset.indices is None else dataset.indices[idx]
  return dataset.decode(dataset.storage[rows])


def eval_subset(num_points: int, size: int, seed: int) -> np.ndarray:
  """Sorted indices of a seeded uniform random subset of `size` of range(num_points) (all when size is 0)."""
  if not size or size >= num_points:
    return np.arange(num_points)
  rng = np.random.default_rng([seed, _SUBSET_STREAM])
  return np.sort(rng.choice(num_points, size, replace=False))


def _batches(idx: np.ndarray, size: int):
  """Fixed-size batches of `idx` (the last one padded by repetition, so each function compiles once)."""
  size = min(size, len(idx))
  for start in range(0, len(idx), size):
    batch = idx[start:start + size]
    yield np.resize(batch, size), len(batch)


class _Progress:
  """Logs `what` with a percentage and an ETA at most every `every` seconds."""

  def __init__(self, what: str, total: int, every: float = 30.0):
    self.what, self.total, self.every = what, total, every
    self.start = self.last = time.time()

  def update(self, done: int) -> None:
    now = time.time()
    if now - self.last >= self.every and done < self.total:
      eta = (now - self.start) * (self.total - done) / max(done, 1)
      logging.info("  %s: %d/%d (%.0f%%), ETA %s", self.what, done, self.total, 100 * done / self.total,
                   writer_lib.format_seconds(eta))
      self.last = now


def encode_means(run, state, dataset: pipeline.DeviceDataset) -> np.ndarray:
  """E[z|x] of every example of `dataset`, float32 [N, D]; every batch is dispatched before any is fetched."""
  n = dataset.num_examples
  encode = jax.jit(lambda state, idx: run.model.encode(run.variables(state), _rows(dataset, idx),
                                                       train=False)[0].mean())
  batches = list(_batches(np.arange(n), _ENCODE_BATCH))
  progress = _Progress("encoding", n)
  out = [encode(state, jnp.asarray(idx)) for idx, _ in batches]
  means = []
  for (_, keep), z in zip(batches, out):
    means.append(np.asarray(z)[:keep])
    progress.update(sum(len(m) for m in means))
  return np.concatenate(means)


def elbo_terms(run, state, dataset: pipeline.DeviceDataset, idx: np.ndarray, key) -> dict[str, float]:
  """Means over the points `idx` of log p(x|z), KL(q(z|x) ‖ p(z)) and the β = 1 ELBO (one posterior sample
  each), and of the overlap of the encodings: the posterior entropy H[q(z|x)] and mean variance."""

  @jax.jit
  def terms(state, batch, key):
    x, variables = _rows(dataset, batch), run.variables(state)
    qz_x, _ = run.model.encode(variables, x, train=False)
    z = qz_x.sample(seed=key)
    px_z, _ = run.model.decode(variables, z, train=False)
    lpx_z = px_z.log_prob(x)
    kl = divergences.kl_qp(qz_x, run.pz(state), z, analytic=run.config.objective.analytic_kl)
    return {"lpx_z": lpx_z, "kl": kl, "elbo": lpx_z - kl, "posterior_entropy": qz_x.entropy(),
            "posterior_variance": qz_x.variance().mean(axis=-1)}

  sums = {}
  for i, (batch, keep) in enumerate(_batches(idx, _ENCODE_BATCH)):
    for k, v in jax.device_get(terms(state, jnp.asarray(batch), jax.random.fold_in(key, i))).items():
      sums[k] = sums.get(k, 0.0) + float(np.sum(v[:keep], dtype=np.float64))
  return {k: v / len(idx) for k, v in sums.items()}


def iwae(run, state, dataset: pipeline.DeviceDataset, idx: np.ndarray, num_samples: int, key) -> dict[str, float]:
  """Mean IWAE bound log p̂(x) (K = `num_samples`) over `idx`, nats per example, and its standard error."""

  @jax.jit
  def bound(state, batch, key):
    return objectives.iwae_bound(run.variables(state), _rows(dataset, batch), key, model=run.model,
                                 pz=run.pz(state), num_samples=num_samples, chunk_size=min(num_samples, 100))

  values, progress = [], _Progress(f"IWAE (K={num_samples})", len(idx))
  for i, (batch, keep) in enumerate(_batches(idx, _IWAE_BATCH)):
    values.append(np.asarray(bound(state, jnp.asarray(batch), jax.random.fold_in(key, i)))[:keep])
    progress.update(sum(len(v) for v in values))
  values = np.concatenate(values)
  stderr = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
  return {"iwae": float(values.mean()), "iwae_stderr": stderr}


def evaluate(task: task_lib.Task, run, state, data: task_lib.TaskData) -> tuple[dict, Evaluation]:
  """Every metric of the run (scalars and a few lists), keyed "test/..." and "prior/..."."""
  c = run.config
  key = jax.random.fold_in(jax.random.key(c.seed), 2**31 - 1)   # evaluation's own stream
  idx = eval_subset(data.eval.num_examples, c.eval.iwae_examples, c.seed)
  t0 = time.time()
  out = {}

  def part(name, fn):
    start = time.time()
    logging.info("Evaluating: %s...", name)
    result = fn()
    logging.info("Evaluating: %s done in %.1f s", name, time.time() - start)
    return result

  out.update(part(f"ELBO terms on {len(idx)} points", lambda: elbo_terms(run, state, data.eval, idx, key)))
  if c.eval.iwae_samples:
    out.update(part(f"IWAE bound, K={c.eval.iwae_samples}, on {len(idx)} points",
                    lambda: iwae(run, state, data.eval, idx, c.eval.iwae_samples, jax.random.fold_in(key, 1))))
  z_mean = part(f"E[z|x] of all {data.eval.num_examples} evaluation points",
                lambda: encode_means(run, state, data.eval))
  evaluation = Evaluation(run, state, data, z_mean)
  out.update(part(f"{task.name} metrics", lambda: task.metrics(evaluation)))
  out = {f"test/{k}": v for k, v in out.items()}
  if c.prior.name == "anisotropic":
    out["prior/variances"] = np.asarray(run.pz(state).variance()).tolist()
  out["eval_seconds"] = time.time() - t0
  return out, evaluation


def evaluate_and_report(task: task_lib.Task, run, state, data: task_lib.TaskData, workdir: str) -> dict:
  """Evaluates; appends the scalars to metrics.jsonl, writes summary.json, logs them, then draws the figures.

  The summary is written before the figures, so a figure that fails (logged as a warning) loses nothing.
  """
  out, evaluation = evaluate(task, run, state, data)
  step = int(state.step)
  writer_lib.MetricWriter(workdir).write(step, {k: v for k, v in out.items() if np.ndim(v) == 0})
  summary = {"step": step, "config": run.config.to_dict(), "metrics": out}
  writer_lib.write_json(os.path.join(workdir, "summary.json"), summary)
  logging.info("Evaluation at step %d (summary in %s):\n  %s", step, os.path.join(workdir, "summary.json"),
               "\n  ".join(f"{k} = {v:.4f}" for k, v in sorted(out.items()) if np.ndim(v) == 0))
  if run.config.eval.figures and jax.process_index() == 0:
    directory = os.path.join(workdir, "figures")
    try:
      os.makedirs(directory, exist_ok=True)
      paths = task.figures(evaluation, directory)
      logging.info("Figures: %s", ", ".join(paths))
    except Exception as e:  # pylint: disable=broad-except  (a figure must never cost the metrics)
      logging.warning("Drawing the figures in %s failed (%s: %s); the metrics are in summary.json.", directory,
                      type(e).__name__, e)
  return summary
