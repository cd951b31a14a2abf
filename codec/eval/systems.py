"""Systems under test: each turns a 16 kHz reference into decoded 16 kHz audio and says what it cost.

A system is anything with a `name`, `check()` (fail early, before any file, when a tool or model is missing)
and `process(samples, tmpdir, key) -> Decoded`. `parse_system` builds one from a command-line spec.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
import soxr
from voxtok.audio import load_audio
from voxtok.errors import VoxtokError

SAMPLE_RATE = 16000
DEFAULT_TIMEOUT_S = 300.0


class SystemFailure(Exception):
    """The system could not process this one file; the message says why. The run goes on."""


@dataclass
class Decoded:
    samples: np.ndarray  # float32 mono at 16 kHz
    encoded_bytes: int | None  # None when the system does not expose its bitstream (a folder of outputs)
    encode_s: float | None
    decode_s: float | None


class System(Protocol):
    name: str

    def check(self) -> None: ...

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded: ...


# ---------------------------------------------------------------- helpers


def _write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    sf.write(str(path), np.clip(samples, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")


def _read_decoded(path: Path, what: str) -> np.ndarray:
    if not path.is_file() or path.stat().st_size == 0:
        raise SystemFailure(f"{what} wrote no output")
    try:
        return load_audio(path, SAMPLE_RATE)
    except VoxtokError as exc:
        raise SystemFailure(f"{what} output unreadable: {exc}") from None


def _run(cmd: list[str], timeout: float) -> float:
    """Run a tool; return its wall time. Raise SystemFailure with the tool's last stderr line on failure."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"{Path(cmd[0]).name} timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise SystemFailure(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f": {lines[-1].strip()}" if lines else ""
        raise SystemFailure(f"{Path(cmd[0]).name} exited with status {proc.returncode}{detail}")
    return elapsed


