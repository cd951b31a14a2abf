"""Turn the command line's inputs (files, folders searched recursively, manifest.jsonl files) into a list
of (source path, output-relative name) pairs, and plan where each output goes without clobbering anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

from voxtok.errors import VoxtokError

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
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VoxtokError(f"{manifest}: cannot read manifest ({getattr(exc, 'strerror', None) or exc})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel = Path(json.loads(line)["path"])
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError):
            raise VoxtokError(f"{manifest}:{number}: not a JSON object with a \"path\"") from None
        entries.append((manifest.parent / rel, _name_inside(manifest.parent, rel)))
    return entries


def _name_inside(root: Path, rel: Path) -> Path:
    """The output name for a manifest path: relative paths keep their layout; absolute ones, or ones that climb
    out with `..`, are mapped under the output folder too (relative to the manifest's folder when they lie in
    it, else by their full path without its root), so an output never lands beside its source."""
    if not rel.is_absolute() and ".." not in rel.parts:
        return rel
    base = Path(os.path.normpath(root.absolute()))
    full = Path(os.path.normpath(base / rel))
    try:
        return full.relative_to(base)
    except ValueError:
        return full.relative_to(full.anchor)


def output_path(output: Path, rel: Path, suffix: str, single: bool) -> Path:
    """A single input may be written to an explicit file name; otherwise OUT is a folder."""
    if single and output.suffix:
        return output
    return output / rel.with_suffix(suffix)


def plan_outputs(items: list[tuple[Path, Path]], output: Path, suffix: str,
                 allowed_suffixes: set[str]) -> list[tuple[Path, Path]]:
    """(source, destination) for every input, or one VoxtokError before anything is written: when an explicit
    output file has a suffix this command does not write, when a destination is one of the inputs (the same
    file, through any path or link), or when two inputs would be written to the same destination."""
    single = len(items) == 1
    if single and output.suffix and output.suffix.lower() not in allowed_suffixes:
        raise VoxtokError(f"{output}: the output must end in {' or '.join(sorted(allowed_suffixes))} "
                          f"(or name a folder)")
    plan = [(src, output_path(output, rel, suffix, single)) for src, rel in items]
    check_not_inputs([src for src, _ in items], [dest for _, dest in plan])
    claimed: dict[Path, Path] = {}
    for src, dest in plan:
        key = _identity(dest)
        if key in claimed:
            raise VoxtokError(f"{claimed[key]} and {src} would both be written to {dest}; rename one of them or "
                              f"give them separate runs (nothing was written)")
        claimed[key] = src
    return plan


def check_not_inputs(sources: list[Path], destinations: list[Path]) -> None:
    """Refuse to write any destination that is one of the sources: it would replace the user's input."""
    inputs = {}
    for src in sources:
        inputs.setdefault(_identity(src), src)
    for dest in destinations:
        src = inputs.get(_identity(dest))
        if src is not None:
            raise VoxtokError(f"{dest}: is the input {src}; refusing to overwrite it (nothing was written)")


def _identity(path: Path) -> object:
    """What makes two paths the same file: device and inode when it exists (links, `..`, case-insensitive file
    systems), else the normalised absolute path with symlinks resolved."""
    try:
        st = path.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(path.resolve()))
