"""`voxtok roundtrip IN -o OUT`: encode + decode one file and print bitrate and quality figures."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("roundtrip", help="encode and decode one file; print bitrate and metrics")
    p.add_argument("input", help="audio file")
    p.add_argument("-o", "--output", required=True, help="decoded .wav/.flac")
    p.add_argument("--model", default=None)
    p.add_argument("--bitrate", type=float, default=None, help="target kbps (default: all codebooks)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from codec.audio import load_audio, save_audio
    from codec.compress import compress, decompress, load_codec
    from codec.eval.metrics import si_sdr

    model = load_codec(args.model)
    sr = model.config.sample_rate
    ref = load_audio(args.input, sr)
    start = time.perf_counter()
    data = compress(model, ref, sr, args.bitrate)
    encoded = time.perf_counter()
    decoded, _ = decompress(model, data)
    done = time.perf_counter()
    save_audio(args.output, decoded, sr)
    seconds = len(ref) / sr
    figures = {
        "input": args.input, "output": args.output, "duration_s": round(seconds, 3), "bytes": len(data),
        "kbps": round(8 * len(data) / seconds / 1000, 3),
        "encode_x_realtime": round(seconds / (encoded - start), 1),
        "decode_x_realtime": round(seconds / (done - encoded), 1),
        "si_sdr_db": round(si_sdr(ref, decoded[: len(ref)]), 2),
    }
    figures.update(_optional_metrics(ref, decoded, sr))
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for k, v in figures.items():
            print(f"{k:>{width}}: {v}")
    return 0


def _optional_metrics(ref, est, sr: int) -> dict:
    """PESQ-WB and STOI when the eval extra (voxtok[eval]) is installed."""
    out = {}
    try:
        from pesq import pesq

        out["pesq_wb"] = round(float(pesq(sr, ref, est[: len(ref)], "wb")), 3)
    except Exception:  # not installed, or PESQ finds no speech
        pass
    try:
        from pystoi import stoi

        out["stoi"] = round(float(stoi(ref, est[: len(ref)], sr)), 3)
    except Exception:
        pass
    return out