def _need_tools(system: str, tools: list[str], package: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise VoxtokError(
            f"system '{system}' needs {', '.join(missing)} on PATH (Debian/Ubuntu: apt-get install {package})"
        )


# ---------------------------------------------------------------- classic codecs


class IdentityFlac:
    """Sanity row: lossless FLAC round trip in process. Every metric must read as perfect."""

    name = "identity"

    def check(self) -> None:
        pass

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded:
        path = tmpdir / "identity.flac"
        start = time.perf_counter()
        sf.write(str(path), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded, _ = sf.read(str(path), dtype="float32")
        decode_s = time.perf_counter() - start
        return Decoded(decoded, path.stat().st_size, encode_s, decode_s)


class Opus:
    """opus-tools at a target bitrate (VBR, 20 ms frames); comments dropped so the bytes are the stream."""

    def __init__(self, kbps: float, timeout: float = DEFAULT_TIMEOUT_S):
        if not 6 <= kbps <= 256:
            raise VoxtokError(f"opus bitrate {kbps:g} kbps is out of range: opusenc takes 6 to 256")
        self.kbps = kbps
        self.timeout = timeout
        self.name = f"opus:{kbps:g}"

    def check(self) -> None:
        _need_tools(self.name, ["opusenc", "opusdec"], "opus-tools")

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded:
        src, enc, out = tmpdir / "in.wav", tmpdir / "enc.opus", tmpdir / "out.wav"
        _write_wav(src, samples)
        encode_s = _run(
            ["opusenc", "--quiet", "--bitrate", f"{self.kbps:g}", "--discard-comments", str(src), str(enc)],
            self.timeout,
        )
        decode_s = _run(["opusdec", "--quiet", "--rate", str(SAMPLE_RATE), str(enc), str(out)], self.timeout)
        return Decoded(_read_decoded(out, "opusdec"), enc.stat().st_size, encode_s, decode_s)


CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200", "700C", "450")


class Codec2:
    """Codec 2 (8 kHz narrowband): resample to 8 kHz, c2enc/c2dec headerless, resample back to 16 kHz."""

    RATE = 8000

    def __init__(self, mode: str, timeout: float = DEFAULT_TIMEOUT_S):
        mode = mode.upper()
        if mode not in CODEC2_MODES:
            raise VoxtokError(f"codec2 mode {mode!r} unknown; choose from {', '.join(CODEC2_MODES)}")
        self.mode = mode
        self.timeout = timeout
        self.name = f"codec2:{mode}"

    def check(self) -> None:
        _need_tools(self.name, ["c2enc", "c2dec"], "codec2")

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded:
        src, enc, out = tmpdir / "in.raw", tmpdir / "enc.bit", tmpdir / "out.raw"
        narrow = soxr.resample(samples, SAMPLE_RATE, self.RATE, quality="HQ")
        src.write_bytes((np.clip(narrow, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes())
        encode_s = _run(["c2enc", self.mode, str(src), str(enc)], self.timeout)
        decode_s = _run(["c2dec", self.mode, str(enc), str(out)], self.timeout)
        if not out.is_file() or out.stat().st_size < 2:
            raise SystemFailure("c2dec wrote no output")
        pcm = np.frombuffer(out.read_bytes()[: out.stat().st_size // 2 * 2], dtype="<i2").astype(np.float32)
        wide = soxr.resample(pcm / 32768.0, self.RATE, SAMPLE_RATE, quality="HQ").astype(np.float32)
        return Decoded(wide, enc.stat().st_size, encode_s, decode_s)


class SpeexWideband:
    """Speex wideband (16 kHz) at a quality level 0-10 (speexenc's default is 8, about 28 kbps in Ogg)."""

    def __init__(self, quality: int = 8, timeout: float = DEFAULT_TIMEOUT_S):
        if not 0 <= quality <= 10:
            raise VoxtokError(f"speex quality {quality} out of range 0-10")
        self.quality = quality
        self.timeout = timeout
        self.name = f"speex-wb:q{quality}"

    def check(self) -> None:
        _need_tools(self.name, ["speexenc", "speexdec"], "speex")

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded:
        src, enc, out = tmpdir / "in.wav", tmpdir / "enc.spx", tmpdir / "out.wav"
        _write_wav(src, samples)
        encode_s = _run(
            ["speexenc", "--wideband", "--quality", str(self.quality), str(src), str(enc)], self.timeout
        )
        decode_s = _run(["speexdec", str(enc), str(out)], self.timeout)
        return Decoded(_read_decoded(out, "speexdec"), enc.stat().st_size, encode_s, decode_s)


# ---------------------------------------------------------------- user-supplied systems


class CommandPair:
    """Any codec as two commands. Placeholders: {in} and {out}. The encoder reads a 16-bit 16 kHz WAV and
    writes the bitstream; the decoder reads the bitstream and writes audio that libsndfile can read (any rate).
    Templates are split like a shell line but run without a shell; use `sh -c '...'` for pipes."""

    def __init__(self, encode: str, decode: str, name: str = "cmd", timeout: float = DEFAULT_TIMEOUT_S):
        self.encode_argv = self._template(encode, "encode")
        self.decode_argv = self._template(decode, "decode")
        self.name = name
        self.timeout = timeout

    @staticmethod
    def _template(template: str, which: str) -> list[str]:
        try:
            argv = shlex.split(template)
        except ValueError as exc:
            raise VoxtokError(f"{which} command {template!r}: {exc}") from None
        joined = " ".join(argv)
        if not argv or "{in}" not in joined or "{out}" not in joined:
            raise VoxtokError(f"{which} command {template!r} must use both {{in}} and {{out}}")
        return argv

    def check(self) -> None:
        for argv in (self.encode_argv, self.decode_argv):
            if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
                raise VoxtokError(f"system '{self.name}': command not found: {argv[0]}")

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded:
        src, enc, out = tmpdir / "in.wav", tmpdir / "encoded.bin", tmpdir / "decoded.wav"
        _write_wav(src, samples)
        encode_s = _run(self._fill(self.encode_argv, src, enc), self.timeout)
        if not enc.is_file():
            raise SystemFailure("encode command wrote no file at {out}")
        decode_s = _run(self._fill(self.decode_argv, enc, out), self.timeout)
        return Decoded(_read_decoded(out, "decode command"), enc.stat().st_size, encode_s, decode_s)

    @staticmethod
    def _fill(argv: list[str], src: Path, dst: Path) -> list[str]:
        return [a.replace("{in}", str(src)).replace("{out}", str(dst)) for a in argv]


class DecodedFolder:
    """Audio decoded elsewhere, matched to the reference by relative path (any audio extension)."""

    EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

    def __init__(self, folder: str | Path, name: str | None = None):
        self.folder = Path(folder)
        self.name = name or f"folder:{self.folder.name}"

    def check(self) -> None:
        if not self.folder.is_dir():
            raise VoxtokError(f"system '{self.name}': {self.folder} is not a folder")

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded:
        exact = self.folder / key
        candidates = [exact] + [exact.with_suffix(ext) for ext in self.EXTENSIONS]
        for path in candidates:
            if path.is_file():
                return Decoded(_read_decoded(path, str(path)), None, None, None)
        raise SystemFailure(f"no decoded file for {key} in {self.folder} (tried {exact.with_suffix('.*')})")


class VoxtokSystem:
    """This project's codec through its public API: load_codec, compress and decompress. For the 12.5 Hz tokenizer
    `decoding` picks the decoder ({"decoder": "flow" | "regression", "steps": N}) and `latents` sends the
    continuous tokens (a .vlat file's worth of float16) instead of the FSQ codes."""

    def __init__(self, model: str | None, bitrate_kbps: float | None, name: str | None = None, loaded=None,
                 decoding: dict | None = None, latents: bool = False):
        """loaded: the model already in memory (a caller that keeps one for many requests, as the demo does)."""
        self.model_name = model
        self.bitrate_kbps = bitrate_kbps
        self.decoding = decoding or {}
        self.latents = latents
        rate = f"@{bitrate_kbps:g}kbps" if bitrate_kbps is not None else ""
        options = "".join(f"+{k}={v:g}" if k in ("steps", "temperature") else f"+{v}"
                          for k, v in self.decoding.items())
        self.name = name or f"voxtok{':' + model if model else ''}{rate}{'+latents' if latents else ''}{options}"
        self._model = loaded

    def check(self) -> None:
        from voxtok.compress import load_codec

        self._model = load_codec(self.model_name)
        if (self.decoding or self.latents) and not self._model.continuous:
            raise VoxtokError(f"system {self.name}: decoder options and +latents need the 12.5 Hz tokenizer")

    def process(self, samples: np.ndarray, tmpdir: Path, key: str) -> Decoded:
        from voxtok.compress import compress, decompress

        if self._model is None:
            self.check()
        model = self._model
        if self.decoding:
            flow_options = "steps" in self.decoding or "temperature" in self.decoding
            model.set_decoding(self.decoding.get("decoder", "flow" if flow_options else None),
                               self.decoding.get("steps"), self.decoding.get("temperature"))
        start = time.perf_counter()
        if self.latents:
            decoded, size, encode_s, decode_s = self._latent_roundtrip(samples)
        else:
            data = compress(model, samples, SAMPLE_RATE, bitrate_kbps=self.bitrate_kbps)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded, rate = decompress(model, data)
            decode_s = time.perf_counter() - start
            size = len(data)
            if rate != SAMPLE_RATE:
                decoded = soxr.resample(decoded, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        decoded = np.asarray(decoded, dtype=np.float32).reshape(-1)
        return Decoded(decoded, size, encode_s, decode_s)

    def _latent_roundtrip(self, samples: np.ndarray) -> tuple[np.ndarray, int, float, float]:
        import torch
        from voxtok.latents import LatentHeader, decode_vlat, encode_vlat

        model, cfg = self._model, self._model.config
        start = time.perf_counter()
        with torch.inference_mode():
            z = model.encode_latents(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, None])
        latents = z[0].T.float().numpy()
        header = LatentHeader(model.model_id, cfg.config_hash(), cfg.sample_rate, cfg.frame_rate, cfg.latent_dim,
                              len(samples), latents.shape[0])
        data = encode_vlat(header, latents)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        _, stored = decode_vlat(data)
        with torch.inference_mode():
            y = model.decode_latents(torch.from_numpy(np.ascontiguousarray(stored.T))[None])
        decoded = y[0, 0, : len(samples)].float().numpy()
        return decoded, len(data), encode_s, time.perf_counter() - start


# ---------------------------------------------------------------- command-line specs

def parse_system(spec: str, timeout: float = DEFAULT_TIMEOUT_S) -> System:
    """Build a system from its command-line spec (see voxtok.eval.catalog.SPEC_HELP)."""
    spec = spec.strip()
    name = None
    named = re.match(r"^([A-Za-z0-9_.+-]+)=(.+)$", spec, re.S)
    if named and re.match(r"^(identity|flac|opus|codec2|speex|voxtok|cmd|folder)\b", named.group(2)):
        name, spec = named.group(1), named.group(2)
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    system: System
    if kind in ("identity", "flac") and not arg:
        system = IdentityFlac()
    elif kind == "opus":
        system = Opus(_number(arg, spec, "kbps"), timeout)
    elif kind == "codec2":
        system = Codec2(arg, timeout)
    elif kind == "speex":
        system = SpeexWideband(int(_number(arg, spec, "quality")) if arg else 8, timeout)
    elif kind == "cmd":
        encode, sep, decode = arg.partition("::")
        if not sep:
            raise VoxtokError(f"system {spec!r}: write cmd:ENCODE_TEMPLATE::DECODE_TEMPLATE")
        system = CommandPair(encode, decode, name or "cmd", timeout)
    elif kind == "folder":
        if not arg:
            raise VoxtokError(f"system {spec!r}: write folder:PATH")
        system = DecodedFolder(arg, name)
    elif spec.lower().startswith("voxtok"):
        system = _parse_voxtok(spec, name)
    else:
        raise VoxtokError(
            f"unknown system {spec!r}; kinds: identity, opus:KBPS, codec2:MODE, speex[:QUALITY], "
            "voxtok[:MODEL][@KBPS], cmd:ENC::DEC, folder:PATH (see voxtok eval --help)"
        )
    if name:
        system.name = name
    return system


def _parse_voxtok(spec: str, name: str | None) -> VoxtokSystem:
    head, *options = spec.split("+")
    match = re.match(r"^voxtok(?::(?P<model>[^@]+))?(?:@(?P<rate>[0-9.]+)\s*(?:kbps|k)?)?$", head, re.I)
    if not match:
        raise VoxtokError(f"system {spec!r}: write voxtok[:MODEL][@KBPS][+OPTION...], e.g. voxtok@1.5kbps")
    rate = _number(match.group("rate"), spec, "kbps") if match.group("rate") else None
    decoding: dict = {}
    latents = False
    for option in options:
        if option in ("flow", "regression"):
            decoding["decoder"] = option
        elif option.startswith("steps="):
            decoding["steps"] = int(_number(option[6:], spec, "steps"))
        elif option.startswith("temperature="):
            decoding["temperature"] = _number(option[12:], spec, "temperature")
        elif option == "latents":
            latents = True
        else:
            raise VoxtokError(f"system {spec!r}: unknown option +{option} "
                              "(+flow, +regression, +steps=N, +temperature=T, +latents)")
    return VoxtokSystem(match.group("model"), rate, name, decoding=decoding, latents=latents)


def _number(text: str, spec: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise VoxtokError(f"system {spec!r}: {what} must be a number, not {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise VoxtokError(f"system {spec!r}: {what} must be a positive number")
    return value
