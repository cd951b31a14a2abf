"""The 12.5 Hz tokenizer stacked on codec v2 (voxtok-16k-12hz): tokens for speech LMs, continuous and discrete.

    audio -> codec v2's encoder (frozen, the shipped weights) -> 64-dim latents h at 50 Hz
          -> normalised per dimension -> causal ConvNeXt at 50 Hz -> stride-4 conv -> causal ConvNeXt at 12.5 Hz
          -> latent mean mu [D, 12.5 Hz]     -- sigma-VAE: training adds noise of a per-crop random scale
          -> normalised by shipped statistics: z = (mu - mean) / std            (the continuous tokens)
          -> FSQ, fsq_levels per dimension, in groups                            (the discrete twin)
    z or the FSQ values -> a decoder back to h at 50 Hz (one token of look-ahead) -> codec v2's decoder and
        synthesiser (frozen) -> audio
        regression: causal ConvNeXt at 12.5 and 50 Hz, trained by regression on h (and on what v2's decoder
                    makes of it)
        flow:       conditional flow matching of h's residual over the regression prediction, Euler steps from a
                    fixed noise table, every layer causal so chunked decoding equals a full pass

Why on v2's latents: v2's encoder keeps the phones (dPER 16% at 1.5 kbps) and its decoder and harmonic synthesiser
make pitch and phase by DSP; the 12.5 Hz tokenizer trained from audio (voxtok.lowrate) lost the phones (dPER 38-45%).
Here the 12.5 Hz stage only has to compress v2's latents 4x in time, it trains on latents cached once per corpus
(voxtok.data.latent_cache: no audio and no synthesis in the training loop), and a better v2 decoder (the tokens of
v2 are pinned by `base_tokens_hash`) improves this tokenizer's speech without retraining anything.

The base codec is not part of this model's weights: it is loaded from its own folder (`base_model`) and checked
against `base_tokens_hash`. Latency: one token (80 ms) + the look-ahead (80 ms) + v2's synthesiser overlap (15 ms).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from voxtok.config import StackedConfig
from voxtok.errors import VoxtokError
from voxtok.lowrate import FSQuantizer, TokenUpsample
from voxtok.model import VoxtokCodec
from voxtok.modules.conv import CausalConv1d
from voxtok.modules.convnext import ChannelLayerNorm, ConvNeXtBlock
from voxtok.modules.flow import ResidualFlowRules, VelocityNet, fixed_noise
from voxtok.modules.streaming import State, StreamingModule, StreamingSequential
from voxtok.tokenizer import ContinuousTokens


def _blocks(dim: int, count: int, cfg: StackedConfig) -> list[nn.Module]:
    return [ConvNeXtBlock(dim, int(dim * cfg.mlp_ratio), cfg.kernel_size) for _ in range(count)]


class BaseLink(StreamingModule):
    """The base codec's encoder or decoder as a layer of this model, without being one of its submodules: its
    weights stay in the base's own folder, out of this model's state dict, optimizer and hash. dtype and device
    moves of this model reach it (`_apply`); it never trains."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "target", None)

    def attach(self, module: StreamingSequential) -> None:
        object.__setattr__(self, "target", module)

    def _require(self) -> StreamingSequential:
        if self.target is None:
            raise VoxtokError("the 12.5 Hz tokenizer has no base codec attached (load it with load_codec)")
        return self.target

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self.target is not None:
            self.target._apply(fn, recurse)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._require()(x)

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        return self._require().init_state(batch_size, device, dtype)

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self._require().step(x, state)


class LatentAffine(StreamingModule):
    """Per-channel (x - mean) / std, or its inverse: the base latents' statistics, measured once on the training
    cache and shipped. Stateless."""

    def __init__(self, channels: int, inverse: bool):
        super().__init__()
        self.inverse = inverse
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.dtype)[:, None], self.std.to(x.dtype)[:, None]
        return x * std + mean if self.inverse else (x - mean) / std


