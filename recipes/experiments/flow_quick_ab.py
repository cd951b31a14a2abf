"""A quick A/B of the 12.5 Hz tokenizer's decoders on a few dev files (minutes, not the full eval): the regression
control against the flow decoder at several step counts and temperatures, PESQ-WB / STOI / log-mel L1.

    python recipes/experiments/flow_quick_ab.py runs/lowrate_12hz/checkpoint [FILES]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from voxtok.audio import load_audio
from voxtok.compress import load_codec
from voxtok.dataset import read_manifest
from voxtok.eval.metrics import pesq_wb, stoi
from voxtok.losses import MultiResolutionMelLoss

ROOT = Path("../shared/data/real")


def main() -> None:
    torch.set_num_threads(1)
    model = load_codec(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    rows = [r for r in read_manifest(ROOT, "codec/splits/real_dev.txt") if "digits" not in r.get("tags", [])]
    rows = rows[:: max(1, len(rows) // count)][:count]
    mel = MultiResolutionMelLoss(16000).double()
    arms = [("regression", None, None), ("flow", 8, 1.0), ("flow", 8, 0.7), ("flow", 4, 1.0), ("flow", 2, 1.0),
            ("flow", 1, 1.0)]
    results: dict[str, list] = {}
    with torch.inference_mode():
        for row in rows:
            ref = load_audio(ROOT / row["path"], 16000)[: 16000 * 8]
            x = torch.from_numpy(ref)[None, None]
            z = model.encode_latents(x)
            for kind, steps, temperature in arms:
                model.set_decoding(kind, steps, temperature)
                y = model.decode_latents(z)[..., : len(ref)]
                name = kind if steps is None else f"flow{steps}_T{temperature:g}"
                out = y[0, 0].float().numpy()
                results.setdefault(name, []).append((pesq_wb(ref, out), stoi(ref, out),
                                                     float(mel(y.double(), x.double()))))
    for name, values in results.items():
        a = np.array(values)
        print(f"{name:16s} pesq {a[:, 0].mean():.3f}  stoi {a[:, 1].mean():.3f}  mel {a[:, 2].mean():.3f}")


if __name__ == "__main__":
    main()
