"""Agreement with disentanglement_lib (PyPI `disentanglement-lib`) on the same inputs and random streams.

Runs only where a Python with disentanglement_lib, gin-config==0.4.0, numpy, scipy and scikit-learn exists (no
TensorFlow needed: `gin.tf` is stubbed), at $DECOMPVAE_DLIB_PYTHON or /tmp/dlib-venv/bin/python, e.g.
  python3.11 -m venv /tmp/dlib-venv && /tmp/dlib-venv/bin/pip install --no-deps disentanglement-lib==1.4 \
    && /tmp/dlib-venv/bin/pip install gin-config==0.4.0 numpy scipy scikit-learn six absl-py
Skipped otherwise. The reference runs in that separate interpreter; nothing of it is imported here.
"""
import json
import os
import subprocess

import numpy as np
import pytest
from scipy import stats

from decompvae import metrics

DLIB_PYTHON = os.environ.get("DECOMPVAE_DLIB_PYTHON", "/tmp/dlib-venv/bin/python")
pytestmark = pytest.mark.skipif(not os.path.exists(DLIB_PYTHON), reason="no disentanglement_lib interpreter")

RUNNER = '''
import functools, json, logging, sys, types
sys.modules["gin.tf"] = types.ModuleType("gin.tf")  # gin-config 0.4.0 imports TensorFlow only from gin.tf
logging.disable(logging.WARNING)
import gin
import numpy as np
from disentanglement_lib.evaluation.metrics import (beta_vae, dci, factor_vae, mig, modularity_explicitness,
                                                    sap_score, utils)

arrays, cfg = np.load(sys.argv[1]), json.loads(sys.argv[2])
z, sizes = arrays["z"], [int(s) for s in arrays["factor_sizes"]]


class Table:  # a complete factorial data set whose observations are codes (as decompvae's CodeTable)
    factor_sizes, num_factors = sizes, len(sizes)

    def sample_factors(self, num, rs):  # what disentanglement_lib's SplitDiscreteStateSpace does
        return np.stack([rs.randint(s, size=num) for s in sizes], axis=1)

    def sample_observations_from_factors(self, factors, rs):
        return z[np.ravel_multi_index(tuple(factors.T), sizes)]

    def sample(self, num, rs):
        factors = self.sample_factors(num, rs)
        return factors, self.sample_observations_from_factors(factors, rs)

    def sample_observations(self, num, rs):
        return self.sample(num, rs)[1]


gin.bind_parameter("discretizer.discretizer_fn", utils._histogram_discretize)
gin.bind_parameter("discretizer.num_bins", 20)
gin.bind_parameter("prune_dims.threshold", 0.05)
data, rep, rs, n, m = Table(), lambda x: x, lambda: np.random.RandomState(0), cfg["num_train"], cfg["num_test"]
out = {
    "factor_vae": factor_vae.compute_factor_vae(data, rep, rs(), batch_size=64, num_train=n, num_eval=m,
                                                num_variance_estimate=n),
    "beta_vae": beta_vae.compute_beta_vae_sklearn(data, rep, rs(), batch_size=64, num_train=n, num_eval=m),
    "mig": mig.compute_mig(data, rep, rs(), num_train=n),
    "sap": sap_score.compute_sap(data, rep, rs(), num_train=n, num_test=m, continuous_factors=False),
    "modularity": modularity_explicitness.compute_modularity_explicitness(data, rep, rs(), num_train=n,
                                                                          num_test=m),
}
if "dci_codes" in arrays:
    # disentanglement_lib leaves the trees' seed unset, so its DCI changes from run to run (by ~1e-2 on the
    # importances: the seed breaks ties between features that split a small node identically). Fix it as we do.
    dci.GradientBoostingClassifier = functools.partial(dci.GradientBoostingClassifier, random_state=0)
    out["dci"] = dci._compute_dci(arrays["dci_codes"].T, arrays["dci_factors"].T, arrays["dci_codes_test"].T,
                                  arrays["dci_factors_test"].T)
out["factor_vae"].pop("num_active_dims")  # disentanglement_lib reports len(mask) here, not the active count
print(json.dumps({name: {key: float(v) for key, v in scores.items()} for name, scores in out.items()}))
'''


