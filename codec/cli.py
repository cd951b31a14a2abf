"""The `voxtok` command line. The codec's subcommands live in codec/commands/, one module each with
`register(subparsers)`; other packages add theirs through the `voxtok.commands` entry point group (export/ adds
export, stream and serve), so codec/ never imports the packages built on it. Handlers import their heavy
dependencies lazily so `voxtok --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from voxtok.errors import VoxtokError

# Module names under voxtok.commands; a module that is missing (e.g. an optional extra) is skipped.
COMMANDS = ["encode", "decode", "info", "roundtrip", "train", "synth", "eval", "bench", "teacher"]
ENTRY_POINT_GROUP = "voxtok.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxtok", description="Streaming speech codec and token pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"voxtok.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"voxtok.commands.{name}":
                continue
            raise
        module.register(sub)
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ModuleNotFoundError:  # the package's optional dependencies are not installed
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command line; `parser` (default: every registered command) lets a package run its own commands
    from a checkout that is not installed (`python -m voxtok.lm`), with the same one-line errors."""
    # Active OpenMP spinning makes 2-core machines several times slower under load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VoxtokError as exc:
        print(f"voxtok: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("voxtok: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MemoryError:
        print("voxtok: error: out of memory", file=sys.stderr)
        return 1
    except OSError as exc:  # a file-system failure no command turned into a VoxtokError of its own
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"voxtok: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # A bug, not bad input: still one line for the user; VOXTOK_DEBUG=1 shows the traceback for a report.
        if os.environ.get("VOXTOK_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"voxtok: internal error: {type(exc).__name__}: {first} (VOXTOK_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
