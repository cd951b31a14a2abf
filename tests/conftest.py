"""Shared fixtures: the real-speech folder and the shipped default codec, and the `needs_data` rule.

A test needs the real speech beside the repo (../shared/data/real, or $VOXTOK_DATA) when it carries the
`needs_data` marker or uses one of DATA_FIXTURES (those get the marker here). Without the data those tests are
skipped, each with the reason, so a clone on its own runs the rest; with VOXTOK_REQUIRE_DATA=1 (.ci/run sets it)
missing data fails the run instead of skipping a third of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


DATA_FIXTURES = frozenset({"real_root", "real_rows", "dev_speech"})


def _real_root() -> Path:
    from voxtok.paths import real_speech_root

    return real_speech_root()


def _missing_data_reason() -> str | None:
    root = _real_root()
    if (root / "manifest.jsonl").is_file():
        return None
    return f"needs_data: no real speech at {root} (put the shared data beside the repo or set VOXTOK_DATA)"


def pytest_configure(config: pytest.Config) -> None:
    reason = _missing_data_reason()
    if reason and os.environ.get("VOXTOK_REQUIRE_DATA") == "1":
        raise pytest.UsageError(f"VOXTOK_REQUIRE_DATA=1 but {reason}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing_data_reason()
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_data)
        if reason and item.get_closest_marker("needs_data"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def real_root() -> Path:
    reason = _missing_data_reason()
    if reason:
        pytest.skip(reason)
    return _real_root()


@pytest.fixture(scope="session")
def real_rows(real_root: Path) -> list[dict]:
    return [json.loads(line) for line in (real_root / "manifest.jsonl").read_text().splitlines() if line]


@pytest.fixture(scope="session")
def dev_speech(real_root: Path) -> tuple[np.ndarray, Path]:
    """A clean read-speech dev utterance (LibriSpeech test-clean speaker 1089), 16 kHz float32."""
    from voxtok.audio import load_audio

    path = real_root / "librispeech" / "1089-134686-0000.flac"
    return load_audio(path, 16000), path


@pytest.fixture(scope="session")
def codec_model():
    from voxtok.compress import load_codec

    return load_codec()
