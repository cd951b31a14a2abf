"""The codec A/B tab's work: decode an upload with a voxtok model at one operating point, beside Opus at the
nearest bitrate it offers, with spectrograms, the true bitrate (container included) and, when the eval extra is
installed, PESQ-WB, STOI and speaker similarity against the upload."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from voxtok.demo.spectrogram import spectrogram_image
from voxtok.errors import VoxtokError

SAMPLE_RATE = 16000
# Longer uploads are refused with a message: one request must not hold a CPU worker for minutes.
DEFAULT_MAX_SECONDS = 60.0
OPUS_MIN_KBPS = 6.0  # opusenc's floor
MODELS = {"voxtok-16k-v2": "codec v2: 50 Hz RVQ, harmonic decoder (default)", "voxtok-16k": "codec v1: 50 Hz RVQ",
          "voxtok-16k-12hz": "12.5 Hz tokenizer on codec v2: FSQ twin, 1 kbps (the LM's tokens)"}
# The streaming tab runs the RVQ codecs' ONNX export (the 12.5 Hz tokenizer's export has its own runtime).
STREAMING_MODELS = ["voxtok-16k-v2", "voxtok-16k"]

_models: dict[str, object] = {}
_models_lock = threading.Lock()
_judges = None


class DemoInputError(VoxtokError):
    """Input the page should explain to its user (too long, silent, not audio, unknown choice)."""


def load_model(name: str):
    """A shipped codec by name, loaded once per process (the tabs share it across users)."""
    if name not in MODELS:
        raise DemoInputError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    with _models_lock:
        if name not in _models:
            from voxtok.compress import load_codec

            _models[name] = load_codec(name)
        return _models[name]


def operating_points(name: str) -> list[float]:
    """The model's bitrates in kbps (codes only), lowest first."""
    return [kbps for _n_q, kbps in load_model(name).operating_points]


def opus_kbps_for(kbps: float) -> float:
    """The Opus bitrate nearest to a voxtok operating point: its own floor for every point below 6 kbps."""
    return max(OPUS_MIN_KBPS, float(kbps))


