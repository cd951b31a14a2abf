"""Audio I/O: read anything libsndfile reads into mono float32 at the rate asked for; write atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from codec.errors import VoxtokError

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Return mono float32 samples in [-1, 1] at `sample_rate`; stereo is averaged, other rates resampled."""
    path = Path(path)
    if not path.is_file():
        raise VoxtokError(f"{path}: no such file")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise VoxtokError(f"{path}: cannot read audio ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise VoxtokError(f"{path}: audio is empty")
    if not np.isfinite(data).all():
        raise VoxtokError(f"{path}: audio contains NaN or infinite samples")
    mono = data.mean(axis=1)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def save_audio(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM wav or flac via a temporary file and rename, so no half-written file is ever left."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise VoxtokError(f"{path}: output must end in .wav or .flac")
    samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(tmp, samples, sample_rate, format=fmt, subtype="PCM_16"))


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) then rename tmp_path onto path; on any failure remove tmp_path."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_silent(samples: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the RMS level is below threshold_db dBFS (digital silence or near it)."""
    if samples.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return rms < 10 ** (threshold_db / 20)


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
