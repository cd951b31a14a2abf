"""`voxtok lm bench`: generation speed of the speech LM with its KV cache, in frames per second and x real time
(12.5 frames = 1 s of speech), the LM alone and with the tokenizer's streaming decoder behind it; medians over
repeats, each after a warm-up. A recipe instead of a trained model times random weights of that size (compute
does not depend on the weight values); end of speech is held off so every run makes the same number of frames.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="LM generation speed with the KV cache (x real time)")
    p.add_argument("--model", default=None, help="LM folder or shipped name (default: the default shipped LM)")
    p.add_argument("--recipe", default=None, help="time random weights of a recipe's size instead")
    p.add_argument("--frames", type=int, default=125, help="frames per run (default 125 = 10 s of speech)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decode", action="store_true", help="also decode the frames with the tokenizer (streaming)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from voxtok.errors import VoxtokError
    from voxtok.lm.generate import Sampling, generate_frames
    from voxtok.lm.model import SpeechLM, SpeechLMConfig

    if args.frames < 1 or args.repeats < 1 or args.threads < 1:
        raise VoxtokError("--frames, --repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    if args.recipe:
        from voxtok.lm.train import load_lm_recipe

        table, _ = load_lm_recipe(args.recipe)
        cfg = SpeechLMConfig.from_dict({**table, "phone_symbols": [f"p{i}" for i in range(60)]})
        torch.manual_seed(0)
        lm = SpeechLM(cfg).eval()
    else:
        from voxtok.lm.tts import load_lm

        lm = load_lm(args.model)
    cfg = lm.config
    codec = None
    if args.decode:
        from voxtok.lm.tts import tokenizer_for

        codec = tokenizer_for(lm) if not args.recipe else None
        if codec is None:
            from voxtok.compress import load_codec

            codec = load_codec(cfg.tokenizer)
    discrete = cfg.kind == "discrete"
    prompt = (torch.randint(0, cfg.codebook_size, (cfg.num_codebooks, 38)) if discrete
              else torch.randn(cfg.latent_dim, 38))
    phones = list(range(min(80, len(cfg.phone_symbols))))
    sampling = Sampling(temperature=1.0, top_k=50, seed=0, max_frames=args.frames, min_frames=args.frames)

    def once() -> float:
        start = time.perf_counter()
        if codec is None:
            count = sum(1 for _ in generate_frames(lm, prompt, phones, sampling))
        else:
            count = 0
            with torch.inference_mode(), codec.streaming(1):
                for frame in generate_frames(lm, prompt, phones, sampling):
                    count += 1
                    if discrete:
                        codec.decode_chunk(frame[None, :, None])
                    else:
                        codec.decode_latents_chunk(frame[None, :, None])
        assert count == args.frames
        return time.perf_counter() - start

    once()
    seconds = statistics.median(once() for _ in range(args.repeats))
    speech = args.frames / cfg.frame_rate
    report = {"model": cfg.name, "kind": cfg.kind, "params_m": round(sum(p.numel() for p in lm.parameters()) / 1e6, 2),
              "random_weights": bool(args.recipe), "threads": args.threads, "frames": args.frames,
              "with_decoder": bool(args.decode), "median_s": round(seconds, 3),
              "frames_per_s": round(args.frames / seconds, 1), "x_realtime": round(speech / seconds, 2),
              "command": "voxtok lm bench " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in (("model", args.model), ("recipe", args.recipe),
                                                               ("frames", args.frames), ("repeats", args.repeats),
                                                               ("threads", args.threads)) if v is not None)
              + (" --decode" if args.decode else "")}
    if args.json:
        print(json.dumps(report))
    else:
        print(" ".join(f"{k}={v}" for k, v in report.items()))
    return 0
