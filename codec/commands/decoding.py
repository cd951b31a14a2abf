"""The decoder options of the 12.5 Hz tokenizer (`--decoder`, `--steps`, `--temperature`), shared by every command
that decodes tokens, so each is spelled and checked in one place."""

from __future__ import annotations

import argparse


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("decoding (12.5 Hz tokenizer, voxtok-16k-12hz)")
    group.add_argument("--decoder", choices=["flow", "regression"], default=None,
                       help="the regression decoder (default) or the flow-matching decoder")
    group.add_argument("--steps", type=int, default=None,
                       help="Euler steps of the flow decoder (default 8; implies --decoder flow)")
    group.add_argument("--temperature", type=float, default=None,
                       help="scale of the flow decoder's starting noise (default 1.0; implies --decoder flow)")


def apply_decoding_options(model, args: argparse.Namespace) -> None:
    """Set the options on a model that has them; refuse them for one that has not (they would be ignored)."""
    from voxtok.errors import VoxtokError

    given = [name for name in ("decoder", "steps", "temperature") if getattr(args, name, None) is not None]
    if not given:
        return
    if not model.continuous:
        raise VoxtokError(f"--{given[0]} applies to the 12.5 Hz tokenizer; model {model.model_id} has one decoder")
    decoder = args.decoder
    if decoder is None and (args.steps is not None or args.temperature is not None):
        decoder = "flow"  # flow options without --decoder mean the flow decoder
    model.set_decoding(decoder, args.steps, args.temperature)
