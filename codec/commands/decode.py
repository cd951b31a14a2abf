"""`voxtok decode IN... -o OUT`: .vtok (or .npy code arrays) -> wav/flac."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode .vtok token files (or .npy code arrays) to audio")
    p.add_argument("inputs", nargs="+", help=".vtok/.npy files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output .wav/.flac (one input) or folder")
    p.add_argument("--model", default=None, help="shipped model name or model folder (default voxtok-16k)")
    p.add_argument("--audio-format", choices=["wav", "flac"], default="wav", help="format when OUT is a folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from codec.audio import save_audio
    from codec.binary import load_codes_npy
    from codec.compress import check_codes, decode_codes, decompress, load_codec
    from codec.errors import VoxtokError
    from codec.inputs import collect_inputs, output_path

    model = load_codec(args.model)
    items = collect_inputs(args.inputs, {".vtok", ".npy"})
    single = len(items) == 1
    failures = 0
    for src, rel in tqdm(items, unit="file", disable=args.quiet or single, leave=False):
        dest = output_path(Path(args.output), rel, "." + args.audio_format, single)
        try:
            if not src.is_file():
                raise VoxtokError(f"{src}: no such file")
            if src.suffix == ".npy":
                codes = load_codes_npy(src)
                check_codes(model, codes, str(src))
                samples, sr = decode_codes(model, codes), model.config.sample_rate
            else:
                samples, sr = decompress(model, src.read_bytes(), source=str(src))
            save_audio(dest, samples, sr)
        except VoxtokError as exc:
            failures += 1
            tqdm.write(f"voxtok: error: {exc}", file=sys.stderr)
    if failures and not single:
        print(f"voxtok: {failures} of {len(items)} files failed", file=sys.stderr)
    return 1 if failures else 0
