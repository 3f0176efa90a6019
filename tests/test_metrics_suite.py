"""Tests of disentanglement_lib's metric suite: known answers, hand computations, random streams, edge cases."""
import functools
import warnings

import numpy as np
import pytest
from scipy import stats

from decompvae import metrics
from decompvae.metrics import utils

SIZES = (4, 5, 6)
CLASSES = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(-1, 3)
PERFECT = (CLASSES - CLASSES.mean(0)) / CLASSES.std(0)
ROTATED = PERFECT @ stats.special_ortho_group.rvs(3, random_state=1)
NOISE = np.random.RandomState(1).randn(*PERFECT.shape)

METRICS = {  # name -> (score of a code table), at small sizes
    "factor_vae": lambda d: metrics.factor_vae_score(d, num_train=500, num_eval=500,
                                                     num_variance_estimate=1000)["eval_accuracy"],
    "beta_vae": lambda d: metrics.beta_vae_score(d, num_train=500, num_eval=500)["eval_accuracy"],
    "mig": lambda d: metrics.mig(d, num_train=1000)["discrete_mig"],
    "sap": lambda d: metrics.sap(d, num_train=1000, num_test=500)["SAP_score"],
    "modularity": lambda d: metrics.modularity_explicitness(d, num_train=1000, num_test=500)["modularity_score"],
    "dci": lambda d: metrics.dci(d, num_train=200, num_test=200, n_jobs=1)["disentanglement"],
}


class FactorsAsObservations:
  """Toy ground truth whose observations are the factor classes themselves (any representation_fn applies)."""

  factor_sizes = SIZES

  def sample_observations_from_factors(self, factors, rng):
    del rng
    return factors.astype(np.float32)


@pytest.mark.parametrize("name", METRICS)
def test_perfect_beats_rotated_beats_noise(name):
  perfect, rotated, noise = (METRICS[name](metrics.CodeTable(z, CLASSES)) for z in (PERFECT, ROTATED, NOISE))
  assert perfect > rotated > noise


def test_known_values_of_a_perfect_code():
  data = metrics.CodeTable(PERFECT, CLASSES)
  assert metrics.factor_vae_score(data, num_train=300, num_eval=300, num_variance_estimate=500) == {
      "train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}
  assert metrics.beta_vae_score(data, num_train=300, num_eval=300) == {"train_accuracy": 1.0, "eval_accuracy": 1.0}
  dci = metrics.dci(data, num_train=300, num_test=300, n_jobs=1)
  assert dci["disentanglement"] > 0.99 and dci["completeness"] > 0.99
  assert dci["informativeness_train"] == dci["informativeness_test"] == 1.0


def _plugin_mi(a, b):
  joint = np.zeros((a.max() + 1, b.max() + 1))
  np.add.at(joint, (a, b), 1.0 / a.size)
  outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
  nz = joint > 0
  return np.sum(joint[nz] * np.log(joint[nz] / outer[nz]))


def test_mig_matches_a_hand_computation():
  rng = np.random.RandomState(0)
  y = np.stack([rng.randint(s, size=700) for s in SIZES], 1)
  z = np.concatenate([y + 0.2 * rng.randn(700, 3), rng.randn(700, 1)], 1)
  bins = np.zeros(z.shape, dtype=int)
  for d in range(4):  # 20 equal-width bins over the range, the maximum in the last bin
    width = (z[:, d].max() - z[:, d].min()) / 20
    bins[:, d] = np.minimum(((z[:, d] - z[:, d].min()) / width).astype(int), 19)
  mi = np.array([[_plugin_mi(bins[:, d], y[:, k]) for k in range(3)] for d in range(4)])
  entropy = np.array([_plugin_mi(y[:, k], y[:, k]) for k in range(3)])
  top = np.sort(mi, axis=0)
  expected = np.mean((top[-1] - top[-2]) / entropy)
  assert metrics.mig_from_codes(z, y)["discrete_mig"] == pytest.approx(expected, rel=1e-10)


def test_mig_of_the_identity_is_one_up_to_the_plugin_bias_of_the_other_dimensions():
  # Identity code of independent factors: I(z_k; v_k) = H(v_k) exactly (≤ 20 classes: one bin each), so the gap
  # is 1 minus the finite-sample mutual information of the best other (independent) factor.
  y = np.stack([np.random.RandomState(k).randint(s, size=5000) for k, s in enumerate(SIZES)], 1)
  entropy = np.array([_plugin_mi(y[:, k], y[:, k]) for k in range(3)])
  cross = np.array([max(_plugin_mi(y[:, j], y[:, k]) for j in range(3) if j != k) for k in range(3)])
  got = metrics.mig_from_codes(y.astype(float), y)["discrete_mig"]
  assert got == pytest.approx(np.mean(1 - cross / entropy), rel=1e-10)
  assert got > 0.99


def test_histogram_discretize_by_hand():
  z = np.array([[0.0, 5.0], [0.49, 5.0], [0.5, 5.0], [1.0, 5.0]])  # a constant v gets edges v - 0.5, v, v + 0.5
  np.testing.assert_array_equal(utils.histogram_discretize(z, 2), [[1, 2], [1, 2], [2, 2], [2, 2]])


def test_dci_formulas_by_hand():
  eye = np.eye(3)
  assert metrics.dci_disentanglement(eye) == pytest.approx(1.0, abs=1e-8)
  assert metrics.dci_completeness(eye) == pytest.approx(1.0, abs=1e-8)
  assert metrics.dci_disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-12)
  r = np.array([[3.0, 1.0], [0.0, 2.0]])  # codes × factors
  h = lambda p: -np.sum(p * np.log(p)) / np.log(2)  # noqa: E731
  expected_d = (4 / 6) * (1 - h(np.array([0.75, 0.25]))) + (2 / 6) * 1.0
  expected_c = (3 / 6) * 1.0 + (3 / 6) * (1 - h(np.array([1 / 3, 2 / 3])))
  assert metrics.dci_disentanglement(r) == pytest.approx(expected_d, abs=1e-9)
  assert metrics.dci_completeness(r) == pytest.approx(expected_c, abs=1e-9)
  assert metrics.dci_disentanglement(np.zeros((2, 2))) == pytest.approx(0.0, abs=1e-12)


