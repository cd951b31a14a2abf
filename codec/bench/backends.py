"""What the speed benchmark times: one adapter per runtime, each with encode/decode on mono float32 audio
at its own rate and, where the system streams, a chunk-by-chunk session.

A new runtime plugs in with one `Backend` subclass and one entry in voxtok.bench.registry.make_backend; the harness in
voxtok.bench.speed never looks inside. Heavy imports happen in the constructors, which only ever run in a
benchmark worker process (so the CLI process stays light and thread settings never leak).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from voxtok.errors import VoxtokError


@dataclass
class SystemInfo:
    """What a report row says about the system, besides its timings."""

    name: str
    implementation: str
    sample_rate: int
    kbps: float
    codebooks: str
    params_m: float | None
    frame_ms: float
    # Frame plus look-ahead; None where the system is not benchmarked as a stream.
    algorithmic_latency_ms: float | None
    latency_note: str
    streaming: bool
    random_weights: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class StreamSession(Protocol):
    def encode(self, chunk: np.ndarray) -> Any:
        """Feed one chunk of input audio; return the codes of the frames it completed."""

    def decode(self, codes: Any) -> int:
        """Feed those codes to the decoder; return how many output samples became final."""

    def finish(self) -> int:
        """End of input: return the samples still held (partial last frame, overlap-add tail)."""


class Backend(ABC):
    info: SystemInfo

    @abstractmethod
    def encode(self, audio: np.ndarray) -> Any:
        """Mono float32 samples at info.sample_rate -> codes in the system's own form."""

    @abstractmethod
    def decode(self, codes: Any) -> Any:
        """What encode returned -> waveform."""

    def stream(self) -> contextlib.AbstractContextManager[StreamSession]:
        raise VoxtokError(f"{self.info.name}: no streaming path to benchmark")


