#!/usr/bin/env bash
# Phone distillation A/B for the 12.5 Hz tokenizer: fine-tune one checkpoint for the same steps as two arms, side by
# side (one thread each): "phone" (recipes/lowrate_12hz_phone.toml) and "control" (the same recipe with its
# [terms.phone] table removed, so the arms differ by the term alone). Then decode the dev split through both
# arms' regression decoders, continuous and FSQ tokens, and score them with hama PER / dPER, PESQ-WB, STOI,
# log-mel and pitch (`voxtok eval`, one run per arm, side by side), and probe the tokens (voxtok.eval.probes).
#   bash recipes/lowrate_phone_ab.sh [START_CHECKPOINT] [STEPS]   (default: recipes/checkpoints/lowrate_12hz, 800)
# Other arms: ARMS="name=recipe.toml name=recipe.toml" (e.g. the synthetic-data arm against the real-only one:
#   ARMS="real=recipes/lowrate_12hz_phone.toml synth=recipes/lowrate_12hz_phone_synth.toml" OUT=runs/synth_ab \
#   bash recipes/lowrate_phone_ab.sh recipes/checkpoints/lowrate_12hz_phone 800).
# Needs the WORLD targets and the alignments of the train split (python -m voxtok.data.pitch / voxtok.data.align
# ../shared/data/real --split train).
set -euo pipefail
cd "$(dirname "$0")/.."
START=${1:-recipes/checkpoints/lowrate_12hz}
STEPS=${2:-800}
OUT=${OUT:-runs/lowrate_phone_ab}
VOXTOK=${VOXTOK:-.venv/bin/voxtok}
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
at=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1] + '/trainer_state.json'))['step'])" "$START")
target=$((at + STEPS))
mkdir -p "$OUT"
if [ -z "${ARMS:-}" ]; then
  "$PYTHON" - "$OUT/control.toml" <<'PY'
import re
import sys
recipe = open("recipes/lowrate_12hz_phone.toml").read()
control = recipe[: re.search(r"^\[terms\.phone\]", recipe, re.M).start()].rstrip() + "\n"
open(sys.argv[1], "w").write(control.replace('runs/lowrate_12hz_phone', 'runs/lowrate_12hz_control'))
PY
  cp recipes/lowrate_12hz_phone.toml "$OUT/phone.toml"
  ARMS="control=$OUT/control.toml phone=$OUT/phone.toml"
fi
declare -A RECIPE
NAMES=()
for pair in $ARMS; do NAMES+=("${pair%%=*}"); RECIPE[${pair%%=*}]=${pair#*=}; done
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  for arm in "${NAMES[@]}"; do
    rm -rf "${OUT:?}/$arm" && mkdir -p "$OUT/$arm"
    cp -r "$START" "$OUT/$arm/checkpoint"
    "$VOXTOK" train "${RECIPE[$arm]}" --out "$OUT/$arm" --steps "$target" --threads 1 --no-progress \
      > "$OUT/$arm/train.log" 2>&1 &
  done
  wait
fi
COMMON=(../shared/data/real --split dev --exclude-tag digits --no-progress --metrics pesq,stoi,mel,pitch,per)
for arm in "${NAMES[@]}"; do
  "$VOXTOK" eval "${COMMON[@]}" -s "${arm}_cont=voxtok:$OUT/$arm/checkpoint+latents+regression" \
      -s "${arm}_fsq=voxtok:$OUT/$arm/checkpoint+regression" \
      --json "$OUT/$arm/eval.json" --markdown "$OUT/$arm/eval.md" > "$OUT/$arm/eval.log" 2>&1 &
done
wait
# What the tokens hold, per 20 ms (voxtok.eval.probes: PNMI, a linear phone probe on held-out speakers and voices).
for arm in "${NAMES[@]}"; do
  for kind in cont fsq; do
    "$PYTHON" -m voxtok.eval.probes ../shared/data/real --model "$OUT/$arm/checkpoint" --heldout data/synth_heldout \
      $([ $kind = fsq ] && echo --quantized) > "$OUT/$arm/probes_$kind.json" 2> "$OUT/$arm/probes_$kind.log" &
  done
  wait
done
for arm in "${NAMES[@]}"; do
  echo "== $arm: steps $at -> $target"
  grep "phone_ce" "$OUT/$arm/log.jsonl" 2>/dev/null | tail -1 || true
  cat "$OUT/$arm/eval.md"
  grep -h '"probe_accuracy"\|"pnmi_test"' "$OUT/$arm/probes_cont.json" "$OUT/$arm/probes_fsq.json"
done