def test_sap_continuous_is_the_squared_correlation_gap():
  rng = np.random.RandomState(0)
  y = rng.randn(500, 2)
  z = np.stack([y[:, 0] + 0.5 * rng.randn(500), y[:, 1] + rng.randn(500), rng.randn(500)], 1)
  r2 = np.array([[np.corrcoef(z[:, j], y[:, k])[0, 1] ** 2 for k in range(2)] for j in range(3)])
  top = np.sort(r2, axis=0)
  got = metrics.sap_from_codes(z, y, None, None, continuous_factors=True)["SAP_score"]
  assert got == pytest.approx(np.mean(top[-1] - top[-2]), rel=1e-10)


def test_array_bounds_draw_the_same_stream_as_one_call_per_bound():
  highs = [3, 1, 40, 2**31 - 1, 2**33]
  a, b = np.random.RandomState(5), np.random.RandomState(5)
  expected = np.concatenate([a.randint(h, size=7) for h in highs])
  np.testing.assert_array_equal(utils.randint(b, np.repeat(highs, 7)), expected)
  assert a.randint(10**9) == b.randint(10**9)


def test_sampling_order_is_disentanglement_libs():
  sizes = np.array(SIZES)
  rs = np.random.RandomState(0)
  expected = []
  for b in (16,) * 6 + (4,):  # generate_batch_factor_code: batches of 16, each drawn factor by factor
    expected.append(np.stack([rs.randint(s, size=b) for s in sizes], 1))
  _, factors = utils.sample_factor_code(FactorsAsObservations(), None, 100, np.random.RandomState(0))
  np.testing.assert_array_equal(factors, np.concatenate(expected))

  rs, ours = np.random.RandomState(1), np.random.RandomState(1)
  ks, batches = utils.sample_votes(ours, sizes, 3, 8, 2)
  for v in range(3):  # factor index, then each batch drawn factor by factor (the BetaVAE score's order)
    assert ks[v] == rs.randint(3)
    for batch in range(2):
      np.testing.assert_array_equal(batches[v, batch], np.stack([rs.randint(s, size=8) for s in sizes], 1))


def test_representation_fn_path_equals_the_code_table_path():
  rotation = stats.special_ortho_group.rvs(3, random_state=1)

  def encode(x):
    return (x - CLASSES.mean(0)) / CLASSES.std(0) @ rotation

  table = metrics.CodeTable(encode(CLASSES.astype(np.float32)), CLASSES)
  toy = FactorsAsObservations()
  kwargs = dict(num_train=300, num_eval=200)
  assert metrics.factor_vae_score(toy, encode, num_variance_estimate=300, **kwargs) == \
      metrics.factor_vae_score(table, num_variance_estimate=300, **kwargs)
  assert metrics.beta_vae_score(toy, encode, **kwargs) == metrics.beta_vae_score(table, **kwargs)
  assert metrics.mig(toy, encode, num_train=500) == metrics.mig(table, num_train=500)


