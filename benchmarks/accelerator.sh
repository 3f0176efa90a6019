#!/usr/bin/env bash
# The accelerator checks, sized for one device-tool call of under 10 minutes on one H200. Everything goes to
# $OUT:
#   device.txt              the device and the versions;
#   independence.tgz        `experiments.reproduce --claim=independence` at the CPU budget (2,000 steps, 4 priors
#                           x 3 seeds, run as vectorised sweeps), its report and verdict;
#   default_run.log,        a 1,000-step dSprites run at every other default: its summary's `eval_seconds` is
#   default_summary.json    the default end-of-run evaluation (paper score and disentanglement_lib's suite);
#   train_speed.json        images/s of the one-step loop, the fused loop, an 8-member sweep, Fashion-MNIST.
#
# The machine has jax, flax, optax, orbax, chex and absl but not distrax, tfp-nightly or ml_collections, and
# cannot download; carry them as Python 3.12 wheels (numba's llvmlite alone is 57 MB, over the carry limit: without
# numba, DCI's sort simulation runs in Python, ~2x slower DCI). Here, once:   bash benchmarks/accelerator.sh wheels
# There (device tool, carry [".whl"]):                            bash benchmarks/accelerator.sh
# A CPU dry run of the whole script:                              SMOKE=1 bash benchmarks/accelerator.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "wheels" ]]; then
  grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    distrax==0.1.9 tfp-nightly==0.26.0.dev20261027 ml-collections==1.1.0 decorator gast dm-tree==0.1.10
  exit
fi

OUT=${OUT:-/tmp/accelerator_out}
PY=${PY:-python3}
mkdir -p "$OUT"
if ! $PY -c "import distrax, ml_collections" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SMOKE=${SMOKE:-0}
PARTS=${PARTS:-reproduce default_run train_speed}    # a subset can be run, e.g. PARTS=reproduce
want() { [[ " $PARTS " == *" $1 "* ]]; }
(nvidia-smi -L || true) >"$OUT/device.txt" 2>&1
$PY -c "import jax, flax, optax, orbax.checkpoint as ocp, distrax, sklearn, numpy
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', ocp.__version__,
      'distrax', distrax.__version__, 'sklearn', sklearn.__version__, 'numpy', numpy.__version__, jax.devices())" \
  >>"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

if [[ "$SMOKE" == 1 ]]; then
  reproduce_args=()                         # every claim takes minutes on a CPU: skipped in the dry run
  run_args=(--smoke --steps=20)
  speed_args=(--only=dsprites --steps=4 --repeats=1)
else
  reproduce_args=(--claim=independence)
  run_args=(--steps=1000)
  speed_args=(--only=dsprites,fused,sweep,fashion_mnist --fuse=100 --steps=200 --repeats=3)
fi

if want reproduce && (( ${#reproduce_args[@]} )); then
  echo "== reproduce ${reproduce_args[*]} (CPU budget)"
  rm -rf /tmp/reproduce /tmp/reproduction
  start=$(date +%s)
  timeout "${REPRODUCE_TIMEOUT:-300}" $PY -m experiments.reproduce "${reproduce_args[@]}" --workdir=/tmp/reproduce --out=/tmp/reproduction \
    >"$OUT/reproduce.log" 2>&1
  echo "rc=$? wall_s=$(($(date +%s) - start))"
  tar czf "$OUT/reproduction.tgz" -C /tmp reproduction 2>/dev/null
  (cd /tmp/reproduce && find . -name summary.json -o -name log.txt | tar czf "$OUT/reproduce_runs.tgz" -T -)
  tail -8 "$OUT/reproduce.log"
fi

if want default_run; then
echo "== a dSprites run at the default evaluation"
rm -rf /tmp/default_run
start=$(date +%s)
timeout 150 $PY -m experiments.dsprites --prior=anisotropic --workdir=/tmp/default_run "${run_args[@]}" \
  >"$OUT/default_run.log" 2>&1
echo "rc=$? wall_s=$(($(date +%s) - start))"
cp /tmp/default_run/summary.json "$OUT/default_summary.json" 2>/dev/null
$PY -c "import json; print('eval_seconds', json.load(open('$OUT/default_summary.json'))['metrics']['eval_seconds'])"
tail -4 "$OUT/default_run.log"
fi

if want train_speed; then
  echo "== train_speed"
  timeout 100 $PY -m benchmarks.train_speed "${speed_args[@]}" >"$OUT/train_speed.json" 2>"$OUT/train_speed.log"
  echo "rc=$?"; cat "$OUT/train_speed.json"
fi
