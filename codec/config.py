"""The codec's one config dataclass, saved beside the weights as config.json."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class CodecConfig:
    name: str = "voxtok-16k"
    sample_rate: int = 16000
    # One code frame = hop_length samples (320 at 16 kHz = 20 ms = 50 Hz). Streaming latency is
    # hop_length + (window - subframe) samples, so 20 ms frames keep the whole path under 40 ms.
    hop_length: int = 320
    # The encoder front-end and the iSTFT head both work on sub-frames of `subframe` samples with
    # `window`-sample windows (75% overlap).
    subframe: int = 80
    window: int = 320
    enc_sub_dim: int = 96
    enc_sub_layers: int = 2
    enc_dim: int = 256
    enc_layers: int = 4
    latent_dim: int = 64
    dec_dim: int = 320
    dec_layers: int = 8
    mlp_ratio: float = 3.0
    kernel_size: int = 7
    num_quantizers: int = 12
    codebook_size: int = 1024
    codebook_decay: float = 0.99
    dead_code_threshold: float = 2.0
    kmeans_iters: int = 10

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def subframes_per_frame(self) -> int:
        return self.hop_length // self.subframe

    @property
    def bits_per_code(self) -> int:
        return (self.codebook_size - 1).bit_length()

    @property
    def kbps_per_codebook(self) -> float:
        return self.frame_rate * self.bits_per_code / 1000

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: a whole frame must arrive, then the iSTFT overlap must be complete."""
        return self.hop_length + self.window - self.subframe

    def validate(self) -> None:
        if self.hop_length % self.subframe or self.window % self.subframe:
            raise ValueError("hop_length and window must be multiples of subframe")
        if self.window < self.subframe:
            raise ValueError("window must be at least one subframe")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CodecConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown codec config keys: {sorted(unknown)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CodecConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def config_hash(self) -> str:
        """Short hash of everything that changes which codes mean what (not the name)."""
        data = {k: v for k, v in self.to_dict().items() if k != "name"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
