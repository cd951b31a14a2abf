"""Turn the command line's inputs (files, folders searched recursively, manifest.jsonl files) into a list
of (source path, output-relative name) pairs, and map them to output paths."""

from __future__ import annotations

import json
from pathlib import Path

from codec.errors import VoxtokError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64"}


def collect_inputs(inputs: list[str], suffixes: set[str]) -> list[tuple[Path, Path]]:
    """(path, relative name) for every input; folders keep their inner layout in the relative name."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not files:
                raise VoxtokError(f"{path}: folder holds no input files ({', '.join(sorted(suffixes))})")
            found.extend((p, p.relative_to(path)) for p in files)
        elif path.suffix == ".jsonl":
            found.extend(_manifest_entries(path))
        else:
            # A missing single file is reported per file later, so a batch still goes on.
            found.append((path, Path(path.name)))
    return found


def _manifest_entries(manifest: Path) -> list[tuple[Path, Path]]:
    if not manifest.is_file():
        raise VoxtokError(f"{manifest}: no such manifest")
    entries = []
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel = Path(json.loads(line)["path"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise VoxtokError(f"{manifest}:{number}: not a JSON object with a \"path\"") from None
        entries.append((manifest.parent / rel, rel))
    return entries


def output_path(output: Path, rel: Path, suffix: str, single: bool) -> Path:
    """A single input may be written to an explicit file name; otherwise OUT is a folder."""
    if single and output.suffix:
        return output
    return output / rel.with_suffix(suffix)
