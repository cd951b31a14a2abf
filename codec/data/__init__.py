"""Training and evaluation data: synthetic speech generation (synth), forced alignment (align), WORLD pitch
targets (pitch), text-LM states (context), and the file list their cache-filling commands share."""

from __future__ import annotations

from pathlib import Path

SYNTH_HELP = "ROOT is a synthetic folder of a recipe's synth_dirs: all its files, keyed as the trainer reads them"


def cache_entries(root: str | Path, split: str, synth: bool) -> tuple[str, list]:
    """(cache key prefix, manifest entries) that a cache-filling command walks: a split of a real corpus (keyed
    by path), or, with `synth`, every file of a synthetic folder (keyed under its name, as the trainer reads it)."""
    from voxtok.dataset import synth_cache_prefix
    from voxtok.eval.runner import read_manifest, read_split, select

    if synth:
        return synth_cache_prefix(root), read_manifest(root)
    return "", select(read_manifest(root), read_split(split))
