"""The `.vtok` token file: a small binary container for codec tokens (layout in docs/vtok_format.md).

    offset  size  field
    0       4     magic b"VTOK"
    4       1     version (u8) = 1
    5       1     flags (u8) = 0; no flags are defined in version 1
    6       4     header length H (u32 LE)
    10      4     payload length P (u32 LE)
    14      4     CRC32 of header JSON bytes followed by payload (u32 LE)
    18      H     header: compact UTF-8 JSON with short keys (see TokenHeader)
    18+H    P     payload: codes bit-packed MSB-first, frame-major

All fixed fields sit in one 18-byte prefix so a reader needs a single struct.unpack, and the CRC covers the
header too: a flipped digit in the sample rate is as fatal as one in the codes.
"""

from __future__ import annotations

import json
import math
import numbers
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from voxtok.audio import atomic_write
from voxtok.errors import VoxtokError

VTOK_MAGIC = b"VTOK"
VTOK_VERSION = 1
PREFIX = struct.Struct("<4sBBIII")
PREFIX_SIZE = PREFIX.size  # 18
MAX_BITS = 32
MAX_CODEBOOK_SIZE = 1 << MAX_BITS
# Bounds a reader enforces before it parses or allocates anything a header asks for. A real header is ~100
# bytes, one level deep, with integers of at most 10 digits; these limits leave room for `extra` metadata.
MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
MAX_NUMBER_CHARS = 24
MAX_SAMPLE_RATE = 1_000_000
MAX_CODEBOOKS = 1024

# Short JSON keys keep the header near 100 bytes: it is part of the file size reported as the true bitrate.
SHORT_KEYS = {
    "model_id": "m",
    "config_hash": "c",
    "sample_rate": "sr",
    "frame_rate": "fr",
    "num_codebooks": "q",
    "codebook_size": "k",
    "num_samples": "n",
    "num_frames": "t",
    "extra": "x",
}
_INT_FIELDS = ("sample_rate", "num_codebooks", "codebook_size", "num_samples", "num_frames")
# Codes packed per vectorised step: bounds the temporary bit matrix to ~32 MiB; a multiple of 8 so every
# chunk but the last ends on a byte boundary for any bit width.
_CHUNK_CODES = 1 << 20
_FOREIGN_MAGIC = {
    b"RIFF": "a WAV file",
    b"fLaC": "a FLAC file",
    b"OggS": "an Ogg file",
    b"\x93NUM": "a .npy array",
}


