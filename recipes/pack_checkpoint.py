"""Pack a training checkpoint small enough to commit, so a later session (or a GPU) can resume the run.

    python recipes/pack_checkpoint.py runs/codec_16k recipes/checkpoints/codec_16k

Keeps the model (fp16, except the codebooks and their EMA statistics, which stay fp32 because k-means/EMA
updates are sensitive to rounding), the discriminators, the [terms.*] heads, config.json and the step; drops the
optimizer state (twice the model's size: a resume re-warms the learning rate with fresh Adam moments). The
training log is the earlier packed checkpoint's history followed by the run's own entries, up to the packed step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file
from voxtok.model import half_weights


def _log_entries(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pack(run_dir: Path, out_dir: Path) -> int:
    ckpt = run_dir / "checkpoint"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    step = int(state["step"])
    # The history before this run lives in the earlier packed checkpoint (out_dir, or the copy the run was
    # resumed from); the run's own log.jsonl has what came after.
    history = _log_entries(out_dir / "log.jsonl") or _log_entries(ckpt / "log.jsonl")
    last = max((e.get("step", 0) for e in history), default=0)
    history += [e for e in _log_entries(run_dir / "log.jsonl") if last < e.get("step", 0) <= step]

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(half_weights(load_file(str(ckpt / "model.safetensors"))), str(tmp / "model.safetensors"))
    # The discriminators and the auxiliary terms' heads ([terms.*]) resume with the model; their optimizers do not.
    for extra in ("discriminators.safetensors", "terms.safetensors"):
        if (ckpt / extra).is_file():
            shutil.copy2(ckpt / extra, tmp / extra)
    shutil.copy2(ckpt / "config.json", tmp / "config.json")
    state.pop("optimizers", None)
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    (tmp / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))
    if (out_dir / "MODEL_CARD.md").is_file():  # the card stays with the checkpoint; its author updates the figures
        shutil.copy2(out_dir / "MODEL_CARD.md", tmp / "MODEL_CARD.md")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the recipe's out_dir, e.g. runs/codec_16k")
    parser.add_argument("out_dir", type=Path, help="where the packed checkpoint goes")
    args = parser.parse_args(argv)
    if not (args.run_dir / "checkpoint" / "trainer_state.json").is_file():
        print(f"pack_checkpoint: error: {args.run_dir}/checkpoint: no checkpoint there", file=sys.stderr)
        return 1
    step = pack(args.run_dir, args.out_dir)
    print(f"packed step {step} into {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