def test_representation_calls_have_one_size_and_observations_render_in_order(monkeypatch):
  class NoisyObservations(FactorsAsObservations):  # draws random numbers: the rendering order matters
    def sample_observations_from_factors(self, factors, rng):
      return factors + rng.randn(*factors.shape)

  monkeypatch.setattr(utils, "MAX_POINTS_PER_CALL", 7)
  factors = utils.sample_factor_code(FactorsAsObservations(), None, 30, np.random.RandomState(0))[1]
  sizes = []
  codes = utils.encode_factors(NoisyObservations(), lambda x: sizes.append(len(x)) or 2 * x, factors,
                               np.random.RandomState(1))
  assert sizes == [7] * 5  # the last chunk of 2 is padded to 7
  rs = np.random.RandomState(1)
  expected = np.concatenate([2 * (factors[i:i + 7] + rs.randn(*factors[i:i + 7].shape)) for i in range(0, 30, 7)])
  np.testing.assert_array_equal(codes, expected)


def test_vote_groups_and_call_sizes_do_not_change_the_scores(monkeypatch):
  def encode(x):
    return (x - CLASSES.mean(0)) / CLASSES.std(0) @ stats.special_ortho_group.rvs(3, random_state=1) + 0.3 * x**2

  def scores():
    out = []
    for data, rep in ((metrics.CodeTable(encode(CLASSES.astype(np.float32)), CLASSES), None),
                      (FactorsAsObservations(), encode)):
      out.append(metrics.factor_vae_score(data, rep, num_train=300, num_eval=200, num_variance_estimate=300))
      out.append(metrics.beta_vae_score(data, rep, num_train=300, num_eval=200))
    return out

  default = scores()
  assert default[:2] == default[2:]  # the representation path equals the code table
  monkeypatch.setattr(utils, "MAX_POINTS_PER_GROUP", 1000)  # 15 votes of 64 points per group
  monkeypatch.setattr(utils, "MAX_POINTS_PER_CALL", 100)
  assert scores() == default


def test_code_table_looks_codes_up_by_factors():
  perm = np.random.RandomState(0).permutation(len(CLASSES))
  table = metrics.CodeTable(PERFECT[perm], CLASSES[perm])
  np.testing.assert_array_equal(table.sample_observations_from_factors(CLASSES[:5], None), PERFECT[:5])
  with pytest.raises(ValueError, match="exactly once"):
    metrics.CodeTable(PERFECT[:-1], CLASSES[:-1])


def test_collapsed_dimension_gives_finite_scores():
  z = np.concatenate([PERFECT, np.full((120, 1), 0.1)], axis=1).astype(np.float32)
  data = metrics.CodeTable(z, CLASSES)
  fvae = metrics.factor_vae_score(data, num_train=200, num_eval=200, num_variance_estimate=300, prune_threshold=0.0)
  assert fvae["num_active_dims"] == 3 and fvae["eval_accuracy"] == 1.0
  for name, score in METRICS.items():
    assert np.isfinite(score(data)), name
  collapsed = metrics.CodeTable(np.zeros((120, 3)), CLASSES)
  assert metrics.factor_vae_score(collapsed, num_train=10, num_eval=10, num_variance_estimate=50) == {
      "train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_degenerate_inputs_raise_clear_errors():
  class OneValuedFactor(FactorsAsObservations):
    factor_sizes = (4, 1, 6)

  with pytest.raises(ValueError, match="at least 2 values"):
    metrics.mig(OneValuedFactor(), num_train=100)
  y = np.stack([np.arange(10) % 2, np.zeros(10, int)], 1)
  with pytest.raises(ValueError, match="single value"):
    metrics.mig_from_codes(np.random.RandomState(0).randn(10, 2), y)
  with pytest.raises(ValueError, match="single value"):  # too few points to see two values of a factor
    metrics.mig(FactorsAsObservations(), num_train=1)
  with pytest.raises(ValueError, match="NaN"):
    metrics.mig_from_codes(np.full((10, 2), np.nan), np.stack([np.arange(10) % 2] * 2, 1))
  with pytest.raises(ValueError, match="2 code dimensions"):
    metrics.mig_from_codes(np.arange(10.0)[:, None], np.stack([np.arange(10) % 2] * 2, 1))
  with pytest.raises(ValueError, match="batch_size must be at least 2"):  # a variance needs two points
    metrics.factor_vae_score(FactorsAsObservations(), batch_size=1)
  with pytest.raises(ValueError, match="num_train must be at least 1"):
    metrics.beta_vae_score(FactorsAsObservations(), num_train=0)


def test_an_unconverged_logistic_regression_is_one_line_not_sklearns_warning(monkeypatch):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 3))
  y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = utils.fit_logistic_regression(x, y, "BetaVAE score")          # converges: nothing to say
    assert not caught and model.score(x, y) > 0.8
    monkeypatch.setattr(utils.linear_model, "LogisticRegression",
                        functools.partial(utils.linear_model.LogisticRegression, max_iter=2))
    utils.fit_logistic_regression(x, y, "BetaVAE score")
  assert [(w.category, str(w.message)) for w in caught] == [
      (RuntimeWarning, "BetaVAE score: the logistic regression stopped at scikit-learn's default max_iter=2 "
                       "before converging, as in disentanglement_lib's protocol")]
