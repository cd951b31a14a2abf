"""Can the synthesiser be driven by a *smooth* envelope? Analysis-by-synthesis on real dev speech: with WORLD's F0
and voicing fixed, fit the envelope channels by gradient descent so that the synthesised audio's log-mel matches
the original's, under two ways of shaping the excitation:

- "match": each band of the excitation is normalised to unit magnitude and scaled to the band's value (the
  shipped synthesiser): the envelope must carry the harmonic fine structure of narrow low bands itself;
- "filter": the excitation (unit-amplitude harmonics, unit-variance noise) is multiplied by the envelope
  interpolated to bins (source-filter): harmonics come from the excitation, the envelope can be smooth.

and two envelope parametrisations: free (64 bands) and smooth (the first `--cepstra` DCT coefficients over
bands). The gap between match/free and match/smooth is what the decoder must learn that DSP could give.

    python recipes/experiments/envelope_ceiling.py --files 8 --out runs/envelope_ceiling
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from voxtok.audio import load_audio
from voxtok.data.pitch import world_features
from voxtok.eval.metrics import pesq_wb, stoi
from voxtok.eval.runner import read_manifest, read_split, select
from voxtok.modules.harmonic import HarmonicSynth, SynthAnalysis

SR, WINDOW, HOP, BANDS = 16000, 320, 80, 64


class FilterSynth(HarmonicSynth):
    """Source-filter shaping: the mixed excitation times the envelope spread over the bins (no per-band
    normalisation), so the harmonics' fine structure comes from the excitation."""

    def shape(self, harmonic_spec, noise_spec, log_mel, voicing, aperiodicity):
        spread = self.spread.to(log_mel.dtype)
        mel = log_mel.transpose(1, 2)
        noise_share = (1.0 - voicing[..., None]).expand_as(mel)
        mix_h = torch.sqrt((1.0 - noise_share).clamp(min=0.0)) @ spread.T
        mix_n = torch.sqrt(noise_share) @ spread.T
        envelope = torch.exp(mel) @ spread.T
        return (harmonic_spec * (mix_h * envelope).repeat(1, 1, 2)
                + noise_spec * (mix_n * envelope).repeat(1, 1, 2))


def dct_basis(n: int, k: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(k, dtype=torch.float64)[None]
    return torch.cos(math.pi * (i + 0.5) * j / n)  # [n, k]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="../shared/data/real")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--cepstra", type=int, default=20)
    parser.add_argument("--variants", default="match/free,match/smooth,filter/free,filter/smooth")
    parser.add_argument("--out", default="runs/envelope_ceiling")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries = select(read_manifest(Path(args.root)), read_split("dev"), exclude_tags=["digits"], limit=args.files)
    analysis = SynthAnalysis(SR, WINDOW, HOP, BANDS).double()
    synths = {"match": HarmonicSynth(SR, WINDOW, HOP, BANDS).double(),
              "filter": FilterSynth(SR, WINDOW, HOP, BANDS).double()}
    basis = dct_basis(BANDS, args.cepstra)
    variants = args.variants.split(",")
    scores: dict[str, list[tuple[float, float, float]]] = {v: [] for v in ["true_mel", *variants]}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for entry in entries:
        ref = load_audio(Path(args.root) / entry.path, SR)[: int(args.seconds * SR)]
        ref = ref[: len(ref) - len(ref) % HOP]
        wav = torch.from_numpy(ref).double()[None, None]
        with torch.no_grad():
            target = analysis(wav)[0]
        frames = target.shape[-1]
        feats = world_features(ref, SR, HOP, 8, method="harvest")
        f0 = torch.from_numpy(feats.f0[:frames]).double()
        voiced = torch.from_numpy(feats.voiced[:frames]).double()
        frames = min(frames, len(f0))
        target, f0, voiced = target[:, :frames], f0[:frames], voiced[:frames]

        def render(mode: str, env: torch.Tensor, f0=f0, voiced=voiced, frames=frames) -> torch.Tensor:
            params = torch.cat([env, f0[None], voiced[None]], dim=0)[None]
            return synths[mode](params)[0, 0, WINDOW - HOP:][: frames * HOP]

        def score(name: str, audio: torch.Tensor, fit: float, ref=ref) -> None:
            a = audio.detach().numpy()
            scores[name].append((pesq_wb(ref[: len(a)], a), stoi(ref[: len(a)], a), fit))

        with torch.no_grad():
            score("true_mel", render("match", target), 0.0)
        for variant in variants:
            mode, param = variant.split("/")
            if param == "free":
                weights = target.clone().requires_grad_(True)
                env_of = lambda w: w  # noqa: E731
            else:
                weights = torch.linalg.lstsq(basis, target).solution.clone().requires_grad_(True)
                env_of = lambda w: basis @ w  # noqa: E731
            opt = torch.optim.Adam([weights], lr=0.05)
            for _ in range(args.iters):
                audio = render(mode, env_of(weights))
                got = analysis(audio[None, None])[0]
                loss = (got - target).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                audio = render(mode, env_of(weights))
                fit = float((analysis(audio[None, None])[0] - target).abs().mean())
            score(variant, audio, fit)
        print(entry.path, {k: tuple(round(x, 3) for x in v[-1]) for k, v in scores.items()}, flush=True)
    report = {v: {"pesq_wb": round(float(np.mean([s[0] for s in r])), 3),
                  "stoi": round(float(np.mean([s[1] for s in r])), 3),
                  "log_mel_fit_l1": round(float(np.mean([s[2] for s in r])), 3)} for v, r in scores.items()}
    report["files"], report["seconds"] = len(entries), round(time.time() - started, 1)
    print(json.dumps(report, indent=2))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
