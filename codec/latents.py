"""The `.vlat` latent file: continuous tokens (the 12.5 Hz tokenizer's normalised latents) with a header, the
float sibling of `.vtok` (layout in docs/vtok_format.md, "Continuous latents").

    offset  size  field
    0       4     magic b"VLAT"
    4       1     version (u8) = 1
    5       1     flags (u8) = 0
    6       4     header length H (u32 LE)
    10      4     payload length P (u32 LE)
    14      4     CRC32 of header JSON bytes followed by payload (u32 LE)
    18      H     header: compact UTF-8 JSON {"m": model id, "c": config hash, "sr": sample rate, "fr": frame rate,
                  "d": dimensions, "n": samples, "t": frames, "dt": "f16" | "f32", "norm": true}
    18+H    P     payload: t x d little-endian floats, frame-major

`norm: true` says the latents are already normalised with the model's shipped statistics (what encode_latents
returns); a reader refuses anything else, so raw and normalised latents cannot be mixed up.
"""

from __future__ import annotations

import json
import math
import numbers
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from voxtok.audio import atomic_write
from voxtok.binary import MAX_HEADER_BYTES, MAX_SAMPLE_RATE, frames_for, load_bounded_json, read_bytes
from voxtok.errors import VoxtokError

VLAT_MAGIC = b"VLAT"
VLAT_VERSION = 1
PREFIX = struct.Struct("<4sBBIII")
MAX_DIMS = 4096
DTYPES = {"f16": np.dtype("<f2"), "f32": np.dtype("<f4")}