def load_upload(path: str | Path | None, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """An uploaded or recorded file -> 16 kHz mono float32, or a DemoInputError that says what is wrong."""
    from voxtok.audio import load_audio

    if path is None:
        raise DemoInputError("upload or record some audio first (or pick an example)")
    try:
        import soundfile as sf

        info = sf.info(str(path))
    except Exception:  # soundfile raises its own error types, and RuntimeError for unknown formats
        raise DemoInputError(f"{Path(path).name}: not an audio file this demo can read (WAV, FLAC, OGG, MP3)")\
            from None
    if info.duration > max_seconds:
        raise DemoInputError(f"{Path(path).name} is {info.duration:.0f} s long; this demo takes up to "
                             f"{max_seconds:.0f} s (the CLI has no limit: voxtok roundtrip FILE -o OUT)")
    try:
        samples = load_audio(path, SAMPLE_RATE)
    except VoxtokError as exc:
        raise DemoInputError(str(exc)) from None
    if len(samples) < SAMPLE_RATE // 10:
        raise DemoInputError(f"{Path(path).name} is too short ({len(samples) / SAMPLE_RATE * 1000:.0f} ms); "
                             "give it at least 0.1 s of audio")
    return samples


@dataclass
class Comparison:
    original: np.ndarray
    decoded: np.ndarray
    opus: np.ndarray | None
    voxtok_kbps: float
    opus_kbps: float | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        seconds = len(self.original) / SAMPLE_RATE
        lines = [f"**{seconds:.1f} s of audio.** True bitrates (file bytes × 8 / duration, container included): "
                 f"voxtok **{self.voxtok_kbps:.2f} kbps**"
                 + (f", Opus **{self.opus_kbps:.2f} kbps**" if self.opus_kbps is not None else "") + "."]
        if self.metrics:
            names = sorted({m for row in self.metrics.values() for m in row})
            lines += ["", "| system | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            for system, row in self.metrics.items():
                lines.append(f"| {system} | " + " | ".join(f"{row[m]:.3f}" if m in row else "–" for m in names) + " |")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _metrics(ref: np.ndarray, deg: np.ndarray) -> dict[str, float]:
    from voxtok.eval.metrics import align, pesq_wb, stoi

    aligned, _lag = align(ref, deg)
    return {"PESQ-WB": pesq_wb(ref, aligned), "STOI": stoi(ref, aligned)}


def _speaker_similarity(ref: np.ndarray, others: dict[str, np.ndarray]) -> dict[str, float]:
    from voxtok.eval.metrics import cosine_similarity
    from voxtok.eval.models import Judges

    global _judges
    with _models_lock:
        if _judges is None:
            _judges = Judges()
    judge = _judges.speaker
    anchor = judge.embed(ref)
    return {name: cosine_similarity(anchor, judge.embed(x)) for name, x in others.items()}


def compare(path: str | Path | None, bitrate_kbps: float, model_name: str = "voxtok-16k-v2",
            max_seconds: float = DEFAULT_MAX_SECONDS, with_metrics: bool = True) -> Comparison:
    """The whole A/B for one upload. Raises DemoInputError with a message for the page."""
    from voxtok.eval.systems import Opus, SystemFailure, VoxtokSystem

    samples = load_upload(path, max_seconds)
    points = operating_points(model_name)
    if bitrate_kbps not in points:
        raise DemoInputError(f"{bitrate_kbps:g} kbps is not an operating point of {model_name} "
                             f"({', '.join(f'{p:g}' for p in points)})")
    seconds = len(samples) / SAMPLE_RATE
    voxtok = VoxtokSystem(model_name, bitrate_kbps, loaded=load_model(model_name))
    notes = []
    with tempfile.TemporaryDirectory(prefix="voxtok-demo-") as tmp:
        try:
            decoded = voxtok.process(samples, Path(tmp), "upload")
        except VoxtokError as exc:
            raise DemoInputError(str(exc)) from None
        opus_rate = opus_kbps_for(bitrate_kbps)
        try:
            opus_system = Opus(opus_rate)
            opus_system.check()
            opus = opus_system.process(samples, Path(tmp), "upload")
        except (VoxtokError, SystemFailure) as exc:
            opus = None
            notes.append(f"Opus is not shown: {exc}")
    if opus is not None and opus_rate != bitrate_kbps:
        notes.append(f"Opus cannot go below {OPUS_MIN_KBPS:g} kbps, so it runs at {opus_rate:g} kbps here.")
    result = Comparison(
        original=samples, decoded=decoded.samples[: len(samples)],
        opus=None if opus is None else opus.samples[: len(samples)],
        voxtok_kbps=decoded.encoded_bytes * 8 / seconds / 1000,
        opus_kbps=None if opus is None else opus.encoded_bytes * 8 / seconds / 1000, notes=notes)
    result.images["original"] = spectrogram_image(samples, SAMPLE_RATE)
    result.images["voxtok"] = spectrogram_image(result.decoded, SAMPLE_RATE)
    if result.opus is not None:
        result.images["opus"] = spectrogram_image(result.opus, SAMPLE_RATE)
    if with_metrics:
        _add_metrics(result, model_name, bitrate_kbps, opus_rate)
    return result


def _add_metrics(result: Comparison, model_name: str, kbps: float, opus_kbps: float) -> None:
    systems = {f"{model_name} @ {kbps:g} kbps": result.decoded}
    if result.opus is not None:
        systems[f"Opus @ {opus_kbps:g} kbps"] = result.opus
    try:
        rows = {name: _metrics(result.original, x) for name, x in systems.items()}
    except (ImportError, VoxtokError) as exc:
        result.notes.append(f"PESQ and STOI need the eval extra (pip install 'voxtok[eval]'): {exc}")
        return
    try:
        for name, sim in _speaker_similarity(result.original, systems).items():
            rows[name]["speaker sim"] = sim
    except (ImportError, VoxtokError) as exc:
        result.notes.append(f"speaker similarity is not shown: {exc}")
    result.metrics = rows
