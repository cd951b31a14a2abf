"""The export package's subcommands (`voxtok export`, `voxtok stream`, `voxtok serve`), registered with the voxtok
command line through the `voxtok.commands` entry point, so codec/ never imports export/."""

from __future__ import annotations

import argparse
import importlib


def register(sub: argparse._SubParsersAction) -> None:
    # Imported here, not at the top: `python -m voxtok.export.commands.serve` must not find its module already loaded.
    for name in ("onnx", "stream", "serve"):
        importlib.import_module(f"voxtok.export.commands.{name}").register(sub)
