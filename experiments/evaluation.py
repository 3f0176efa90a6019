"""Evaluation of a trained run: test-set ELBO terms, IWAE log-likelihood, each experiment's metrics, figures."""

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from decompvae import metrics
from decompvae import objectives
from decompvae.data import pipeline
from experiments import figures
from experiments import writer as writer_lib

_ENCODE_BATCH = 2048




def _rows(dataset: pipeline.DeviceDataset, idx):
  rows = idx if dataset.indices is None else dataset.indices[idx]
  return dataset.decode(dataset.storage[rows])


def _chunks(n: int, size: int):
  """Index chunks of one fixed size (the last one padded by repetition) so each jitted function compiles once."""
  for start in range(0, n, size):
    idx = np.arange(start, start + size) % n if n >= size else np.arange(size) % n
    yield idx, min(size, n - start)


def encode_means(run, state, dataset: pipeline.DeviceDataset, num: int | None = None) -> np.ndarray:
  """Posterior means E[z|x] of the first `num` (default all) examples of `dataset`, float32 [num, D]."""
  num = dataset.num_examples if num is None else min(num, dataset.num_examples)
  size = min(_ENCODE_BATCH, num)

  @jax.jit
  def encode(state, idx):
    qz_x, _ = run.model.encode(run.variables(state), _rows(dataset, idx), train=False)
    return qz_x.mean()

  out = [np.asarray(encode(state, jnp.asarray(idx)))[:keep] for idx, keep in _chunks(num, size)]
  return np.concatenate(out)


def elbo_terms(run, state, dataset: pipeline.DeviceDataset, num: int, key) -> dict[str, float]:
  """Mean of lpx_z, kl and the β=1 ELBO over the first `num` examples (one posterior sample each)."""
  num = min(num or dataset.num_examples, dataset.num_examples)
  size = min(_ENCODE_BATCH, num)

  @jax.jit
  def terms(state, idx, key):
    _, (m, _) = objectives.vae_loss(run.variables(state), _rows(dataset, idx), key, model=run.model,
                                    pz=run.pz(state), beta=1.0, alpha=0.0, train=False)
    return m

  sums, count = {}, 0
  for i, (idx, keep) in enumerate(_chunks(num, size)):
    m = jax.device_get(terms(state, jnp.asarray(idx), jax.random.fold_in(key, i)))
    for k in ("lpx_z", "kl", "elbo"):
      sums[k] = sums.get(k, 0.0) + float(m[k]) * keep
    count += keep
  return {f"test/{k}": v / count for k, v in sums.items()}


def iwae(run, state, dataset: pipeline.DeviceDataset, num: int, num_samples: int, key) -> float:
  """Mean IWAE bound log p̂(x) with K = `num_samples` over the first `num` examples (nats per example)."""
  num = min(num or dataset.num_examples, dataset.num_examples)
  size = min(64, num)

  @jax.jit
  def bound(state, idx, key):
    return objectives.iwae_bound(run.variables(state), _rows(dataset, idx), key, model=run.model,
                                 pz=run.pz(state), num_samples=num_samples,
                                 chunk_size=min(num_samples, 100))

  total = 0.0
  for i, (idx, keep) in enumerate(_chunks(num, size)):
    total += float(np.sum(np.asarray(bound(state, jnp.asarray(idx), jax.random.fold_in(key, i)))[:keep]))
  return total / num


_STANDARD_METRICS = ("factor_vae_score", "beta_vae_score", "mig", "dci", "sap", "modularity_explicitness")


def _dsprites_metrics(run, state, data, z_mean) -> dict:
  """The paper's score on every evaluation point, and disentanglement_lib's suite (seed 0, its defaults).

  When the evaluation set is the whole factor grid, the suite samples from a `CodeTable` of the codes already
  computed (dSprites is noiseless and the representation is deterministic, so this equals encoding the sampled
  images again); on a held-out split it encodes the sampled images.
  """
  c = run.config
  gt = data.ground_truth
  factors = gt.factor_classes if data.eval.indices is None else gt.factor_classes[np.asarray(data.eval.indices)]
  transform = None
  if c.prior.name == "student_t":
    transform = functools.partial(metrics.student_t_to_gaussian, df=c.prior.df)
  out = metrics.paper_disentanglement(z_mean, factors, num_votes=c.eval.paper_votes,
                                      num_points=c.eval.paper_points, transform=transform, random_state=c.seed)
  if c.eval.standard_metrics:
    if data.eval.indices is None:
      source, representation = metrics.CodeTable(z_mean, factors, gt.factor_sizes), None
    else:
      source, representation = gt, _representation_fn(run, state)
    for name in _STANDARD_METRICS:
      out.update(getattr(metrics, name)(source, representation, random_state=0))
  return out


def _representation_fn(run, state):
  """numpy images [n, 64, 64, 1] -> encoder means [n, D] (disentanglement_lib's representation)."""
  encode = jax.jit(lambda x: run.model.encode(run.variables(state), x, train=False)[0].mean())
  return lambda x: np.asarray(encode(jnp.asarray(x, jnp.float32)))


def evaluate(run, state, data, workdir: str | None) -> dict:
  """All metrics of the run's experiment (and its figures when `workdir` is given)."""
  c = run.config
  key = jax.random.fold_in(jax.random.key(c.seed), 2**31 - 1)   # evaluation's own stream
  t0 = time.time()
  out = elbo_terms(run, state, data.eval, c.eval.iwae_examples or data.eval.num_examples, key)
  if c.eval.iwae_samples:
    out["test/iwae"] = iwae(run, state, data.eval, c.eval.iwae_examples, c.eval.iwae_samples,
                            jax.random.fold_in(key, 1))
  z_mean = encode_means(run, state, data.eval)
  if c.experiment == "dsprites":
    out.update({f"test/{k}": v for k, v in _dsprites_metrics(run, state, data, z_mean).items()})
  elif c.experiment == "fashion_mnist":
    out["test/hoyer_sparsity"] = metrics.hoyer_sparsity(z_mean)
    magnitude = metrics.latent_magnitude_per_class(z_mean, data.labels)
    out["test/per_class_magnitude"] = magnitude.tolist()
  if c.prior.name == "anisotropic":
    out["prior/variances"] = np.asarray(run.pz(state).variance()).tolist()
  out["eval_seconds"] = time.time() - t0
  if workdir is not None and c.eval.figures and jax.process_index() == 0:
    figures.draw_all(run, state, data, z_mean, os.path.join(workdir, "figures"))
  return out


def evaluate_and_report(run, state, data, workdir: str) -> dict:
  """Evaluates, appends the metrics to metrics.jsonl, writes summary.json and logs a summary."""
  out = evaluate(run, state, data, workdir)
  step = int(state.step)
  writer_lib.MetricWriter(workdir).write(step, {k: v for k, v in out.items() if np.ndim(v) == 0})
  summary = {"step": step, "config": run.config.to_dict(), "metrics": out}
  writer_lib.write_json(os.path.join(workdir, "summary.json"), summary)
  logging.info("Evaluation at step %d:\n  %s", step, "\n  ".join(
      f"{k} = {v:.4f}" for k, v in sorted(out.items()) if np.ndim(v) == 0))
  return summary
