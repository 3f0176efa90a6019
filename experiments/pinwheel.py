"""Clustering on pinwheel data with a 4-component mixture prior: the paper's Figure 4 (docs/science.md §5).

  python -m experiments.pinwheel --prior=mixture --beta=0 --alpha=1   # α-β objective, inclusive KL (default)
  python -m experiments.pinwheel --prior=mixture --beta=1 --alpha=0   # β-VAE objective
  python -m experiments.pinwheel --sweep.beta=0.1,1,4,16 --alpha=0    # raising β: clusters collapse
  python -m experiments.pinwheel --sweep.alpha=0.1,1,4,16 --beta=0    # raising α: four clusters kept

Data: 400 training and 400 test points drawn from the pinwheel distribution, one draw (--config.data.seed)
for every run seed, as the authors used one draw for all their runs.
"""

import os

import jax
import numpy as np
from etils import epy

from decompvae import data as data_lib
from decompvae.data import pipeline
from experiments.runner import cli
from experiments.runner import figures
from experiments.runner import task as task_lib

with epy.lazy_imports():   # scikit-learn and SciPy (~1 s) load at evaluation: a bad flag fails at once
  from decompvae import metrics


def preset(c) -> None:
  c.model.latent_dim = 2
  c.model.depth = 1                   # hidden layers of the encoder and decoder MLPs
  c.model.width = 100                 # units per hidden layer
  c.optim.learning_rate, c.optim.batch_size, c.optim.num_epochs = 1e-3, 400, 500
  c.objective.divergence = "kl_inclusive"
  c.objective.beta, c.objective.alpha = 0.0, 1.0   # the α-β run; --beta=1 --alpha=0 is the β-VAE one
  c.eval.iwae_examples = 0            # all 400 test points


def smoke(c) -> None:
  c.optim.batch_size = 400


def load_data(c, mesh) -> task_lib.TaskData:
  (x_train, _), (x_test, y_test) = data_lib.load_pinwheel(c.data.seed)
  return task_lib.TaskData(pipeline.to_device(x_train, mesh=mesh), pipeline.to_device(x_test, mesh=mesh),
                           c.optim.batch_size, x_train[:1], labels=y_test)


def compute_metrics(ev) -> dict:
  """With the mixture prior, how the aggregate posterior clusters onto its components (docs/science.md §6).

  "clusters/nmi": NMI between the arms and the component most responsible for E[z|x]; "clusters/masses",
  "clusters/occupied" (components holding at least 10% of the mass) and "clusters/within_fraction" from 16
  samples of q(z|x) per test point, i.e. from the aggregate posterior; "clusters/modes": the number of modes
  of the aggregate posterior's density at the resolution of the prior's components (their std).
  """
  if ev.run.config.prior.name != "mixture":
    return {}
  data = ev.data.eval
  qz_x, _ = ev.run.model.encode(ev.run.variables(ev.state), data.decode(data.storage), train=False)
  z_samples = np.asarray(qz_x.sample(seed=jax.random.key(ev.run.config.seed), sample_shape=16))
  means = np.asarray(ev.run.pz(ev.state).components_distribution.mean())
  scores = metrics.clustering_scores(ev.z_mean, ev.data.labels, means, ev.run.config.prior.variance,
                                     z_samples=z_samples)
  scores["modes"] = metrics.aggregate_posterior_modes(np.asarray(qz_x.mean()), np.asarray(qz_x.stddev()),
                                                      resolution=np.sqrt(ev.run.config.prior.variance))
  return {f"clusters/{k}": v for k, v in scores.items()}


def aggregate_posterior(ev, path: str) -> str:
  """Aggregate posterior q(z) = mean_n q(z|x_n) on a grid (log scale), the prior, and E[z|x] by arm."""
  plt = figures.plt
  data, z_mean = ev.data.eval, ev.z_mean
  lim = float(np.max(np.abs(z_mean))) * 1.3 + 0.5
  g = np.linspace(-lim, lim, 120, dtype=np.float32)
  grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)

  @jax.jit   # one program: op by op, the encoder and both densities compiled ~30 primitives each time
  def log_densities(state, x, grid):
    qz_x, _ = ev.run.model.encode(ev.run.variables(state), x, train=False)
    log_q = jax.nn.logsumexp(qz_x.log_prob(grid[:, None, :]), axis=1) - np.log(x.shape[0])
    return log_q, ev.run.pz(state).log_prob(grid)

  log_q, log_p = jax.device_get(log_densities(ev.state, data.decode(data.storage), grid))
  fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
  for ax, values, title in ((axes[0], log_q, "log q(z), aggregate posterior"), (axes[1], log_p, "log p(z), prior")):
    im = ax.imshow(np.asarray(values).reshape(g.size, g.size), origin="lower", extent=(-lim, lim, -lim, lim),
                   vmin=float(np.max(values)) - 12.0, cmap="viridis")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
  axes[2].scatter(z_mean[:, 0], z_mean[:, 1], c=ev.data.labels, cmap="tab10", s=6)
  axes[2].set_xlim(-lim, lim), axes[2].set_ylim(-lim, lim), axes[2].set_aspect("equal")
  axes[2].set_title("E[z|x] of test points, coloured by arm")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path


TASK = task_lib.Task(
    name="pinwheel", usage=__doc__, priors=("mixture", "isotropic"), data_sources=("auto",), preset=preset,
    smoke=smoke, load_data=load_data, metrics=compute_metrics,
    figures=lambda ev, directory: [aggregate_posterior(ev, os.path.join(directory, "aggregate_posterior.png"))],
    model_options=lambda c: {"hidden": (c.model.width,) * c.model.depth})

if __name__ == "__main__":
  cli.run(TASK)
