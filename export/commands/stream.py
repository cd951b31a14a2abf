"""`voxtok stream IN -o OUT [--chunk-ms 20]`: encode + decode through the ONNX runtime chunk by chunk, as a
live stream, and report per-chunk latency, first-audio latency and the algorithmic latency.

IN is an audio file (fed at the pace of the audio clock, or as fast as possible with --fast) or `mic` for
the default microphone (needs the sounddevice package and an input device). The graphs come from --onnx DIR,
or else from an export of --model kept in the user cache, made once (that one step needs torch + the onnx
extra) and remade when the model's weights change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MIC = "mic"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="stream audio through the ONNX codec and report latency")
    p.add_argument("input", help=f"audio file, or {MIC!r} for the default microphone")
    p.add_argument("-o", "--output", required=True, help="decoded .wav/.flac")
    p.add_argument("--chunk-ms", type=float, default=20.0, help="input chunk length in ms (default 20)")
    p.add_argument("--onnx", default=None, help="folder written by `voxtok export onnx`")
    p.add_argument("--model", default=None, help="model to export into the cache when --onnx is not given")
    p.add_argument("--fast", action="store_true", help="file input as fast as possible, not at the audio clock")
    p.add_argument("--seconds", type=float, default=None, help="microphone: stop after this long (else Ctrl-C)")
    p.add_argument("--bitrate", type=float, default=None, help="target kbps (default: all codebooks)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    p.add_argument("--int8", action="store_true", help="use the INT8 graphs (export with --int8)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from voxtok.audio import load_audio, save_audio
    from voxtok.errors import VoxtokError
    from voxtok.export.cache import cached_export
    from voxtok.export.runtime import ExportedCodec, StreamingDecoder, StreamingEncoder, iter_chunks, run_stream

    if args.chunk_ms <= 0:
        raise VoxtokError(f"--chunk-ms must be positive, got {args.chunk_ms}")
    model_dir = Path(args.onnx) if args.onnx else cached_export(args.model, args.int8)
    codec = ExportedCodec(model_dir, threads=args.threads, precision="int8" if args.int8 else "fp32")
    sr = codec.sample_rate
    chunk = max(1, int(round(args.chunk_ms * sr / 1000)))
    encoder = StreamingEncoder(codec, num_quantizers=num_quantizers_for(codec, args.bitrate))
    decoder = StreamingDecoder(codec)
    if args.input == MIC:
        decoded, figures = run_stream(encoder, decoder, microphone_chunks(sr, chunk, args.seconds), paced=False)
        figures["source"] = MIC
    else:
        samples = load_audio(args.input, sr)
        decoded, figures = run_stream(encoder, decoder, iter_chunks(samples, chunk), paced=not args.fast)
        figures["source"] = args.input
    if len(decoded) == 0:
        raise VoxtokError("no audio was streamed")
    save_audio(args.output, decoded, sr)
    figures.update({"output": args.output, "chunk_ms": 1000 * chunk / sr, "threads": args.threads,
                    "precision": codec.precision, "codebooks": encoder.num_quantizers})
    if args.json:
        print(json.dumps(figures))
    else:
        print(format_figures(figures))
    return 0


def num_quantizers_for(codec, bitrate_kbps: float | None) -> int | None:
    """The codebooks for a bitrate, by the model config's one rule (None: all of them)."""
    from voxtok.config import config_from_dict

    if bitrate_kbps is None:
        return None
    return config_from_dict(codec.manifest["config"]).num_quantizers_for(bitrate_kbps)


def format_figures(f: dict) -> str:
    lat, enc, dec = f["chunk_latency"], f["encode_chunk"], f["decode_chunk"]
    pace = "as fast as possible" if not f["paced"] else "at the audio clock"
    if f["source"] == MIC:
        pace = "live from the microphone"
    lines = [
        f"streamed {f['audio_s']:g} s in {f['chunks']} chunks of {f['chunk_ms']:g} ms, {pace} -> {f['output']}",
        f"  chunk latency   p50 {lat['p50_ms']} ms  p95 {lat['p95_ms']} ms  max {lat['max_ms']} ms "
        f"(encode p50 {enc['p50_ms']} ms, decode p50 {dec['p50_ms']} ms)",
        f"  first audio     {f['first_audio_ms']} ms after the stream started",
        f"  algorithmic     {f['algorithmic_latency_ms']:g} ms measured at this chunk size "
        f"({f['stated_latency_ms']:g} ms stated for 20 ms chunks: one frame + iSTFT overlap)",
        f"  compute         {f['compute_rtf']}x real time on {f['threads']} thread(s), {f['precision']}, "
        f"{f['codebooks']} codebooks",
    ]
    return "\n".join(lines)


def microphone_chunks(sample_rate: int, chunk: int, seconds: float | None):
    """Chunks from the default input device until `seconds` have been read or Ctrl-C."""
    import queue

    from voxtok.errors import VoxtokError

    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library itself is missing
        raise VoxtokError(f"microphone input needs the sounddevice package and PortAudio ({exc})") from None
    try:
        sd.query_devices(kind="input")
    except Exception:  # sounddevice raises PortAudioError or ValueError when there is no input device
        raise VoxtokError("no microphone found (no default input device)") from None
    blocks: queue.Queue = queue.Queue()

    def callback(indata, frames, time_info, status) -> None:
        blocks.put(indata[:, 0].copy())

    def generate():
        total = 0
        limit = None if seconds is None else int(seconds * sample_rate)
        try:
            with sd.InputStream(samplerate=sample_rate, channels=1, dtype="float32", blocksize=chunk,
                                callback=callback):
                while limit is None or total < limit:
                    block = blocks.get()
                    total += len(block)
                    yield block
        except KeyboardInterrupt:
            return
        except sd.PortAudioError as exc:
            raise VoxtokError(f"microphone: {exc}") from None

    return generate()
