"""Independence (disentanglement) on dSprites: the paper's Figure 3 and Table 1 (docs/science.md §5).

  python -m experiments.dsprites --prior=isotropic                      # N(0, I), β = 1
  python -m experiments.dsprites --prior=anisotropic                    # fixed variances from PCA
  python -m experiments.dsprites --prior=anisotropic --learn_prior      # learned variances
  python -m experiments.dsprites --prior=student_t --df=9               # Student-t, ν = 9
  python -m experiments.dsprites --prior=anisotropic --sweep.beta=1,2,4,8 --sweep.seeds=3   # the β sweep

Data: the real file with --data_source=npz --data_path=dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz,
TFDS `dsprites` with --data_source=tfds --data_dir=DIR, otherwise rendered offline and cached in
~/.cache/decompvae (--config.data.cache_dir). Re-running a command resumes its --workdir.
"""

import jax
import numpy as np
from absl import logging
from etils import epy

from decompvae import data as data_lib
from decompvae.data import pipeline
from experiments.runner import cli
from experiments.runner import figures
from experiments.runner import task as task_lib

with epy.lazy_imports():   # scikit-learn and SciPy (~1 s) load at evaluation: a bad flag fails at once
  from decompvae import metrics

# The smoke preset's coarse grid: every shape and scale, a subset of the rest (3·6·10·8·8 = 11,520 images).
_COARSE_STRIDES = (1, 1, 4, 4, 4)


def standard_metrics() -> dict:
  """disentanglement_lib's suite: the name of each metric's family in the summary, and its function."""
  return {"factor_vae": metrics.factor_vae_score, "beta_vae": metrics.beta_vae_score, "mig": metrics.mig,
          "dci": metrics.dci, "sap": metrics.sap, "modularity": metrics.modularity_explicitness}


def preset(c) -> None:
  c.model.latent_dim = 10
  c.data.heldout_fraction = 0.0       # 0: train and evaluate on every image (the authors); else held out
  c.eval.paper_votes = 20_000         # the paper's disentanglement score: M votes ...
  c.eval.paper_points = 1000          # ... of L points each
  c.eval.standard_metrics = True      # disentanglement_lib's FactorVAE, BetaVAE, MIG, DCI, SAP, modularity


def smoke(c) -> None:
  c.data.source = "coarse"
  c.data.max_examples = 2048
  c.prior.pca_examples = 512
  c.eval.paper_votes = 200
  c.eval.paper_points = 50
  c.eval.standard_metrics = False


def coarse_grid() -> data_lib.DSprites:
  """A small full-factorial dSprites (11,520 images), rendered in about a second: the smoke preset's data."""
  sizes = tuple(s // k for s, k in zip(data_lib.FACTOR_SIZES, _COARSE_STRIDES))
  grid = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), 1) * np.asarray(_COARSE_STRIDES)
  tables = tuple(t[::k] for t, k in zip(data_lib.factor_value_tables(), _COARSE_STRIDES))
  logging.info("dSprites source: rendered coarse grid %s (smoke preset)", sizes)
  return data_lib.DSprites(data_lib.render_dsprites(grid), factor_sizes=sizes, value_tables=tables,
                           source="render-coarse")


