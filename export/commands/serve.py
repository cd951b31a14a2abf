"""`voxtok serve`: a streaming codec server over WebSocket (protocol in docs/protocol.md).

Encode streams take PCM and return codes, decode streams take codes and return PCM, one stream per
connection, with GET /health beside them. The graphs come from --onnx DIR, or else from an export of
--model kept in the user cache (as `voxtok stream` does). Needs the `serve` extra (websockets).
"""

from __future__ import annotations

import argparse
import sys

# The server's defaults (voxtok.export.server.ServerConfig), repeated here so `voxtok --help` needs no websockets
# import; tests/test_server.py checks that they agree.
DEFAULTS = {"host": "127.0.0.1", "port": 8765, "max_streams": 64, "max_streams_per_client": 0, "max_pending": 256,
            "max_pending_per_client": 128, "max_message_bytes": 256 * 1024, "threads": 2, "max_batch": 16,
            "start_timeout": 5.0, "idle_timeout": 60.0}


def register(sub: argparse._SubParsersAction) -> None:
    d = DEFAULTS
    p = sub.add_parser("serve", help="serve streaming encode/decode over WebSocket")
    p.add_argument("--host", default=d["host"], help=f"address to listen on (default {d['host']})")
    p.add_argument("--port", type=int, default=d["port"], help=f"port (default {d['port']}; 0 picks a free one)")
    p.add_argument("--onnx", default=None, help="folder written by `voxtok export onnx`")
    p.add_argument("--model", default=None, help="model to export into the cache when --onnx is not given")
    p.add_argument("--int8", action="store_true", help="use the INT8 graphs")
    p.add_argument("--max-streams", type=int, default=d["max_streams"],
                   help=f"concurrent started streams; more are refused (default {d['max_streams']}; a call that "
                        "encodes and decodes takes two)")
    p.add_argument("--max-streams-per-client", type=int, default=d["max_streams_per_client"],
                   help="started streams per client address (default 0: no limit, as behind a reverse proxy "
                        "every client has the proxy's address)")
    p.add_argument("--max-pending", type=int, default=d["max_pending"],
                   help=f"connections still waiting to send start; one more closes the oldest that has waited over "
                        f"1 s, else is turned away (default {d['max_pending']})")
    p.add_argument("--max-pending-per-client", type=int, default=d["max_pending_per_client"],
                   help=f"the same per client address (default {d['max_pending_per_client']})")
    p.add_argument("--start-timeout", type=float, default=d["start_timeout"],
                   help=f"close a connection that sends no start within this many seconds "
                        f"(default {d['start_timeout']:g})")
    p.add_argument("--token", default=None,
                   help="require this shared secret (Authorization: Bearer TOKEN or ?token=TOKEN); default "
                        "$VOXTOK_SERVE_TOKEN, else none")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="accept browser connections only from this Origin (repeatable; default: any)")
    p.add_argument("--max-message-bytes", type=int, default=d["max_message_bytes"],
                   help=f"largest message accepted (default {d['max_message_bytes']})")
    p.add_argument("--threads", type=int, default=d["threads"],
                   help=f"inference worker threads, about one per core (default {d['threads']})")
    p.add_argument("--max-batch", type=int, default=d["max_batch"],
                   help=f"streams stepped per graph call (default {d['max_batch']}; 1 = no batching)")
    p.add_argument("--idle-timeout", type=float, default=d["idle_timeout"],
                   help=f"drop a stream silent for this many seconds (default {d['idle_timeout']:g})")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from voxtok.errors import VoxtokError
    from voxtok.export.cache import cached_export
    from voxtok.export.runtime import ExportedCodec

    try:
        from voxtok.export.server import ServerConfig, serve_forever
    except ImportError as exc:
        raise VoxtokError(f"voxtok serve needs the serve extra ({exc}); pip install 'voxtok[serve]'") from None

    import os

    config = ServerConfig(host=args.host, port=args.port, max_streams=args.max_streams,
                          max_streams_per_client=args.max_streams_per_client, max_pending=args.max_pending,
                          max_pending_per_client=args.max_pending_per_client,
                          max_message_bytes=args.max_message_bytes, threads=args.threads,
                          max_batch=args.max_batch, start_timeout=args.start_timeout, idle_timeout=args.idle_timeout,
                          token=args.token or os.environ.get("VOXTOK_SERVE_TOKEN") or None,
                          allowed_origins=tuple(args.allow_origin))
    config.check()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    # The library logs every health check and handshake; its warnings and errors are still worth seeing.
    logging.getLogger("voxtok.serve.websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    model_dir = Path(args.onnx) if args.onnx else cached_export(args.model, args.int8)
    # One onnxruntime thread per call: the server runs calls side by side on --threads workers instead.
    codec = ExportedCodec(model_dir, threads=1, precision="int8" if args.int8 else "fp32")
    serve_forever(codec, config)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m voxtok.export.commands.serve ...`: the same command without the `voxtok` front end."""
    from voxtok.errors import VoxtokError

    parser = argparse.ArgumentParser(prog="voxtok")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except VoxtokError as exc:
        print(f"voxtok: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
