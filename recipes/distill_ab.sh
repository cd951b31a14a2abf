#!/usr/bin/env bash
# Semantic distillation A/B: fine-tune the same codec v2 checkpoint for the same number of steps without (control)
# and with the phone term (recipes/distill_phone.toml), side by side on one thread each, then score both arms:
# RVQ-1 probes (PNMI, linear phone probe on held-out speakers) and decoded quality (the trainer's closing dev eval).
#   bash recipes/distill_ab.sh [START_CHECKPOINT] [STEPS]     (default: runs/codec_v2/checkpoint, 300 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
START=${1:-runs/codec_v2/checkpoint}
STEPS=${2:-300}
export OMP_WAIT_POLICY=PASSIVE
VOXTOK=${VOXTOK:-.venv/bin/voxtok}
PYTHON=${PYTHON:-.venv/bin/python}
at=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1] + '/trainer_state.json'))['step'])" "$START")
target=$((at + STEPS))
for arm in control phone; do
  rm -rf "runs/ab_$arm"
  mkdir -p "runs/ab_$arm"
  cp -r "$START" "runs/ab_$arm/checkpoint"
done
"$VOXTOK" train recipes/codec_v2.toml --out runs/ab_control --steps "$target" --threads 1 --no-progress \
  > runs/ab_control/train.log 2>&1 &
"$VOXTOK" train recipes/distill_phone.toml --out runs/ab_phone --steps "$target" --threads 1 --no-progress \
  > runs/ab_phone/train.log 2>&1 &
wait
for arm in control phone; do
  echo "== $arm: steps $at -> $target"
  grep "^step $target dev" "runs/ab_$arm/train.log" || true
  "$PYTHON" -m codec.eval.probes ../shared/data/real --model "runs/ab_$arm/checkpoint" --limit 300 \
    > "runs/ab_$arm/probes.json"
  cat "runs/ab_$arm/probes.json"
done
