#!/usr/bin/env bash
# Runs the exactness tests of the fast DCI classifier (tests/test_metrics_gbt.py) at every SIMD level numpy
# dispatches to on this CPU: native, then with AVX-512 disabled, then with AVX2/FMA (x86-64-v3) disabled too
# (NPY_DISABLE_CPU_FEATURES; levels the CPU lacks are skipped). numpy's vectorised loops differ between levels
# in the last bits of exp/log, so the replica must not depend on them. At each level it also fingerprints the
# replica's whole output (importances, train and test predictions) on one problem, with 1 and 3 threads: every
# fingerprint must be the same.
#   usage: tests/simd_levels.sh [python]      (default: python3; extra pytest arguments in $PYTEST_ARGS)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-python3}"
# The dispatchable features this numpy found on this CPU, and the disable lists of the levels below native.
mapfile -t LEVELS < <(NPY_DISABLE_CPU_FEATURES= "$PYTHON" - <<'PY'
try:
  from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
except ImportError:   # numpy 1.x
  from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
found = {f for f in __cpu_dispatch__ if __cpu_features__.get(f)}
print("native")
above_v3 = sorted(f for f in found if f.startswith("AVX512") or f == "X86_V4")
v3 = sorted(f for f in found if f in ("X86_V3", "AVX2", "FMA3"))
if above_v3:
  print(" ".join(above_v3))
if v3:
  print(" ".join(above_v3 + v3))
PY
)
FINGERPRINT='
import hashlib
import numpy as np
from decompvae.metrics import _gbt
rng = np.random.default_rng(3)
z = rng.normal(size=(1500, 6)).astype(np.float32)
z[:, 5] = np.round(z[:, 5], 1)   # ties
y = np.stack([z[:, 0] + 0.5 * rng.normal(size=1500) > 0, np.digitize(z[:, 1] + z[:, 5], [-1, 0, 1]),
              rng.integers(0, 4, 1500)], axis=1).astype(int)
for n_jobs in (1, 3):
  out = _gbt.fit_gbt_classifiers(z[:1000], y[:1000], z[1000:], n_estimators=30, n_jobs=n_jobs)
  print(hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in out)).hexdigest())
'
status=0
fingerprints=()
for level in "${LEVELS[@]}"; do
  disable=""
  [[ "$level" != native ]] && disable="$level"
  echo "== NPY_DISABLE_CPU_FEATURES='${disable}'"
  NPY_DISABLE_CPU_FEATURES="$disable" "$PYTHON" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} \
    tests/test_metrics_gbt.py || status=1
  mapfile -t found < <(NPY_DISABLE_CPU_FEATURES="$disable" "$PYTHON" -c "$FINGERPRINT")
  echo "output fingerprints (1 and 3 threads): ${found[*]}"
  fingerprints+=("${found[@]}")
done
if [[ $(printf '%s\n' "${fingerprints[@]}" | sort -u | wc -l) != 1 ]]; then
  echo "FAILED: the replica's output differs between SIMD levels or thread counts"
  status=1
fi
exit $status
