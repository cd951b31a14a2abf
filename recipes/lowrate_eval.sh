#!/usr/bin/env bash
# The 12.5 Hz tokenizer's dev-split figures (its model card): two `voxtok eval` runs side by side on the 2 cores.
#   A: continuous and discrete tokens through the flow decoder (8 steps) and the regression control, beside
#      codec v2 at 1.5 kbps (the bars' reference), with PER for dPER.
#   B: the flow decoder's quality against Euler steps (1, 2, 4, 16; 8 is in A) on the continuous tokens, and at
#      temperature 0.5.
# Usage: bash recipes/lowrate_eval.sh [MODEL] [OUT_DIR]
set -euo pipefail
MODEL=${1:-voxtok-16k-12hz}
OUT=${2:-runs/lowrate_eval}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
COMMON=(../shared/data/real --split dev --exclude-tag digits --no-progress)
voxtok eval "${COMMON[@]}" --metrics pesq,stoi,mel,pitch,dnsmos,per \
    -s "v2_1.5=voxtok:voxtok-16k-v2@1.5" \
    -s "cont_flow8=voxtok:$MODEL+latents+flow+steps=8" -s "cont_regression=voxtok:$MODEL+latents+regression" \
    -s "fsq_flow8=voxtok:$MODEL+flow+steps=8" -s "fsq_regression=voxtok:$MODEL+regression" \
    --json "$OUT/a.json" --markdown "$OUT/a.md" > "$OUT/a.log" 2>&1 &
voxtok eval "${COMMON[@]}" --metrics pesq,stoi,mel,dnsmos \
    -s "cont_flow1=voxtok:$MODEL+latents+steps=1" -s "cont_flow2=voxtok:$MODEL+latents+steps=2" \
    -s "cont_flow4=voxtok:$MODEL+latents+steps=4" -s "cont_flow16=voxtok:$MODEL+latents+steps=16" \
    -s "cont_flow8_t0.5=voxtok:$MODEL+latents+steps=8+temperature=0.5" \
    --json "$OUT/b.json" --markdown "$OUT/b.md" > "$OUT/b.log" 2>&1 &
wait
cat "$OUT/a.md" "$OUT/b.md"
