"""The manifest rule, in one place: a folder of audio with ``manifest.jsonl``, one JSON object per line with a
relative ``path`` and optional ``duration``, ``text``, ``speaker`` and ``tags``.

Every reader of a manifest (training sources, the evaluation, the LM corpus, the probes) goes through
``read_rows``, so a malformed line stops every command the same way: one line naming the file and line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from voxtok.errors import VoxtokError

MANIFEST_NAME = "manifest.jsonl"


def read_rows(root: str | Path, split_file: str | Path | None = None) -> list[dict]:
    """The rows of ROOT/manifest.jsonl as dicts, checked; with ``split_file``, only the paths it lists."""
    manifest = Path(root) / MANIFEST_NAME
    if not manifest.is_file():
        raise VoxtokError(f"{root}: no {MANIFEST_NAME} (a speech folder is a folder with {MANIFEST_NAME})")
    rows: list[dict] = []
    seen: set[str] = set()
    with manifest.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise VoxtokError(f"{manifest}:{number}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
            if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"]:
                raise VoxtokError(f"{manifest}:{number}: each line needs a \"path\" string")
            if row["path"] in seen:
                raise VoxtokError(f"{manifest}:{number}: {row['path']} is listed twice")
            seen.add(row["path"])
            rows.append(row)
    if not rows:
        raise VoxtokError(f"{manifest}: no entries")
    if split_file is not None:
        keep = {p.strip() for p in Path(split_file).read_text(encoding="utf-8").splitlines() if p.strip()}
        rows = [r for r in rows if r["path"] in keep]
    return rows


@dataclass
class Entry:
    """One manifest row (the fields the evaluation uses)."""

    path: str
    duration: float | None = None
    text: str | None = None
    speaker: str | None = None
    tags: list[str] = field(default_factory=list)


def read_manifest(ref_dir: str | Path) -> list[Entry]:
    """The rows of REF_DIR/manifest.jsonl as typed entries (fields of the wrong type read as absent)."""
    entries = []
    for row in read_rows(ref_dir):
        tags = row.get("tags") or []
        entries.append(Entry(
            path=row["path"],
            duration=row.get("duration") if isinstance(row.get("duration"), (int, float)) else None,
            text=row.get("text") if isinstance(row.get("text"), str) and row["text"].strip() else None,
            speaker=row.get("speaker") if isinstance(row.get("speaker"), str) else None,
            tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        ))
    return entries