@dataclass
class TokenHeader:
    model_id: str
    config_hash: str
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    num_samples: int
    num_frames: int
    extra: dict = field(default_factory=dict)

    @property
    def bits(self) -> int:
        """Bits per code: ceil(log2(codebook_size)), computed exactly on integers."""
        return bits_for(self.codebook_size)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def payload_bytes(self) -> int:
        return packed_size(self.num_codebooks, self.num_frames, self.bits)

    def validate(self) -> None:
        """Raise VoxtokError (no file name) when a field has the wrong type or an impossible value."""
        for name in ("model_id", "config_hash"):
            if not isinstance(getattr(self, name), str):
                raise VoxtokError(f"header field {name} must be a string")
        if not self.model_id:
            raise VoxtokError("header field model_id is empty")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
                raise VoxtokError(f"header field {name} must be an integer, got {value!r}")
        fr = self.frame_rate
        real = isinstance(fr, numbers.Real) and not isinstance(fr, (bool, np.bool_))
        if not real or not math.isfinite(fr) or fr <= 0:
            raise VoxtokError(f"header field frame_rate must be a positive number, got {fr!r}")
        if not 0 < self.sample_rate <= MAX_SAMPLE_RATE:
            raise VoxtokError(f"header field sample_rate must be in [1, {MAX_SAMPLE_RATE}], got {self.sample_rate}")
        if fr > self.sample_rate:
            raise VoxtokError(f"header field frame_rate {fr:g} exceeds the sample rate {self.sample_rate}")
        if not 1 <= self.num_codebooks <= MAX_CODEBOOKS:
            raise VoxtokError(
                f"header field num_codebooks must be in [1, {MAX_CODEBOOKS}], got {self.num_codebooks}"
            )
        if not 2 <= self.codebook_size <= MAX_CODEBOOK_SIZE:
            raise VoxtokError(
                f"header field codebook_size must be in [2, 2**{MAX_BITS}], got {self.codebook_size}"
            )
        if self.num_samples < 0 or self.num_frames < 0:
            raise VoxtokError("header fields num_samples and num_frames must not be negative")
        expected = frames_for(self.num_samples, self.sample_rate, fr)
        if self.num_frames != expected:
            raise VoxtokError(
                f"header fields disagree: {self.num_samples} samples at {self.sample_rate} Hz make {expected} "
                f"frames at {fr:g} Hz, the header says {self.num_frames}"
            )
        if not isinstance(self.extra, dict):
            raise VoxtokError("header field extra must be a JSON object")

    def to_json(self) -> str:
        """Compact JSON with the short keys of SHORT_KEYS; `extra` is left out when empty."""
        self.validate()
        # int()/float() also turn numpy scalars (e.g. from codes.shape or a config) into JSON numbers.
        record = {
            "m": self.model_id,
            "c": self.config_hash,
            "sr": int(self.sample_rate),
            "fr": _compact_number(float(self.frame_rate)),
            "q": int(self.num_codebooks),
            "k": int(self.codebook_size),
            "n": int(self.num_samples),
            "t": int(self.num_frames),
        }
        if self.extra:
            record["x"] = self.extra
        try:
            return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise VoxtokError(f"header field extra is not plain JSON ({exc})") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> TokenHeader:
        """Parse and validate a header; unknown keys are ignored so minor additions stay readable."""
        record = load_bounded_json(text)
        if not isinstance(record, dict):
            raise VoxtokError("header is not a JSON object")
        required = [(name, short) for name, short in SHORT_KEYS.items() if name != "extra"]
        missing = [f"{short} ({name})" for name, short in required if short not in record]
        if missing:
            raise VoxtokError(f"header is missing field(s) {', '.join(missing)}")
        values = {name: record[short] for name, short in SHORT_KEYS.items() if short in record}
        header = cls(**values)
        header.validate()
        header.frame_rate = float(header.frame_rate)
        return header

    def to_dict(self) -> dict:
        """Long field names, for `voxtok info --json` and logs."""
        return {name: getattr(self, name) for name in SHORT_KEYS}


