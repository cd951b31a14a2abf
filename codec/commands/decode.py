"""`voxtok decode IN... -o OUT`: .vtok (or .npy code arrays, or .vlat latents) -> wav/flac."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from voxtok.commands.decoding import add_decoding_options

    p = sub.add_parser("decode", help="decode .vtok token files (or .npy code arrays, .vlat latents) to audio")
    p.add_argument("inputs", nargs="+", help=".vtok/.npy/.vlat files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output .wav/.flac (one input) or folder")
    p.add_argument("--model", default=None,
                   help="shipped model name or model folder (default: the shipped model each .vtok file names, "
                        "else the default model)")
    p.add_argument("--audio-format", choices=["wav", "flac"], default="wav", help="format when OUT is a folder")
    p.add_argument("--quiet", action="store_true")
    add_decoding_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm
    from voxtok.audio import save_audio_blocks
    from voxtok.binary import load_codes_npy, read_bytes, summarize_vtok
    from voxtok.commands.decoding import apply_decoding_options
    from voxtok.compress import (
        available_models,
        check_codes,
        decode_to_file,
        iter_decoded_latents,
        load_codec,
        read_tokens,
    )
    from voxtok.errors import VoxtokError
    from voxtok.inputs import collect_inputs, plan_outputs
    from voxtok.latents import check_latents_model, decode_vlat, is_vlat

    suffix = "." + args.audio_format
    items = collect_inputs(args.inputs, {".vtok", ".npy", ".vlat"})
    plan = plan_outputs(items, Path(args.output), suffix, {".wav", ".flac"})
    models = {}

    def model_for(data: bytes | None):
        """--model if given; else the shipped model a .vtok header names (a token file says what made it), else
        the default model. Each is loaded once."""
        name = args.model
        if name is None and data is not None:
            try:
                if is_vlat(data):
                    named = decode_vlat(data)[0].model_id
                else:
                    named = summarize_vtok(data).header.model_id
            except VoxtokError:
                named = None  # the reader will report what is wrong with the file
            name = named if named in available_models() else None
        if name not in models:
            models[name] = load_codec(name)
            apply_decoding_options(models[name], args)
        return models[name]

    if args.model:
        model_for(None)  # a bad --model fails once, before any file
    single = len(plan) == 1
    failures = 0
    for src, dest in tqdm(plan, unit="file", disable=args.quiet or single, leave=False):
        try:
            data = None if src.suffix == ".npy" else read_bytes(src)
            model = model_for(data)
            if src.suffix == ".vlat":
                header, latents = decode_vlat(data, source=str(src))
                check_latents_model(header, model, str(src))
                save_audio_blocks(dest, iter_decoded_latents(model, latents, header.num_samples),
                                  model.config.sample_rate)
                continue
            if src.suffix == ".npy":
                codes = load_codes_npy(src)
                check_codes(model, codes, str(src))
                num_samples = None
            else:
                header, codes = read_tokens(model, data, source=str(src))
                num_samples = header.num_samples
            decode_to_file(model, codes, dest, num_samples)
        except VoxtokError as exc:
            failures += 1
            tqdm.write(f"voxtok: error: {exc}", file=sys.stderr)
    if failures and not single:
        print(f"voxtok: {failures} of {len(plan)} files failed", file=sys.stderr)
    return 1 if failures else 0