@dataclass
class LatentHeader:
    model_id: str
    config_hash: str
    sample_rate: int
    frame_rate: float
    dims: int
    num_samples: int
    num_frames: int
    dtype: str = "f16"

    def validate(self) -> None:
        for name in ("model_id", "config_hash", "dtype"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise VoxtokError(f"header field {name} must be a non-empty string")
        for name in ("sample_rate", "dims", "num_samples", "num_frames"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise VoxtokError(f"header field {name} must be an integer, got {value!r}")
        fr = self.frame_rate
        if not isinstance(fr, numbers.Real) or isinstance(fr, bool) or not math.isfinite(fr) or fr <= 0:
            raise VoxtokError(f"header field frame_rate must be a positive number, got {fr!r}")
        if not 0 < self.sample_rate <= MAX_SAMPLE_RATE or fr > self.sample_rate:
            raise VoxtokError(f"header fields sample_rate {self.sample_rate} / frame_rate {fr:g} are impossible")
        if not 1 <= self.dims <= MAX_DIMS:
            raise VoxtokError(f"header field d must be in [1, {MAX_DIMS}], got {self.dims}")
        if self.dtype not in DTYPES:
            raise VoxtokError(f"header field dt must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.num_samples < 0 or self.num_frames != frames_for(self.num_samples, self.sample_rate, fr):
            raise VoxtokError(f"header fields disagree: {self.num_samples} samples do not make "
                              f"{self.num_frames} frames at {fr:g} Hz")

    @property
    def payload_bytes(self) -> int:
        return self.num_frames * self.dims * DTYPES[self.dtype].itemsize

    def to_json(self) -> bytes:
        self.validate()
        record = {"m": self.model_id, "c": self.config_hash, "sr": int(self.sample_rate),
                  "fr": float(self.frame_rate), "d": int(self.dims), "n": int(self.num_samples),
                  "t": int(self.num_frames), "dt": self.dtype, "norm": True}
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, head: bytes) -> LatentHeader:
        record = load_bounded_json(head)
        if not isinstance(record, dict):
            raise VoxtokError("header is not a JSON object")
        keys = {"m": "model_id", "c": "config_hash", "sr": "sample_rate", "fr": "frame_rate", "d": "dims",
                "n": "num_samples", "t": "num_frames", "dt": "dtype"}
        missing = [k for k in keys if k not in record]
        if missing:
            raise VoxtokError(f"header is missing field(s) {', '.join(missing)}")
        if record.get("norm") is not True:
            raise VoxtokError("header does not say the latents are normalised (norm: true)")
        header = cls(**{name: record[k] for k, name in keys.items()})
        header.validate()
        return header


def encode_vlat(header: LatentHeader, latents: np.ndarray) -> bytes:
    """latents [num_frames, dims] -> the complete file."""
    arr = np.asarray(latents)
    if arr.shape != (header.num_frames, header.dims):
        raise VoxtokError(f"latents have shape {list(arr.shape)}, header says [{header.num_frames}, {header.dims}]")
    if not np.isfinite(arr).all():
        raise VoxtokError("latents hold NaN or infinite values")
    payload = np.ascontiguousarray(arr, dtype=DTYPES[header.dtype]).tobytes()
    head = header.to_json()
    crc = zlib.crc32(payload, zlib.crc32(head))
    return PREFIX.pack(VLAT_MAGIC, VLAT_VERSION, 0, len(head), len(payload), crc) + head + payload


def is_vlat(data: bytes) -> bool:
    return data[:4] == VLAT_MAGIC


def decode_vlat(data: bytes, source: str = "vlat data") -> tuple[LatentHeader, np.ndarray]:
    """Validate a whole file -> (header, latents [num_frames, dims] float32); each failure one VoxtokError."""
    if len(data) < PREFIX.size:
        raise VoxtokError(f"{source}: truncated: {len(data)} bytes, not a .vlat latent file")
    magic, version, flags, head_len, payload_len, crc = PREFIX.unpack_from(data)
    if magic != VLAT_MAGIC:
        raise VoxtokError(f"{source}: not a .vlat latent file (starts with {magic!r})")
    if version != VLAT_VERSION or flags:
        raise VoxtokError(f"{source}: unsupported .vlat version {version} / flags {flags}")
    if head_len > MAX_HEADER_BYTES:
        raise VoxtokError(f"{source}: corrupt: a {head_len}-byte header")
    if len(data) != PREFIX.size + head_len + payload_len:
        raise VoxtokError(f"{source}: truncated or corrupt: {len(data)} bytes, the prefix promises "
                          f"{PREFIX.size + head_len + payload_len}")
    head = data[PREFIX.size:PREFIX.size + head_len]
    payload = data[PREFIX.size + head_len:]
    if zlib.crc32(payload, zlib.crc32(head)) != crc:
        raise VoxtokError(f"{source}: CRC mismatch, the file is corrupt")
    try:
        header = LatentHeader.from_json(head)
    except VoxtokError as exc:
        raise VoxtokError(f"{source}: {exc}") from None
    if payload_len != header.payload_bytes:
        raise VoxtokError(f"{source}: corrupt: payload is {payload_len} bytes, the header needs "
                          f"{header.payload_bytes}")
    latents = np.frombuffer(payload, dtype=DTYPES[header.dtype]).reshape(header.num_frames, header.dims)
    if not np.isfinite(latents).all():
        raise VoxtokError(f"{source}: latents hold NaN or infinite values")
    if header.num_frames == 0:
        raise VoxtokError(f"{source}: holds no frames, there is nothing to decode")
    return header, latents.astype(np.float32)


def write_vlat(path: str | Path, header: LatentHeader, latents: np.ndarray) -> None:
    data = encode_vlat(header, latents)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def read_vlat(path: str | Path) -> tuple[LatentHeader, np.ndarray]:
    return decode_vlat(read_bytes(path), source=str(path))


def check_latents_model(header: LatentHeader, model, source: str) -> None:
    """Refuse latents another model made, or of another shape (they would decode to noise)."""
    cfg = model.config
    if header.model_id != model.model_id or header.config_hash != cfg.config_hash():
        raise VoxtokError(f"{source}: made by model {header.model_id} (config {header.config_hash}), this is "
                          f"model {model.model_id} (config {cfg.config_hash()})")
    if header.dims != cfg.latent_dim or header.sample_rate != cfg.sample_rate:
        raise VoxtokError(f"{source}: {header.dims} dims at {header.sample_rate} Hz, model {model.model_id} has "
                          f"{cfg.latent_dim} at {cfg.sample_rate}")
