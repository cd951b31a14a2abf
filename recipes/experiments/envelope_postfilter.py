"""Does a spectral postfilter on v2's predicted envelope help? The decoder regresses log-mel bands with an L1 loss,
and regression flattens the formants (the spectrogram shows them smoothed in time and frequency). Parametric TTS
answers this with a postfilter that deepens the envelope's peaks and valleys; here, per 5 ms frame:

    log_mel' = log_mel + beta * (log_mel - S log_mel)      S: Gaussian smoothing over `sigma` bands

It is a fixed 64 x 64 linear map on one frame, so it adds no latency and folds into the decoder's linear output
layer (W' = M W, b' = M b with M = I + beta (I - S)): no graph change for ONNX. Each file is decoded once to the
synthesiser's parameters, then synthesised with each beta and scored with `voxtok eval`'s own metric code.

    python recipes/experiments/envelope_postfilter.py --files 24 --split dev --betas 0,0.2,0.4 --sigma 2 \
        [--model DIR] [--bitrate 1.5] [--metrics pesq,stoi,mel,pitch,dnsmos] [--out runs/envelope_postfilter]
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
from voxtok.eval.metrics import MetricSuite, parse_metric_list
from voxtok.eval.runner import read_manifest, read_split, select, spread_evenly


def postfilter_matrix(bands: int, beta: float, sigma: float) -> torch.Tensor:
    """M = I + beta (I - S), S a row-normalised Gaussian over band indices (edges renormalised, so a flat envelope
    stays flat)."""
    index = torch.arange(bands, dtype=torch.float64)
    smooth = torch.exp(-0.5 * ((index[:, None] - index[None, :]) / sigma) ** 2)
    smooth = smooth / smooth.sum(dim=1, keepdim=True)
    eye = torch.eye(bands, dtype=torch.float64)
    return eye + beta * (eye - smooth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/real")
    parser.add_argument("--model", default=None)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--split", default="dev", choices=["dev", "train"])
    parser.add_argument("--bitrate", type=float, default=1.5)
    parser.add_argument("--betas", default="0,0.2,0.4")
    parser.add_argument("--sigma", type=float, default=2.0)
    parser.add_argument("--metrics", default="pesq,stoi,mel,pitch,dnsmos")
    parser.add_argument("--out", default="runs/envelope_postfilter")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    cfg = codec.config
    entries = [e for e in select(read_manifest(Path(args.root)), read_split(args.split)) if "digits" not in e.tags]
    entries = entries[: args.files] if args.split == "dev" else spread_evenly(entries, args.files)
    suite = MetricSuite(parse_metric_list(args.metrics))
    synth = codec.decoder.synth
    betas = [float(b) for b in args.betas.split(",")]
    filters = {beta: postfilter_matrix(cfg.bands, beta, args.sigma) for beta in betas}
    rows: dict[float, list[dict]] = {beta: [] for beta in betas}
    started = time.time()
    for entry in entries:
        ref = load_audio(Path(args.root) / entry.path, cfg.sample_rate)
        ref = ref[: len(ref) - len(ref) % cfg.hop_length]
        reference = suite.analyse(ref, None)
        wav = torch.from_numpy(ref).double()[None, None]
        with torch.no_grad():
            codes = codec.encode(wav, codec.num_quantizers_for(args.bitrate))
            x = codec.decoder.synth_parameters(codec.quantizer.decode(codes).to(codec.decoder_dtype))
        for beta, matrix in filters.items():
            params = x.clone()
            params[0, : cfg.bands] = (matrix.to(params.dtype) @ params[0, : cfg.bands]).clamp(
                min=np.log(1e-5), max=np.log(1e3))
            with torch.no_grad():
                out = synth(params)[0, 0]
            out = out[cfg.decoder_delay:][: len(ref)].float().numpy()
            out = np.pad(out, (0, len(ref) - len(out)))
            values, _ = suite.compare(reference, out)
            rows[beta].append(values)

    def mean(items: list[dict], key: str) -> float | None:
        found = [i[key] for i in items if i.get(key) is not None]
        return round(float(np.mean(found)), 4) if found else None

    columns = sorted({k for items in rows.values() for i in items for k in i})
    report = {"model": codec.model_id, "split": args.split, "files": len(entries), "bitrate": args.bitrate,
              "sigma": args.sigma, "seconds": round(time.time() - started, 1),
              "betas": {str(beta): {c: mean(items, c) for c in columns} for beta, items in rows.items()}}
    print(json.dumps(report, indent=2))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.split}_sigma{args.sigma:g}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
