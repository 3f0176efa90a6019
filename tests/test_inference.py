"""Tests of decompvae.inference: whole-dataset encoder means, ELBO terms and IWAE estimates against NumPy."""

import jax
import numpy as np
import pytest
from scipy import special, stats

from decompvae import inference, parallel
from decompvae.data import pipeline
from test_divergences import diag_gaussian
from test_objectives import LinearGaussian, exact_log_px

NUM_EXAMPLES, LATENT_DIM = 203, 2  # 203 = 7 · 29: no call size used below divides it


@pytest.fixture(scope="module")
def toy():
  model = LinearGaussian()
  variables = model.make_variables()
  x = (2.0 * np.random.default_rng(3).normal(size=(NUM_EXAMPLES, 5))).astype(np.float32)
  return model, variables, x, diag_gaussian(np.zeros(LATENT_DIM), np.ones(LATENT_DIM))


def _params64(variables):
  return {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}


def _posterior(variables, x):
  p = _params64(variables)
  return np.float64(x) @ p["a"] + p["c"], np.exp(p["log_s"]) * np.ones(LATENT_DIM)


def _documented_eps(key, positions, num_samples):
  """ε [N, K, D] as documented: sample k of the example at position p uses split(fold_in(key, p), K)[k]."""
  def one(p):
    return jax.vmap(lambda k: jax.random.normal(k, (LATENT_DIM,)))(jax.random.split(jax.random.fold_in(key, p),
                                                                                     num_samples))
  return np.float64(jax.jit(jax.vmap(one))(np.asarray(positions)))


def _log_weights(variables, x, eps_NxKxD):
  p = _params64(variables)
  mu, s = _posterior(variables, x)
  z = mu[:, None] + s * eps_NxKxD
  log_px_z = np.sum(stats.norm.logpdf(np.float64(x)[:, None], z @ p["w"] + p["b"], np.exp(p["log_sigma"])), -1)
  return np.sum(stats.norm.logpdf(z), -1) + log_px_z - np.sum(stats.norm.logpdf(z, mu[:, None], s), -1)


def test_encode_means_equal_the_encoder_on_every_example(toy):
  model, variables, x, _ = toy
  expected = _posterior(variables, x)[0]
  data = pipeline.to_device(x)
  calls = []
  for batch_size in (64, 203, 1000):
    means = inference.encode_means(model, variables, data, batch_size=batch_size,
                                   progress=lambda done, total: calls.append((done, total)))
    assert means.shape == (NUM_EXAMPLES, LATENT_DIM) and isinstance(means, np.ndarray)
    np.testing.assert_allclose(means, expected, rtol=1e-5, atol=1e-5)
  assert calls[:4] == [(64, 203), (128, 203), (192, 203), (203, 203)]
  # A subset of rows (DeviceDataset.indices), and the dataset split over a two-device mesh.
  rows = np.arange(0, NUM_EXAMPLES, 3)
  mesh = parallel.make_mesh(jax.devices()[:2])
  sub = pipeline.to_device(x, indices=rows, mesh=mesh)
  means = inference.encode_means(model, parallel.replicate(variables, mesh), sub, batch_size=31)
  np.testing.assert_allclose(means, expected[rows], rtol=1e-5, atol=1e-5)


def test_select_examples():
  np.testing.assert_array_equal(inference.select_examples(10), np.arange(10))
  np.testing.assert_array_equal(inference.select_examples(10, 20), np.arange(10))
  subset = inference.select_examples(1000, 100, seed=3)
  assert len(np.unique(subset)) == 100 and np.all(np.diff(subset) > 0) and subset.max() < 1000
  np.testing.assert_array_equal(subset, inference.select_examples(1000, 100, seed=3))
  assert not np.array_equal(subset, inference.select_examples(1000, 100, seed=4))
  # A sequence of integers seeds it too (a run's seed and a stream number), as numpy's generators take it.
  np.testing.assert_array_equal(inference.select_examples(1000, 100, seed=(3, 7)),
                                np.sort(np.random.default_rng([3, 7]).choice(1000, 100, replace=False)))


