"""`voxtok encode IN... -o OUT`: audio -> .vtok token files (or int16 .npy [n_q, T] arrays, or, with the 12.5 Hz
tokenizer, `--format latents`: .vlat continuous latents)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode audio files, folders or a manifest into tokens")
    p.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or manifest.jsonl")
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    p.add_argument("--model", default=None, help="shipped model name or model folder (default: the default model)")
    p.add_argument("--bitrate", type=float, default=None, help="target kbps (default: all codebooks)")
    p.add_argument("--format", choices=["vtok", "npy", "latents"], default="vtok",
                   help="vtok token files, int16 .npy code arrays, or .vlat continuous latents (12.5 Hz tokenizer)")
    p.add_argument("--batch-size", type=int, default=8, help="files per forward pass (short files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm
    from voxtok.audio import atomic_write, audio_duration, load_audio
    from voxtok.binary import encode_vtok, save_codes_npy
    from voxtok.compress import (
        STREAM_ABOVE_SECONDS,
        check_encodable,
        encode_batch,
        encode_file,
        load_codec,
        make_header,
    )
    from voxtok.errors import VoxtokError
    from voxtok.inputs import AUDIO_SUFFIXES, collect_inputs, plan_outputs

    if args.batch_size < 1:
        raise VoxtokError(f"--batch-size must be at least 1, got {args.batch_size}")
    suffix = ".vlat" if args.format == "latents" else "." + args.format
    items = collect_inputs(args.inputs, AUDIO_SUFFIXES)
    # Every destination is planned (and checked against the inputs and each other) before the model loads.
    plan = plan_outputs(items, Path(args.output), suffix, {suffix})
    model = load_codec(args.model)
    if args.format == "latents":
        return _encode_latents(model, plan, args)
    n_q = model.num_quantizers_for(args.bitrate)
    sr = model.config.sample_rate
    single = len(plan) == 1
    failures = 0

    def write(dest: Path, codes, num_samples: int) -> None:
        if args.format == "npy":
            save_codes_npy(dest, codes)
        else:
            data = encode_vtok(make_header(model, codes, num_samples), codes)
            atomic_write(dest, lambda tmp: Path(tmp).write_bytes(data))

    # Read each file, then encode short ones in padded batches of similar length and long ones alone (streamed
    # block by block, so memory does not grow with duration); a failure on one file is reported and the rest go on.
    bar = tqdm(total=len(plan), unit="file", disable=args.quiet or single, leave=False)
    pending: list[tuple[Path, Path, object]] = []

    def report(src: Path, exc: VoxtokError) -> None:
        nonlocal failures
        failures += 1
        tqdm.write(f"voxtok: error: {exc}", file=sys.stderr)

    def flush() -> None:
        if not pending:
            return
        codes_list = encode_batch(model, [s for _, _, s in pending], n_q)
        for (src, dest, samples), codes in zip(pending, codes_list):
            try:
                write(dest, codes, len(samples))
            except VoxtokError as exc:
                report(src, exc)
        bar.update(len(pending))
        pending.clear()

    def size_of(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    # Sorting by size groups similar lengths, so padding wastes little compute.
    for src, dest in sorted(plan, key=lambda it: size_of(it[0])):
        try:
            if audio_duration(src) > STREAM_ABOVE_SECONDS or args.batch_size <= 1:
                write(dest, *encode_file(model, src, n_q))
                bar.update(1)
            else:
                samples = load_audio(src, sr)
                check_encodable(samples, str(src))
                pending.append((src, dest, samples))
                if len(pending) >= args.batch_size:
                    flush()
        except VoxtokError as exc:
            report(src, exc)
            bar.update(1)
    flush()
    bar.close()
    if failures:
        if not single:
            print(f"voxtok: {failures} of {len(plan)} files failed", file=sys.stderr)
        return 1
    if not args.quiet:
        # Rows of a .npy are codebooks: say which of them carry phones (a .vtok's model name says the same).
        semantic = [k for k in model.semantic_codebooks if k < n_q]
        which = f"; semantic codebook rows: {', '.join(map(str, semantic))}" if semantic else \
            "; no codebook is semantically distilled"
        print(f"encoded {len(plan)} file(s) at {n_q * model.config.kbps_per_codebook:g} kbps "
              f"({n_q} codebooks{which}) -> {args.output}", file=sys.stderr)
    return 0


def _encode_latents(model, plan: list, args: argparse.Namespace) -> int:
    """Each file -> a .vlat of normalised continuous latents (float16); a failure is reported, the rest go on."""
    import sys

    from tqdm import tqdm
    from voxtok.compress import encode_latents_file
    from voxtok.errors import VoxtokError
    from voxtok.latents import LatentHeader, write_vlat

    if args.bitrate is not None:
        raise VoxtokError("--bitrate does not apply to --format latents (continuous latents have no bitrate)")
    failures = 0
    for src, dest in tqdm(plan, unit="file", disable=args.quiet or len(plan) == 1, leave=False):
        try:
            latents, num_samples = encode_latents_file(model, src)
            cfg = model.config
            header = LatentHeader(model.model_id, cfg.config_hash(), cfg.sample_rate, cfg.frame_rate,
                                  cfg.latent_dim, num_samples, latents.shape[0])
            write_vlat(dest, header, latents)
        except VoxtokError as exc:
            failures += 1
            tqdm.write(f"voxtok: error: {exc}", file=sys.stderr)
    if failures:
        if len(plan) > 1:
            print(f"voxtok: {failures} of {len(plan)} files failed", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"encoded {len(plan)} file(s) to {model.config.latent_dim}-dim latents at "
              f"{model.config.frame_rate:g} Hz -> {args.output}", file=sys.stderr)
    return 0