def load_data(c, mesh) -> task_lib.TaskData:
  if c.data.source == "coarse":
    gt = coarse_grid()
  else:
    try:
      gt = data_lib.load_dsprites(c.data.source, path=c.data.path or None, data_dir=c.data.data_dir or None,
                                  cache_dir=c.data.cache_dir or None, download=c.data.download)
    except data_lib.DataError as e:
      raise data_lib.DataError(f"{e}\n(flags: --data_source=npz --data_path=FILE for the real file, "
                               "--data_source=tfds --data_dir=DIR for TFDS, --data_source=render offline)") from e
  n = gt.num_examples
  if c.data.heldout_fraction:
    train_idx, eval_idx = pipeline.holdout_split(n, c.data.heldout_fraction, seed=c.data.seed)
  else:
    train_idx, eval_idx = np.arange(n), None   # the authors train and evaluate on every image
  if c.data.max_examples and c.data.max_examples < len(train_idx):
    train_idx = train_idx[np.linspace(0, len(train_idx) - 1, c.data.max_examples).round().astype(np.int64)]
  train = pipeline.to_device(gt, indices=None if len(train_idx) == n else train_idx, mesh=mesh)
  evaluation = pipeline.to_device(gt, indices=eval_idx, mesh=mesh) if eval_idx is not None else train
  # The PCA subset does not depend on the run's seed: the prior's variances are a property of the data.
  pca_idx = np.sort(np.random.default_rng(0).choice(train_idx, min(c.prior.pca_examples, len(train_idx)),
                                                    replace=False))
  return task_lib.TaskData(train, evaluation, c.optim.batch_size, gt.images(train_idx[:1]), ground_truth=gt,
                           pca_source=gt.images(pca_idx).reshape(len(pca_idx), -1))


def compute_metrics(ev) -> dict:
  """The paper's score on every evaluation point, and disentanglement_lib's suite (seed 0, its defaults).

  The suite samples images from the whole factor grid; it looks their codes up in a `CodeTable` of E[z|x] of
  every image of the grid, each image encoded once (`grid_means`) instead of rendered and encoded again per
  sampled point (2.9 M encoder passes at the default sizes). The numbers are the same: dSprites is noiseless,
  the representation deterministic, and the encoder gives every image the same mean in any batch (bitwise
  on XLA:CPU; tests/test_inference.py and tests/test_experiments.py check both paths against each other).
  """
  c, gt, indices = ev.run.config, ev.data.ground_truth, ev.data.eval.indices
  factors = gt.factor_classes if indices is None else gt.factor_classes[np.asarray(indices)]
  transform = None
  if c.prior.name == "student_t":
    transform = lambda z: metrics.student_t_to_gaussian(z, df=c.prior.df)
  paper = ev.part("the paper's disentanglement score", lambda: metrics.paper_disentanglement(
      ev.z_mean, factors, num_votes=c.eval.paper_votes, num_points=c.eval.paper_points, transform=transform,
      random_state=c.seed))
  out = {f"paper/{k}": v for k, v in paper.items()}
  if c.eval.standard_metrics:
    table = metrics.CodeTable(grid_means(ev), gt.factor_classes, gt.factor_sizes)
    suite = standard_metrics()
    for i, (family, metric) in enumerate(suite.items()):
      result = ev.part(f"{family} ({i + 1}/{len(suite)} of disentanglement_lib's suite)",
                       lambda metric=metric: metric(table, None, random_state=0))
      out.update({f"{family}/{k}": v for k, v in result.items()})
  return out


def grid_means(ev) -> np.ndarray:
  """E[z|x] of every image of the factor grid, in grid order: the evaluation points' from `ev.z_mean`, the
  others (a held-out split's training images) encoded now."""
  data, z_mean = ev.data.eval, ev.z_mean
  if data.indices is None:
    return z_mean
  n = ev.data.ground_truth.num_examples
  eval_idx = np.asarray(data.indices)
  rest = np.setdiff1d(np.arange(n), eval_idx).astype(np.int32)
  means = np.empty((n, z_mean.shape[1]), z_mean.dtype)
  means[eval_idx] = z_mean
  if len(rest):
    others = data.replace(indices=jax.device_put(rest, data.storage.sharding))
    means[rest] = ev.dataset_means(others, f"E[z|x] of the other {len(rest)} images of the grid")
  return means


TASK = task_lib.Task(
    name="dsprites", usage=__doc__, priors=("isotropic", "anisotropic", "student_t"),
    data_sources=("auto", "render", "coarse", "npz", "tfds"), preset=preset, smoke=smoke, load_data=load_data,
    metrics=compute_metrics, figures=figures.image_figures,
    shortcuts={"learn_prior": task_lib.Shortcut("prior.learnable", bool, "Learn the anisotropic prior's variances."),
               "df": task_lib.Shortcut("prior.df", float, "Student-t degrees of freedom ν.")})

if __name__ == "__main__":
  cli.run(TASK)
