"""Peer codecs for the side-by-side speed table, built with random weights.

Compute cost depends on the architecture and the input length, not on the weight values, so a randomly
initialised model times the same as the released checkpoint, and no weights are downloaded. Each peer
runs offline (whole input in, whole output out) at its native rate and its usual bitrate.

EnCodec and DAC come from their `transformers` ports (same layers and strides as the original repos): the
original `encodec` and `descript-audio-codec` packages import torchaudio at import time, and the only
torchaudio wheel on PyPI (2.11) is built against CUDA and fails to load beside the CPU torch 2.13 this
project pins (libc10_cuda.so missing); descript-audiotools also pins protobuf<3.20, which breaks onnx.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from voxtok.bench.backends import Backend, SystemInfo, configure_torch, count_params
from voxtok.errors import VoxtokError


@dataclass(frozen=True)
class Peer:
    label: str
    modules: tuple[str, ...]  # importable names the adapter needs
    install: str  # what to pip install for it
    build: Callable[[], Backend]


def _seeded_torch():
    import torch

    torch.manual_seed(0)
    return torch


def _kbps(frame_rates: list[float], codebook_size: int) -> float:
    return round(sum(frame_rates) * math.ceil(math.log2(codebook_size)) / 1000, 3)


class _TorchPeer(Backend):
    def __init__(self, model, info: SystemInfo):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.info = info

    def _tensor(self, audio: np.ndarray):
        return self.torch.from_numpy(audio)[None, None]


class EncodecPeer(_TorchPeer):
    """EnCodec 24 kHz (facebook/encodec_24khz architecture: transformers' default EncodecConfig) at 6 kbps."""

    BANDWIDTH = 6.0

    def __init__(self):
        torch = _seeded_torch()
        from transformers import EncodecConfig, EncodecModel, __version__

        cfg = EncodecConfig()
        model = EncodecModel(cfg)
        hop = math.prod(cfg.upsampling_ratios)
        codebooks = int(1000 * self.BANDWIDTH // (cfg.frame_rate * math.log2(cfg.codebook_size)))
        super().__init__(model, SystemInfo(
            name="EnCodec 24 kHz", implementation=f"transformers {__version__} EncodecModel, torch {torch.__version__}",
            sample_rate=cfg.sampling_rate, kbps=_kbps([cfg.frame_rate] * codebooks, cfg.codebook_size),
            codebooks=f"{codebooks}×{cfg.codebook_size}", params_m=round(count_params(model), 2),
            frame_ms=1000 * hop / cfg.sampling_rate, algorithmic_latency_ms=None,
            latency_note="causal convs + LSTM; no streaming API (encodec#1)", streaming=False, random_weights=True))

    def encode(self, audio: np.ndarray):
        with self.torch.inference_mode():
            out = self.model.encode(self._tensor(audio), bandwidth=self.BANDWIDTH)
        return out.audio_codes, out.audio_scales

    def decode(self, codes):
        with self.torch.inference_mode():
            return self.model.decode(*codes).audio_values


class DacPeer(_TorchPeer):
    """DAC 16 kHz (descript 16khz checkpoint architecture: strides 2·4·5·8, 12 codebooks = 6 kbps)."""

    def __init__(self):
        torch = _seeded_torch()
        from transformers import DacConfig, DacModel, __version__

        cfg = DacConfig(sampling_rate=16000, downsampling_ratios=[2, 4, 5, 8], upsampling_ratios=[8, 5, 4, 2],
                        hop_length=320, n_codebooks=12, codebook_size=1024)
        model = DacModel(cfg)
        frame_rate = cfg.sampling_rate / cfg.hop_length
        super().__init__(model, SystemInfo(
            name="DAC 16 kHz", implementation=f"transformers {__version__} DacModel, torch {torch.__version__}",
            sample_rate=cfg.sampling_rate, kbps=_kbps([frame_rate] * cfg.n_codebooks, cfg.codebook_size),
            codebooks=f"{cfg.n_codebooks}×{cfg.codebook_size}", params_m=round(count_params(model), 2),
            frame_ms=1000 * cfg.hop_length / cfg.sampling_rate, algorithmic_latency_ms=None,
            latency_note="non-causal convs; whole-file only", streaming=False, random_weights=True))

    def encode(self, audio: np.ndarray):
        with self.torch.inference_mode():
            return self.model.encode(self._tensor(audio)).audio_codes

    def decode(self, codes):
        with self.torch.inference_mode():
            return self.model.decode(audio_codes=codes).audio_values


class SnacPeer(_TorchPeer):
    """SNAC 24 kHz (hubertsiuzdak/snac_24khz config.json: 3 levels of 4096 codes, 0.98 kbps)."""

    CONFIG = dict(sampling_rate=24000, encoder_dim=48, encoder_rates=[2, 4, 8, 8], decoder_dim=1024,
                  decoder_rates=[8, 8, 4, 2], attn_window_size=None, codebook_size=4096, codebook_dim=8,
                  vq_strides=[4, 2, 1], noise=True, depthwise=True)

    def __init__(self):
        torch = _seeded_torch()
        from importlib.metadata import version

        from snac import SNAC

        cfg = self.CONFIG
        model = SNAC(**cfg)
        hop = math.prod(cfg["encoder_rates"])
        rates = [cfg["sampling_rate"] / hop / s for s in cfg["vq_strides"]]
        super().__init__(model, SystemInfo(
            name="SNAC 24 kHz", implementation=f"snac {version('snac')}, torch {torch.__version__}",
            sample_rate=cfg["sampling_rate"], kbps=_kbps(rates, cfg["codebook_size"]),
            codebooks=f"{len(rates)} scales×{cfg['codebook_size']}", params_m=round(count_params(model), 2),
            frame_ms=1000 * hop * max(cfg["vq_strides"]) / cfg["sampling_rate"], algorithmic_latency_ms=None,
            latency_note="non-causal convs; whole-file only (snac#20)", streaming=False, random_weights=True))

    def encode(self, audio: np.ndarray):
        with self.torch.inference_mode():
            return self.model.encode(self._tensor(audio))

    def decode(self, codes):
        with self.torch.inference_mode():
            return self.model.decode(codes)


class MimiPeer(_TorchPeer):
    """Mimi (transformers' default MimiConfig = kyutai/mimi) with the 8 codebooks Moshi uses (1.1 kbps)."""

    CODEBOOKS = 8

    def __init__(self):
        torch = _seeded_torch()
        from transformers import MimiConfig, MimiModel, __version__

        cfg = MimiConfig()
        model = MimiModel(cfg)
        super().__init__(model, SystemInfo(
            name="Mimi", implementation=f"transformers {__version__} MimiModel, torch {torch.__version__}",
            sample_rate=cfg.sampling_rate, kbps=_kbps([cfg.frame_rate] * self.CODEBOOKS, cfg.codebook_size),
            codebooks=f"{self.CODEBOOKS}×{cfg.codebook_size}", params_m=round(count_params(model), 2),
            frame_ms=1000 / cfg.frame_rate, algorithmic_latency_ms=None,
            latency_note="causal, 80 ms frame (streaming via moshi; timed offline here)", streaming=False,
            random_weights=True))

    def encode(self, audio: np.ndarray):
        with self.torch.inference_mode():
            return self.model.encode(self._tensor(audio), num_quantizers=self.CODEBOOKS).audio_codes

    def decode(self, codes):
        with self.torch.inference_mode():
            return self.model.decode(codes).audio_values


PEERS: dict[str, Peer] = {
    "encodec": Peer("EnCodec 24 kHz", ("transformers",), "transformers", EncodecPeer),
    "dac": Peer("DAC 16 kHz", ("transformers",), "transformers", DacPeer),
    "snac": Peer("SNAC 24 kHz", ("snac",), "snac", SnacPeer),
    "mimi": Peer("Mimi", ("transformers",), "transformers", MimiPeer),
}


def parse_peers(spec: str) -> list[str]:
    """'all' or a comma list of peer names -> names, in table order."""
    if spec.strip() == "all":
        return list(PEERS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        raise VoxtokError(f"--peers: unknown peer {', '.join(unknown) or spec!r} (known: all, {', '.join(PEERS)})")
    return [n for n in PEERS if n in names]


def missing(name: str) -> str | None:
    """None when the peer can run here, else a one-line note saying what to install."""
    peer = PEERS[name]
    absent = [m for m in peer.modules if not _installed(m)]
    if absent:
        return f"{peer.label}: skipped, {', '.join(absent)} not installed (pip install 'voxtok[peers]')"
    return None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def build_peer(name: str, threads: int) -> Backend:
    configure_torch(threads)
    return PEERS[name].build()
