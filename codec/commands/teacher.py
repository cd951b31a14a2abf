"""`voxtok teacher train|eval|recognise`: voxtok's own phone-CTC recogniser (voxtok.phone_teacher), the speech
encoder the distillation terms and phone labelling can use where no HuBERT/WavLM weights are at hand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="train, evaluate or run voxtok's phone-CTC recogniser (a distillation teacher)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    t = verbs.add_parser("train", help="train or resume from a recipe (recipes/phone_teacher.toml)")
    t.add_argument("recipe")
    t.add_argument("--steps", type=int, default=None, help="stop at this step (default: the recipe's)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time, saved")
    t.add_argument("--export", metavar="DIR", default=None,
                   help="do not train: write the run's checkpoint as an fp16 model folder to DIR")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=run_train)
    e = verbs.add_parser("eval", help="phone error rate on transcribed speech (greedy CTC decoding)")
    e.add_argument("--model", default=None, help="model folder (default: the shipped voxtok-phone-ctc)")
    e.add_argument("--set", action="append", dest="sets", metavar="DIR[:SPLIT]",
                   help="a folder with manifest.jsonl and text, optionally a split (repeatable; default: "
                   "data/synth_heldout and ../shared/data/real:dev)")
    e.add_argument("--files", type=int, default=None, help="at most this many files per set, spread evenly")
    e.add_argument("-o", "--output", default=None, help="write the figures as JSON")
    e.set_defaults(func=run_eval)
    r = verbs.add_parser("recognise", help="print the phones of a speech file (and, with --text, where they are)")
    r.add_argument("audio")
    r.add_argument("--model", default=None, help="model folder (default: the shipped voxtok-phone-ctc)")
    r.add_argument("--text", default=None, help="force-align this text's phones instead of recognising")
    r.set_defaults(func=run_recognise)


def run_train(args: argparse.Namespace) -> int:
    from voxtok.errors import VoxtokError
    from voxtok.phone_teacher import PhoneCTC, TeacherTrainer, read_recipe

    if not Path(args.recipe).is_file():
        raise VoxtokError(f"{args.recipe}: no such recipe")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise VoxtokError(f"--max-minutes must be positive, got {args.max_minutes}")
    model, cfg = read_recipe(args.recipe)
    if args.threads:
        cfg.threads = args.threads
    if args.export:
        checkpoint = Path(cfg.out_dir) / "checkpoint"
        if not (checkpoint / "config.json").is_file():
            raise VoxtokError(f"{cfg.out_dir}: no checkpoint to export")
        PhoneCTC.from_pretrained(checkpoint).save_pretrained(args.export, half=True)
        print(f"exported {checkpoint} to {args.export}")
        return 0
    trainer = TeacherTrainer(model, cfg, progress=not args.no_progress)
    trainer.train(args.steps, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from voxtok.errors import VoxtokError
    from voxtok.phone_teacher import DEFAULT_FOLDER, PhoneRecogniser, load_utterances, phone_error_rate

    if args.files is not None and args.files < 1:
        raise VoxtokError(f"--files must be at least 1, got {args.files}")
    recogniser = PhoneRecogniser.from_pretrained(args.model or DEFAULT_FOLDER)
    figures = {}
    for spec in args.sets or ["data/synth_heldout", "../shared/data/real:dev"]:
        root, _, split = spec.partition(":")
        utterances, _ = load_utterances(root, split or None, recogniser.index, max_seconds=30.0, limit=args.files,
                                        progress=False)
        if not utterances:
            raise VoxtokError(f"{spec}: no transcribed files that the recogniser's phones can spell")
        figures[spec] = {"per": round(phone_error_rate(recogniser.model, utterances), 4), "files": len(utterances),
                         "phones": sum(len(u.phones) for u in utterances)}
        print(f"{spec}: PER {figures[spec]['per']:.1%} on {len(utterances)} files", flush=True)
    if args.output:
        from voxtok.audio import atomic_write

        atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(figures, indent=1) + "\n"))
    return 0


def run_recognise(args: argparse.Namespace) -> int:
    from voxtok.audio import load_audio
    from voxtok.phone_teacher import DEFAULT_FOLDER, SAMPLE_RATE, PhoneRecogniser, teacher_phones

    recogniser = PhoneRecogniser.from_pretrained(args.model or DEFAULT_FOLDER)
    samples = load_audio(args.audio, SAMPLE_RATE)
    if args.text is None:
        print(" ".join(recogniser.recognise(samples)))
        return 0
    for phone, start, end in recogniser.align(samples, teacher_phones(args.text)):
        print(f"{start:.2f}\t{end:.2f}\t{phone}")
    return 0
