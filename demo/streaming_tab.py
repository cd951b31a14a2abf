"""The streaming tab's work: audio through the torch-free ONNX runtime in 20 ms chunks, as a live stream, with
the decoded audio handed back piece by piece and per-chunk latency (p50/p95) and first-audio latency kept live.

`stream_file` plays a file as a stream (at the audio clock, or as fast as the CPU goes); `MicrophoneStream`
takes whatever blocks the browser's microphone sends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from voxtok.demo.codec_tab import DemoInputError, load_upload
from voxtok.errors import VoxtokError

CHUNK_MS = 20.0
# The page gets a new piece of decoded audio (and fresh figures) this often.
EMIT_SECONDS = 0.5

_exports: dict[str, object] = {}
_exports_lock = threading.Lock()


def exported_codec(model_name: str):
    """The model's ONNX export (made once into the user cache, as `voxtok stream` does), opened once."""
    from voxtok.export.cache import cached_export
    from voxtok.export.runtime import ExportedCodec

    with _exports_lock:
        if model_name not in _exports:
            _exports[model_name] = ExportedCodec(cached_export(model_name, False))
        return _exports[model_name]


@dataclass
class StreamFigures:
    chunk_ms: float
    latencies_ms: list[float] = field(default_factory=list)
    first_audio_ms: float | None = None
    audio_in_s: float = 0.0
    audio_out_s: float = 0.0

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    def markdown(self, algorithmic_ms: float) -> str:
        if not self.latencies_ms:
            return "waiting for audio…"
        first = "–" if self.first_audio_ms is None else f"{self.first_audio_ms:.1f} ms"
        return (f"**{len(self.latencies_ms)} chunks of {self.chunk_ms:g} ms** ({self.audio_in_s:.2f} s in, "
                f"{self.audio_out_s:.2f} s out)  \n"
                f"per-chunk latency (encode + decode): p50 **{self.percentile(50):.2f} ms**, "
                f"p95 **{self.percentile(95):.2f} ms**  \n"
                f"first audio: **{first}** after the stream started; algorithmic latency {algorithmic_ms:g} ms")


class MicrophoneStream:
    """One listener's stream: push any block of samples, get back the decoded samples that are final."""

    def __init__(self, model_name: str = "voxtok-16k-v2", bitrate_kbps: float | None = None):
        from voxtok.config import config_from_dict
        from voxtok.export.runtime import StreamingDecoder, StreamingEncoder

        codec = exported_codec(model_name)
        self.sample_rate = codec.sample_rate
        n_q = None if bitrate_kbps is None else config_from_dict(codec.manifest["config"]).num_quantizers_for(
            bitrate_kbps)
        self.encoder = StreamingEncoder(codec, num_quantizers=n_q)
        self.decoder = StreamingDecoder(codec)
        self.chunk = int(round(CHUNK_MS * self.sample_rate / 1000))
        self.algorithmic_ms = algorithmic_latency_ms(model_name)
        self.figures = StreamFigures(CHUNK_MS)
        self.started = time.perf_counter()

    def push(self, samples: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(samples), self.chunk):
            piece = np.ascontiguousarray(samples[start:start + self.chunk], dtype=np.float32)
            began = time.perf_counter()
            audio = self.decoder.push(self.encoder.push(piece))
            done = time.perf_counter()
            self.figures.latencies_ms.append(1000 * (done - began))
            self.figures.audio_in_s += len(piece) / self.sample_rate
            if len(audio):
                if self.figures.first_audio_ms is None:
                    self.figures.first_audio_ms = 1000 * (done - self.started)
                self.figures.audio_out_s += len(audio) / self.sample_rate
                out.append(audio)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def finish(self) -> np.ndarray:
        tail = np.concatenate([self.decoder.push(self.encoder.flush()), self.decoder.flush()])
        self.figures.audio_out_s += len(tail) / self.sample_rate
        return tail


def browser_block(block: tuple[int, np.ndarray] | None) -> np.ndarray:
    """What a Gradio microphone stream sends, (rate, int16 or float array, mono or stereo), -> 16 kHz float32."""
    import soxr

    if block is None:
        return np.zeros(0, dtype=np.float32)
    rate, data = block
    x = np.asarray(data)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32)
    if rate != 16000:
        x = soxr.resample(x, rate, 16000).astype(np.float32)
    return x


def algorithmic_latency_ms(model_name: str) -> float:
    """Frame + overlap-add look-ahead, as the export's manifest states it."""
    return float(exported_codec(model_name).manifest["latency"]["algorithmic_ms"])


def stream_file(path: str | Path | None, model_name: str = "voxtok-16k-v2", bitrate_kbps: float | None = None,
                paced: bool = True, max_seconds: float = 60.0) -> Iterator[tuple[np.ndarray, str]]:
    """Play a file as a live stream: yields (the decoded samples since the last yield, figures as markdown)
    every EMIT_SECONDS of audio, then the tail. paced=True feeds each chunk when the audio clock says it has
    arrived, as a microphone would."""
    samples = load_upload(path, max_seconds)
    try:
        stream = MicrophoneStream(model_name, bitrate_kbps)
    except VoxtokError as exc:
        raise DemoInputError(str(exc)) from None
    algorithmic = stream.algorithmic_ms
    emit = int(EMIT_SECONDS * stream.sample_rate)
    pending: list[np.ndarray] = []
    pending_samples = sent = 0
    start = time.perf_counter()
    for offset in range(0, len(samples), stream.chunk):
        piece = samples[offset:offset + stream.chunk]
        if paced:
            delay = start + (offset + len(piece)) / stream.sample_rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        audio = stream.push(piece)
        if len(audio):
            pending.append(audio)
            pending_samples += len(audio)
        if pending_samples >= emit:
            sent += pending_samples
            yield np.concatenate(pending), stream.figures.markdown(algorithmic)
            pending, pending_samples = [], 0
    pending.append(stream.finish())
    # The decoder's output runs to whole frames plus the overlap-add tail: end where the input ended.
    yield np.concatenate(pending)[: max(0, len(samples) - sent)], stream.figures.markdown(algorithmic)
