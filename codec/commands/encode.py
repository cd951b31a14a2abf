"""`voxtok encode IN... -o OUT`: audio -> .vtok token files (or int16 .npy [n_q, T] arrays)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode audio files, folders or a manifest into tokens")
    p.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or manifest.jsonl")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    p.add_argument("--model", default=None, help="shipped model name or model folder (default voxtok-16k)")
    p.add_argument("--bitrate", type=float, default=None, help="target kbps (default: all codebooks)")
    p.add_argument("--format", choices=["vtok", "npy"], default="vtok")
    p.add_argument("--batch-size", type=int, default=8, help="files per forward pass (short files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from codec.audio import load_audio
    from codec.binary import encode_vtok, save_codes_npy
    from codec.compress import (
        STREAM_ABOVE_SECONDS,
        check_encodable,
        encode_batch,
        encode_samples,
        load_codec,
        make_header,
    )
    from codec.errors import VoxtokError
    from codec.inputs import AUDIO_SUFFIXES, collect_inputs, output_path

    model = load_codec(args.model)
    n_q = model.num_quantizers_for(args.bitrate)
    sr = model.config.sample_rate
    items = collect_inputs(args.inputs, AUDIO_SUFFIXES)
    out_root = Path(args.output)
    suffix = "." + args.format
    single = len(items) == 1
    failures = 0

    def write(dest: Path, codes, num_samples: int) -> None:
        if args.format == "npy":
            save_codes_npy(dest, codes)
        else:
            from codec.audio import atomic_write

            data = encode_vtok(make_header(model, codes, num_samples), codes)
            atomic_write(dest, lambda tmp: Path(tmp).write_bytes(data))

    # Read each file, then encode short ones in padded batches of similar length and long ones alone
    # (streamed); a failure on one file is reported and the rest go on.
    bar = tqdm(total=len(items), unit="file", disable=args.quiet or single, leave=False)
    pending: list[tuple[Path, object]] = []

    def flush() -> None:
        if not pending:
            return
        codes_list = encode_batch(model, [s for _, s in pending], n_q)
        for (dest, samples), codes in zip(pending, codes_list):
            write(dest, codes, len(samples))
        bar.update(len(pending))
        pending.clear()

    # Sorting by size groups similar lengths, so padding wastes little compute.
    order = sorted(items, key=lambda it: it[0].stat().st_size if it[0].is_file() else 0)
    for src, rel in order:
        dest = output_path(out_root, rel, suffix, single)
        try:
            samples = load_audio(src, sr)
            check_encodable(samples, str(src))
            if len(samples) > STREAM_ABOVE_SECONDS * sr or args.batch_size <= 1:
                write(dest, encode_samples(model, samples, n_q), len(samples))
                bar.update(1)
            else:
                pending.append((dest, samples))
                if len(pending) >= args.batch_size:
                    flush()
        except VoxtokError as exc:
            failures += 1
            bar.update(1)
            tqdm.write(f"voxtok: error: {exc}", file=sys.stderr)
    flush()
    bar.close()
    if failures:
        if single:
            return 1
        print(f"voxtok: {failures} of {len(items)} files failed", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"encoded {len(items)} file(s) at {n_q * model.config.kbps_per_codebook:g} kbps "
              f"({n_q} codebooks) -> {out_root}", file=sys.stderr)
    return 0
