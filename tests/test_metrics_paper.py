"""Tests of the paper's disentanglement score and the Student-t change of measure."""
import functools

import numpy as np
import pytest
from scipy import special, stats

from decompvae.metrics import paper_disentanglement, student_t_to_gaussian
from decompvae.metrics import paper_score

SIZES = (4, 5, 6)
CLASSES = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(-1, 3)
PERFECT = (CLASSES - CLASSES.mean(0)) / CLASSES.std(0)


def test_perfect_code_scores_one_raw_and_mapped():
  scores = paper_disentanglement(3.0 * PERFECT + 1.0, CLASSES, num_votes=500, num_points=10,
                                 transform=functools.partial(student_t_to_gaussian, df=3.0))
  assert scores == {"disentanglement": 1.0, "disentanglement_mapped": 1.0}


def test_perfect_beats_rotated_beats_noise():
  rotated = PERFECT @ stats.special_ortho_group.rvs(3, random_state=1)
  noise = np.random.RandomState(1).randn(*PERFECT.shape)
  scores = [paper_disentanglement(z, CLASSES, num_votes=2000, num_points=20)["disentanglement"]
            for z in (PERFECT, rotated, noise)]
  assert scores[0] == 1.0 > scores[1] > scores[2] + 0.1


def test_matches_limit_of_brute_force_votes_when_groups_are_smaller_than_L():
  # With L ≥ every group, each (factor, value) always gives the same d*; the score then converges to
  # Σ_d max_k Σ_v 1[d*(k, v) = d] / (K · n_k) as M grows.
  z = PERFECT @ stats.special_ortho_group.rvs(3, random_state=1) + 0.3 * np.random.RandomState(2).randn(120, 3)
  z_std = z / z.std(0)
  table = np.zeros((3, 3))
  for k, n_k in enumerate(SIZES):
    for v in range(n_k):
      d_star = np.argmin(np.var(z_std[CLASSES[:, k] == v], axis=0, ddof=1))
      table[d_star, k] += 1.0 / (3 * n_k)
  expected = table.max(axis=1).sum()
  got = paper_disentanglement(z, CLASSES, num_votes=20_000, num_points=1000, random_state=3)["disentanglement"]
  assert abs(got - expected) < 0.015


def test_collapsed_dimensions_never_win():
  z = np.concatenate([PERFECT, np.full((120, 2), 0.1)], axis=1).astype(np.float32)  # float32 std of 0.1s ≠ 0
  assert paper_disentanglement(z, CLASSES, num_votes=300, num_points=10)["disentanglement"] == 1.0
  assert paper_disentanglement(np.ones((120, 3)), CLASSES, num_votes=10)["disentanglement"] == 0.0


def test_invalid_inputs_raise():
  with pytest.raises(ValueError, match="single value"):
    paper_disentanglement(PERFECT, np.stack([CLASSES[:, 0], np.zeros(120, int)], 1), num_votes=10)
  lonely = CLASSES.copy()
  lonely[0, 0] = 99  # a value with one point: its variance is meaningless
  with pytest.raises(ValueError, match="at least 2 points"):
    paper_disentanglement(PERFECT, lonely, num_votes=10)
  with pytest.raises(ValueError, match="NaN"):
    paper_disentanglement(np.where(PERFECT > 1, np.nan, PERFECT), CLASSES, num_votes=10)
  with pytest.raises(ValueError, match="num_points must be at least 2"):
    paper_disentanglement(PERFECT, CLASSES, num_points=1)


@pytest.mark.parametrize("n,size", [(50, 20), (1000, 30), (8, 20)])
def test_subsets_are_uniform_without_replacement(n, size):
  rng = np.random.RandomState(0)
  idx = paper_score._subsets(rng, n, size, 4000)
  assert idx.shape == (4000, min(n, size))
  assert all(np.unique(row).size == row.size for row in idx[:200])
  counts = np.bincount(idx.ravel(), minlength=n)
  if n > size:  # each element is in a subset with probability size / n
    assert stats.chisquare(counts).pvalue > 1e-3
  else:
    assert np.all(counts == 4000)


def test_student_t_to_gaussian_matches_closed_form_for_cauchy():
  z = np.array([-1e6, -30.0, -2.0, -0.1, 0.0, 0.5, 3.0, 1e6])
  loc, scale = 0.5, 2.0
  u = (z - loc) / scale
  expected = loc + scale * special.ndtri(0.5 + np.arctan(u) / np.pi)  # Cauchy CDF = 1/2 + arctan(u)/π
  got = student_t_to_gaussian(z, df=1.0, loc=loc, scale=scale)
  finite = np.abs(z) < 1e3  # far out the closed form above loses the tail; ours stays finite and monotone
  np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-12)
  assert np.all(np.isfinite(got)) and np.all(np.diff(got) > 0)


def test_student_t_to_gaussian_pushes_t_samples_to_the_gaussian():
  df, loc, scale = np.array([2.0, 9.0]), np.array([0.0, -1.0]), np.array([1.0, 0.5])
  z = stats.t.rvs(df, loc, scale, size=(20_000, 2), random_state=0)
  mapped = student_t_to_gaussian(z, df, loc, scale)
  np.testing.assert_allclose(mapped, stats.norm.ppf(stats.t.cdf(z, df, loc, scale), loc, scale), atol=1e-8)
  for d in range(2):
    assert stats.kstest(mapped[:, d], stats.norm(loc[d], scale[d]).cdf).pvalue > 1e-3
