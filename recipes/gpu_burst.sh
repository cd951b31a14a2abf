#!/usr/bin/env bash
# The one prepared command for a lent GPU: resume a committed checkpoint for at most MINUTES of training, then pack
# the checkpoint it reached (fp16, log carried over) into $OUT so it comes back. With no GPU it runs on the CPU,
# which is how the test suite checks it (tests/test_harmonic_codec.py, on a tiny recipe).
#
#   bash recipes/gpu_burst.sh [RECIPE] [CHECKPOINT] [MINUTES]
#   defaults: recipes/codec_v2_continue.toml recipes/checkpoints/codec_v2 9 (codec_v2.toml ended its schedule at
#   step 12000, the committed checkpoint; the continuation runs a second, lower cosine)
#
# A speech LM recipe (one whose [train] table names a corpus) runs `python -m voxtok.lm train` instead; its corpus must
# travel: run(command="bash recipes/gpu_burst.sh recipes/lm_discrete_small.toml
# recipes/checkpoints/lm_discrete_small 9", carry=["data/lm_corpus"]) (the 7 h corpus is 28 MB).
#
# Through the device tool: run(command="bash recipes/gpu_burst.sh", carry=["data/cache/world"], timeout_s=600).
# The WORLD pitch targets (data/cache/world, ~25 MB, made by `python -m voxtok.data.pitch`) must travel with it:
# computing them there would take the whole lease. Then copy $OUT/checkpoint over recipes/checkpoints/codec_v2.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-recipes/codec_v2_continue.toml}
checkpoint=${2:-recipes/checkpoints/codec_v2}
minutes=${3:-9}
out=${OUT:-runs/gpu_burst}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
# A bare checkout: voxtok is importable through the symlink tree of checkout_path.sh.
source recipes/checkout_path.sh
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$out"
kind=$("$python" -c "import sys, tomllib; t = tomllib.load(open(sys.argv[1], 'rb')).get('train', {}); \
print('lm' if 'corpus' in t else 'codec')" "$recipe")
if [ "$kind" = lm ]; then
  run_dir=$("$python" -c "import sys; from voxtok.lm.train import load_lm_recipe; print(load_lm_recipe(sys.argv[1])[1].out_dir)" \
    "$recipe")
else
  run_dir=$("$python" -c "import sys; from voxtok.trainers import load_recipe; print(load_recipe(sys.argv[1])[1].out_dir)" \
    "$recipe")
fi
mkdir -p "$run_dir"
rm -rf "$run_dir/checkpoint"
cp -r "$checkpoint" "$run_dir/checkpoint"
device=cpu
if "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then device=cuda; fi
echo "gpu_burst: $recipe from $checkpoint on $device for at most $minutes min"
if [ "$kind" = lm ]; then trainer=(-m voxtok.lm train); else trainer=(-m voxtok train); fi
"$python" "${trainer[@]}" "$recipe" --device "$device" --max-minutes "$minutes" --no-progress 2>&1 | tee "$out/train.log"
"$python" recipes/pack_checkpoint.py "$run_dir" "$out/checkpoint"
# The card stays with the checkpoint (its figures are for the step it was written at; update them after a burst).
if [ -f "$checkpoint/MODEL_CARD.md" ]; then cp "$checkpoint/MODEL_CARD.md" "$out/checkpoint/MODEL_CARD.md"; fi