def load_bounded_json(text: str | bytes) -> object:
    """json.loads for untrusted headers: UTF-8 only (json.loads would also accept UTF-16/32 bytes), at most
    MAX_HEADER_BYTES, nesting at most MAX_JSON_DEPTH (deeper JSON overflows the parser's recursion) and numbers
    of at most MAX_NUMBER_CHARS characters (Python refuses to convert integers of over 4,300 digits, and a
    huge one overflows float()); NaN and Infinity are not JSON. Every failure is a VoxtokError."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    if len(text) > MAX_HEADER_BYTES:
        raise VoxtokError(f"header is {len(text)} bytes, more than the {MAX_HEADER_BYTES} a reader accepts")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VoxtokError(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = _json_depth(decoded)
    if depth > MAX_JSON_DEPTH:
        raise VoxtokError(f"header JSON is nested {depth} deep, more than {MAX_JSON_DEPTH}")

    def number(kind):
        def parse(literal: str):
            if len(literal) > MAX_NUMBER_CHARS:
                raise VoxtokError(f"header holds a number of {len(literal)} characters (at most {MAX_NUMBER_CHARS})")
            return kind(literal)
        return parse

    def constant(name: str):
        raise VoxtokError(f"header holds {name}, which is not JSON")

    try:
        return json.loads(decoded, parse_int=number(int), parse_float=number(float), parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise VoxtokError(f"header is not valid JSON ({exc})") from None


def _json_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings: a linear scan that never recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def frames_for(num_samples: int, sample_rate: int, frame_rate: float) -> int:
    """Code frames that cover num_samples: ceil(num_samples / samples per frame), the encoder's padding rule."""
    samples_per_frame = sample_rate / frame_rate
    if float(samples_per_frame).is_integer():
        return -(-int(num_samples) // int(samples_per_frame))
    return math.ceil(num_samples / samples_per_frame - 1e-9)


def bits_for(codebook_size: int) -> int:
    """ceil(log2(codebook_size)): 1024 -> 10, 1000 -> 10, 1025 -> 11, 2 -> 1."""
    return max(1, (int(codebook_size) - 1).bit_length())


def packed_size(n_q: int, n_frames: int, bits: int) -> int:
    return (n_q * n_frames * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int | None = None) -> bytes:
    """Bit-pack integer codes [n_q, T] frame-major (frame 0's n_q codes, then frame 1's, ...), each code
    `bits` bits MSB-first, the last byte zero-padded. `bits` defaults to the fewest that hold the largest
    code; pass header.bits when writing a file."""
    arr = _code_matrix(codes)
    if bits is None:
        bits = max(1, int(arr.max()).bit_length()) if arr.size else 1
    _check_bits(bits)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 1 << bits):
        raise VoxtokError(
            f"codes out of range: values span [{int(arr.min())}, {int(arr.max())}], "
            f"{bits}-bit codes hold [0, {(1 << bits) - 1}]"
        )
    width = _word_bytes(bits)
    words = np.ascontiguousarray(arr.T).reshape(-1).astype(f">u{width}")
    if bits == 8 * width:
        return words.tobytes()
    parts = []
    for start in range(0, words.size, _CHUNK_CODES):
        chunk = words[start : start + _CHUNK_CODES]
        bit_matrix = np.unpackbits(chunk.view(np.uint8).reshape(-1, width), axis=1)[:, 8 * width - bits :]
        parts.append(np.packbits(bit_matrix.reshape(-1)).tobytes())
    return b"".join(parts)


def unpack_codes(data: bytes, n_q: int, T: int, bits: int) -> np.ndarray:
    """Inverse of pack_codes: int64 [n_q, T]. `data` must be exactly ceil(n_q*T*bits/8) bytes."""
    _check_bits(bits)
    if n_q < 1 or T < 0:
        raise VoxtokError(f"cannot unpack {n_q} codebooks x {T} frames")
    count = n_q * T
    expected = packed_size(n_q, T, bits)
    if len(data) != expected:
        raise VoxtokError(f"payload is {len(data)} bytes, {n_q} x {T} codes of {bits} bits need {expected}")
    width = _word_bytes(bits)
    buf = np.frombuffer(data, dtype=np.uint8)
    if bits == 8 * width:
        flat = buf.view(f">u{width}")
    else:
        parts = []
        for start in range(0, count, _CHUNK_CODES):
            n = min(_CHUNK_CODES, count - start)
            first, last = start * bits // 8, ((start + n) * bits + 7) // 8
            bit_matrix = np.unpackbits(buf[first:last])[: n * bits].reshape(n, bits)
            padded = np.zeros((n, 8 * width), dtype=np.uint8)
            padded[:, 8 * width - bits :] = bit_matrix
            parts.append(np.packbits(padded, axis=1).view(f">u{width}").reshape(-1))
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=f">u{width}")
    return np.ascontiguousarray(flat.astype(np.int64).reshape(T, n_q).T)