class StackedEncoder(StreamingSequential):
    """[B, 1, N] audio (N a multiple of hop_length) -> latent means [B, latent_dim, N / hop_length]. Layer 0 is
    the base encoder; `from_base_latents` runs the rest on cached base latents."""

    def __init__(self, cfg: StackedConfig):
        super().__init__(
            BaseLink(),
            LatentAffine(cfg.base_latent_dim, inverse=False),
            CausalConv1d(cfg.base_latent_dim, cfg.enc_dim, 3),
            *_blocks(cfg.enc_dim, cfg.enc_layers, cfg),
            ChannelLayerNorm(cfg.enc_dim),
            CausalConv1d(cfg.enc_dim, cfg.enc_dim, cfg.feature_frames_per_token, cfg.feature_frames_per_token),
            *_blocks(cfg.enc_dim, cfg.enc_low_layers, cfg),
            ChannelLayerNorm(cfg.enc_dim),
            nn.Conv1d(cfg.enc_dim, cfg.latent_dim, 1),
        )

    @property
    def base(self) -> BaseLink:
        return self.layers[0]

    @property
    def base_norm(self) -> LatentAffine:
        return self.layers[1]

    def from_base_latents(self, h: torch.Tensor) -> torch.Tensor:
        """Base latents [B, base_latent_dim, 4 T] -> latent means [B, latent_dim, T]."""
        for layer in self.layers[1:]:
            h = layer(h)
        return h


def _token_conditioning(cfg: StackedConfig, dim: int, low_layers: int) -> list[nn.Module]:
    """Tokens -> dim channels at the base rate. The first conv's last tap is lookahead_tokens ahead of the output
    (a delay: every layer stays causal), then blocks at the token rate, then each token spread over its frames."""
    return [CausalConv1d(cfg.latent_dim, dim, cfg.lookahead_tokens + 2),
            *_blocks(dim, low_layers, cfg),
            TokenUpsample(dim, cfg.feature_frames_per_token),
            ChannelLayerNorm(dim)]


class StackedDecoder(StreamingSequential):
    """Normalised latents [B, latent_dim, T] -> overlap-add audio blocks, lookahead_tokens behind; the base decoder
    (and its synthesiser, whose overlap-add tail is the last state tensor) is the last layer."""

    def __init__(self, cfg: StackedConfig):
        super().__init__(
            *_token_conditioning(cfg, cfg.dec_dim, cfg.dec_low_layers),
            *_blocks(cfg.dec_dim, cfg.dec_layers, cfg),
            ChannelLayerNorm(cfg.dec_dim),
            nn.Conv1d(cfg.dec_dim, cfg.base_latent_dim, 1),
            LatentAffine(cfg.base_latent_dim, inverse=True),
            BaseLink(),
        )
        # Every layer up to the base latents, normalised, as one StreamingSequential of the same layer objects
        # (not registered: the weights stay listed once): the flow decoder's prior, offline and streaming.
        object.__setattr__(self, "normalised_path", StreamingSequential(*self.layers[:-2]))

    @property
    def base(self) -> BaseLink:
        return self.layers[-1]

    @property
    def base_denorm(self) -> LatentAffine:
        return self.layers[-2]


