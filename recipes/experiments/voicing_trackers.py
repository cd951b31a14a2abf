"""Where v2's voicing decision error (VDE) comes from: the training target's tracker against the metric's.

    python recipes/experiments/voicing_trackers.py [ROOT] [--model voxtok-16k-v2] [--files 24] [--bitrate 1.5]
        [--shifts 0,1,2,3] [--split dev|train]

`voxtok eval` scores voicing with WORLD's DIO on the original and on the decoded audio; v2 learned its voicing
from WORLD's Harvest (voxtok.data.pitch). On the first N non-digit dev files this prints (1) Harvest against DIO
on the originals, (2) the decoded audio against the original by DIO, split into misses (voiced in the original,
unvoiced decoded) and false alarms, with GPE and PESQ-WB, for each shift of the voicing logit (a decode-time
threshold: -k on the logit before the sigmoid). `--split train` takes N files spread evenly over the train split
instead (a threshold chosen there is not chosen on the files it is scored on).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from voxtok.compress import decode_codes, encode_samples, load_codec
from voxtok.config import DEFAULT_MODEL
from voxtok.eval.metrics import f0_track, pitch_errors
from voxtok.eval.runner import read_manifest, read_split, select, spread_evenly
from voxtok.harmonic_codec import SynthParameters


def harvest_f0(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyworld
    f0, _ = pyworld.harvest(samples.astype(np.float64), sample_rate, f0_floor=50.0, f0_ceil=600.0,
                            frame_period=10.0)
    return f0


def decisions(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    n = min(len(reference), len(other))
    ref, oth = reference[:n] > 0, other[:n] > 0
    return {"vde": float(np.mean(ref != oth)), "miss": float(np.mean(ref & ~oth)),
            "false_alarm": float(np.mean(~ref & oth))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="../shared/data/real")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--bitrate", type=float, default=1.5)
    parser.add_argument("--shifts", default="0,1,2,3")
    parser.add_argument("--split", default="dev", choices=["dev", "train"])
    args = parser.parse_args()
    from pesq import pesq

    torch.set_num_threads(1)
    model = load_codec(args.model)
    n_q = model.num_quantizers_for(args.bitrate)
    root = Path(args.root)
    entries = [e for e in select(read_manifest(root), read_split(args.split)) if "digits" not in e.tags]
    entries = entries[: args.files] if args.split == "dev" else spread_evenly(entries, args.files)
    squash = SynthParameters.squash
    shifts = [float(s) for s in args.shifts.split(",")]
    trackers, rows = [], {k: [] for k in shifts}
    for entry in entries:
        x, sr = sf.read(root / entry.path, dtype="float32")
        dio = f0_track(x)
        trackers.append(decisions(dio, harvest_f0(x, sr)))
        codes = encode_samples(model, x)[:n_q]
        for shift in shifts:
            def shifted(self, raw, shift=shift):
                raw = raw.clone()
                at = self.bands + self.f0_channels
                raw[:, at:at + 1] -= shift
                return squash(self, raw)
            SynthParameters.squash = shifted
            try:
                y = decode_codes(model, codes)[: len(x)]
            finally:
                SynthParameters.squash = squash
            figures = decisions(dio, f0_track(y))
            figures["gpe"] = pitch_errors(dio, f0_track(y)).get("gpe")
            figures["pesq_wb"] = pesq(sr, x, y, "wb")
            rows[shift].append(figures)

    def mean(items: list[dict], key: str) -> float:
        return float(np.mean([i[key] for i in items if i.get(key) is not None]))

    print(f"{len(entries)} {args.split} files, {model.model_id} at {args.bitrate} kbps ({n_q} codebooks)")
    print(f"Harvest vs DIO on the originals: VDE {100 * mean(trackers, 'vde'):.1f}% (Harvest voiced where DIO is "
          f"not: {100 * mean(trackers, 'false_alarm'):.1f}%, the reverse: {100 * mean(trackers, 'miss'):.1f}%)")
    for shift, items in rows.items():
        print(f"voicing logit -{shift:g}: VDE {100 * mean(items, 'vde'):.1f}% (misses {100 * mean(items, 'miss'):.1f}%,"
              f" false alarms {100 * mean(items, 'false_alarm'):.1f}%), GPE {100 * mean(items, 'gpe'):.1f}%, "
              f"PESQ-WB {mean(items, 'pesq_wb'):.2f}")


if __name__ == "__main__":
    main()