def configure_torch(threads: int) -> None:
    """Intra-op threads as asked, one inter-op thread (a batch-1 codec has no parallel branches)."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # can only be set once per process
        torch.set_num_interop_threads(1)


def count_params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# ---- voxtok, PyTorch -------------------------------------------------------------------------------


class TorchCodec(Backend):
    """The model exactly as `load_codec()` gives it (encoder in float64, see VoxtokCodec.use_exact_encoder)."""

    def __init__(self, model: str | None, bitrate_kbps: float | None, threads: int, decoding: dict | None = None):
        configure_torch(threads)
        import argparse

        import torch
        from voxtok.commands.decoding import apply_decoding_options
        from voxtok.compress import load_codec

        self._torch = torch
        self.model = load_codec(model)
        decoding = decoding or {}
        apply_decoding_options(self.model, argparse.Namespace(decoder=decoding.get("decoder"),
                                                              steps=decoding.get("steps"), temperature=None))
        self.num_quantizers = self.model.num_quantizers_for(bitrate_kbps)
        cfg = self.model.config
        encoder_dtype = str(self.model.encoder_dtype).replace("torch.", "")
        self.info = SystemInfo(
            name=self.model.model_id + "".join(f" {k}={v}" for k, v in decoding.items()),
            implementation=f"PyTorch {torch.__version__}, encoder {encoder_dtype}",
            sample_rate=cfg.sample_rate,
            kbps=round(self.num_quantizers * cfg.kbps_per_codebook, 3),
            codebooks=f"{self.num_quantizers}×{cfg.codebook_size}",
            params_m=round(count_params(self.model), 2),
            frame_ms=1000 * cfg.hop_length / cfg.sample_rate,
            algorithmic_latency_ms=1000 * cfg.latency_samples / cfg.sample_rate,
            latency_note=_latency_note(cfg.hop_length, cfg.decoder_delay, cfg.sample_rate),
            streaming=True,
        )

    def encode(self, audio: np.ndarray):
        with self._torch.inference_mode():
            return self.model.encode(self._torch.from_numpy(audio)[None, None], self.num_quantizers)

    def decode(self, codes):
        with self._torch.inference_mode():
            return self.model.decode(codes)

    @contextlib.contextmanager
    def stream(self) -> Iterator[StreamSession]:
        with self._torch.inference_mode(), self.model.streaming(1, self.num_quantizers):
            yield _TorchStream(self.model, self._torch)


class _TorchStream:
    def __init__(self, model, torch_module):
        self.model = model
        self.torch = torch_module

    def encode(self, chunk: np.ndarray):
        return self.model.encode_chunk(self.torch.from_numpy(chunk)[None, None])

    def decode(self, codes) -> int:
        return int(self.model.decode_chunk(codes).shape[-1])

    def finish(self) -> int:
        last = self.model.decode_chunk(self.model.flush_encoder())
        return int(last.shape[-1] + self.model.flush_decoder().shape[-1])


def _latency_note(frame: int, lookahead: int, sample_rate: int) -> str:
    return (f"{1000 * frame / sample_rate:g} ms frame + {1000 * lookahead / sample_rate:g} ms decoder delay "
            f"({frame + lookahead} samples)")


# ---- voxtok, ONNX Runtime ---------------------------------------------------------------------------


def _runtime():
    """voxtok.export.runtime, the torch-free runtime users get (onnxruntime + numpy), or a one-line reason why not."""
    try:
        from voxtok.export import runtime
    except ModuleNotFoundError as exc:
        raise VoxtokError(f"the ONNX backend is not available here ({exc.name} is not installed; "
                          "pip install 'voxtok[runtime]' in a checkout with export/)") from None
    return runtime


class OnnxCodec(Backend):
    """An exported model folder (`voxtok export onnx -o DIR`) through voxtok.export.runtime: numpy in and out, no
    torch in the process, so its memory figure is the runtime's own."""

    def __init__(self, folder: str | Path, precision: str, bitrate_kbps: float | None, threads: int):
        runtime = _runtime()
        import onnxruntime as ort
        from voxtok.config import config_from_dict

        self.runtime = runtime
        self.codec = runtime.ExportedCodec(folder, threads, precision)
        manifest = self.codec.manifest
        cfg = config_from_dict(manifest["config"])
        self.num_quantizers = cfg.num_quantizers_for(bitrate_kbps)
        self.offline = runtime.OfflineCodec(self.codec)
        # Sessions are created lazily on first use; create them now so the "loaded" memory includes them.
        for graph in manifest["graphs"][precision]:
            self.codec.session(graph)
        self.info = SystemInfo(
            name=f"{self.codec.model_id} ONNX {precision}",
            implementation=f"onnxruntime {ort.__version__}, opset {manifest.get('opset')}",
            sample_rate=cfg.sample_rate,
            kbps=round(self.num_quantizers * cfg.kbps_per_codebook, 3),
            codebooks=f"{self.num_quantizers}×{cfg.codebook_size}",
            params_m=None,
            frame_ms=1000 * cfg.hop_length / cfg.sample_rate,
            algorithmic_latency_ms=1000 * cfg.latency_samples / cfg.sample_rate,
            latency_note=_latency_note(cfg.hop_length, cfg.decoder_delay, cfg.sample_rate),
            streaming=True,
        )

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.offline.encode(audio, self.num_quantizers)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.offline.decode(codes)

    @contextlib.contextmanager
    def stream(self) -> Iterator[StreamSession]:
        encoder = self.runtime.StreamingEncoder(self.codec, num_quantizers=self.num_quantizers)
        decoder = self.runtime.StreamingDecoder(self.codec)
        yield _RuntimeStream(encoder, decoder)


class _RuntimeStream:
    def __init__(self, encoder, decoder):
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        return self.encoder.push(chunk)

    def decode(self, codes: np.ndarray) -> int:
        return len(self.decoder.push(codes))

    def finish(self) -> int:
        return len(self.decoder.push(self.encoder.flush())) + len(self.decoder.flush())


def onnx_precisions(folder: str | Path) -> list[str]:
    """The graph precisions an export holds (fp32, and int8 when exported with --int8)."""
    return list(_runtime().load_manifest(folder)["graphs"])
