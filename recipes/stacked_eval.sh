#!/usr/bin/env bash
# The shipped 12.5 Hz tokenizer's card figures (issue #28's bars), beside codec v2 at 1.5 kbps on the same files:
# the real dev split without digit strings (pocketsphinx WER and hama PER on the transcribed files) and the held-out
# synthetic sentences (exact text). Continuous tokens through the regression decoder and the flow decoder at 8 and 2
# Euler steps, and the FSQ twin (1.0 kbps). One thread, so it can run beside a training.
#   bash recipes/stacked_eval.sh runs/stacked_eval [codec/pretrained/voxtok-16k-12hz]
set -euo pipefail
out=$1
model=${2:-voxtok-16k-12hz}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p "$(dirname "$out")"
systems=(-s v2_1.5=voxtok:voxtok-16k-v2@1.5
         -s cont_regression=voxtok:$model+latents+regression
         -s cont_flow8=voxtok:$model+latents+flow+steps=8
         -s cont_flow2=voxtok:$model+latents+flow+steps=2
         -s fsq_regression=voxtok:$model+regression)
voxtok eval ../shared/data/real --split dev --exclude-tag digits --metrics pesq,stoi,mel,dnsmos,wer,per --no-progress \
  "${systems[@]}" --json "${out}_dev.json" --markdown "${out}_dev.md"
voxtok eval data/synth_heldout --metrics pesq,stoi,wer --no-progress "${systems[@]}" \
  --json "${out}_heldout.json" --markdown "${out}_heldout.md"
