"""`voxtok roundtrip IN -o OUT`: encode + decode one file and print bitrate and quality figures."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from voxtok.commands.decoding import add_decoding_options

    p = sub.add_parser("roundtrip", help="encode and decode one file; print bitrate and metrics")
    p.add_argument("input", help="audio file")
    p.add_argument("-o", "--output", required=True, help="decoded .wav/.flac")
    p.add_argument("--model", default=None)
    p.add_argument("--bitrate", type=float, default=None, help="target kbps (default: all codebooks)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_decoding_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from voxtok.audio import check_audio_output, load_audio, save_audio
    from voxtok.commands.decoding import apply_decoding_options
    from voxtok.compress import compress, decompress, load_codec
    from voxtok.inputs import check_not_inputs

    source, output = Path(args.input), Path(args.output)
    check_audio_output(output)
    check_not_inputs([source], [output])
    model = load_codec(args.model)
    apply_decoding_options(model, args)
    sr = model.config.sample_rate
    ref = load_audio(source, sr)
    start = time.perf_counter()
    data = compress(model, ref, sr, args.bitrate)
    encoded = time.perf_counter()
    decoded, _ = decompress(model, data)
    done = time.perf_counter()
    seconds = len(ref) / sr
    figures = {
        "input": args.input, "output": args.output, "duration_s": round(seconds, 3), "bytes": len(data),
        "kbps": round(8 * len(data) / seconds / 1000, 3),
        "encode_x_realtime": round(seconds / max(encoded - start, 1e-9), 1),
        "decode_x_realtime": round(seconds / max(done - encoded, 1e-9), 1),
    }
    # Every figure is computed before the output is written, so a failure leaves no file behind.
    figures.update(_metrics(ref, decoded[: len(ref)]))
    save_audio(output, decoded, sr)
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for k, v in figures.items():
            print(f"{k:>{width}}: {v}")
    return 0


def _metrics(ref, est) -> dict:
    """SI-SDR, and PESQ-WB and STOI when the eval extra (voxtok[eval]) is installed: the same functions as
    `voxtok eval`. A metric that is undefined for this input (silence, a DC signal, a few samples) is null."""
    from voxtok.eval.metrics import pesq_wb, si_sdr, stoi

    out = {}
    for name, metric in (("si_sdr_db", si_sdr), ("pesq_wb", pesq_wb), ("stoi", stoi)):
        try:
            out[name] = round(float(metric(ref, est)), 3)
        # MetricUndefined, ImportError without the extra, and the libraries' own errors on a few samples.
        except Exception:
            out[name] = None
    return out
