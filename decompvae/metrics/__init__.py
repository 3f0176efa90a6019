"""Disentanglement, sparsity, clustering and representation metrics; numpy in, floats out, usable without our models."""
from decompvae.metrics.beta_vae import beta_vae_score
from decompvae.metrics.clustering import (aggregate_posterior_modes, cluster_alignment, clustering_scores, component_masses,
                                          component_responsibilities, occupied_components,
                                          within_component_fraction)
from decompvae.metrics.dci import dci, dci_completeness, dci_disentanglement, dci_from_codes, gbt_importance
from decompvae.metrics.factor_vae import factor_vae_score
from decompvae.metrics.mig import mig, mig_from_codes
from decompvae.metrics.modularity import modularity_explicitness, modularity_explicitness_from_codes
from decompvae.metrics.paper_score import paper_disentanglement, student_t_to_gaussian
from decompvae.metrics.sap import sap, sap_from_codes
from decompvae.metrics.sparsity import hoyer_sparsity, latent_magnitude_per_class
from decompvae.metrics.utils import CodeTable

__all__ = [
    "CodeTable", "aggregate_posterior_modes", "beta_vae_score", "cluster_alignment", "clustering_scores", "component_masses",
    "component_responsibilities", "dci", "dci_completeness", "dci_disentanglement", "dci_from_codes",
    "factor_vae_score", "gbt_importance", "hoyer_sparsity", "latent_magnitude_per_class", "mig", "mig_from_codes",
    "modularity_explicitness", "modularity_explicitness_from_codes", "occupied_components", "paper_disentanglement",
    "sap", "sap_from_codes", "student_t_to_gaussian", "within_component_fraction",
]