def test_iwae_per_example_matches_numpy_with_the_documented_samples(toy):
  model, variables, x, pz = toy
  key, num_samples = jax.random.key(7), 30
  positions = np.array([0, 5, 17, 101, 202])
  log_w = _log_weights(variables, x[positions], _documented_eps(key, positions, num_samples))
  expected = special.logsumexp(log_w, axis=1) - np.log(num_samples)
  w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
  expected_se = np.sqrt(np.var(w, axis=1, ddof=1) / num_samples) / np.mean(w, axis=1)  # delta method
  data = pipeline.to_device(x)
  # 30 samples: one chunk of 30 per call (2 examples), chunks of 10 (one example per call), of 15 (2 per call).
  for images_per_call in (60, 10, 29):
    calls = []
    log_p, se = inference.iwae_per_example(model, variables, pz, data, key, positions, num_samples=num_samples,
                                           images_per_call=images_per_call,
                                           progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_allclose(log_p, expected, rtol=1e-5)
    np.testing.assert_allclose(se, expected_se, rtol=1e-4)
    if images_per_call == 10:  # 3 calls of 10 samples per example: an example is done after its third call
      assert calls == [(i // 3, 5) for i in range(1, 16)]
  # An example gets the same samples in any subset, and over a two-device mesh.
  mesh = parallel.make_mesh(jax.devices()[:2])
  log_p, _ = inference.iwae_per_example(model, parallel.replicate(variables, mesh), pz,
                                        pipeline.to_device(x, mesh=mesh), key, positions[::-2],
                                        num_samples=num_samples, images_per_call=64)
  np.testing.assert_allclose(log_p, expected[::-2], rtol=1e-5)


def test_iwae_stderrs_describe_the_spread_over_keys(toy):
  model, variables, x, pz = toy
  data = pipeline.to_device(x)
  runs = [inference.iwae(model, variables, pz, data, jax.random.key(i), num_samples=20, num_examples=50,
                         images_per_call=1000) for i in range(40)]
  means = np.array([r["iwae"] for r in runs])
  mc_stderr = np.mean([r["iwae_mc_stderr"] for r in runs])
  # The spread of the mean over keys is the Monte-Carlo error (40 runs: its estimate is within ±25%).
  assert 0.75 < means.std(ddof=1) / mc_stderr < 1.33, (means.std(ddof=1), mc_stderr)
  # Example to example variation dominates: the standard error of the mean includes it.
  assert runs[0]["iwae_stderr"] > 3 * mc_stderr
  assert runs[0]["num_examples"] == 50 and runs[0]["num_samples"] == 20
  # The estimate is below the exact mean log-likelihood of the same 50 examples (the bound) and close to it.
  log_px = exact_log_px(variables, x[inference.select_examples(NUM_EXAMPLES, 50)]).mean()
  assert log_px - 0.3 < means.mean() < log_px


def test_iwae_summary_is_the_mean_of_the_per_example_estimates(toy):
  model, variables, x, pz = toy
  data, key = pipeline.to_device(x), jax.random.key(1)
  out = inference.iwae(model, variables, pz, data, key, num_samples=8, num_examples=None)
  log_p, se = inference.iwae_per_example(model, variables, pz, data, key, np.arange(NUM_EXAMPLES), num_samples=8)
  assert out["iwae"] == pytest.approx(log_p.mean(), rel=1e-12)
  assert out["iwae_stderr"] == pytest.approx(log_p.std(ddof=1) / np.sqrt(NUM_EXAMPLES), rel=1e-12)
  assert out["iwae_mc_stderr"] == pytest.approx(np.sqrt(np.sum(se**2)) / NUM_EXAMPLES, rel=1e-12)
  # The effective sample size 1 / Σ w̃², from the log weights redone in NumPy.
  log_w = _log_weights(variables, x, _documented_eps(key, np.arange(NUM_EXAMPLES), 8))
  ess = np.exp(2 * special.logsumexp(log_w, axis=1) - special.logsumexp(2 * log_w, axis=1))
  assert 1 < out["iwae_median_ess"] < 8
  assert out["iwae_median_ess"] == pytest.approx(np.median(ess), rel=1e-4)
  with pytest.raises(ValueError, match="positive"):
    inference.iwae(model, variables, pz, data, key, num_samples=0)


def test_elbo_terms_match_numpy_with_the_documented_sample(toy):
  model, variables, x, pz = toy
  key = jax.random.key(2)
  positions = inference.select_examples(NUM_EXAMPLES, 64, seed=5)
  p = _params64(variables)
  mu, s = _posterior(variables, x[positions])
  eps = jax.jit(jax.vmap(lambda p: jax.random.normal(jax.random.fold_in(key, p), (LATENT_DIM,))))(positions)
  z = mu + s * np.float64(eps)  # as documented: ε drawn with fold_in(key, p)
  lpx_z = np.sum(stats.norm.logpdf(np.float64(x[positions]), z @ p["w"] + p["b"], np.exp(p["log_sigma"])), -1)
  kl = 0.5 * np.sum(s**2 + mu**2 - 1 - np.log(s**2), -1)
  calls = []
  out = inference.elbo_terms(model, variables, pz, pipeline.to_device(x), key, num_examples=64, subset_seed=5,
                             batch_size=24, progress=lambda done, total: calls.append((done, total)))
  assert out["num_examples"] == 64 and calls == [(24, 64), (48, 64), (64, 64)]
  assert out["posterior_entropy"] == pytest.approx(np.sum(0.5 * np.log(2 * np.pi * np.e * s**2)), rel=1e-5)
  assert out["posterior_variance"] == pytest.approx(np.mean(s**2), rel=1e-5)
  assert out["lpx_z"] == pytest.approx(lpx_z.mean(), rel=1e-5)
  assert out["kl"] == pytest.approx(kl.mean(), rel=1e-5)
  assert out["elbo"] == pytest.approx(np.mean(lpx_z - kl), rel=1e-5)
  assert out["elbo_stderr"] == pytest.approx(np.std(lpx_z - kl, ddof=1) / 8, rel=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="bitwise batch independence is checked on XLA:CPU")
def test_metrics_on_a_code_table_of_all_means_equal_the_representation_fn_path():
  # A small full-factorial dSprites grid: the suite on a CodeTable of `encode_means` is the suite through the
  # encoder as representation_fn on rendered images, to the last bit (the encoder is batch-independent).
  from decompvae import make_model, metrics  # pylint: disable=g-import-not-at-top
  import decompvae.data as data_lib  # pylint: disable=g-import-not-at-top
  strides = (1, 2, 8, 8, 8)
  sizes = tuple(s // k for s, k in zip(data_lib.FACTOR_SIZES, strides))
  classes = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), 1)
  tables = tuple(t[::k] for t, k in zip(data_lib.factor_value_tables(), strides))
  gt = data_lib.DSprites(data_lib.render_dsprites(classes * np.asarray(strides)), factor_sizes=sizes,
                         value_tables=tables)
  model = make_model("dsprites", 4)
  variables = jax.jit(model.init)(jax.random.key(0), gt.images([0]))  # eager init takes a minute on 2 cores
  table = metrics.CodeTable(inference.encode_means(model, variables, pipeline.to_device(gt), batch_size=384),
                            gt.factor_classes, sizes)
  encoder = jax.jit(lambda x: model.encode(variables, x)[0].mean())
  representation_fn = lambda x: np.asarray(encoder(x))  # noqa: E731
  # Sizes chosen so that every call of the representation has 640 images: one compilation.
  for score in (lambda d, r: metrics.factor_vae_score(d, r, num_train=10, num_eval=10, num_variance_estimate=640,
                                                    prune_threshold=0.0),
                lambda d, r: metrics.beta_vae_score(d, r, num_train=5, num_eval=5),
                lambda d, r: metrics.mig(d, r, num_train=640)):
    assert score(table, None) == score(gt, representation_fn)
