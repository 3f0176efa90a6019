"""The run config: the settings every experiment shares, the smoke preset, and checks of every value.

`make_config(task, prior, smoke)` builds one experiment's preset: the common fields below, then
`task.preset` (the authors' settings for that experiment, docs/science.md §5), then the smoke shrinking.
"""

import math

import ml_collections
import numpy as np

from decompvae import divergences
from decompvae import inference
from decompvae import priors
from decompvae import vae
from experiments.runner import task as task_lib
from experiments.runner.errors import RunError

DEFAULT_CACHE_DIR = "~/.cache/decompvae"


def make_config(task: task_lib.Task, prior: str | None = None, smoke: bool = False) -> ml_collections.ConfigDict:
  """The preset of `task` with `prior` (default: the task's first); `smoke=True` shrinks it to seconds."""
  prior = task.priors[0] if prior is None else prior
  if prior not in task.priors:
    raise RunError(f"prior {prior!r} is not available for {task.name}; choose one of {list(task.priors)}")
  c = ml_collections.ConfigDict()
  c.experiment = task.name
  c.seed = 0                          # the only seed: init, data order and step keys derive from it

  c.data = ml_collections.ConfigDict()
  c.data.source = "auto"              # where the data come from; see the experiment's --data_source
  c.data.path = ""                    # a data file or directory (the experiment says which)
  c.data.data_dir = ""                # TFDS data_dir ("" = none: TFDS is used only when given)
  c.data.download = False             # let TFDS download (e.g. on Cloud TPU); never implied
  c.data.cache_dir = DEFAULT_CACHE_DIR  # rendered data are cached here ("" = render, do not cache)
  c.data.max_examples = 0             # use only N training examples, spread over the set (0 = all)
  c.data.seed = 0                     # drawn data and splits: one draw for every run seed (as the authors)

  c.model = ml_collections.ConfigDict()
  c.model.name = task.name            # the architecture (docs/science.md §4)
  c.model.latent_dim = 10

  c.prior = ml_collections.ConfigDict()
  c.prior.name = prior
  c.prior.learnable = False           # anisotropic: learn the variances with the model
  c.prior.init = "pca"                # anisotropic: "pca" (top-D data eigenvalues) or "uniform" (all equal)
  c.prior.pca_examples = 10_000       # anisotropic "pca": training examples used for the covariance
  c.prior.scale = 1.0                 # anisotropic: variances sum to scale * latent_dim
  c.prior.df = 9.0                    # student_t: ν (the authors' dSprites run; their code default is 2)
  c.prior.gamma = 0.8                 # sparse: spike weight γ (0 gives N(0, I))
  c.prior.sigma0 = 0.05               # sparse: spike standard deviation σ₀
  c.prior.variance = 0.03             # mixture: component variance s²

  c.objective = ml_collections.ConfigDict()
  c.objective.beta = 1.0              # overlap: weight of KL(q(z|x) ‖ p(z))
  c.objective.alpha = 0.0             # structure: weight of D(q(z), p(z))
  c.objective.divergence = "mmd_dim"  # mmd_dim | mmd_full | kl_inclusive
  c.objective.analytic_kl = True      # closed-form KL when prior and posterior are Gaussian

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 5e-4        # Adam with AMSGrad as PyTorch implements it, b1 = 0.9, b2 = 0.999
  c.optim.batch_size = 64             # global batch, split over the devices
  c.optim.num_epochs = 20
  c.optim.num_steps = 0               # > 0 overrides num_epochs

  c.train = ml_collections.ConfigDict()
  c.train.steps_per_call = 1          # > 1 fuses that many steps into one device call (GPU/TPU)
  c.train.num_devices = 0             # data-parallel over the first N devices (0 = all that split the batch)
  c.train.log_every_steps = 0         # progress line and metrics row every N steps (0 = about 20 per run)
  c.train.checkpoint_every_steps = 10_000
  c.train.checkpoint_every_secs = 600.0
  c.train.max_to_keep = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.every_epochs = 0             # also evaluate every N epochs (0 = only at the end)
  c.eval.iwae_samples = inference.IWAE_SAMPLES    # K of the IWAE log-likelihood (0 = skip it); docs/science.md §3.6
  c.eval.iwae_examples = inference.IWAE_EXAMPLES  # evaluation points (a seeded random subset) for the ELBO and IWAE
  c.eval.figures = True

  task.preset(c)
  if smoke:
    _shrink(c)
    task.smoke(c)
  return c


def _shrink(c: ml_collections.ConfigDict) -> None:
  """Seconds-long settings for smoke tests and the offline demo (a check, not a result)."""
  c.optim.num_steps = 6
  c.optim.batch_size = min(c.optim.batch_size, 32)
  c.train.log_every_steps = 2
  c.train.checkpoint_every_steps = 3
  c.eval.iwae_samples = 8
  c.eval.iwae_examples = 64