def encode_vtok(header: TokenHeader, codes: np.ndarray) -> bytes:
    """The complete file as bytes. `codes` must be [num_codebooks, num_frames] within [0, codebook_size)."""
    header.validate()
    arr = _code_matrix(codes)
    if arr.shape != (header.num_codebooks, header.num_frames):
        raise VoxtokError(
            f"codes have shape {list(arr.shape)}, header says [{header.num_codebooks}, {header.num_frames}]"
        )
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= header.codebook_size):
        raise VoxtokError(
            f"codes out of range: values span [{int(arr.min())}, {int(arr.max())}], "
            f"codebook size is {header.codebook_size}"
        )
    payload = pack_codes(arr, header.bits)
    head = header.to_json().encode("utf-8")
    if len(payload) > 0xFFFFFFFF or len(head) > 0xFFFFFFFF:
        raise VoxtokError("token stream too large for a .vtok file (4 GiB payload limit)")
    crc = zlib.crc32(payload, zlib.crc32(head))
    return PREFIX.pack(VTOK_MAGIC, VTOK_VERSION, 0, len(head), len(payload), crc) + head + payload


@dataclass(frozen=True)
class ModelTokens:
    """What one model decodes. A header must match it field by field before any payload is unpacked: a token
    file for another model, rate or codebook would otherwise decode to noise, or to audio at the wrong rate."""

    model_id: str
    config_hash: str
    sample_rate: int
    frame_rate: float
    codebook_size: int
    max_codebooks: int


def decode_vtok(
    data: bytes,
    *,
    expect: ModelTokens | None = None,
    expect_model_id: str | None = None,
    expect_config_hash: str | None = None,
    source: str = "vtok data",
) -> tuple[TokenHeader, np.ndarray]:
    """Validate and decode a whole file; each failure is a VoxtokError whose one line starts with `source`.
    `expect` checks every field against a model; expect_model_id/expect_config_hash check only those two."""
    head, payload, stored_crc = _split(data, source)
    if zlib.crc32(payload, zlib.crc32(head)) != stored_crc:
        raise VoxtokError(f"{source}: CRC mismatch, the file is corrupt")
    header = _parse_header(head, source)
    _check_payload_size(header, len(payload), source)
    if expect is not None:
        check_tokens(header, expect, source)
    else:
        check_model(header, expect_model_id, expect_config_hash, source)
    codes = unpack_codes(payload, header.num_codebooks, header.num_frames, header.bits)
    if codes.size and int(codes.max()) >= header.codebook_size:
        raise VoxtokError(
            f"{source}: code {int(codes.max())} out of range for codebook size {header.codebook_size}"
        )
    return header, codes


def check_tokens(header: TokenHeader, expect: ModelTokens, source: str) -> None:
    """Refuse a header that this model cannot decode as it stands (see ModelTokens)."""
    check_model(header, expect.model_id, expect.config_hash, source)
    mismatches = [
        ("sample rate", header.sample_rate, expect.sample_rate),
        ("frame rate", header.frame_rate, expect.frame_rate),
        ("codebook size", header.codebook_size, expect.codebook_size),
    ]
    for what, got, want in mismatches:
        if got != want:
            raise VoxtokError(f"{source}: header says {what} {_number(got)}, model {expect.model_id} has "
                              f"{_number(want)}")
    if header.num_codebooks > expect.max_codebooks:
        raise VoxtokError(f"{source}: header says {header.num_codebooks} codebooks, "
                          f"model {expect.model_id} has {expect.max_codebooks}")
    if header.num_frames == 0:
        raise VoxtokError(f"{source}: holds no frames, there is nothing to decode")


def check_model(
    header: TokenHeader, expect_model_id: str | None, expect_config_hash: str | None, source: str
) -> None:
    """Refuse tokens made by a different model: they would decode to noise without any other error."""
    wrong_model = expect_model_id is not None and header.model_id != expect_model_id
    wrong_config = expect_config_hash is not None and header.config_hash != expect_config_hash
    if wrong_model or wrong_config:
        this_model = expect_model_id if expect_model_id is not None else header.model_id
        this_config = f" (config {expect_config_hash})" if expect_config_hash is not None else ""
        # Same name, other config: usually other weights of one model (a fine-tune moves the codebooks).
        hint = "; decode with the model folder that encoded it" if not wrong_model else ""
        raise VoxtokError(
            f"{source}: made by model {header.model_id} (config {header.config_hash}), "
            f"this is model {this_model}{this_config}{hint}"
        )


