"""The README's library snippet runs as written, and its numbers agree with a direct computation."""

import os
import re

import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_library_snippet_runs():
  with open(README) as f:
    code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
  scope = {}
  exec(compile(code, "README.md", "exec"), scope)  # pylint: disable=exec-used
  # The snippet's posterior is N(0, I) and its prior N(0, diag(v)): KL = ½ Σ_d (1/v_d − 1 + log v_d).
  v = np.asarray(scope["pz"].variance())
  np.testing.assert_allclose(scope["kl"], 0.5 * np.sum(1.0 / v - 1.0 + np.log(v)), rtol=1e-5)
  expected = scope["lpx_z"] - 4.0 * scope["kl"] - 100.0 * scope["reg"]
  np.testing.assert_allclose(scope["objective"], expected, rtol=1e-5)
  assert np.isfinite(float(scope["loss"]))
