"""Discriminators for adversarial training: multi-period (HiFi-GAN) and multi-resolution STFT (Vocos/UnivNet).

Channel counts are small on purpose: on a CPU the discriminators, not the codec, dominate a GAN step.
Each returns (scores, feature maps) per sub-discriminator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Output = tuple[list[torch.Tensor], list[list[torch.Tensor]]]


def _conv_stack(layers: nn.ModuleList, out: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack; every hidden activation is kept for the feature-matching loss."""
    features = []
    for layer in layers:
        h = F.leaky_relu(layer(h), 0.1)
        features.append(h)
    return out(h).flatten(1), features


class _Ensemble(nn.Module):
    """Sub-discriminators run side by side on the same audio."""

    discriminators: nn.ModuleList

    def forward(self, wav: torch.Tensor) -> Output:
        scores, features = [], []
        for d in self.discriminators:
            s, f = d(wav)
            scores.append(s)
            features.append(f)
        return scores, features


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__()
        self.period = period
        layers, cin = [], 1
        for cout in channels:
            layers.append(weight_norm(nn.Conv2d(cin, cout, (5, 1), (3, 1), padding=(2, 0))))
            cin = cout
        layers.append(weight_norm(nn.Conv2d(cin, cin, (5, 1), 1, padding=(2, 0))))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(cin, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, n = wav.shape
        wav = F.pad(wav, (0, (-n) % self.period), mode="reflect")
        h = wav.reshape(b, 1, -1, self.period)
        return _conv_stack(self.layers, self.out, h)


class MultiPeriodDiscriminator(_Ensemble):
    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11)):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p) for p in periods)


class ResolutionDiscriminator(nn.Module):
    """2-D convs over a log-magnitude spectrogram at one STFT resolution."""

    def __init__(self, n_fft: int, hop: int, channels: int = 16):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.layers = nn.ModuleList([
            weight_norm(nn.Conv2d(1, channels, (7, 5), (2, 1), padding=(3, 2))),
            weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 1), padding=(2, 1))),
            weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 1), padding=(2, 1))),
            weight_norm(nn.Conv2d(channels, channels, 3, padding=1)),
        ])
        self.out = weight_norm(nn.Conv2d(channels, 1, 3, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), self.n_fft, self.hop, window=self.window,
                          return_complex=True).abs()
        h = torch.log(spec.clamp(min=1e-5)).unsqueeze(1)
        return _conv_stack(self.layers, self.out, h)


class MultiResolutionDiscriminator(_Ensemble):
    def __init__(self, resolutions: tuple[tuple[int, int], ...] = ((1024, 256), (512, 128), (256, 64))):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(n, h) for n, h in resolutions)
