#!/usr/bin/env bash
# Distillation A/B: fine-tune the same codec v2 checkpoint for the same number of steps as several arms, side by
# side (one thread each): control (recipes/codec_v2_continue.toml: the v2 recipe with a schedule past the shipped
# step 12000), semantic (recipes/distill_phone.toml) and semantic + contextual (recipes/distill_phone_context.toml);
# ARMS="name:recipe ..." picks others (teacher:distill_teacher, the phone-CTC teacher's d_axis term). Then score each arm: RVQ-1 probes (PNMI, linear phone probe,
# sentence retrieval, speaker probe; voxtok.eval.probes) and the decoded audio (the trainer's closing dev eval:
# PESQ-WB / STOI at every bitrate on 8 dev files; hama PER / dPER with `voxtok eval`).
#   bash recipes/distill_ab.sh [START_CHECKPOINT] [STEPS]     (default: recipes/checkpoints/codec_v2, 300 steps)
# Needs the alignments (python -m voxtok.data.align ../shared/data/real --split train, and --split dev) and the
# held-out synthetic sentences (voxtok synth data/synth_heldout --split dev --num 108).
set -euo pipefail
cd "$(dirname "$0")/.."
START=${1:-recipes/checkpoints/codec_v2}
STEPS=${2:-300}
ARMS=${ARMS:-"control:codec_v2_continue phone:distill_phone phone_context:distill_phone_context"}
export OMP_WAIT_POLICY=PASSIVE
VOXTOK=${VOXTOK:-.venv/bin/voxtok}
PYTHON=${PYTHON:-.venv/bin/python}
at=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1] + '/trainer_state.json'))['step'])" "$START")
target=$((at + STEPS))
for spec in $ARMS; do
  arm=${spec%%:*}
  rm -rf "runs/ab_$arm" && mkdir -p "runs/ab_$arm"
  cp -r "$START" "runs/ab_$arm/checkpoint"
  "$VOXTOK" train "recipes/${spec#*:}.toml" --out "runs/ab_$arm" --steps "$target" --threads 1 --no-progress \
    > "runs/ab_$arm/train.log" 2>&1 &
done
wait
for spec in $ARMS; do
  arm=${spec%%:*}
  echo "== $arm: steps $at -> $target"
  grep "^step $target dev" "runs/ab_$arm/train.log" || true
  "$PYTHON" -m voxtok.eval.probes ../shared/data/real --model "runs/ab_$arm/checkpoint" \
    --heldout data/synth_heldout > "runs/ab_$arm/probes.json" 2> "runs/ab_$arm/probes.log"
  cat "runs/ab_$arm/probes.json"
done
