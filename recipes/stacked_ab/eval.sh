#!/usr/bin/env bash
# The stacked 12.5 Hz A/B: each arm's checkpoint beside codec v2 at 1.5 kbps, on the real dev split (no digits) and
# on the held-out synthetic sentences (exact text), both token kinds through the regression decoder.
#   bash recipes/stacked_ab/eval.sh OUT_PREFIX ARM_DIR...        (e.g. runs/stacked_ab/latent_only/checkpoint)
set -euo pipefail
out=$1; shift
systems=(-s v2_1.5=voxtok:voxtok-16k-v2@1.5)
for dir in "$@"; do
  arm=$(basename "$(dirname "$dir")")
  systems+=(-s "${arm}_cont=voxtok:$dir+latents+regression" -s "${arm}_fsq=voxtok:$dir+regression")
done
voxtok eval ../shared/data/real --split dev --exclude-tag digits --metrics pesq,stoi,mel,wer,per --no-progress \
  "${systems[@]}" --json "${out}_dev.json" --markdown "${out}_dev.md"
voxtok eval data/synth_heldout --metrics pesq,stoi,wer --no-progress "${systems[@]}" \
  --json "${out}_heldout.json" --markdown "${out}_heldout.md"