class LatentFlowDecoder(ResidualFlowRules, nn.Module):
    """Conditional flow matching of the base latents (normalised) at the base rate: the residual over the
    regression decoder's (detached) prediction mu, which it also sees. A sample is mu + the residual."""

    def __init__(self, cfg: StackedConfig):
        super().__init__()
        self.features = cfg.base_latent_dim
        self.cond = StreamingSequential(*_token_conditioning(cfg, cfg.flow_dim, cfg.flow_cond_layers))
        self.velocity = VelocityNet(self.features, cfg)
        self.prior = nn.Conv1d(self.features, cfg.flow_dim, 1)
        self.register_buffer("noise", fixed_noise(self.features), persistent=False)
        self.register_buffer("shortcut", torch.zeros((), dtype=torch.long))
        self.register_buffer("residual_std", torch.ones(self.features))
        self.register_buffer("residual_ready", torch.zeros((), dtype=torch.long))

    def condition(self, cond: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        return cond + self.prior(mu)


@dataclass
class _StackedStream:
    num_quantizers: int
    encoder_state: State
    pending_input: torch.Tensor
    decoder_skip: int
    regression_state: State  # the whole decoder, base included (regression decoding)
    cond_state: State
    prior_state: State
    velocity_states: list[State]
    base_state: State  # the base decoder alone (flow decoding)
    frame_position: int  # base frames decoded so far: where the flow's noise is read


class StackedCodec(ContinuousTokens, VoxtokCodec):
    """The tokenizer interface at 12.5 Hz. `encode` / `decode` are the discrete twin (what .vtok files carry);
    `encode_latents` / `decode_latents` the continuous tokens. `set_decoding` picks the regression decoder (the
    default) or the flow decoder and its steps."""

    config_class = StackedConfig
    continuous = True

    def __init__(self, config: StackedConfig | None = None):
        super().__init__(config)
        self.flow = LatentFlowDecoder(self.config)
        self.decoder_kind = "regression"
        self.flow_steps = self.config.flow_steps
        self.temperature = 1.0
        object.__setattr__(self, "base", None)

    def make_quantizer(self, cfg: StackedConfig) -> FSQuantizer:
        return FSQuantizer(cfg)

    def make_encoder(self, cfg: StackedConfig) -> StreamingSequential:
        return StackedEncoder(cfg)

    def make_decoder(self, cfg: StackedConfig) -> StreamingSequential:
        return StackedDecoder(cfg)

    # ---- the base codec -----------------------------------------------------------------------------------
    def attach_base(self, base: VoxtokCodec) -> StackedCodec:
        """Use `base` (a loaded codec v2) for audio in and out. It must have the encoder and quantizer these
        tokens were trained on (`base_tokens_hash`; empty only while a model is first trained)."""
        cfg = self.config
        wanted = cfg.base_tokens_hash
        if wanted and base.tokens_hash() != wanted:
            raise VoxtokError(f"{self.model_id} was trained on the latents of {cfg.base_model} with token weights "
                              f"{wanted}; the {base.model_id} found has {base.tokens_hash()} (its encoder changed: "
                              "this tokenizer must be retrained on the new latents)")
        if base.config.hop_length * self.config.feature_frames_per_token != cfg.hop_length \
                or base.config.latent_dim != cfg.base_latent_dim or base.config.decoder_delay != cfg.base_decoder_delay:
            raise VoxtokError(f"{base.model_id} does not fit {self.model_id}: hop {base.config.hop_length}, "
                              f"latents {base.config.latent_dim}, delay {base.config.decoder_delay}")
        base.requires_grad_(False)
        base.eval()
        object.__setattr__(self, "base", base)
        self.encoder.base.attach(base.encoder)
        self.decoder.base.attach(base.decoder)
        reference = next(self.parameters())
        self.encoder.base.target.to(reference.device, self.encoder_dtype)
        self.decoder.base.target.to(reference.device, self.decoder_dtype)
        return self

    def finish_loading(self, directory: Path, load) -> None:
        self.attach_base(load(self.config.base_model, device=next(self.parameters()).device))

    def _hash_weights(self, prefixes: tuple[str, ...]) -> str:
        """This model's own weights, chained with the base's matching hash: the base's encoder and quantizer
        define these tokens too, and its decoder renders them."""
        own = super()._hash_weights(prefixes)
        if self.base is None:
            return own
        base = self.base.tokens_hash() if prefixes else self.base.weights_hash()
        return hashlib.sha256(f"{own}:{base}".encode()).hexdigest()[:12]

    # ---- operating points and decoding ----------------------------------------------------------------------
    @property
    def operating_points(self) -> list[tuple[int, float]]:
        return [(self.config.num_quantizers, round(self.config.num_quantizers * self.config.kbps_per_codebook, 3))]

    def num_quantizers_for(self, bitrate_kbps: float | None) -> int:
        """All the FSQ groups or nothing: a group left out is not a coarser code, it is a missing dimension."""
        n, kbps = self.operating_points[0]
        if bitrate_kbps is not None and bitrate_kbps + 1e-6 < kbps:
            raise VoxtokError(f"{self.model_id} runs at {kbps:g} kbps only ({n} FSQ codes per frame); "
                              f"--bitrate {bitrate_kbps:g} is below it")
        return n

    def use_exact_encoder(self) -> StackedCodec:
        """float64 for the encoder and both decoders, base included (see HarmonicCodec.use_exact_encoder)."""
        super().use_exact_encoder()
        self.decoder.double()
        self.flow.double()
        return self

    def set_decoding(self, kind: str | None = None, steps: int | None = None,
                     temperature: float | None = None) -> StackedCodec:
        if kind is not None:
            if kind not in ("flow", "regression"):
                raise VoxtokError(f"decoder must be 'flow' or 'regression', got {kind!r}")
            self.decoder_kind = kind
        if steps is not None:
            if not 1 <= steps <= 256:
                raise VoxtokError(f"flow steps must be in [1, 256], got {steps}")
            self.flow_steps = steps
        if temperature is not None:
            if not 0.0 <= temperature <= 2.0:
                raise VoxtokError(f"temperature must be in [0, 2], got {temperature}")
            self.temperature = temperature
        return self

    # ---- offline ------------------------------------------------------------------------------------------
    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, N] audio -> continuous tokens [B, latent_dim, ceil(N / hop)], normalised."""
        return self.quantizer.normalise(self.encoder(self._pad_to_frames(wav.to(self.encoder_dtype))))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(self.quantizer.decode(codes))

    def _padded_base_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised tokens [B, latent_dim, T] -> the chosen decoder's base latents for T + lookahead tokens' worth
        of frames (zero tokens past the end), the first lookahead_tokens' frames being the decoder's delay: what
        the base decoder is fed, offline as in streaming (its synthesiser carries phase from the first frame on)."""
        padded = F.pad(z.to(self.decoder_dtype), (0, self.config.lookahead_tokens))
        mu = self.decoder.normalised_path(padded)
        if self.decoder_kind == "flow":
            cond = self.flow.condition(self.flow.cond(padded), mu)
            mu = mu + self.flow.sample(cond, self.flow_steps, self.temperature)
        return self.decoder.base_denorm(mu)

    def base_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised tokens [B, latent_dim, T] -> the base latents [B, base_latent_dim, 4 T] the chosen decoder
        makes of them, aligned with the tokens."""
        lead = self.config.lookahead_tokens * self.config.feature_frames_per_token
        return self._padded_base_latents(z)[..., lead:]

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, latent_dim, T] -> [B, 1, T * hop] audio aligned with the encoder's input."""
        blocks = self.decoder.base(self._padded_base_latents(z))
        return self._trim_decoder_output(blocks, z.shape[-1])

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError("StackedCodec trains through voxtok.train_stacked, on cached base latents")

    # ---- streaming ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def streaming(self, batch_size: int = 1, num_quantizers: int | None = None) -> Iterator[None]:
        device = next(self.parameters()).device
        dtype = self.decoder_dtype
        self._stream = _StackedStream(
            num_quantizers=self.num_quantizers_for(None) if num_quantizers is None else num_quantizers,
            encoder_state=self.encoder.init_state(batch_size, device, self.encoder_dtype),
            pending_input=torch.zeros(batch_size, 1, 0, device=device, dtype=self.encoder_dtype),
            decoder_skip=self.config.decoder_delay,
            regression_state=self.decoder.init_state(batch_size, device, dtype),
            cond_state=self.flow.cond.init_state(batch_size, device, dtype),
            prior_state=self.decoder.normalised_path.init_state(batch_size, device, dtype),
            velocity_states=[self.flow.velocity.init_state(batch_size, device, dtype)
                             for _ in range(self.flow_steps)],
            base_state=self.decoder.base.init_state(batch_size, device, dtype),
            frame_position=0,
        )
        try:
            yield
        finally:
            self._stream = None

    def encode_latents_chunk(self, wav: torch.Tensor) -> torch.Tensor:
        """Streaming encode_latents: any number of samples -> normalised latents of the frames completed so far."""
        latents = self.encoder_chunk(wav)
        if latents is None:
            return wav.new_zeros(wav.shape[0], self.config.latent_dim, 0)
        return self.quantizer.normalise(latents)

    def flush_latents(self) -> torch.Tensor:
        """Latents for the last partial frame, zero-padded as encode_latents pads."""
        padding = self.final_padding()
        if padding is None:
            pending = self._require_stream().pending_input
            return pending.new_zeros(pending.shape[0], self.config.latent_dim, 0)
        return self.encode_latents_chunk(padding)

    def decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0, device=codes.device, dtype=self.decoder_dtype)
        return self.decode_latents_chunk(self.quantizer.decode(codes))

    def decode_latents_chunk(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, latent_dim, t] -> the samples that are final after them (streaming)."""
        stream = self._require_stream()
        z = z.to(self.decoder_dtype)
        if z.shape[-1] == 0:
            return z.new_zeros(z.shape[0], 1, 0)
        if self.decoder_kind == "regression":
            out, stream.regression_state = self.decoder.step(z, stream.regression_state)
        else:
            cond, stream.cond_state = self.flow.cond.step(z, stream.cond_state)
            mu, stream.prior_state = self.flow_prior_path.step(z, stream.prior_state)
            cond = self.flow.condition(cond, mu)
            b, _, frames = cond.shape
            x = self.temperature * self.flow.noise_at(stream.frame_position, frames, b, cond.dtype)
            steps = len(stream.velocity_states)
            d = self.flow.step_size(steps, b, cond)
            for k in range(steps):
                t = torch.full((b,), k / steps, device=cond.device, dtype=cond.dtype)
                v, stream.velocity_states[k] = self.flow.velocity.step(x, t, cond, stream.velocity_states[k], d)
                x = x + v / steps
            stream.frame_position += frames
            out, stream.base_state = self.renderer.step(self.render_input(mu, x), stream.base_state)
        if stream.decoder_skip:
            skip = min(stream.decoder_skip, out.shape[-1])
            out = out[..., skip:]
            stream.decoder_skip -= skip
        return out

    def flush_decoder(self) -> torch.Tensor:
        """The look-ahead's zero tokens, then the synthesiser's overlap-add tail (what offline decode ends with)."""
        stream = self._require_stream()
        batch = stream.pending_input.shape[0]
        pad = torch.zeros(batch, self.config.latent_dim, self.config.lookahead_tokens,
                          dtype=self.decoder_dtype, device=stream.pending_input.device)
        parts = [self.decode_latents_chunk(pad)] if self.config.lookahead_tokens else []
        state = stream.regression_state if self.decoder_kind == "regression" else stream.base_state
        tail = state[-1].reshape(state[-1].shape[0], 1, -1)
        parts.append(tail[..., stream.decoder_skip:])
        return torch.cat(parts, dim=-1)

    # ---- the flow decoder's pieces, as the ONNX export (export/lowrate_onnx.py) runs them -------------------
    @property
    def flow_prior_path(self) -> StreamingSequential:
        """Tokens -> the flow's prior mu: the regression decoder's normalised base latents."""
        return self.decoder.normalised_path

    def flow_prior(self, path_output: torch.Tensor) -> torch.Tensor:
        return path_output

    @property
    def renderer(self) -> StreamingModule:
        """The streaming layer that turns the flow's samples into audio: the base decoder."""
        return self.decoder.base

    def render_input(self, mu: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.decoder.base_denorm(mu + residual)

    def latent_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) per latent dimension: encode_latents has already applied them."""
        return self.quantizer.latent_mean.clone(), self.quantizer.latent_std.clone()
