"""The low-frame-rate tokenizer (voxtok-16k-12hz): 12.5 Hz tokens for speech LMs, continuous and discrete.

    audio -> EncoderFeatures (the v2 front-end, 200 Hz) -> causal ConvNeXt at 200, 50 and 12.5 Hz
          -> latent mean mu [32, 12.5 Hz]  -- sigma-VAE: training adds noise of a per-sample random scale
          -> normalised by shipped statistics: z = (mu - mean) / std        (the continuous tokens)
          -> FSQ, 5 levels per dimension, 8 groups of 4 = 8 codes of 625     (the discrete twin, 1.0 kbps)
    z or the FSQ values -> a decoder at 50 Hz -> the v2 synthesiser's parameters per 5 ms -> HarmonicSynth
        RegressionDecoder: causal ConvNeXt, trained by the v2 regression losses (the control)
        FlowDecoder: conditional flow matching (OT-CFM) on the normalised parameters, Euler steps from a fixed
                     noise buffer, every layer causal so chunked decoding equals a full pass

Why these choices: at 80 ms per token one token spans a phone, so a deterministic decoder must average over what
the token leaves open (it over-smooths); a flow decoder samples instead. Both decoders predict synthesiser
parameters rather than waveforms, so pitch and phase come from DSP (the lesson of codec v1), and both train by
plain regression on a CPU. The continuous and the discrete tokens go through the same decoders (training feeds
each half of the batch one kind), so a discrete LM and a continuous LM read the same representation.

Look-ahead: the decoders' token convolution sees lookahead_tokens tokens ahead (80 ms), implemented as a delay,
so every layer stays causal and streams with plain state; offline decoding appends that many zero tokens.
Latency: one token (80 ms) + the look-ahead (80 ms) + the synthesiser's overlap (15 ms) = 175 ms.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from voxtok.config import LowRateConfig
from voxtok.harmonic_codec import EncoderFeatures, SynthParameters
from voxtok.model import VoxtokCodec
from voxtok.modules.conv import CausalConv1d
from voxtok.modules.convnext import ChannelLayerNorm, ConvNeXtBlock
from voxtok.modules.flow import ResidualFlowRules, VelocityNet, fixed_noise
from voxtok.modules.harmonic import F0_MAX_HZ, F0_MIN_HZ, HarmonicSynth
from voxtok.modules.streaming import State, StreamingModule, StreamingSequential
from voxtok.tokenizer import ContinuousTokens


def _blocks(dim: int, count: int, cfg: LowRateConfig) -> list[nn.Module]:
    return [ConvNeXtBlock(dim, int(dim * cfg.mlp_ratio), cfg.kernel_size) for _ in range(count)]


# ---- the bottleneck -----------------------------------------------------------------------------------------
class FSQuantizer(nn.Module):
    """Latent statistics (for the continuous tokens) and finite scalar quantization (the discrete twin).

    `normalise` maps the encoder's mean to z = (mu - mean) / std with per-dimension statistics kept as an EMA
    during training and shipped with the weights (what an LM normalises with). FSQ bounds each normalised
    dimension with tanh and rounds it to one of `levels` values; the decoder reads each level as the mean of a
    unit Gaussian over that level's interval, so quantized and continuous inputs share one scale."""

    def __init__(self, cfg: LowRateConfig, momentum: float = 0.01):
        super().__init__()
        self.dim, self.groups, self.levels = cfg.latent_dim, cfg.num_quantizers, cfg.fsq_levels
        self.group = cfg.latent_dim // cfg.num_quantizers
        self.num_quantizers, self.codebook_size = cfg.num_quantizers, cfg.codebook_size
        self.momentum = momentum
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_dim))
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.long))
        self.register_buffer("centroids", _gaussian_level_means(cfg.fsq_levels), persistent=False)
        self.register_buffer("radix", cfg.fsq_levels ** torch.arange(self.group), persistent=False)

    # What VoxtokCodec asks of a quantizer.
    def initialized(self) -> bool:
        return bool(self.stats_ready.item())

    @torch.no_grad()
    def initialize(self, latents: torch.Tensor) -> None:
        """Statistics from a first batch [B, dim, T]; the EMA refines them from there."""
        flat = latents.transpose(0, 1).reshape(self.dim, -1).float()
        self.latent_mean.copy_(flat.mean(dim=1))
        self.latent_std.copy_(flat.std(dim=1).clamp(min=1e-4))
        self.stats_ready.fill_(1)

    @torch.no_grad()
    def update_statistics(self, latents: torch.Tensor) -> None:
        flat = latents.transpose(0, 1).reshape(self.dim, -1).float()
        self.latent_mean.lerp_(flat.mean(dim=1), self.momentum)
        self.latent_std.lerp_(flat.std(dim=1).clamp(min=1e-4), self.momentum)

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self.latent_mean.to(latents.dtype), self.latent_std.to(latents.dtype)
        return (latents - mean[:, None]) / std[:, None]

    def normalise_by_batch(self, latents: torch.Tensor) -> torch.Tensor:
        """Training: normalised by this batch's statistics, with their gradient (as BatchNorm trains), so the loss
        cannot depend on the encoder's output scale. Measured: with the lagging EMA instead, an encoder that grows
        its output outgrew the sigma-VAE noise (in normalised units) and the FSQ steps, mean(mu^2) 0.5 -> 5 in
        275 steps; with detached batch statistics the gradient still had a radial part, and the scale ran away
        more slowly (mean(mu^2) 0.5 -> 54 in 1000 steps)."""
        flat = latents.transpose(0, 1).reshape(self.dim, -1)
        mean, std = flat.mean(dim=1), flat.std(dim=1).clamp(min=1e-4)
        return (latents - mean[:, None]) / std[:, None]

    def levels_of(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised [B, dim, T] -> level index per dimension in [0, levels)."""
        half = (self.levels - 1) / 2
        return torch.round(half * torch.tanh(z / 2) + half).clamp(0, self.levels - 1).long()

    def straight_through(self, z: torch.Tensor) -> torch.Tensor:
        """Training: the quantized values in the forward pass, the identity's gradient in the backward."""
        values = self.centroids.to(z.dtype)[self.levels_of(z)]
        return z + (values - z).detach()

    def encode(self, latents: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """Encoder means [B, dim, T] -> codes [B, groups, T] (int64, each in [0, levels ** group))."""
        if num_quantizers not in (None, self.groups):
            raise ValueError(f"the FSQ twin has {self.groups} codes per frame, all needed; got {num_quantizers}")
        return self.codes_of_normalised(self.normalise(latents))

    def codes_of_normalised(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, dim, T] (the continuous tokens) -> their FSQ codes [B, groups, T]."""
        levels = self.levels_of(z)
        b, _, t = levels.shape
        grouped = levels.reshape(b, self.groups, self.group, t)
        return (grouped * self.radix[None, None, :, None]).sum(dim=2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, groups, T] -> normalised latents [B, dim, T] (the level centroids)."""
        b, g, t = codes.shape
        digits = torch.remainder(torch.div(codes[:, :, None, :], self.radix[None, None, :, None],
                                           rounding_mode="floor"), self.levels)
        return self.centroids[digits].reshape(b, g * self.group, t)


def _gaussian_level_means(levels: int) -> torch.Tensor:
    """E[z | z falls in level k] for z ~ N(0, 1) under levels_of's rounding (level k covers the z where
    round(h tanh(z / 2) + h) = k, h = (levels - 1) / 2)."""
    half = (levels - 1) / 2
    edges = [-math.inf] + [2 * math.atanh((k + 0.5 - half) / half) for k in range(levels - 1)] + [math.inf]

    def pdf(x: float) -> float:
        return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2))) if not math.isinf(x) else (1.0 if x > 0 else 0.0)

    means = [(pdf(lo) - pdf(hi)) / max(cdf(hi) - cdf(lo), 1e-12) for lo, hi in zip(edges[:-1], edges[1:])]
    return torch.tensor(means)