def write_vtok(path: str | Path, header: TokenHeader, codes: np.ndarray) -> None:
    """Encode first, then write through a temporary file and rename: a failure leaves no partial file."""
    data = encode_vtok(header, codes)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def read_vtok(
    path: str | Path, *, expect_model_id: str | None = None, expect_config_hash: str | None = None
) -> tuple[TokenHeader, np.ndarray]:
    return decode_vtok(
        read_bytes(path),
        expect_model_id=expect_model_id,
        expect_config_hash=expect_config_hash,
        source=str(path),
    )


def read_header(path: str | Path) -> TokenHeader:
    """Read and parse only the prefix and JSON header; the payload is neither read nor CRC-checked."""
    path = Path(path)
    _check_readable(path)
    with open(path, "rb") as f:
        prefix = f.read(PREFIX_SIZE)
        _check_prefix(prefix, str(path))
        _, _, _, head_len, payload_len, _ = PREFIX.unpack(prefix)
        _check_header_length(head_len, str(path))
        head = f.read(head_len)
        if len(head) < head_len:
            got, want = PREFIX_SIZE + len(head), PREFIX_SIZE + head_len
            raise VoxtokError(f"{path}: truncated: header cut at {got} of {want} bytes")
    header = _parse_header(head, str(path))
    _check_payload_size(header, payload_len, str(path))
    return header


@dataclass
class VtokSummary:
    """What `voxtok info` reports about one file, corrupt or not, once its header is readable."""

    header: TokenHeader
    file_bytes: int
    header_bytes: int
    payload_bytes: int
    crc_ok: bool

    @property
    def overhead_bytes(self) -> int:
        return self.file_bytes - self.payload_bytes

    @property
    def bitrate_kbps(self) -> float | None:
        """File size over duration: what storing or sending these tokens really costs."""
        duration = self.header.duration
        return self.file_bytes * 8 / duration / 1000 if duration > 0 else None

    @property
    def code_bitrate_kbps(self) -> float:
        h = self.header
        return h.frame_rate * h.num_codebooks * h.bits / 1000


def summarize_vtok(data: bytes, source: str = "vtok data") -> VtokSummary:
    """Like decode_vtok but keeps going past a CRC mismatch when the header still parses, so a corrupt
    file can be inspected; structural errors (magic, version, truncation, bad JSON) still raise."""
    head, payload, stored_crc = _split(data, source)
    header = _parse_header(head, source)
    _check_payload_size(header, len(payload), source)
    crc_ok = zlib.crc32(payload, zlib.crc32(head)) == stored_crc
    return VtokSummary(header, len(data), len(head), len(payload), crc_ok)


def summarize_file(path: str | Path) -> VtokSummary:
    return summarize_vtok(read_bytes(path), source=str(path))


def save_codes_npy(path: str | Path, codes: np.ndarray) -> None:
    """Write codes as an int16 [n_q, T] .npy (the layout LM pipelines load directly), atomically."""
    arr = _code_matrix(codes)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > np.iinfo(np.int16).max):
        raise VoxtokError(
            f"{path}: codes span [{int(arr.min())}, {int(arr.max())}], int16 .npy holds [0, 32767]; use .vtok"
        )

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr.astype(np.int16), allow_pickle=False)

    atomic_write(path, write)


