"""Where does codec v2 lose quality? Decode real dev speech with the model, then swap single synthesiser
parameters (log-mel envelope, F0, voicing) for the analysis of the original and score each mix. The parameter
whose swap gains the most is the one to train harder.

    python recipes/experiments/parameter_swap.py --files 12 --bitrate 1.5 --out runs/parameter_swap
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from voxtok.audio import load_audio
from voxtok.compress import load_codec
from voxtok.data.pitch import world_features
from voxtok.eval.metrics import pesq_wb, stoi
from voxtok.eval.runner import read_manifest, read_split, select
from voxtok.modules.harmonic import SynthAnalysis

# which parameters come from the original (the rest are the model's)
VARIANTS = {"model": (), "true_env": ("env",), "true_f0": ("f0",), "true_voicing": ("voicing",),
            "true_f0_voicing": ("f0", "voicing"), "true_all": ("env", "f0", "voicing")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="../shared/data/real")
    parser.add_argument("--model", default=None)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--bitrate", type=float, default=1.5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="runs/parameter_swap")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    cfg = codec.config
    entries = select(read_manifest(Path(args.root)), read_split("dev"), exclude_tags=["digits"], limit=args.files)
    analysis = SynthAnalysis(cfg.sample_rate, cfg.window, cfg.subframe, cfg.bands).double()
    synth = codec.decoder.synth
    variants = {v: VARIANTS[v] for v in args.variants.split(",")}
    b = cfg.bands
    scores: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    started = time.time()
    for entry in entries:
        ref = load_audio(Path(args.root) / entry.path, cfg.sample_rate)
        ref = ref[: len(ref) - len(ref) % cfg.hop_length]
        wav = torch.from_numpy(ref).double()[None, None]
        with torch.no_grad():
            codes = codec.encode(wav, codec.num_quantizers_for(args.bitrate))
            predicted = codec.decoder.synth_parameters(codec.quantizer.decode(codes).to(codec.decoder_dtype))[0]
            true_env = analysis(wav)[0]
        frames = predicted.shape[-1]
        feats = world_features(ref, cfg.sample_rate, cfg.subframe, 8, method="harvest")
        true_f0 = torch.from_numpy(feats.f0[:frames]).double()
        true_voiced = torch.from_numpy(feats.voiced[:frames]).double()
        n = min(frames, true_env.shape[-1], len(true_f0))
        for name, swaps in variants.items():
            params = predicted[:, :n].clone()
            if "env" in swaps:
                params[:b] = true_env[:, :n]
            if "f0" in swaps:
                params[b] = true_f0[:n]
            if "voicing" in swaps:
                params[b + 1] = true_voiced[:n]
            with torch.no_grad():
                out = synth(params[None])[0, 0]
            out = out[cfg.decoder_delay:][: len(ref)].float().numpy()
            m = min(len(out), len(ref))
            scores[name].append((pesq_wb(ref[:m], out[:m]), stoi(ref[:m], out[:m])))
    report = {v: {"pesq_wb": round(float(np.mean([s[0] for s in r])), 3),
                  "stoi": round(float(np.mean([s[1] for s in r])), 3)} for v, r in scores.items()}
    report["files"] = len(entries)
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps(report, indent=2))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