def _reference(tmp_path, arrays, num_train, num_test):
  (tmp_path / "runner.py").write_text(RUNNER)
  np.savez(tmp_path / "arrays.npz", **arrays)
  cfg = json.dumps({"num_train": num_train, "num_test": num_test})
  result = subprocess.run([DLIB_PYTHON, str(tmp_path / "runner.py"), str(tmp_path / "arrays.npz"), cfg],
                          capture_output=True, text=True, check=True)
  return json.loads(result.stdout)


def _ours(table, num_train, num_test):
  return {
      "factor_vae": metrics.factor_vae_score(table, num_train=num_train, num_eval=num_test,
                                             num_variance_estimate=num_train),
      "beta_vae": metrics.beta_vae_score(table, num_train=num_train, num_eval=num_test),
      "mig": metrics.mig(table, num_train=num_train),
      "sap": metrics.sap(table, num_train=num_train, num_test=num_test),
      "modularity": metrics.modularity_explicitness(table, num_train=num_train, num_test=num_test),
  }


def _messy_table(sizes, seed=0):
  """Codes of every factor combination: standardised factors, rotated, plus noise and a noise dimension."""
  classes = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
  rng = np.random.RandomState(seed)
  k = len(sizes)
  mixed = (classes - classes.mean(0)) / classes.std(0) @ stats.special_ortho_group.rvs(k, random_state=1)
  z = np.concatenate([mixed + 0.3 * rng.randn(*classes.shape), rng.randn(len(classes), 1)], 1)
  return z.astype(np.float32), classes


def _dci_inputs(num_train, num_test, sizes=(3, 6, 10)):
  rng = np.random.RandomState(7)
  y = np.stack([rng.randint(s, size=num_train + num_test) for s in sizes], 1)
  z = np.concatenate([(y + 0.4 * rng.randn(*y.shape)) @ rng.randn(3, 3), rng.randn(len(y), 2)], 1)
  return {"dci_codes": z[:num_train], "dci_factors": y[:num_train], "dci_codes_test": z[num_train:],
          "dci_factors_test": y[num_train:]}


def _compare(ours, reference):
  assert set(ours) == set(reference)
  for name, scores in reference.items():
    for key, value in scores.items():
      assert ours[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)


def test_same_numbers_as_disentanglement_lib_small(tmp_path):
  z, classes = _messy_table((4, 5, 6))
  dci_arrays = _dci_inputs(300, 150)
  reference = _reference(tmp_path, {"z": z, "factor_sizes": np.array((4, 5, 6)), **dci_arrays}, 500, 250)
  ours = _ours(metrics.CodeTable(z, classes), 500, 250)
  ours["dci"] = metrics.dci_from_codes(dci_arrays["dci_codes"], dci_arrays["dci_factors"],
                                       dci_arrays["dci_codes_test"], dci_arrays["dci_factors_test"], n_jobs=1)
  assert 0.3 < ours["factor_vae"]["eval_accuracy"] < 0.99 and 0.3 < ours["beta_vae"]["eval_accuracy"] < 0.99
  _compare(ours, reference)


@pytest.mark.slow
def test_same_numbers_as_disentanglement_lib_at_default_sizes_on_dsprites_factors(tmp_path):
  sizes = (3, 6, 40, 32, 32)
  z, classes = _messy_table(sizes)
  dci_arrays = _dci_inputs(2000, 1000)
  reference = _reference(tmp_path, {"z": z, "factor_sizes": np.array(sizes), **dci_arrays}, 10_000, 5000)
  ours = _ours(metrics.CodeTable(z, classes), 10_000, 5000)
  ours["dci"] = metrics.dci_from_codes(dci_arrays["dci_codes"], dci_arrays["dci_factors"],
                                       dci_arrays["dci_codes_test"], dci_arrays["dci_factors_test"])
  _compare(ours, reference)
