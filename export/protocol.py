"""The `voxtok serve` wire format, shared by the server and the Python client (described in docs/protocol.md).

One WebSocket connection carries one stream. The client's first message is a JSON "start"; after the
server's "ready", every binary message the client sends gets exactly one binary reply, in order (possibly
empty), so a client can match replies to requests by counting. PCM is mono little-endian float32 or int16;
codes are little-endian uint16, frame-major ([frames, codebooks] row by row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

STREAM_PATH = "/v1/stream"
HEALTH_PATH = "/health"
MODES = ("encode", "decode")
SAMPLE_FORMATS = {"float32": np.dtype("<f4"), "int16": np.dtype("<i2")}
CODE_DTYPE = np.dtype("<u2")
# One binary message carries at most this many frames (20 s at 50 Hz): it bounds one graph call's memory
# and the size of one reply (a decode reply is 640 bytes of float32 PCM per frame).
MAX_FRAMES_PER_MESSAGE = 1000
CONTROL_TYPES = ("start", "flush", "end")
START_FIELDS = {"type", "mode", "sample_format", "sample_rate", "num_codebooks"}

# WebSocket close codes (RFC 6455 section 7.4.1) the server ends a stream with.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # the client broke the protocol: the error message says how
CLOSE_TOO_BIG = 1009  # a message over --max-message-bytes (sent by the websockets library itself)
CLOSE_INTERNAL = 1011
CLOSE_BUSY = 1013  # "try again later": the server is at --max-streams


class ProtocolError(Exception):
    """A message the protocol does not allow: `code` is the machine-readable error code sent to the client."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StreamSpec:
    mode: str
    sample_format: str
    sample_rate: int
    num_codebooks: int


def error_message(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def parse_control(text: str) -> dict:
    """A text message -> its JSON object; raises ProtocolError for anything that is not a known control message."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise ProtocolError("invalid_json", "text messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_json", "text messages must be JSON objects")
    kind = message.get("type")
    if kind not in CONTROL_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected one of "
                                            f"{', '.join(CONTROL_TYPES)}")
    return message


def parse_start(message: dict, sample_rate: int, num_quantizers: int) -> StreamSpec:
    """Check a start message against the model the server runs; every field is checked, none guessed."""
    unknown = sorted(set(message) - START_FIELDS)
    if unknown:
        raise ProtocolError("bad_start", f"unknown start field(s): {', '.join(unknown)}")
    mode = message.get("mode")
    if mode not in MODES:
        raise ProtocolError("bad_start", f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    fmt = message.get("sample_format")
    if fmt not in SAMPLE_FORMATS:
        raise ProtocolError("bad_start", f"sample_format must be one of {', '.join(SAMPLE_FORMATS)}, got {fmt!r}")
    rate = message.get("sample_rate")
    if not _is_int(rate) or rate != sample_rate:
        raise ProtocolError("bad_start", f"sample_rate must be {sample_rate} (the model's rate; resample first), "
                                         f"got {rate!r}")
    codebooks = message.get("num_codebooks", num_quantizers if mode == "encode" else None)
    if codebooks is None:
        raise ProtocolError("bad_start", "decode streams must give num_codebooks (codes per frame on the wire)")
    if not _is_int(codebooks) or not 1 <= codebooks <= num_quantizers:
        raise ProtocolError("bad_start", f"num_codebooks must be an integer 1..{num_quantizers}, got {codebooks!r}")
    return StreamSpec(mode, fmt, int(rate), int(codebooks))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pcm_to_float(data: bytes, sample_format: str) -> np.ndarray:
    """PCM bytes -> float32 samples in [-1, 1] (int16 is scaled by 1/32768)."""
    dtype = SAMPLE_FORMATS[sample_format]
    if len(data) % dtype.itemsize:
        raise ProtocolError("bad_audio", f"{len(data)} bytes is not a whole number of {sample_format} samples "
                                         f"({dtype.itemsize} bytes each)")
    samples = np.frombuffer(data, dtype=dtype)
    if sample_format == "int16":
        return samples.astype(np.float32) / 32768.0
    samples = samples.astype(np.float32)
    if not np.isfinite(samples).all():
        raise ProtocolError("bad_audio", "audio contains NaN or infinite samples (is it really float32?)")
    return samples


def float_to_pcm(samples: np.ndarray, sample_format: str) -> bytes:
    """float32 samples -> PCM bytes; int16 is scaled by 32768, rounded and clipped to [-32768, 32767].

    The same 32768 as pcm_to_float, so int16 -> float -> int16 gives back the same samples: a client that
    sends int16 audio it received (or read from a 16-bit file) gets codes of exactly those samples.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_format == "int16":
        scaled = np.clip(np.round(samples.astype(np.float64) * 32768.0), -32768, 32767)
        return scaled.astype(SAMPLE_FORMATS["int16"]).tobytes()
    return samples.astype(SAMPLE_FORMATS["float32"]).tobytes()


def codes_to_bytes(codes: np.ndarray) -> bytes:
    """codes [q, frames] -> uint16 LE, frame-major."""
    return np.ascontiguousarray(np.asarray(codes).T, dtype=CODE_DTYPE).tobytes()


def bytes_to_codes(data: bytes, num_codebooks: int, codebook_size: int) -> np.ndarray:
    """uint16 LE frame-major bytes -> codes [q, frames] int64, checked against the codebook size."""
    frame_bytes = num_codebooks * CODE_DTYPE.itemsize
    if len(data) % frame_bytes:
        raise ProtocolError("bad_codes", f"{len(data)} bytes is not a whole number of frames of {num_codebooks} "
                                         f"uint16 codes ({frame_bytes} bytes each)")
    codes = np.frombuffer(data, dtype=CODE_DTYPE).reshape(-1, num_codebooks)
    if codes.size and int(codes.max()) >= codebook_size:
        raise ProtocolError("bad_codes", f"code {int(codes.max())} is outside 0..{codebook_size - 1}")
    return np.ascontiguousarray(codes.T, dtype=np.int64)
