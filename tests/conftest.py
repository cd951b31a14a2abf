"""Shared fixtures: the real-speech folder and the shipped default codec."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _real_root() -> Path:
    return Path(os.environ.get("VOXTOK_DATA", REPO.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = _real_root()
    if not (root / "manifest.jsonl").is_file():
        pytest.fail(f"real speech not found at {root}; set VOXTOK_DATA")
    return root


@pytest.fixture(scope="session")
def real_rows(real_root: Path) -> list[dict]:
    return [json.loads(line) for line in (real_root / "manifest.jsonl").read_text().splitlines() if line]


@pytest.fixture(scope="session")
def dev_speech(real_root: Path) -> tuple[np.ndarray, Path]:
    """A clean read-speech dev utterance (LibriSpeech test-clean speaker 1089), 16 kHz float32."""
    from codec.audio import load_audio

    path = real_root / "librispeech" / "1089-134686-0000.flac"
    return load_audio(path, 16000), path


@pytest.fixture(scope="session")
def codec_model():
    from codec.compress import load_codec

    return load_codec()
