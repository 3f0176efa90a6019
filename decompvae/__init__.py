"""decompvae: decomposition in VAEs (Mathieu et al., ICML 2019) in JAX — priors, objectives, models, metrics."""

from decompvae.divergences import DIVERGENCES
from decompvae.divergences import IMQ_SCALES
from decompvae.divergences import kl_inclusive
from decompvae.divergences import kl_qp
from decompvae.divergences import mmd_dim
from decompvae.divergences import mmd_full
from decompvae.objectives import beta_vae_objective
from decompvae.objectives import decomposition_objective
from decompvae.objectives import iwae_bound
from decompvae.objectives import vae_loss
from decompvae.priors import PRIORS
from decompvae.priors import init_prior_params
from decompvae.priors import make_prior
from decompvae.priors import pca_logits
from decompvae.train import TrainState
from decompvae.train import make_fused_steps
from decompvae.train import make_optimizer
from decompvae.train import scale_by_amsgrad_torch
from decompvae.train import make_train_step
from decompvae.vae import MODELS
from decompvae.vae import make_model

__version__ = "0.1.0"