def _checks(c: ml_collections.ConfigDict, task: task_lib.Task):
  """(field, ok, requirement) for every field with a constraint."""
  p, o = c.prior, c.objective
  finite = lambda x: isinstance(x, (int, float)) and math.isfinite(x)
  return [
      ("seed", isinstance(c.seed, int) and c.seed >= 0, "a non-negative integer"),
      ("data.source", c.data.source in task.data_sources, f"one of {list(task.data_sources)}"),
      ("data.max_examples", c.data.max_examples >= 0, ">= 0"),
      ("data.seed", isinstance(c.data.seed, int) and c.data.seed >= 0, "a non-negative integer"),
      ("model.latent_dim", isinstance(c.model.latent_dim, int) and c.model.latent_dim >= 1,
       "a positive integer"),
      ("prior.name", p.name in task.priors, f"one of {list(task.priors)}"),
      ("prior.learnable", not p.learnable or p.name == "anisotropic", "False unless the prior is anisotropic"),
      ("prior.init", p.init in ("pca", "uniform"), "'pca' or 'uniform'"),
      ("prior.pca_examples", p.pca_examples >= 2, ">= 2"),
      ("prior.scale", finite(p.scale) and p.scale > 0, "> 0"),
      ("prior.df", finite(p.df) and p.df > 0, "> 0"),
      ("prior.gamma", finite(p.gamma) and 0 <= p.gamma <= 1, "in [0, 1]"),
      ("prior.sigma0", finite(p.sigma0) and p.sigma0 > 0, "> 0"),
      ("prior.variance", finite(p.variance) and p.variance > 0, "> 0"),
      ("objective.beta", finite(o.beta) and o.beta >= 0, "a finite number >= 0 (the weight of a KL)"),
      ("objective.alpha", finite(o.alpha) and o.alpha >= 0, "a finite number >= 0 (the weight of a divergence)"),
      ("objective.divergence", o.divergence in divergences.DIVERGENCES, f"one of {list(divergences.DIVERGENCES)}"),
      ("optim.learning_rate", finite(c.optim.learning_rate) and c.optim.learning_rate > 0, "> 0"),
      ("optim.batch_size", c.optim.batch_size >= 1, ">= 1"),
      ("optim.num_steps", c.optim.num_steps >= 0, ">= 0 (0: train for optim.num_epochs)"),
      ("optim.num_epochs", c.optim.num_steps > 0 or c.optim.num_epochs >= 1, ">= 1 when optim.num_steps is 0"),
      ("train.steps_per_call", c.train.steps_per_call >= 1, ">= 1"),
      ("train.num_devices", c.train.num_devices >= 0, ">= 0 (0: all that split the batch)"),
      ("train.log_every_steps", c.train.log_every_steps >= 0, ">= 0 (0: about 20 lines per run)"),
      ("train.checkpoint_every_steps", c.train.checkpoint_every_steps >= 1, ">= 1"),
      ("train.checkpoint_every_secs", c.train.checkpoint_every_secs > 0, "> 0"),
      ("train.max_to_keep", c.train.max_to_keep >= 1, ">= 1"),
      ("eval.every_epochs", c.eval.every_epochs >= 0, ">= 0"),
      ("eval.iwae_samples", c.eval.iwae_samples >= 0, ">= 0 (0: skip the IWAE bound)"),
      ("eval.iwae_examples", c.eval.iwae_examples >= 0, ">= 0 (0: every evaluation point)"),
  ]


def check(c: ml_collections.ConfigDict, task: task_lib.Task) -> None:
  """Raises RunError naming every field whose value is not allowed (before anything is written).

  Beyond each field's range, the model and the prior are built once (without data), so settings that do
  not fit together (e.g. the pinwheel mixture prior in 3 dimensions) are refused here too.
  """
  bad = [f"{field}={get(c, field)!r}: must be {need}" for field, ok, need in _checks(c, task) if not ok]
  if bad:
    raise RunError("invalid settings:\n  " + "\n  ".join(bad))
  p, d = c.prior, c.model.latent_dim
  hp = {"isotropic": {}, "anisotropic": {"logits": np.zeros(d, np.float32), "scale": p.scale},
        "student_t": {"df": p.df}, "sparse": {"gamma": p.gamma, "sigma0": p.sigma0},
        "mixture": {"variance": p.variance}}[p.name]
  try:
    vae.make_model(c.model.name, d, **task.model_options(c))
    priors.make_prior(p.name, d, **hp)
  except ValueError as e:
    raise RunError(f"invalid settings: {e}") from e


def get(c: ml_collections.ConfigDict, path: str):
  """The value of the field at the dotted `path`, e.g. get(c, "objective.beta")."""
  for part in path.split("."):
    c = c[part]
  return c


def flatten(d: dict, prefix: str = "") -> dict:
  """{"a.b": value} for the nested dict {"a": {"b": value}}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
