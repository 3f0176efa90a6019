#!/usr/bin/env bash
# Runs the exactness tests of the fast DCI classifier (tests/test_metrics_gbt.py) at every SIMD level numpy
# dispatches to on this CPU: native, then with AVX-512 disabled, then with AVX2/FMA (x86-64-v3) disabled too
# (NPY_DISABLE_CPU_FEATURES; levels the CPU lacks are skipped). numpy's vectorised loops differ between levels
# in the last bits of exp/log, so the replica must not depend on them.
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
status=0
for level in "${LEVELS[@]}"; do
  disable=""
  [[ "$level" != native ]] && disable="$level"
  echo "== NPY_DISABLE_CPU_FEATURES='${disable}'"
  NPY_DISABLE_CPU_FEATURES="$disable" "$PYTHON" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} \
    tests/test_metrics_gbt.py || status=1
done
exit $status
