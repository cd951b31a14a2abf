"""Per-dimension statistics of the 12.5 Hz tokenizer's normalised latents on the dev split (the bar: every
dimension's std within [0.5, 2] after the shipped normalisation), and how often each FSQ level is used.

    python recipes/experiments/latent_statistics.py [MODEL]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from voxtok.audio import load_audio
from voxtok.compress import load_codec
from voxtok.dataset import read_manifest

ROOT = Path("../shared/data/real")


def main() -> None:
    model = load_codec(sys.argv[1] if len(sys.argv) > 1 else "voxtok-16k-12hz")
    rows = [r for r in read_manifest(ROOT, "codec/splits/real_dev.txt") if "digits" not in r.get("tags", [])]
    parts = []
    with torch.inference_mode():
        for row in rows:
            samples = load_audio(ROOT / row["path"], model.config.sample_rate)
            parts.append(model.encode_latents(torch.from_numpy(samples)[None, None])[0].float().numpy())
    z = np.concatenate(parts, axis=1)
    std, mean = z.std(axis=1), z.mean(axis=1)
    levels = model.quantizer.levels_of(torch.from_numpy(z)).numpy()
    usage = [float((levels == k).mean()) for k in range(model.config.fsq_levels)]
    print(json.dumps({"files": len(rows), "frames": int(z.shape[1]), "std_min": round(float(std.min()), 3),
                      "std_max": round(float(std.max()), 3), "mean_abs_max": round(float(np.abs(mean).max()), 3),
                      "dims_within_0.5_2": int(((std >= 0.5) & (std <= 2)).sum()), "dims": int(z.shape[0]),
                      "fsq_level_usage": [round(u, 3) for u in usage]}))


if __name__ == "__main__":
    main()
