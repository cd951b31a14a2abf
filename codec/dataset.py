"""Training audio: real and synthetic speech held in memory, served as random crops with gain augmentation.

Crops are drawn with a seeded numpy Generator, so a run with the same seed sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from voxtok.audio import load_audio
from voxtok.manifest import read_rows


@dataclass
class AudioSource:
    """One pool of files (e.g. real train split, or a synthetic corpus) and its share of the batches."""

    name: str
    clips: list[np.ndarray]  # int16 samples
    weight: float

    @property
    def seconds(self) -> float:
        return sum(len(c) for c in self.clips) / 16000


def read_manifest(root: str | Path, split_file: str | Path | None = None) -> list[dict]:
    """The manifest's rows as dicts (the one rule: voxtok.manifest.read_rows)."""
    return read_rows(root, split_file)


def synth_cache_prefix(root: str | Path) -> str:
    """The cache key prefix of a synthetic folder's files (WORLD targets, alignments): its folder name, so its
    paths cannot collide with the real corpus's, whose files are keyed by their paths alone."""
    return f"synth/{Path(root).name}/"


def load_source(name: str, root: str | Path, weight: float, sample_rate: int,
                split_file: str | Path | None = None, progress: bool = True) -> AudioSource:
    rows = read_manifest(root, split_file)
    clips = []
    for row in tqdm(rows, desc=f"loading {name}", disable=not progress, leave=False):
        samples = load_audio(Path(root) / row["path"], sample_rate)
        clips.append((np.clip(samples, -1, 1) * 32767).astype(np.int16))
    return AudioSource(name, clips, weight)


class CropSampler:
    def __init__(self, sources: list[AudioSource], crop_samples: int, seed: int,
                 gain_db: tuple[float, float] = (-18.0, 0.0)):
        self.sources = [s for s in sources if s.clips and s.weight > 0]
        if not self.sources:
            raise ValueError("no training audio")
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.source_p = weights / weights.sum()
        self.file_p = [np.array([len(c) for c in s.clips], dtype=np.float64) for s in self.sources]
        self.file_p = [p / p.sum() for p in self.file_p]
        self.crop = crop_samples
        self.gain_db = gain_db
        self.rng = np.random.default_rng(seed)

    def _crop(self) -> np.ndarray:
        for _ in range(8):
            s = self.rng.choice(len(self.sources), p=self.source_p)
            clip = self.sources[s].clips[self.rng.choice(len(self.sources[s].clips), p=self.file_p[s])]
            out = np.zeros(self.crop, dtype=np.float32)
            if len(clip) >= self.crop:
                start = self.rng.integers(0, len(clip) - self.crop + 1)
                out[:] = clip[start:start + self.crop] / 32768.0
            else:
                start = self.rng.integers(0, self.crop - len(clip) + 1)
                out[start:start + len(clip)] = clip / 32768.0
            peak = np.abs(out).max()
            if peak > 1e-3:  # skip (almost) silent crops: they teach nothing
                break
        if peak <= 1e-3:
            return out
        # Normalise the peak, then a random level: the codec must not care how loud the speaker is.
        gain = 10 ** (self.rng.uniform(*self.gain_db) / 20)
        return out * (0.95 * gain / peak)

    def batch(self, batch_size: int) -> np.ndarray:
        """[batch_size, 1, crop] float32."""
        return np.stack([self._crop() for _ in range(batch_size)])[:, None, :]