def load_codes_npy(path: str | Path) -> np.ndarray:
    """Load a [n_q, T] integer code array saved by save_codes_npy (or any 2-D integer .npy) as int64."""
    path = Path(path)
    _check_readable(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise VoxtokError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None
    if not isinstance(arr, np.ndarray):
        raise VoxtokError(f"{path}: expected a single array, found an archive")
    if not np.issubdtype(arr.dtype, np.integer):
        raise VoxtokError(f"{path}: codes must be integers, found dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise VoxtokError(f"{path}: codes must have shape [n_q, T], found {list(arr.shape)}")
    if arr.size and int(arr.min()) < 0:
        raise VoxtokError(f"{path}: codes must not be negative, found {int(arr.min())}")
    return arr.astype(np.int64)


def _split(data: bytes, source: str) -> tuple[bytes, bytes, int]:
    """Check the prefix and lengths; return (header bytes, payload bytes, stored CRC)."""
    data = bytes(data) if not isinstance(data, bytes) else data
    _check_prefix(data[:PREFIX_SIZE], source)
    _, _, _, head_len, payload_len, crc = PREFIX.unpack_from(data)
    _check_header_length(head_len, source)
    total = PREFIX_SIZE + head_len + payload_len
    if len(data) < PREFIX_SIZE + head_len:
        raise VoxtokError(f"{source}: truncated: header cut at {len(data)} of {PREFIX_SIZE + head_len} bytes")
    if len(data) < total:
        raise VoxtokError(f"{source}: truncated: {len(data)} bytes, the header promises {total}")
    if len(data) > total:
        raise VoxtokError(f"{source}: corrupt: {len(data) - total} unexpected bytes after the payload")
    head = data[PREFIX_SIZE : PREFIX_SIZE + head_len]
    return head, data[PREFIX_SIZE + head_len :], crc


def _check_prefix(prefix: bytes, source: str) -> None:
    """Validate the fixed 18-byte prefix, giving the most specific error the available bytes allow."""
    if not prefix:
        raise VoxtokError(f"{source}: empty file, not a .vtok token file")
    magic = prefix[:4]
    if magic != VTOK_MAGIC[: len(magic)]:
        kind = _FOREIGN_MAGIC.get(magic)
        hint = f"; it looks like {kind}" if kind else ""
        raise VoxtokError(
            f"{source}: not a .vtok token file (starts with {magic!r}, expected {VTOK_MAGIC!r}){hint}"
        )
    if len(prefix) >= 5 and prefix[4] != VTOK_VERSION:
        raise VoxtokError(
            f"{source}: unsupported .vtok version {prefix[4]} (this voxtok reads version {VTOK_VERSION})"
        )
    if len(prefix) < PREFIX_SIZE:
        raise VoxtokError(
            f"{source}: truncated: {len(prefix)} bytes, shorter than the {PREFIX_SIZE}-byte prefix"
        )
    if prefix[5] != 0:
        raise VoxtokError(
            f"{source}: unsupported .vtok flags 0x{prefix[5]:02x} (version {VTOK_VERSION} defines none)"
        )


def _check_header_length(head_len: int, source: str) -> None:
    if head_len > MAX_HEADER_BYTES:
        raise VoxtokError(f"{source}: corrupt: the prefix announces a {head_len}-byte header "
                          f"(at most {MAX_HEADER_BYTES})")


def _parse_header(head: bytes, source: str) -> TokenHeader:
    try:
        return TokenHeader.from_json(head)
    except VoxtokError as exc:
        raise VoxtokError(f"{source}: {exc}") from None


def _check_payload_size(header: TokenHeader, payload_len: int, source: str) -> None:
    expected = header.payload_bytes
    if payload_len != expected:
        raise VoxtokError(
            f"{source}: corrupt: payload is {payload_len} bytes, {header.num_codebooks} codebooks x "
            f"{header.num_frames} frames x {header.bits} bits need {expected}"
        )


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, with the one-line errors of the reader (missing, not a file, unreadable)."""
    path = Path(path)
    _check_readable(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VoxtokError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise VoxtokError(f"{path}: no such file")
    if not path.is_file():
        raise VoxtokError(f"{path}: not a regular file")


def _code_matrix(codes: np.ndarray) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise VoxtokError(f"codes must have shape [n_q, T], got {list(arr.shape)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise VoxtokError(f"codes must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise VoxtokError(f"bits per code must be in [1, {MAX_BITS}], got {bits}")


def _word_bytes(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _compact_number(value: float) -> float | int:
    # 50 rather than 50.0: two bytes of every file, and readers convert to float anyway.
    return int(value) if value.is_integer() else value


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
