"""`voxtok bench`: encode/decode speed (× real time), streaming per-chunk latency and peak memory, optionally
beside peer codecs (--peers) and the ONNX export (--onnx DIR)."""

from __future__ import annotations

import argparse
import shlex


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed and latency benchmark (real-time factors, per-chunk latency, memory)",
                       description="Time offline and streaming encode/decode on real speech, each system and "
                                   "thread count in a fresh process; print a Markdown report of medians.")
    p.add_argument("--model", default=None, help="shipped model name or model folder (default: the default model)")
    p.add_argument("--input", default=None, help="speech file (default: LibriSpeech 1089-134686-0000 from "
                                                 "$VOXTOK_DATA or ../shared/data/real)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length for offline runs (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (default 5)")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    p.add_argument("--chunk-ms", default="20,80", help="comma list of streaming chunk sizes in ms; "
                                                         "'none' skips streaming (default 20,80)")
    p.add_argument("--stream-seconds", type=float, default=2.0, help="audio streamed per pass (default 2)")
    p.add_argument("--bitrate", type=float, default=None, help="target kbps (default: all codebooks)")
    p.add_argument("--peers", nargs="?", const="all", default=None, metavar="NAMES",
                   help="also time peer codecs with random weights: all (default) or a comma list of "
                        "encodec,dac,snac,mimi (needs voxtok[peers])")
    p.add_argument("--onnx", default=None, metavar="DIR",
                   help="also time an ONNX export (`voxtok export onnx -o DIR`) on the torch-free runtime, "
                        "every precision it holds")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full report as JSON")
    p.add_argument("--markdown", default=None, metavar="OUT", help="write the Markdown report")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--decoder", choices=["flow", "regression"], default=None,
                   help="12.5 Hz tokenizer: which decoder to time (default flow)")
    p.add_argument("--steps", type=int, default=None, help="12.5 Hz tokenizer: flow decoder Euler steps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from voxtok.bench.peers import parse_peers
    from voxtok.bench.report import to_markdown, write_json, write_markdown
    from voxtok.bench.speed import BenchSettings, default_input, run_bench
    from voxtok.errors import VoxtokError

    threads = _int_list(args.threads, "--threads")
    chunk_ms = [] if args.chunk_ms.strip().lower() == "none" else _float_list(args.chunk_ms, "--chunk-ms")
    if not args.seconds > 0 or not args.stream_seconds > 0:
        raise VoxtokError("--seconds and --stream-seconds must be positive")
    if args.repeats < 1:
        raise VoxtokError("--repeats must be at least 1")
    if args.bitrate is not None and not args.bitrate > 0:
        raise VoxtokError("--bitrate must be positive")
    settings = BenchSettings(
        input=str(args.input or default_input()), model=args.model, seconds=args.seconds, repeats=args.repeats,
        threads=threads, chunk_ms=chunk_ms, stream_seconds=args.stream_seconds, bitrate=args.bitrate,
        peers=parse_peers(args.peers) if args.peers is not None else [], onnx=args.onnx,
        decoding={k: v for k, v in (("decoder", args.decoder), ("steps", args.steps)) if v is not None},
        command=_command(args, threads, chunk_ms))
    progress = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    report = run_bench(settings, progress)
    if args.json:
        write_json(args.json, report)
    if args.markdown:
        write_markdown(args.markdown, report)
    print(to_markdown(report), end="")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    from voxtok.errors import VoxtokError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise VoxtokError(f"{flag}: expected a comma list of whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise VoxtokError(f"{flag}: values must be at least 1, got {text!r}")
    return values


def _float_list(text: str, flag: str) -> list[float]:
    from voxtok.errors import VoxtokError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise VoxtokError(f"{flag}: expected a comma list of numbers, got {text!r}") from None
    if not values or not min(values) > 0:
        raise VoxtokError(f"{flag}: values must be positive, got {text!r}")
    return values


def _command(args: argparse.Namespace, threads: list[int], chunk_ms: list[float]) -> str:
    """The run written out in full, so a report says exactly how to reproduce it."""
    parts = ["voxtok", "bench", "--seconds", f"{args.seconds:g}", "--repeats", str(args.repeats),
             "--threads", ",".join(map(str, threads)),
             "--chunk-ms", ",".join(f"{c:g}" for c in chunk_ms) or "none",
             "--stream-seconds", f"{args.stream_seconds:g}"]
    for flag, value in (("--model", args.model), ("--input", args.input), ("--bitrate", args.bitrate),
                        ("--peers", args.peers), ("--onnx", args.onnx), ("--decoder", args.decoder),
                        ("--steps", args.steps)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)
