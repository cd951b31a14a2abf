"""Copy-synthesis ceiling of the harmonic-plus-noise head: analyse real dev speech (log-mel bands, pyworld F0,
D4C aperiodicity), resynthesise with voxtok.modules.harmonic.HarmonicSynth, and score PESQ-WB / STOI against the
original (and DNSMOS OVRL, which needs no reference). No training and no quantization: this is what the head can
reach when its parameters are exact.

    python recipes/experiments/copy_synthesis.py --files 24 --variants rule,d4c,noap --out runs/copy_synthesis24
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from voxtok.audio import load_audio
from voxtok.data.pitch import world_features
from voxtok.eval.metrics import pesq_wb, stoi
from voxtok.eval.models import Judges
from voxtok.eval.runner import read_manifest, read_split, select
from voxtok.modules.harmonic import HarmonicSynth, SynthAnalysis

SR, WINDOW, HOP = 16000, 320, 80


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="../shared/data/real")
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--bands", type=int, default=64)
    parser.add_argument("--ap-bands", type=int, default=8)
    parser.add_argument("--variants", default="rule,d4c,noap")
    parser.add_argument("--f0", default="harvest", choices=["harvest", "dio"])
    parser.add_argument("--out", default="runs/copy_synthesis")
    args = parser.parse_args()
    root = Path(args.root)
    entries = select(read_manifest(root), read_split("dev"), exclude_tags=["digits"], limit=args.files)
    analysis = SynthAnalysis(SR, WINDOW, HOP, args.bands)
    # "d4c" reads WORLD's aperiodicity in ap-bands channels; "rule" is the synthesiser's built-in curve (what
    # codec v2 uses); "noap" makes voiced frames purely harmonic.
    synth = HarmonicSynth(SR, WINDOW, HOP, args.bands, args.ap_bands)
    rule_synth = HarmonicSynth(SR, WINDOW, HOP, args.bands)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[tuple[float, float, float]]] = {v: [] for v in ["orig", *args.variants.split(",")]}
    dnsmos = Judges().dnsmos
    started = time.time()
    for entry in entries:
        ref = load_audio(root / entry.path, SR)
        ref = ref[: len(ref) - len(ref) % HOP]
        feats = world_features(ref, SR, HOP, args.ap_bands, method=args.f0)
        with torch.no_grad():
            log_mel = analysis(torch.from_numpy(ref)[None, None])[0]
        frames = log_mel.shape[-1]
        f0, voiced, ap = (torch.from_numpy(a[:frames]).float() for a in (feats.f0, feats.voiced, feats.aperiodicity))
        scores["orig"].append((4.64, 1.0, dnsmos.score(ref)["ovrl"]))
        for variant in [v for v in scores if v != "orig"]:
            head = rule_synth if variant == "rule" else synth
            ap_v = {"rule": torch.zeros(0, frames), "noap": torch.zeros(args.ap_bands, frames)}.get(variant, ap.T)
            params = torch.cat([log_mel, f0[None], voiced[None], ap_v], dim=0)[None]
            with torch.no_grad():
                wav = head(params)[0, 0, WINDOW - HOP:][: len(ref)].numpy()
            scores[variant].append((pesq_wb(ref, wav), stoi(ref, wav), dnsmos.score(wav)["ovrl"]))
            if len(scores[variant]) <= 3:
                sf.write(out / f"{Path(entry.path).stem}.{variant}.wav", wav, SR)
        if len(scores["orig"]) <= 3:
            sf.write(out / f"{Path(entry.path).stem}.orig.wav", ref, SR)
    report = {v: {"pesq_wb": float(np.mean([s[0] for s in r])), "stoi": float(np.mean([s[1] for s in r])),
                  "dnsmos_ovrl": float(np.mean([s[2] for s in r])), "files": len(r)} for v, r in scores.items()}
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps(report, indent=2))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
