"""Experiment presets mirroring the authors' runs (SPEC §5): `get_config(experiment, prior, smoke=False)`."""

import ml_collections

EXPERIMENT_PRIORS = {
    "dsprites": ("isotropic", "anisotropic", "student_t"),
    "fashion_mnist": ("sparse", "isotropic"),
    "pinwheel": ("mixture", "isotropic"),
}


def get_config(experiment: str, prior: str | None = None, smoke: bool = False) -> ml_collections.ConfigDict:
  """The preset for one experiment and prior; `smoke=True` shrinks it to seconds on a CPU."""
  if experiment not in EXPERIMENT_PRIORS:
    raise ValueError(f"unknown experiment {experiment!r}; choose one of {sorted(EXPERIMENT_PRIORS)}")
  allowed = EXPERIMENT_PRIORS[experiment]
  prior = allowed[0] if prior is None else prior
  if prior not in allowed:
    raise ValueError(f"prior {prior!r} is not available for {experiment}; choose one of {list(allowed)}")

  c = ml_collections.ConfigDict()
  c.experiment = experiment
  c.seed = 0                          # the only seed: init, data order and step keys derive from it

  c.data = ml_collections.ConfigDict()
  c.data.source = "auto"              # dsprites: auto|render|npz|tfds; fashion_mnist: auto|idx|tfds
  c.data.path = ""                    # dSprites .npz file, or the Fashion-MNIST IDX directory
  c.data.data_dir = ""                # TFDS data_dir ("" = TFDS default)
  c.data.download = False             # let TFDS download (e.g. on Cloud TPU); never implied
  c.data.cache_dir = ""               # rendered-dSprites cache ("" = ~/.cache/decompvae)
  c.data.heldout_fraction = 0.0       # dSprites: 0 = train and evaluate on all images (the authors)
  c.data.max_examples = 0             # use only the first N training examples (0 = all); for smoke runs

  c.model = ml_collections.ConfigDict()
  c.model.name = experiment           # architecture of SPEC §4
  c.model.latent_dim = {"dsprites": 10, "fashion_mnist": 50, "pinwheel": 2}[experiment]

  c.prior = ml_collections.ConfigDict()
  c.prior.name = prior
  c.prior.learnable = False           # anisotropic: learn the variances with the model
  c.prior.init = "pca"                # anisotropic: "pca" (top-D data eigenvalues) or "uniform" (all equal)
  c.prior.pca_examples = 10_000       # anisotropic "pca": images used for the covariance
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
  c.optim.learning_rate = 5e-4        # Adam with AMSGrad, b1 = 0.9, b2 = 0.999
  c.optim.batch_size = 64             # global batch, split over all devices
  c.optim.num_epochs = 20
  c.optim.num_steps = 0               # > 0 overrides num_epochs

  c.train = ml_collections.ConfigDict()
  c.train.steps_per_call = 1          # > 1 fuses that many steps into one jitted call
  c.train.num_devices = 0             # data-parallel over the first N devices (0 = all that split the batch)
  c.train.log_every_steps = 500
  c.train.checkpoint_every_steps = 10_000
  c.train.checkpoint_every_secs = 600.0
  c.train.max_to_keep = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.every_epochs = 0             # also evaluate every N epochs (0 = only at the end)
  c.eval.iwae_samples = 1000          # K of the IWAE marginal log-likelihood
  c.eval.iwae_examples = 10_000       # test points for the IWAE bound (0 = all)
  c.eval.paper_votes = 20_000         # paper's disentanglement score: M votes ...
  c.eval.paper_points = 1000          # ... of L points each
  c.eval.standard_metrics = True      # dSprites: FactorVAE, BetaVAE, MIG, DCI, SAP (disentanglement_lib)
  c.eval.figures = True

  if experiment == "fashion_mnist":
    c.optim.batch_size, c.optim.num_epochs = 500, 80
    c.objective.alpha = 100.0 if prior == "sparse" else 0.0
    c.eval.iwae_examples = 0
    if prior == "isotropic":
      c.prior.gamma = 0.0
  elif experiment == "pinwheel":
    c.optim.learning_rate, c.optim.batch_size, c.optim.num_epochs = 1e-3, 400, 500
    c.objective.divergence = "kl_inclusive"
    c.objective.beta, c.objective.alpha = 0.0, 1.0   # the α-β run; --beta=1 --alpha=0 is the β-VAE one
    c.train.log_every_steps = 50
    c.eval.iwae_examples = 0
  if smoke:
    _shrink(c)
  return c


def _shrink(c: ml_collections.ConfigDict) -> None:
  """Seconds-long settings for smoke tests and the offline demo."""
  c.data.max_examples = {"dsprites": 2048, "fashion_mnist": 2000, "pinwheel": 0}[c.experiment]
  c.prior.pca_examples = 512
  c.optim.num_steps = 6
  c.optim.batch_size = min(c.optim.batch_size, 32) if c.experiment != "pinwheel" else 400
  c.train.log_every_steps = 2
  c.train.checkpoint_every_steps = 3
  c.eval.iwae_samples = 8
  c.eval.iwae_examples = 64
  c.eval.paper_votes = 200
  c.eval.paper_points = 50
  c.eval.standard_metrics = False
