"""HarmonicCodec (voxtok codec v2): the decoder predicts what a source-filter synthesiser needs, not waveforms.

    audio -> EncoderFeatures (log-mel bands + normalised autocorrelation at pitch lags, 200 Hz, causal)
          -> causal ConvNeXt encoder -> 50 Hz latent -> residual VQ (the same quantizer as v1)
          -> causal ConvNeXt decoder -> per 5 ms: log-mel bands, F0, voicing, band aperiodicity
          -> HarmonicSynth (codec.modules.harmonic): harmonic + noise excitation, phase carried as state

Why: v1 had to learn phase, and with it pitch, from adversarial training and decoded noise shaped like speech.
Here periodicity comes from the synthesiser, and every learned output has a regression target measured on the
input (the analysis bands, WORLD's F0, voicing and aperiodicity), so the whole model trains on a CPU without a
GAN. The interface is VoxtokCodec's (encode/decode, streaming, bitrates), so the CLI, the .vtok container and
the API take either model; `load_codec` picks the class from config.json.

Latency: a whole 20 ms frame, plus the synthesiser's overlap (window - subframe = 15 ms): 35 ms, as in v1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from codec.config import CodecConfig, HarmonicCodecConfig
from codec.model import VoxtokCodec
from codec.modules.conv import CausalConv1d
from codec.modules.convnext import ChannelLayerNorm, ConvNeXtBlock
from codec.modules.harmonic import F0_MAX_HZ, F0_MIN_HZ, HarmonicSynth, SpectralFrames, SynthAnalysis
from codec.modules.streaming import State, StreamingModule, StreamingSequential

# F0 is predicted as log2(F0 / F0_REFERENCE_HZ), i.e. in octaves around a mid speaking pitch, or classified into
# bins log-spaced over [F0_BINS_LOW_HZ, F0_BINS_HIGH_HZ].
F0_REFERENCE_HZ = 150.0
F0_BINS_LOW_HZ = 50.0
F0_BINS_HIGH_HZ = 600.0
# The classified F0 is the probability-weighted mean log-frequency of the bins this close to the most likely one.
F0_BIN_NEIGHBOURS = 2


def f0_bin_centres(bins: int) -> torch.Tensor:
    """log2 of the bin centre frequencies, [bins]."""
    return torch.linspace(math.log2(F0_BINS_LOW_HZ), math.log2(F0_BINS_HIGH_HZ), bins)


class EncoderFeatures(StreamingModule):
    """[B, 1, N] audio (N a multiple of subframe) -> [B, bands + pitch_lags, N / subframe], causal.

    Per 5 ms: the synthesiser's own log-mel bands (what the decoder must reproduce), and the normalised
    autocorrelation of the last pitch_window samples at log-spaced lags from 1/F0_MAX to 1/F0_MIN, which puts
    the pitch period in plain view. Both are fixed matmuls; the state is the last pitch_window - subframe
    samples of audio."""

    def __init__(self, cfg: HarmonicCodecConfig):
        super().__init__()
        self.subframe, self.pitch_window = cfg.subframe, cfg.pitch_window
        self.analysis = SynthAnalysis(cfg.sample_rate, cfg.window, cfg.subframe, cfg.bands)
        # A zero-padded DFT (size >= window + longest lag) so the autocorrelation is linear, not circular.
        fft = 1 << (cfg.pitch_window + int(cfg.sample_rate / F0_MIN_HZ)).bit_length()
        self.pitch_frames = SpectralFrames(cfg.pitch_window, cfg.subframe, fft)
        lags = torch.logspace(math.log10(cfg.sample_rate / F0_MAX_HZ), math.log10(cfg.sample_rate / F0_MIN_HZ),
                              cfg.pitch_lags, dtype=torch.float64)
        k = torch.arange(fft // 2 + 1, dtype=torch.float64)[:, None]
        weight = torch.full((fft // 2 + 1, 1), 2.0, dtype=torch.float64)
        weight[0] = weight[-1] = 1.0
        # Row 0 is lag 0 (the energy); the cosine sum evaluates the autocorrelation at fractional lags too.
        lag_axis = torch.cat([torch.zeros(1, dtype=torch.float64), lags])
        self.register_buffer("acf_basis", (weight * torch.cos(2 * math.pi * k * lag_axis / fft) / fft).float(),
                             persistent=False)

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        dtype = dtype or self.acf_basis.dtype
        return [torch.zeros(batch_size, self.pitch_window - self.subframe, device=device, dtype=dtype)]

    def _features(self, joined: torch.Tensor) -> torch.Tensor:
        """joined [B, pitch_window - subframe + J * subframe] -> [B, channels, J]."""
        bands = self.analysis.filters.to(joined.dtype)
        spectra = self.analysis.frames.spectra(joined[:, self.pitch_window - self.analysis.frames.window:])
        log_mel = torch.log((self.analysis.frames.magnitude(spectra) @ bands.T).clamp(min=1e-5))
        pitch_spec = self.pitch_frames.spectra(joined)
        half = pitch_spec.shape[-1] // 2
        power = pitch_spec[..., :half] ** 2 + pitch_spec[..., half:] ** 2
        acf = power @ self.acf_basis.to(power.dtype)
        nacf = acf[..., 1:] / (acf[..., :1] + 1e-6)
        return torch.cat([log_mel, nacf], dim=-1).transpose(1, 2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.reshape(wav.shape[0], -1)
        joined = torch.cat([x.new_zeros(x.shape[0], self.pitch_window - self.subframe), x], dim=1)
        return self._features(joined)

    def step(self, wav: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        joined = torch.cat([state[0], wav.reshape(wav.shape[0], -1).to(state[0].dtype)], dim=1)
        keep = self.pitch_window - self.subframe
        return self._features(joined), [joined[:, joined.shape[1] - keep:]]


class SynthParameters(StreamingModule):
    """Decoder features [B, dim, T] -> synthesiser parameters [B, bands + 2 + ap_bands, T * subframes] (log-mel,
    F0 in Hz, voicing and aperiodicity in [0, 1]); `raw` gives the unsquashed outputs the losses read."""

    def __init__(self, dim: int, cfg: HarmonicCodecConfig, subframes: int | None = None):
        super().__init__()
        # Sub-frames per input frame: a code frame here; a decoder's feature frame in the low-rate tokenizer.
        self.subframes = subframes or cfg.subframes_per_frame
        self.bands, self.ap_bands = cfg.bands, cfg.ap_bands
        self.f0_channels = max(1, cfg.f0_bins)
        self.classified = cfg.f0_bins > 0
        self.channels = cfg.params_per_subframe
        self.out = nn.Linear(dim, self.subframes * self.channels)
        nn.init.zeros_(self.out.weight)
        if self.classified:
            self.register_buffer("bin_log2", f0_bin_centres(cfg.f0_bins), persistent=False)
        with torch.no_grad():  # start from a quiet, voiced, mostly periodic ~150 Hz: a sane synthesiser input
            bias = self.out.bias.view(self.subframes, self.channels)
            bias.zero_()
            bias[:, : self.bands] = -6.0
            bias[:, self.bands + self.f0_channels + 1:] = -2.0

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """[B, dim, T] -> [B, channels, T * subframes] before the squashing of `forward`."""
        b, _, t = x.shape
        h = self.out(x.transpose(1, 2)).reshape(b, t * self.subframes, self.channels)
        return h.transpose(1, 2)

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        b, k = self.bands, self.f0_channels
        log_mel = raw[:, :b].clamp(min=math.log(1e-5), max=math.log(1e3))
        if self.classified:
            f0 = torch.exp2(self.classified_log2_f0(raw[:, b:b + k]))
        else:
            f0 = F0_REFERENCE_HZ * torch.exp2(raw[:, b:b + 1].clamp(-3.0, 3.0))
        voicing = torch.sigmoid(raw[:, b + k:b + k + 1])
        aperiodicity = torch.sigmoid(raw[:, b + k + 1:])
        return torch.cat([log_mel, f0, voicing, aperiodicity], dim=1)

    def classified_log2_f0(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, bins, J] logits -> [B, 1, J] log2 F0: the probability-weighted mean of the bins within
        F0_BIN_NEIGHBOURS of the most likely one (a plain mean over all bins would land between two octaves)."""
        probs = torch.softmax(logits, dim=1)
        index = torch.arange(logits.shape[1], device=logits.device)[None, :, None]
        best = probs.argmax(dim=1, keepdim=True)
        near = ((index - best).abs() <= F0_BIN_NEIGHBOURS).to(probs.dtype) * probs
        centres = self.bin_log2.to(probs.dtype)[None, :, None]
        return (near * centres).sum(dim=1, keepdim=True) / near.sum(dim=1, keepdim=True).clamp(min=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squash(self.raw(x))


def _blocks(dim: int, count: int, cfg: CodecConfig) -> list[nn.Module]:
    return [ConvNeXtBlock(dim, int(dim * cfg.mlp_ratio), cfg.kernel_size) for _ in range(count)]


class HarmonicEncoder(StreamingSequential):
    """[B, 1, N] waveform (N a multiple of hop) -> [B, latent_dim, N / hop]."""

    def __init__(self, cfg: HarmonicCodecConfig):
        features = cfg.bands + cfg.pitch_lags
        super().__init__(
            EncoderFeatures(cfg),
            CausalConv1d(features, cfg.enc_sub_dim, 3),
            *_blocks(cfg.enc_sub_dim, cfg.enc_sub_layers, cfg),
            ChannelLayerNorm(cfg.enc_sub_dim),
            CausalConv1d(cfg.enc_sub_dim, cfg.enc_dim, cfg.subframes_per_frame, cfg.subframes_per_frame),
            *_blocks(cfg.enc_dim, cfg.enc_layers, cfg),
            ChannelLayerNorm(cfg.enc_dim),
            nn.Conv1d(cfg.enc_dim, cfg.latent_dim, 1),
        )


class HarmonicDecoder(StreamingSequential):
    """[B, latent_dim, T] -> overlap-add blocks [B, 1, (T * subframes + R - 1) * subframe]. The synthesiser is
    the last layer, so its overlap-add tail is the last state tensor (what flush_decoder returns)."""

    def __init__(self, cfg: HarmonicCodecConfig):
        super().__init__(
            CausalConv1d(cfg.latent_dim, cfg.dec_dim, 3),
            ChannelLayerNorm(cfg.dec_dim),
            *_blocks(cfg.dec_dim, cfg.dec_layers, cfg),
            ChannelLayerNorm(cfg.dec_dim),
            SynthParameters(cfg.dec_dim, cfg),
            HarmonicSynth(cfg.sample_rate, cfg.window, cfg.subframe, cfg.bands, cfg.ap_bands),
        )

    @property
    def parameters_head(self) -> SynthParameters:
        return self.layers[-2]

    @property
    def synth(self) -> HarmonicSynth:
        return self.layers[-1]

    def raw_parameters(self, latents: torch.Tensor) -> torch.Tensor:
        """Training: the head's unsquashed outputs [B, channels, T * subframes], for the regression losses."""
        x = latents
        for layer in self.layers[:-2]:
            x = layer(x)
        return self.parameters_head.raw(x)


class HarmonicCodec(VoxtokCodec):
    """Codec v2: VoxtokCodec's interface with the harmonic encoder and decoder."""

    config_class = HarmonicCodecConfig

    def make_encoder(self, cfg: HarmonicCodecConfig) -> StreamingSequential:
        return HarmonicEncoder(cfg)

    def make_decoder(self, cfg: HarmonicCodecConfig) -> StreamingSequential:
        return HarmonicDecoder(cfg)

    def use_exact_encoder(self) -> HarmonicCodec:
        """The encoder in float64 (as v1), and the decoder too: the synthesiser integrates F0 into phase, so the
        float32 noise of different chunkings would accumulate into a drift (1.7e-4 after 15 s of speech);
        float64 keeps streaming and offline audio within 1e-4 at any length. The ONNX graphs stay float32."""
        super().use_exact_encoder()
        self.decoder.double()
        return self
