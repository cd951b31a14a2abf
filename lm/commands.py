"""lm/'s subcommands, registered with `voxtok` through the `voxtok.commands` entry point:

    voxtok tts "text" --voice prompt.wav -o out.wav [--model DIR] [--temperature T] [--top-k K] [--seed S]
    voxtok lm corpus OUT --source DIR[:SPLIT] ... [--heldout DIR[:SPLIT]] [--tokenizer NAME] [--align]
    voxtok lm align CORPUS [--recogniser DIR]
    voxtok lm train RECIPE [--steps N] [--max-minutes M] [--device cuda]
    voxtok lm bench [--model DIR | --recipe RECIPE] [--threads 1] [--decode]
    voxtok lm eval --model DIR --corpus data/lm_corpus [--num 100] [--unseen DIR[:SPLIT]] [-o report.json]
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    tts = sub.add_parser("tts", help="speak text in the voice of a prompt recording (the speech LM)")
    tts.add_argument("text", help="what to say (English)")
    tts.add_argument("-o", "--output", required=True, help="output .wav/.flac")
    tts.add_argument("--voice", default=None, help="a few seconds of the target voice (any audio file)")
    tts.add_argument("--model", default=None, help="shipped LM name (voxtok-lm-continuous, the default; "
                                                    "voxtok-lm-discrete) or an LM folder")
    tts.add_argument("--tokenizer", default=None,
                     help="tokenizer model folder (default: the shipped one the LM names; its config must match)")
    tts.add_argument("--temperature", type=float, default=None, help="default: the model's own (its card's)")
    tts.add_argument("--top-k", type=int, default=50)
    tts.add_argument("--top-p", type=float, default=1.0)
    tts.add_argument("--steps", type=int, default=None, help="continuous LM: flow head Euler steps")
    tts.add_argument("--seed", type=int, default=0)
    tts.add_argument("--max-seconds", type=float, default=20.0, help="stop after this much speech")
    tts.add_argument("--json", action="store_true", help="print the figures as JSON")
    tts.set_defaults(func=run_tts)

    lm = sub.add_parser("lm", help="build an LM corpus and train the speech LM")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True, metavar="COMMAND")
    corpus = lm_sub.add_parser("corpus", help="tokenise speech (and phonemise its text) into LM shards")
    corpus.add_argument("out_dir")
    corpus.add_argument("--source", action="append", required=True, metavar="DIR[:SPLIT_FILE]",
                        help="a folder with manifest.jsonl, optionally restricted to a split file (repeat)")
    corpus.add_argument("--heldout", action="append", default=[], metavar="DIR[:SPLIT_FILE]",
                        help="held-out utterances (sentences never trained on), e.g. data/synth_heldout")
    corpus.add_argument("--tokenizer", default=None, help="default voxtok-16k-12hz")
    corpus.add_argument("--text-only", action="store_true",
                        help="only utterances with a transcript (untranscribed ones otherwise serve as voice prompts)")
    corpus.add_argument("--align", action="store_true",
                        help="also place each phoneme in time (`voxtok lm align`), for aligned LMs")
    corpus.add_argument("--quiet", action="store_true")
    corpus.set_defaults(func=run_corpus)
    align = lm_sub.add_parser("align", help="place each phoneme of a corpus in time with voxtok's phone recogniser "
                                            "(for phoneme-synchronous LMs: [model] aligned = true)")
    align.add_argument("corpus")
    align.add_argument("--recogniser", default=None,
                       help="a voxtok-phone-ctc folder (default: the shipped codec/pretrained/voxtok-phone-ctc)")
    align.add_argument("--quiet", action="store_true")
    align.set_defaults(func=run_align)
    train = lm_sub.add_parser("train", help="train or resume the speech LM from a recipe")
    train.add_argument("recipe")
    train.add_argument("--steps", type=int, default=None)
    train.add_argument("--max-minutes", type=float, default=None)
    train.add_argument("--device", default="cpu")
    train.add_argument("--threads", type=int, default=None)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=run_train)
    evaluate = lm_sub.add_parser("eval", help="the LM's speech judged in absolute terms: WER / PER beside the "
                                              "sentences' own recordings, voice similarity beside the speaker's "
                                              "own, end of speech, duration, speed")
    evaluate.add_argument("--model", default=None, help="shipped LM name or LM folder")
    evaluate.add_argument("--corpus", default="data/lm_corpus", help="an LM corpus with held-out utterances")
    evaluate.add_argument("--tokenizer", default=None,
                          help="tokenizer model folder (default: the shipped one the LM names; its config must match)")
    evaluate.add_argument("--num", type=int, default=100, help="held-out generations (default 100)")
    evaluate.add_argument("--unseen", default=None, metavar="DIR[:SPLIT_FILE]",
                          help="also speak in voices never trained on: prompts from this manifest folder")
    evaluate.add_argument("--unseen-voices", type=int, default=5, help="unseen voices (default 5)")
    evaluate.add_argument("--unseen-sentences", type=int, default=20,
                          help="held-out sentences spoken in each unseen voice (default 20)")
    evaluate.add_argument("--temperature", type=float, default=None, help="default: the model's own (its card's)")
    evaluate.add_argument("--top-k", type=int, default=50)
    evaluate.add_argument("--top-p", type=float, default=1.0)
    evaluate.add_argument("--steps", type=int, default=None, help="continuous LM: flow head Euler steps")
    evaluate.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the speed bar)")
    evaluate.add_argument("-o", "--output", default=None, help="write the report (rows, summary, bars) as JSON")
    evaluate.add_argument("--compare", nargs="+", default=None, metavar="REPORT.json",
                          help="print earlier reports side by side as Markdown and exit (no generation)")
    evaluate.set_defaults(func=run_eval)
    from voxtok.lm import bench

    bench.register(lm_sub)


def check_sampling_args(args: argparse.Namespace) -> None:
    """--temperature, --top-k and --top-p as `voxtok tts` and `voxtok lm eval` take them."""
    from voxtok.errors import VoxtokError

    temperature = 0.0 if args.temperature is None else args.temperature  # None: the model's own
    if not 0 <= temperature <= 5 or args.top_k < 0 or not 0 < args.top_p <= 1:
        raise VoxtokError("--temperature must be in [0, 5], --top-k >= 0, --top-p in (0, 1]")


def run_tts(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from voxtok.audio import check_audio_output, load_audio, save_audio
    from voxtok.errors import VoxtokError
    from voxtok.lm.generate import Sampling
    from voxtok.lm.tts import load_lm, synthesize, tokenizer_for

    output = Path(args.output)
    check_audio_output(output)
    if not args.text.strip():
        raise VoxtokError("text is empty: there is nothing to say")
    check_sampling_args(args)
    if not args.max_seconds > 0:
        raise VoxtokError("--max-seconds must be > 0")
    lm = load_lm(args.model)
    codec = tokenizer_for(lm, args.tokenizer)
    voice = None
    if args.voice:
        from voxtok.lm.tts import check_voice_prompt

        voice = load_audio(args.voice, codec.config.sample_rate)
        check_voice_prompt(voice, args.voice, codec.config.sample_rate)
    temperature = lm.config.temperature if args.temperature is None else args.temperature
    sampling = Sampling(temperature=temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                        max_frames=max(1, int(args.max_seconds * lm.config.frame_rate)), flow_steps=args.steps)
    audio, stats = synthesize(lm, args.text, voice, sampling, tokenizer=codec)
    if not len(audio):
        raise VoxtokError("the model produced no speech for this text")
    save_audio(output, audio, codec.config.sample_rate)
    stats["output"] = str(output)
    if args.json:
        print(json.dumps(stats))
    else:
        print(" ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


def run_corpus(args: argparse.Namespace) -> int:
    from voxtok.lm.corpus import Source, build_corpus

    sources = ([Source.parse(s, "train", args.text_only) for s in args.source]
               + [Source.parse(s, "heldout", args.text_only) for s in args.heldout])
    meta = build_corpus(args.out_dir, sources, args.tokenizer, progress=not args.quiet)
    print(f"corpus {args.out_dir}: {meta['utterances']} utterances, {meta['hours']} h, "
          f"{len(meta['symbols'])} phoneme symbols, {len(meta['shards'])} shard(s)")
    if args.align:
        return run_align(argparse.Namespace(corpus=args.out_dir, recogniser=None, quiet=args.quiet))
    return 0


def run_align(args: argparse.Namespace) -> int:
    from pathlib import Path

    from voxtok.errors import VoxtokError
    from voxtok.lm.align import align_corpus

    if args.recogniser is not None and not Path(args.recogniser).is_dir():
        raise VoxtokError(f"{args.recogniser}: no such recogniser folder")
    counts = align_corpus(args.corpus, args.recogniser, progress=not args.quiet)
    print(f"aligned {counts['aligned']} utterances ({counts['hours']} h) in {args.corpus}; "
          f"{counts['failed']} could not be aligned")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from voxtok.errors import VoxtokError
    from voxtok.lm.train import LMTrainer, load_lm_recipe

    if not Path(args.recipe).is_file():
        raise VoxtokError(f"{args.recipe}: no such recipe")
    model_table, cfg = load_lm_recipe(args.recipe)
    if args.threads:
        cfg.threads = args.threads
    trainer = LMTrainer(model_table, cfg, device=args.device, progress=not args.no_progress)
    trainer.train(args.steps, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch
    from voxtok.errors import VoxtokError
    from voxtok.lm.evaluate import evaluate_lm, write_report
    from voxtok.lm.generate import Sampling
    from voxtok.lm.tts import load_lm, tokenizer_for

    if args.compare:
        from voxtok.lm.evaluate import report_markdown

        reports = []
        for path in args.compare:
            try:
                reports.append(json.loads(Path(path).read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                raise VoxtokError(f"{path}: not a readable lm eval report ({exc})") from None
            if "summary" not in reports[-1]:
                raise VoxtokError(f"{path}: not an lm eval report (no summary)")
        print(report_markdown(reports), end="")
        return 0
    if not args.model:
        raise VoxtokError("lm eval needs --model (or --compare REPORT.json ...)")
    if min(args.num, args.unseen_voices, args.unseen_sentences, args.threads) < 1:
        raise VoxtokError("--num, --unseen-voices, --unseen-sentences and --threads must be at least 1")
    check_sampling_args(args)
    if args.output and (Path(args.output).is_dir() or Path(args.output).suffix.lower() != ".json"):
        raise VoxtokError(f"{args.output}: the report is written as a .json file")  # before minutes of generation
    torch.set_num_threads(args.threads)
    lm = load_lm(args.model)
    temperature = lm.config.temperature if args.temperature is None else args.temperature
    sampling = Sampling(temperature=temperature, top_k=args.top_k, top_p=args.top_p, flow_steps=args.steps)
    report = evaluate_lm(lm, args.corpus, args.num, tokenizer=tokenizer_for(lm, args.tokenizer), sampling=sampling,
                         unseen=args.unseen, unseen_voices=args.unseen_voices,
                         unseen_sentences=args.unseen_sentences)
    if args.output:
        write_report(report, args.output)
    for title, part in (("held-out sentences", report), ("unseen voices", report.get("unseen"))):
        if part is None:
            continue
        print(f"{title}: {json.dumps(part['summary'])}")
        for name, bar in part["bars"].items():
            verdict = "n/a" if bar["met"] is None else ("met" if bar["met"] else "NOT met")
            print(f"  {name:>22}: {bar['value']} (bar {bar['threshold']})  {verdict}")
    return 0