# ---- encoder and decoders -----------------------------------------------------------------------------------
class LowRateEncoder(StreamingSequential):
    """[B, 1, N] audio (N a multiple of hop_length) -> latent means [B, latent_dim, N / hop_length]. Layers 0-10
    are the v2 encoder's (a recipe may start them from its weights)."""

    def __init__(self, cfg: LowRateConfig):
        super().__init__(
            EncoderFeatures(cfg),
            CausalConv1d(cfg.bands + cfg.pitch_lags, cfg.enc_sub_dim, 3),
            *_blocks(cfg.enc_sub_dim, cfg.enc_sub_layers, cfg),
            ChannelLayerNorm(cfg.enc_sub_dim),
            CausalConv1d(cfg.enc_sub_dim, cfg.enc_dim, cfg.subframes_per_feature_frame,
                         cfg.subframes_per_feature_frame),
            *_blocks(cfg.enc_dim, cfg.enc_layers, cfg),
            ChannelLayerNorm(cfg.enc_dim),
            CausalConv1d(cfg.enc_dim, cfg.enc_low_dim, cfg.feature_frames_per_token, cfg.feature_frames_per_token),
            *_blocks(cfg.enc_low_dim, cfg.enc_low_layers, cfg),
            ChannelLayerNorm(cfg.enc_low_dim),
            nn.Conv1d(cfg.enc_low_dim, cfg.latent_dim, 1),
        )


