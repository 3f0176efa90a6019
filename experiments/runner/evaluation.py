"""Evaluation of a trained model: test ELBO terms, IWAE log-likelihood, posterior overlap, the task's metrics.

The ELBO terms and the IWAE bound use a seeded uniform random subset of `eval.iwae_examples` evaluation
points (the data sets are stored in factor or class order, so the first rows would not be representative);
the task's metrics see the posterior means E[z|x] of every evaluation point. The whole-dataset passes are
`decompvae.inference`'s (fixed-size calls run back to back); each part is logged when it starts and ends, with
a few progress lines and an ETA in between (BUILD_NOTES.md, "Evaluation speed").
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from decompvae import inference
from decompvae.data import pipeline
from experiments.runner import run as run_lib
from experiments.runner import task as task_lib
from experiments.runner import writer as writer_lib

_SUBSET_STREAM = 0x5E7   # separates the evaluation subset's draws from other uses of the seed
_ELBO_KEYS = ("lpx_z", "kl", "elbo", "posterior_entropy", "posterior_variance")
_IWAE_KEYS = ("iwae", "iwae_stderr")


class Parts:
  """Runs the named parts of an evaluation: logs when each starts and ends, and keeps its wall seconds and
  this process's CPU seconds (in the order the parts started; a part may contain others)."""

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self.cpu_seconds: dict[str, float] = {}

  def __call__(self, name: str, fn: Callable[[inference.Progress], Any]):
    """fn(progress) under `name`; `progress(done, total)` logs a few progress lines with an ETA."""
    logging.info("Evaluating: %s...", name)
    self.seconds[name] = self.cpu_seconds[name] = float("nan")
    start, start_cpu = time.time(), time.process_time()
    result = fn(_Progress(name, start))
    self.seconds[name] = time.time() - start
    self.cpu_seconds[name] = time.process_time() - start_cpu
    logging.info("Evaluating: %s done in %.1f s", name, self.seconds[name])
    return result


class _Progress:
  """progress(done, total): a line with the fraction done and an ETA, first after `first` seconds, then at
  intervals of at least `every` seconds and a fifth of the estimated duration (about five lines per part).

  The rate is measured from the first report on, so the compilation before it does not inflate the ETA (and no
  line comes before a second report).
  """

  def __init__(self, what: str, start: float, first: float = 15.0, every: float = 30.0):
    self.what, self.start, self.first, self.every = what, start, first, every
    self.origin = self.last = None   # (time, done) of the first report; time of the last line

  def __call__(self, done: int, total: int) -> None:
    now = time.time()
    if self.origin is None:
      self.origin = (now, done)
    t0, done0 = self.origin
    if done >= total or done <= done0 or now <= t0:
      return
    eta = (total - done) * (now - t0) / (done - done0)
    wait = self.first if self.last is None else max(self.every, (now - self.start + eta) / 5)
    if now - (self.last or self.start) >= wait:
      logging.info("  %s: %d/%d (%.0f%%), ETA %s", self.what, done, total, 100 * done / total,
                   writer_lib.format_seconds(eta))
      self.last = now


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What a task's metrics and figures are computed from.

  Attributes:
    run: the run (model, prior, config).
    state: the trained state.
    data: the run's data.
    z_mean: float32 [N, D], E[z|x] of every evaluation point, in the evaluation set's order.
    parts: the evaluation's timed parts (`part` adds the task's own).
  """
  run: run_lib.Run
  state: Any
  data: task_lib.TaskData
  z_mean: np.ndarray
  parts: Parts = dataclasses.field(default_factory=Parts, compare=False)

  @functools.cached_property
  def _encode(self):
    return jax.jit(lambda state, x: self.run.model.encode(self.run.variables(state), x, train=False)[0].mean())

  @functools.cached_property
  def _decode(self):
    return jax.jit(lambda state, z: self.run.model.decode(self.run.variables(state), z, train=False)[0].mean())

  def encoder_means(self, x) -> np.ndarray:
    """E[z|x] of a batch of observations (numpy or jax), as numpy: a representation function (figures)."""
    return np.asarray(self._encode(self.state, jnp.asarray(x, jnp.float32)))

  def decoder_means(self, z) -> np.ndarray:
    """E[x|z] of a batch of latent codes (numpy or jax), as numpy (figures)."""
    return np.asarray(self._decode(self.state, jnp.asarray(z, jnp.float32)))

  def dataset_means(self, dataset: pipeline.DeviceDataset, what: str) -> np.ndarray:
    """E[z|x] of every example of a device-resident dataset (`inference.encode_means`), as a logged part."""
    return encode_means(self.run, self.state, dataset, what, self.parts)

  def part(self, name: str, fn: Callable[[], Any]):
    """fn() as a logged, timed part of the evaluation (e.g. one metric)."""
    return self.parts(name, lambda progress: fn())


def subset_seed(seed: int) -> tuple[int, int]:
  """The seed of the evaluation subset of a run with seed `seed` (apart from its other uses of the seed)."""
  return (seed, _SUBSET_STREAM)


def eval_subset(num_points: int, size: int, seed: int) -> np.ndarray:
  """Sorted indices of the seeded uniform random subset of `size` of range(num_points) that the ELBO terms and
  the IWAE bound of a run with seed `seed` use (all when size is 0)."""
  return inference.select_examples(num_points, size, subset_seed(seed))


def encode_means(run, state, dataset: pipeline.DeviceDataset, what: str, parts: Parts) -> np.ndarray:
  """E[z|x] of every example of `dataset`, float32 [N, D], as the part `what` of `parts`."""
  variables = run.variables(state)
  return parts(what, lambda progress: inference.encode_means(run.model, variables, dataset, progress=progress))


def evaluate(task: task_lib.Task, run, state, data: task_lib.TaskData) -> tuple[dict, Evaluation]:
  """Every metric of the run (scalars and a few lists), keyed "test/..." and "prior/..."."""
  c = run.config
  key = jax.random.fold_in(jax.random.key(c.seed), 2**31 - 1)   # evaluation's own stream
  variables, pz, dataset = run.variables(state), run.pz(state), data.eval
  num = len(eval_subset(dataset.num_examples, c.eval.iwae_examples, c.seed))
  subset = {"num_examples": c.eval.iwae_examples, "subset_seed": subset_seed(c.seed)}
  parts, t0, out = Parts(), time.time(), {}
  terms = parts(f"ELBO terms on {num} points", lambda progress: inference.elbo_terms(
      run.model, variables, pz, dataset, key, analytic_kl=c.objective.analytic_kl, progress=progress, **subset))
  out.update({k: terms[k] for k in _ELBO_KEYS})
  if c.eval.iwae_samples:
    bound = parts(f"IWAE bound, K={c.eval.iwae_samples}, on {num} points", lambda progress: inference.iwae(
        run.model, variables, pz, dataset, jax.random.fold_in(key, 1), num_samples=c.eval.iwae_samples,
        progress=progress, **subset))
    out.update({k: bound[k] for k in _IWAE_KEYS})
  z_mean = encode_means(run, state, dataset, f"E[z|x] of all {dataset.num_examples} evaluation points", parts)
  evaluation = Evaluation(run, state, data, z_mean, parts)
  out.update(evaluation.part(f"{task.name} metrics", lambda: task.metrics(evaluation)))
  out = {f"test/{k}": v for k, v in out.items()}
  if c.prior.name == "anisotropic":
    out["prior/variances"] = np.asarray(pz.variance()).tolist()
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
