"""Audio I/O: read anything libsndfile reads into mono float32 at the rate asked for; write atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from voxtok.errors import VoxtokError

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
# Long files are read and written in blocks of this many seconds, so memory does not grow with duration.
BLOCK_SECONDS = 10.0


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


def audio_duration(path: str | Path) -> float:
    """Seconds of audio in a file, from its header alone."""
    path = Path(path)
    if not path.is_file():
        raise VoxtokError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise VoxtokError(f"{path}: cannot read audio ({_short(exc)})") from None
    return info.frames / info.samplerate if info.samplerate > 0 else 0.0


def iter_audio(path: str | Path, sample_rate: int, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate`, read a block at a time: what load_audio returns, in pieces (a
    streaming resampler when the rates differ), with the same checks for empty and non-finite audio."""
    path = Path(path)
    if not path.is_file():
        raise VoxtokError(f"{path}: no such file")
    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:
        raise VoxtokError(f"{path}: cannot read audio ({_short(exc)})") from None
    with f:
        resampler = None
        if f.samplerate != sample_rate:
            resampler = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
        total = 0
        try:
            for block in f.blocks(max(1, int(block_seconds * f.samplerate)), dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise VoxtokError(f"{path}: audio contains NaN or infinite samples")
                total += len(block)
                mono = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
                yield resampler.resample_chunk(mono) if resampler is not None else mono
        except VoxtokError:
            raise
        except Exception as exc:
            raise VoxtokError(f"{path}: cannot read audio ({_short(exc)})") from None
        if total == 0:
            raise VoxtokError(f"{path}: audio is empty")
        if resampler is not None:
            yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def save_audio(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM wav or flac via a temporary file and rename, so no half-written file is ever left."""
    save_audio_blocks(path, [samples], sample_rate)


def save_audio_blocks(path: str | Path, blocks: Iterable[np.ndarray], sample_rate: int) -> None:
    """save_audio for audio that arrives in pieces (a long decode): each block is written as it comes, and
    the file appears only once the last one is in."""
    path = Path(path)
    fmt = check_audio_output(path)

    def write(tmp: str) -> None:
        with sf.SoundFile(tmp, "w", samplerate=sample_rate, channels=1, format=fmt, subtype="PCM_16") as f:
            for block in blocks:
                block = np.asarray(block, dtype=np.float32).reshape(-1)
                if not np.isfinite(block).all():
                    raise VoxtokError(f"{path}: the decoded audio is not finite (a broken model?)")
                f.write(np.clip(block, -1.0, 1.0))

    atomic_write(path, write)


def check_audio_output(path: Path) -> str:
    """The libsndfile format for an output path, or a VoxtokError naming the suffixes voxtok writes."""
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise VoxtokError(f"{path}: output must end in .wav or .flac")
    return fmt


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) then rename tmp_path onto path; on any failure remove tmp_path. Failures of the
    file system (permissions, a full disk) become one-line VoxtokErrors."""
    path = Path(path)
    tmp = None
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise VoxtokError(f"{path}: is a folder, not a file to write")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        raise VoxtokError(f"{path}: cannot write ({exc.strerror or _short(exc)})") from None
    except sf.LibsndfileError as exc:
        raise VoxtokError(f"{path}: cannot write audio ({_short(exc)})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_savez(path: str | Path, **arrays) -> None:
    """np.savez to path through atomic_write (the caches of voxtok.data: whole files or none)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def is_silent(samples: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the RMS level is below threshold_db dBFS (digital silence or near it)."""
    if samples.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return rms < 10 ** (threshold_db / 20)


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