class TokenUpsample(StreamingModule):
    """[B, C, T] tokens -> [B, C, T * factor] feature frames: each token repeated, plus a learned embedding of the
    frame's position inside its token (so repeated frames can differ). Stateless."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.position = nn.Parameter(torch.zeros(channels, factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        repeated = x[..., None] + self.position.to(x.dtype)[None, :, None, :]
        return repeated.reshape(b, c, t * self.factor)


def _token_conditioning(cfg: LowRateConfig, dim: int) -> list[nn.Module]:
    """Tokens -> dim channels at the feature rate; the conv's last tap is lookahead_tokens ahead of the output."""
    return [CausalConv1d(cfg.latent_dim, dim, cfg.lookahead_tokens + 2),
            TokenUpsample(dim, cfg.feature_frames_per_token),
            ChannelLayerNorm(dim)]


class RegressionDecoder(StreamingSequential):
    """Normalised latents [B, latent_dim, T] -> overlap-add audio blocks, lookahead_tokens behind. Layers 2-10 have
    the v2 decoder's shapes (its layers 1-9)."""

    def __init__(self, cfg: LowRateConfig):
        StreamingSequential.__init__(
            self,
            *_token_conditioning(cfg, cfg.dec_dim),
            *_blocks(cfg.dec_dim, cfg.dec_layers, cfg),
            ChannelLayerNorm(cfg.dec_dim),
            SynthParameters(cfg.dec_dim, cfg, subframes=cfg.subframes_per_feature_frame),
            HarmonicSynth(cfg.sample_rate, cfg.window, cfg.subframe, cfg.bands, cfg.ap_bands),
        )

        # Every layer but the synthesiser, as a StreamingSequential of the same layer objects (not registered: the
        # weights stay listed once): the flow decoder's prior, offline and streaming.
        object.__setattr__(self, "parameter_path", StreamingSequential(*self.layers[:-1]))

    @property
    def parameters_head(self) -> SynthParameters:
        return self.layers[-2]

    @property
    def synth(self) -> HarmonicSynth:
        return self.layers[-1]

    def raw_parameters(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents
        for layer in self.layers[:-2]:
            x = layer(x)
        return self.parameters_head.raw(x)


class FlowDecoder(ResidualFlowRules, nn.Module):
    """Conditional flow matching from noise to the synthesiser's parameters, normalised, at the feature rate.

    Per 5 ms sub-frame the target is [bands log-mel, log2 F0, voicing in {0, 1}], normalised per channel with
    statistics set once from training data (shipped); a feature frame folds its sub-frames into channels.

    The flow models the residual over the regression decoder's prediction mu (detached), and sees mu as
    conditioning: x1 = target - mu, the path OT-CFM's straight line x_t = (1 - t) x0 + t x1 with velocity x1 - x0,
    and a sample is mu + x1. Why: from noise to the whole target, 800 steps gave samples with a better log-mel
    distance than the regression decoder's but STOI 0.42 against its 0.74 (5 dev files): the envelope detail the
    flow adds belongs on top of a good mean, not in place of it (PriorGrad's data-dependent prior, as a mean).
    Sampling integrates with Euler steps from x0 = temperature * noise, read from a fixed table by frame position."""

    def __init__(self, cfg: LowRateConfig):
        super().__init__()
        self.bands = cfg.bands
        self.channels = cfg.bands + 2
        self.subframes = cfg.subframes_per_feature_frame
        self.features = self.channels * self.subframes
        self.cond = StreamingSequential(*_token_conditioning(cfg, cfg.flow_dim),
                                        *_blocks(cfg.flow_dim, cfg.flow_cond_layers, cfg),
                                        ChannelLayerNorm(cfg.flow_dim))
        self.velocity = VelocityNet(self.features, cfg)
        self.register_buffer("feature_mean", torch.zeros(self.channels))
        self.register_buffer("feature_std", torch.ones(self.channels))
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.long))
        self.register_buffer("noise", fixed_noise(self.features), persistent=False)
        # 1 once the shortcut objective has trained the step-size input: sampling then tells the net its step.
        self.register_buffer("shortcut", torch.zeros((), dtype=torch.long))
        self.prior = nn.Conv1d(self.features, cfg.flow_dim, 1)  # mu as conditioning (registered last)
        # The starting noise's scale per feature: the residual's spread, measured once on training data
        # (PriorGrad's data-dependent prior). Unit noise was 2-3x wider than the residual, and what the net did
        # not cancel of it stayed in the bands as noise (STOI 0.47 against the regression's 0.72 after 250 steps).
        self.register_buffer("residual_std", torch.ones(self.features))
        self.register_buffer("residual_ready", torch.zeros((), dtype=torch.long))
        # 1 on the folded band channels (channel c * subframes + s for band c), 0 on F0 and voicing.
        mask = (torch.arange(self.features) // self.subframes < self.bands).float()
        self.register_buffer("envelope_mask", mask, persistent=False)

    def pitch_from_prior(self, x: torch.Tensor) -> torch.Tensor:
        """A residual sample [B, features, T] with its F0 and voicing channels zeroed: mu + x then keeps the
        regression decoder's pitch and samples only the spectral envelope. Measured at step 1500 (4 dev files,
        8 steps, temperature 0): sampled F0 / voicing PESQ-WB 1.19, STOI 0.70; the regression's 1.36, 0.72 (the
        5 ms F0 jitter of independent samples roughens the harmonics' phase)."""
        return x * self.envelope_mask.to(x.dtype)[:, None]

    def prior_mean(self, parameters: torch.Tensor) -> torch.Tensor:
        """The regression decoder's parameters [B, bands + 2, J] (log-mel, F0 Hz, voicing) -> mu, folded and
        normalised like the targets [B, features, J / subframes]."""
        b = self.bands
        return self.fold(self.targets(parameters[:, :b], parameters[:, b], parameters[:, b + 1]))

    def condition(self, cond: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        return cond + self.prior(mu)

    # ---- the feature layout -----------------------------------------------------------------------------
    def fold(self, per_subframe: torch.Tensor) -> torch.Tensor:
        """[B, channels, J] (J a multiple of subframes) -> normalised [B, features, J / subframes]."""
        b, c, j = per_subframe.shape
        mean, std = self.feature_mean.to(per_subframe.dtype), self.feature_std.to(per_subframe.dtype)
        x = (per_subframe - mean[:, None]) / std[:, None]
        t = j // self.subframes
        return x.reshape(b, c, t, self.subframes).permute(0, 1, 3, 2).reshape(b, -1, t)

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        """fold's inverse: [B, features, T] -> [B, channels, T * subframes], denormalised."""
        b, _, t = x.shape
        per = x.reshape(b, self.channels, self.subframes, t).permute(0, 1, 3, 2).reshape(b, self.channels, -1)
        mean, std = self.feature_mean.to(x.dtype), self.feature_std.to(x.dtype)
        return per * std[:, None] + mean[:, None]

    def targets(self, log_mel: torch.Tensor, f0: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        """Analysis bands [B, bands, J], F0 in Hz [B, J], voicing [B, J] -> per-subframe targets [B, channels, J]."""
        return torch.cat([log_mel, torch.log2(f0.clamp(min=1.0))[:, None], voiced[:, None]], dim=1)

    @torch.no_grad()
    def set_statistics(self, per_subframe: torch.Tensor, mask: torch.Tensor) -> None:
        """Per-channel mean / std of targets [B, channels, J] over the frames where mask [B, J] is 1."""
        weight = mask[:, None].expand_as(per_subframe)
        count = weight.sum(dim=(0, 2)).clamp(min=1)
        mean = (per_subframe * weight).sum(dim=(0, 2)) / count
        var = (((per_subframe - mean[None, :, None]) ** 2) * weight).sum(dim=(0, 2)) / count
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(var.sqrt().clamp(min=1e-2))
        self.stats_ready.fill_(1)

    def synth_parameters(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised samples [B, features, T] -> HarmonicSynth's parameters [B, bands + 2, T * subframes]."""
        per = self.unfold(x)
        log_mel = per[:, : self.bands].clamp(min=math.log(1e-5), max=math.log(1e3))
        f0 = torch.exp2(per[:, self.bands:self.bands + 1]).clamp(F0_MIN_HZ, F0_MAX_HZ)
        voicing = per[:, self.bands + 1:].clamp(0.0, 1.0)
        return torch.cat([log_mel, f0, voicing], dim=1)

# ---- the tokenizer ------------------------------------------------------------------------------------------
@dataclass
class _LowRateStream:
    num_quantizers: int
    encoder_state: State
    pending_input: torch.Tensor
    decoder_skip: int
    cond_state: State
    prior_state: State
    velocity_states: list[State]
    synth_state: State
    regression_state: State
    frame_position: int  # feature frames decoded so far: where the flow's noise is read


class LowRateCodec(ContinuousTokens, VoxtokCodec):
    """The tokenizer interface at 12.5 Hz. `encode` / `decode` are the discrete twin (8 codes per frame, what
    the .vtok container and the CLI carry); `encode_latents` / `decode_latents` the continuous tokens.
    `decoder_kind` ("regression", the default, or "flow"), `flow_steps` and `temperature` choose how tokens are
    decoded."""

    config_class = LowRateConfig
    continuous = True
    int8_export = False  # its encoder's first layers are codec v2's (see HarmonicCodec.int8_export)

    def __init__(self, config: LowRateConfig | None = None):
        super().__init__(config)
        self.flow = FlowDecoder(self.config)
        # The regression decoder by default: at the shipped step the flow decoder is undertrained and scores
        # below it on every metric (its model card); `set_decoding("flow")` / `--decoder flow` choose it.
        self.decoder_kind = "regression"
        self.flow_steps = self.config.flow_steps
        self.temperature = 1.0

    def make_quantizer(self, cfg: LowRateConfig) -> FSQuantizer:
        return FSQuantizer(cfg)

    def make_encoder(self, cfg: LowRateConfig) -> StreamingSequential:
        return LowRateEncoder(cfg)

    def make_decoder(self, cfg: LowRateConfig) -> StreamingSequential:
        return RegressionDecoder(cfg)

    @property
    def operating_points(self) -> list[tuple[int, float]]:
        return [(self.config.num_quantizers, round(self.config.num_quantizers * self.config.kbps_per_codebook, 3))]

    def num_quantizers_for(self, bitrate_kbps: float | None) -> int:
        """All the FSQ groups or nothing: a group left out is not a coarser code, it is a missing dimension."""
        from voxtok.errors import VoxtokError

        n, kbps = self.operating_points[0]
        if bitrate_kbps is not None and bitrate_kbps + 1e-6 < kbps:
            raise VoxtokError(f"{self.model_id} runs at {kbps:g} kbps only (8 FSQ codes per frame); "
                              f"--bitrate {bitrate_kbps:g} is below it")
        return n

    def use_exact_encoder(self) -> LowRateCodec:
        """float64 for the encoder and both decoders (see HarmonicCodec.use_exact_encoder)."""
        super().use_exact_encoder()
        self.decoder.double()
        self.flow.double()
        return self

    def set_decoding(self, kind: str | None = None, steps: int | None = None,
                     temperature: float | None = None) -> LowRateCodec:
        from voxtok.errors import VoxtokError

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

    # ---- offline ----------------------------------------------------------------------------------------
    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, N] audio -> continuous tokens [B, latent_dim, ceil(N / hop)], normalised."""
        latents = self.encoder(self._pad_to_frames(wav.to(self.encoder_dtype)))
        return self.quantizer.normalise(latents)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(self.quantizer.decode(codes))

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, latent_dim, T] -> [B, 1, T * hop] audio aligned with the encoder's input."""
        z = z.to(self.decoder_dtype)
        padded = F.pad(z, (0, self.config.lookahead_tokens))
        if self.decoder_kind == "regression":
            blocks = self.decoder(padded)
        else:
            mu = self.flow.prior_mean(self.decoder.parameter_path(padded))
            cond = self.flow.condition(self.flow.cond(padded), mu)
            x = mu + self.flow.pitch_from_prior(self.flow.sample(cond, self.flow_steps, self.temperature))
            blocks = self.decoder.synth(self.flow.synth_parameters(x))
        return self._trim_decoder_output(blocks, z.shape[-1])

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError("LowRateCodec trains through voxtok.train_lowrate")

    # ---- streaming --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def streaming(self, batch_size: int = 1, num_quantizers: int | None = None) -> Iterator[None]:
        device = next(self.parameters()).device
        dtype = self.decoder_dtype
        synth = self.decoder.synth
        self._stream = _LowRateStream(
            num_quantizers=self.num_quantizers_for(None) if num_quantizers is None else num_quantizers,
            encoder_state=self.encoder.init_state(batch_size, device, self.encoder_dtype),
            pending_input=torch.zeros(batch_size, 1, 0, device=device, dtype=self.encoder_dtype),
            decoder_skip=self.config.decoder_delay,
            cond_state=self.flow.cond.init_state(batch_size, device, dtype),
            prior_state=self.decoder.parameter_path.init_state(batch_size, device, dtype),
            velocity_states=[self.flow.velocity.init_state(batch_size, device, dtype)
                             for _ in range(self.flow_steps)],
            synth_state=synth.init_state(batch_size, device, dtype),
            regression_state=self.decoder.init_state(batch_size, device, dtype),
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
            parameters, stream.prior_state = self.decoder.parameter_path.step(z, stream.prior_state)
            mu = self.flow.prior_mean(parameters)
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
            out, stream.synth_state = self.decoder.synth.step(
                self.flow.synth_parameters(mu + self.flow.pitch_from_prior(x)), stream.synth_state)
        if stream.decoder_skip:
            skip = min(stream.decoder_skip, out.shape[-1])
            out = out[..., skip:]
            stream.decoder_skip -= skip
        return out

    def flush_decoder(self) -> torch.Tensor:
        """The look-ahead's zero tokens, then the synthesiser's overlap-add tail (what offline decode ends with)."""
        stream = self._require_stream()
        batch = stream.encoder_state[0].shape[0] if stream.encoder_state else 1
        pad = torch.zeros(batch, self.config.latent_dim, self.config.lookahead_tokens,
                          dtype=self.decoder_dtype, device=next(self.parameters()).device)
        parts = [self.decode_latents_chunk(pad)] if self.config.lookahead_tokens else []
        state = stream.regression_state if self.decoder_kind == "regression" else stream.synth_state
        tail = state[-1].reshape(state[-1].shape[0], 1, -1)
        parts.append(tail[..., stream.decoder_skip:])
        return torch.cat(parts, dim=-1)

    # ---- the flow decoder's pieces, as the ONNX export (export/lowrate_onnx.py) runs them -------------------
    @property
    def flow_prior_path(self) -> StreamingSequential:
        """Tokens -> what the flow's prior mu is made from (here the regression decoder's parameters)."""
        return self.decoder.parameter_path

    def flow_prior(self, path_output: torch.Tensor) -> torch.Tensor:
        return self.flow.prior_mean(path_output)

    @property
    def renderer(self) -> StreamingModule:
        """The streaming layer that turns the flow's samples into audio (here the synthesiser)."""
        return self.decoder.synth

    def render_input(self, mu: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.flow.synth_parameters(mu + self.flow.pitch_from_prior(residual))

    def latent_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) per latent dimension: encode_latents has already applied them; an LM that reads raw
        means normalises with these."""
        return self.quantizer.latent_mean.clone(), self.quantizer.latent_std.clone()
