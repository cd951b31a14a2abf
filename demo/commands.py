"""`voxtok demo`: the Gradio app, registered through the `voxtok.commands` entry point."""

from __future__ import annotations

import argparse


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="start the Gradio demo (codec A/B, streaming) in a browser")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", type=_boolean, default=False, metavar="{true,false}",
                   help="a public gradio.live link (needs internet; default false)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longest input accepted (default 60)")
    p.add_argument("--concurrency", type=int, default=2, help="requests run at once (default 2)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait (default 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxtok.errors import VoxtokError

    if args.max_seconds <= 0 or args.concurrency < 1 or args.queue_size < 1:
        raise VoxtokError("--max-seconds must be positive, --concurrency and --queue-size at least 1")
    try:
        from voxtok.demo.app import DemoConfig, launch
    except ImportError as exc:
        raise VoxtokError(f"the demo needs gradio (pip install 'voxtok[demo]'): {exc}") from None
    config = DemoConfig(max_seconds=args.max_seconds, concurrency=args.concurrency, queue_size=args.queue_size)
    print(f"voxtok demo on http://{args.host}:{args.port} (Ctrl-C stops it)")
    launch(args.host, args.port, args.share, config, block=True)
    return 0
