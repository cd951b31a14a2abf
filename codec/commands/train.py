"""`voxtok train RECIPE`: train (or resume) a codec from a TOML recipe; `--export DIR` ships a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or resume a codec from a recipe (recipes/codec_16k.toml)")
    p.add_argument("recipe", help="TOML recipe")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--steps", type=int, default=None, help="stop at this step (default: the recipe's)")
    p.add_argument("--out", default=None, help="output folder (default: the recipe's out_dir)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much wall time, with a checkpoint (a time-boxed run, e.g. a lent GPU)")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="do not train: write the run's checkpoint as a fp16 model folder to DIR")
    p.add_argument("--fp32", action="store_true", help="with --export: keep fp32 weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from voxtok.errors import VoxtokError
    from voxtok.trainers import load_recipe, trainer_class_for

    if not Path(args.recipe).is_file():
        raise VoxtokError(f"{args.recipe}: no such recipe")
    model_cfg, cfg = load_recipe(args.recipe)
    if args.out:
        cfg.out_dir = args.out
    if args.batch_size:
        cfg.batch_size = args.batch_size
    if args.threads:
        cfg.threads = args.threads
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise VoxtokError("--device cuda asked for, but torch sees no CUDA device")
    trainer = trainer_class_for(model_cfg)(model_cfg, cfg, device=args.device, progress=not args.no_progress)
    if args.export:
        if not trainer.load_checkpoint():
            raise VoxtokError(f"{cfg.out_dir}: no checkpoint to export")
        trainer.prepare_export()
        trainer.model.save_pretrained(args.export, half=not args.fp32, inference_only=True)
        print(f"exported step {trainer.step} to {args.export}")
        return 0
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise VoxtokError(f"--max-minutes must be positive, got {args.max_minutes}")
    trainer.train(args.steps, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    return 0
