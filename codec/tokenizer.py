"""The tokenizer interface that everything downstream consumes (after Moshi's CompressionModel): eval, bench, the
ONNX export and the speech LM ask a tokenizer for these and nothing else, so a new bottleneck or decoder is a new
class, not edits across the packages. VoxtokCodec (v1) and HarmonicCodec (v2) implement `Tokenizer`; the 12.5 Hz
tokenizers (StackedCodec, LowRateCodec) implement `ContinuousTokenizer` too, whose `continuous` is True."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Tokenizer(Protocol):
    @property
    def sample_rate(self) -> int:
        """Audio samples per second in and out."""

    @property
    def frame_rate(self) -> float:
        """Token frames per second."""

    @property
    def num_codebooks(self) -> int:
        """Codebooks per frame at the highest operating point."""

    @property
    def cardinality(self) -> int:
        """Entries per codebook: every code is in [0, cardinality)."""

    @property
    def semantic_codebooks(self) -> tuple[int, ...]:
        """Codebooks (0-based) trained to carry phones or meaning by a distillation term; empty when none."""

    # True for tokenizers with continuous tokens too (encode_latents / decode_latents, latent_dim) and a choice
    # of decoders (set_decoding): what callers test instead of a concrete class.
    continuous: bool

    @property
    def decoder_delay(self) -> int:
        """Samples the decoder's streaming output runs behind its input (dropped at the start of a stream)."""

    def num_quantizers_for(self, bitrate_kbps: float | None) -> int:
        """Codebooks for a bitrate: the most that fit (all when None)."""

    def encode(self, wav: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """[B, 1, N] audio -> [B, q, frames] int64 codes."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, q, frames] codes -> [B, 1, frames * samples per frame] audio, aligned with the encoder's input."""

    def use_fast_encoder(self) -> Tokenizer:
        """float32 encoding for whole files (the exact float64 mode is what streaming = offline needs)."""

    def streaming(self, batch_size: int = 1, num_quantizers: int | None = None) -> AbstractContextManager:
        """Inside this context encode_chunk / decode_chunk carry state from call to call."""

    def encode_chunk(self, wav: torch.Tensor) -> torch.Tensor: ...

    def decode_chunk(self, codes: torch.Tensor) -> torch.Tensor: ...

    def flush_encoder(self) -> torch.Tensor: ...

    def flush_decoder(self) -> torch.Tensor: ...


@runtime_checkable
class ContinuousTokenizer(Tokenizer, Protocol):
    """The continuous half: what the continuous speech LM reads and writes, and the codes of the discrete twin
    taken from the same frames (what the discrete LM reads)."""

    @property
    def latent_dim(self) -> int:
        """Dimensions of a continuous token."""

    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, N] audio -> [B, latent_dim, frames] continuous tokens (normalised)."""

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """[B, latent_dim, frames] continuous tokens -> [B, 1, frames * samples per frame] audio."""

    def codes_of_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, latent_dim, frames] continuous tokens -> [B, num_quantizers, frames] codes of the discrete twin."""

    def encode_latents_chunk(self, wav: torch.Tensor) -> torch.Tensor: ...

    def decode_latents_chunk(self, z: torch.Tensor) -> torch.Tensor: ...

    def set_decoding(self, kind: str | None = None, steps: int | None = None,
                     temperature: float | None = None) -> ContinuousTokenizer:
        """Choose the decoder of the continuous tokens ("regression" or "flow") and its sampling; returns self."""


class ContinuousTokens:
    """What the 12.5 Hz tokenizers share of ContinuousTokenizer: the token size and the discrete twin's codes of
    continuous tokens, both read from the model's config and its FSQ quantizer."""

    @property
    def latent_dim(self) -> int:
        """Dimensions of a continuous token."""
        return self.config.latent_dim

    def codes_of_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Continuous tokens [B, latent_dim, T] (normalised, as encode_latents gives them) -> the discrete twin's
        codes [B, num_quantizers, T]: what a discrete LM is trained on, from the same frames."""
        return self.quantizer.codes_of_normalised(latents)
