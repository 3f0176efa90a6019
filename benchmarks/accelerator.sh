#!/usr/bin/env bash
# The one accelerator check of the scale work (BUILD_NOTES.md, "Speed"), sized for a single device-tool call
# of under 10 minutes on an H200. It writes everything under $OUT:
#   train_speed.json   images/s of the one-step loop, the fused loop (lax.scan of $FUSE steps), an 8-member
#                      vmapped sweep and Fashion-MNIST + MMD, at the paper's batch sizes;
#   render.log         rendering the full dSprites set (737,280 images) into the cache, timed;
#   full_run.log       the paper's full anisotropic dSprites run (20 epochs at batch 64, 14.7 M images),
#                      wall time, plus the run's metrics.jsonl and summary.json.
# The goals: the full run's training under 3 minutes; the sweep's images/s over all members at least 4x one
# run's (8 members in under twice the time of one run).
#
# The machine has jax, flax, optax, orbax, chex and absl but not distrax, tfp-nightly or ml_collections, and
# cannot download; carry them as Python 3.12 wheels. Here, once:   bash benchmarks/accelerator.sh wheels
# There (device tool, carry [".whl"]):                            bash benchmarks/accelerator.sh
# A CPU dry run of the whole script in a minute or two:           SMOKE=1 bash benchmarks/accelerator.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "wheels" ]]; then
  grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    distrax==0.1.9 tfp-nightly==0.26.0.dev20261027 ml-collections==1.1.0 decorator gast dm-tree
  exit
fi

OUT=${OUT:-/tmp/accelerator_out}
mkdir -p "$OUT"
if ! python3 -c "import distrax, ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SMOKE=${SMOKE:-0}
FUSE=${FUSE:-$([[ "$SMOKE" == 1 ]] && echo 2 || echo 1000)}
(nvidia-smi || true) >"$OUT/device.txt" 2>&1
python3 -c "import jax; print(jax.__version__, jax.devices())" >>"$OUT/device.txt" 2>&1

if [[ "$SMOKE" == 1 ]]; then
  speed_args=(--only=dsprites,fused,sweep --fuse="$FUSE" --steps=4 --repeats=1)
  run_args=(--smoke --steps=20)
else
  speed_args=(--only=dsprites,fused,sweep,fashion_mnist --fuse="$FUSE" --steps=$((2 * FUSE)) --repeats=3)
  run_args=(--config.train.log_every_steps=11520)   # one row per epoch
fi

echo "== train_speed"
timeout 240 python3 -m benchmarks.train_speed "${speed_args[@]}" >"$OUT/train_speed.json" 2>"$OUT/train_speed.log"
echo "rc=$?"; cat "$OUT/train_speed.json"

if [[ "$SMOKE" != 1 ]]; then
  echo "== render the full dSprites set into the cache"
  python3 -c "import time; t = time.time(); from decompvae.data import dsprites; d = dsprites.load_dsprites('render', cache_dir='~/.cache/decompvae'); \
print(d.packed.shape[0], 'images ready in', round(time.time() - t, 1), 's')" >"$OUT/render.log" 2>&1
  echo "rc=$?"; tail -1 "$OUT/render.log"
fi

echo "== full dSprites run"
rm -rf /tmp/full_run
start=$(date +%s.%N)
timeout 330 python3 -m experiments.dsprites --prior=anisotropic --workdir=/tmp/full_run \
  --config.train.steps_per_call="$FUSE" --config.eval.standard_metrics=False --config.eval.figures=False \
  "${run_args[@]}" >"$OUT/full_run.log" 2>&1
rc=$?
end=$(date +%s.%N)
echo "rc=$rc wall_s=$(python3 -c "print(round($end - $start, 1))")"
cp /tmp/full_run/metrics.jsonl /tmp/full_run/summary.json "$OUT/" 2>/dev/null
# Training time: from the first to the last training row of metrics.jsonl (the first row comes after the
# first call, so compilation is excluded along with that call's steps).
python3 - "$OUT/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train/' in l]
if len(rows) > 1:
  dt, steps = rows[-1]["time"] - rows[0]["time"], rows[-1]["step"] - rows[0]["step"]
  print(f"training: {steps} steps in {dt:.1f} s after the first logged row: {64 * steps / dt:,.0f} img/s; "
        f"all {rows[-1]['step']} steps at that rate: {rows[-1]['step'] * dt / steps:.1f} s")
EOF
tail -5 "$OUT/full_run.log"
