"""Tests of the clustering measures against the pinwheel mixture prior, on constructed codes."""
import numpy as np
import pytest

from decompvae import priors
from decompvae.metrics import (aggregate_posterior_modes, cluster_alignment, clustering_scores, component_masses, component_responsibilities,
                               occupied_components, within_component_fraction)

MEANS = np.array([[0.0, -1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
S2 = 0.03
ARMS = np.repeat(np.arange(4), 100)   # 100 points per pinwheel arm


def _at(component_N, noise=0.02, seed=0):
  """Codes at the given components' means plus small Gaussian noise."""
  rng = np.random.RandomState(seed)
  return MEANS[component_N] + noise * rng.randn(len(component_N), 2)


def test_responsibilities_by_hand():
  # s² = 1: at (0, -1) the squared distances to the means are 0, 4, 2, 2; at the origin all are 1.
  r = component_responsibilities(np.array([[0.0, -1.0], [0.0, 0.0]]), MEANS, 1.0)
  z = 1 + np.exp(-2) + 2 * np.exp(-1)
  np.testing.assert_allclose(r[0], [1 / z, np.exp(-2) / z, np.exp(-1) / z, np.exp(-1) / z], rtol=1e-12)
  np.testing.assert_allclose(r[1], 0.25, rtol=1e-12)
  # Per-component variances at the origin: r_k ∝ s_k^-2 exp(-1 / (2 s_k²)) in D = 2.
  s2 = np.array([0.5, 1.0, 2.0, 4.0])
  w = np.exp(-0.5 / s2) / s2
  np.testing.assert_allclose(component_responsibilities(np.zeros((1, 2)), MEANS, s2)[0], w / w.sum(), rtol=1e-12)


def test_responsibilities_match_the_mixture_prior():
  # r_nk = (1/K) N(z; μ_k, s²) / p(z), with p the library's mixture prior.
  z = np.random.RandomState(3).randn(50, 2)
  log_p = np.asarray(priors.make_prior("mixture", 2).log_prob(z), np.float64)
  log_nk = -0.5 * np.square(z[:, None] - MEANS).sum(-1) / S2 - np.log(2 * np.pi * S2)
  np.testing.assert_allclose(component_responsibilities(z, MEANS, S2), np.exp(log_nk - np.log(4) - log_p[:, None]),
                             rtol=2e-4, atol=1e-12)   # log_prob is float32


def test_four_clean_clusters():
  perm = np.array([2, 0, 3, 1])   # arm a sits at component perm[a]: NMI does not care which
  z = _at(perm[ARMS])
  assert cluster_alignment(z, ARMS, MEANS, S2) == pytest.approx(1.0, abs=1e-12)
  assert occupied_components(z, MEANS, S2) == 4
  np.testing.assert_allclose(component_masses(z, MEANS, S2), 0.25, atol=1e-6)
  assert within_component_fraction(z, MEANS, S2) == 1.0


def test_masses_by_hand_with_overlapping_components():
  # Codes exactly at the means, counts n = (10, 20, 30, 40), s² = 1: component 0 receives all of its own
  # points' weight 1/Z, e^-2/Z from component 1's points (distance² 4) and e^-1/Z from 2's and 3's (distance² 2).
  counts = np.array([10, 20, 30, 40])
  z = MEANS[np.repeat(np.arange(4), counts)]
  a, b = np.exp(-1), np.exp(-2)
  norm = 100 * (1 + 2 * a + b)
  expected = np.array([counts[0] + b * counts[1] + a * (counts[2] + counts[3]),
                       counts[1] + b * counts[0] + a * (counts[2] + counts[3]),
                       counts[2] + b * counts[3] + a * (counts[0] + counts[1]),
                       counts[3] + b * counts[2] + a * (counts[0] + counts[1])]) / norm
  np.testing.assert_allclose(component_masses(z, MEANS, 1.0), expected, rtol=1e-12)
  assert occupied_components(z, MEANS, 1.0, min_mass=0.25) == int(np.sum(expected >= 0.25))
  assert occupied_components(z, MEANS, 1.0, min_mass=0.25) == 2   # 0.2517 and 0.2945 pass, 0.2055 and 0.2483 not


def test_collapse_onto_one_mean():
  z = _at(np.full(400, 2))
  assert cluster_alignment(z, ARMS, MEANS, S2) == 0.0   # a constant assignment carries no information
  assert occupied_components(z, MEANS, S2) == 1
  np.testing.assert_allclose(component_masses(z, MEANS, S2), [0, 0, 1, 0], atol=1e-6)


def test_two_clusters():
  # Arms 0, 1 at component 0 and arms 2, 3 at component 1: c is a function of y, so I(y; c) = H(c) = log 2,
  # H(y) = log 4, NMI = log 2 / ((log 4 + log 2) / 2) = 2/3.
  z = _at(ARMS // 2)
  assert cluster_alignment(z, ARMS, MEANS, S2) == pytest.approx(2 / 3, abs=1e-12)
  assert occupied_components(z, MEANS, S2) == 2
  np.testing.assert_allclose(component_masses(z, MEANS, S2), [0.5, 0.5, 0, 0], atol=1e-6)


def test_blob_at_the_origin_splits_its_mass_but_lies_outside_every_component():
  z = 0.01 * np.random.RandomState(1).randn(400, 2)
  assert cluster_alignment(z, ARMS, MEANS, S2) < 0.05   # assignments follow the noise, not the arms
  np.testing.assert_allclose(component_masses(z, MEANS, S2), 0.25, atol=0.05)
  assert occupied_components(z, MEANS, S2) == 4        # the masses alone cannot tell this from four clusters
  assert within_component_fraction(z, MEANS, S2) == 0.0   # distance 1 = 5.8 s from every mean


def test_within_component_fraction_threshold():
  # D = 2: χ²_2(0.99) = -2 log 0.01 = 9.21; points at scaled squared distances 9.0 (inside) and 9.5 (outside).
  limit = -2 * np.log(0.01)
  assert 9.0 < limit < 9.5
  z = MEANS[[0, 1, 2, 3]] + np.sqrt(S2 * np.array([9.0, 9.5, 9.0, 9.5]))[:, None] * np.array([1.0, 0.0])
  assert within_component_fraction(z, MEANS, S2) == 0.5


def test_samples_of_any_leading_shape_give_the_aggregate_posterior_mass():
  # Masses from samples [S, N, D] equal those of the flattened samples; per-sample responsibilities averaged.
  rng = np.random.RandomState(2)
  samples = _at(ARMS // 2)[None] + 0.1 * rng.randn(3, 400, 2)
  flat = samples.reshape(-1, 2)
  np.testing.assert_allclose(component_masses(samples, MEANS, S2), component_masses(flat, MEANS, S2), rtol=1e-12)
  np.testing.assert_allclose(component_masses(flat, MEANS, S2),
                             component_responsibilities(flat, MEANS, S2).sum(0) / 1200, rtol=1e-12)
  scores = clustering_scores(_at(ARMS), ARMS, MEANS, S2, z_samples=samples)
  assert scores["nmi"] == pytest.approx(1.0)                    # from the means: four clusters
  assert scores["occupied"] == 2.0                               # from the samples: two
  np.testing.assert_allclose(scores["masses"], component_masses(samples, MEANS, S2), rtol=1e-12)
  assert scores["within_fraction"] == within_component_fraction(samples, MEANS, S2)


def test_rejects_bad_shapes_and_values():
  z = _at(ARMS)
  with pytest.raises(ValueError, match="component means"):
    component_masses(z, MEANS[:, :1], S2)
  with pytest.raises(ValueError, match="scalar or \\[4\\]"):
    component_masses(z, MEANS, [S2, S2])
  with pytest.raises(ValueError, match="positive"):
    component_masses(z, MEANS, 0.0)
  with pytest.raises(ValueError, match="labels"):
    cluster_alignment(z, ARMS[:10], MEANS, S2)
  with pytest.raises(ValueError, match="min_mass"):
    occupied_components(z, MEANS, S2, min_mass=0.0)


def test_aggregate_posterior_modes_count_what_the_figure_shows():
  means = np.array([[0.0, -1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
  rng = np.random.default_rng(0)
  four = np.repeat(means, 100, axis=0) + 0.05 * rng.standard_normal((400, 2))
  narrow = np.full((400, 2), 0.1)
  assert aggregate_posterior_modes(four, narrow) == 4
  assert aggregate_posterior_modes(four[:200], narrow[:200]) == 2          # arms 0 and 1 only
  blob = 0.05 * rng.standard_normal((400, 2))
  assert aggregate_posterior_modes(blob, np.full((400, 2), 0.5)) == 1
  # The same blob holds a quarter of the mass of each prior component: four "occupied", one mode.
  assert occupied_components(blob, means, 0.03) == 4
  # One broad Gaussian: one mode wherever it sits; two far apart: two.
  assert aggregate_posterior_modes(np.array([[3.0, 3.0]]), np.array([[0.7, 0.2]])) == 1
  assert aggregate_posterior_modes(np.array([[0.0, 0.0], [5.0, 0.0]]), np.full((2, 2), 0.5)) == 2
  with pytest.raises(ValueError, match="2-D codes"):
    aggregate_posterior_modes(np.zeros((3, 3)), np.ones((3, 3)))


def test_modes_at_the_prior_resolution_group_near_deterministic_codes():
  means = np.array([[0.0, -1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
  four = np.repeat(means, 100, axis=0) + 0.05 * np.random.default_rng(1).standard_normal((400, 2))
  spikes = np.full((400, 2), 0.01)                                     # σ → 0: codes make their own modes
  assert aggregate_posterior_modes(four, spikes) > 4
  assert aggregate_posterior_modes(four, spikes, resolution=np.sqrt(0.03)) == 4
  with pytest.raises(ValueError, match="resolution"):
    aggregate_posterior_modes(four, spikes, resolution=-1.0)
