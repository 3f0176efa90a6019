#!/usr/bin/env bash
# Independence-claim members at the CPU budget (2,000 steps, no IWAE) as parallel single runs on one GPU.
# Args: "row:prior:seed:extra-flag". Output: $OUT/runs.tgz (config, metrics, summary and log of each run).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p /tmp/runs/logs
python3 -c "from decompvae.data import dsprites; dsprites.load_dsprites('render', cache_dir='~/.cache/decompvae')"
for spec in "$@"; do
  IFS=: read -r name prior seed extra <<<"$spec"
  timeout "${RUN_TIMEOUT:-240}" python3 -m experiments.dsprites --prior="$prior" --seed="$seed" --steps=2000 \
    --config.eval.iwae_samples=0 --config.eval.figures=False $extra --workdir="/tmp/runs/$name/members/seed=$seed" \
    >"/tmp/runs/logs/$name-$seed.log" 2>&1 &
done
wait
(cd /tmp/runs && find . -name summary.json -o -name config.json -o -name metrics.jsonl -o -name "*.log" | tar czf "$OUT/runs.tgz" -T -)
grep -H "eval_seconds\|Error\|error" /tmp/runs/logs/*.log | head -30
