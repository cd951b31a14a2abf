"""Spectral features in plain torch (no torchaudio): mel filterbanks and log-mel spectrograms."""

from __future__ import annotations

import math

import torch


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular HTK-mel filters, each normalised to unit area (Slaney-style)."""
    fmax = fmax or sample_rate / 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    # Python floats for the end points (no .item()), so the filterbank can also be built on the meta device.
    mel_points = torch.linspace(2595.0 * math.log10(1.0 + fmin / 700.0), 2595.0 * math.log10(1.0 + fmax / 700.0),
                                n_mels + 2, dtype=torch.float64)
    hz_points = mel_to_hz(mel_points)
    lower, center, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    up = (freqs - lower) / (center - lower)
    down = (upper - freqs) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (upper - lower))
    return fb.float()


class LogMel(torch.nn.Module):
    """Log-mel spectrogram [B, n_mels, frames] of a [B, N] or [B, 1, N] waveform."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, floor: float = 1e-5,
                 pad_mode: str = "reflect"):
        super().__init__()
        self.n_fft, self.hop_length, self.floor, self.pad_mode = n_fft, hop_length, floor, pad_mode
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        wav = wav.reshape(-1, wav.shape[-1])
        spec = torch.stft(wav, self.n_fft, self.hop_length, window=self.window, center=True,
                          pad_mode=self.pad_mode, return_complex=True)
        return spec.abs()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.filters @ self.magnitude(wav)
        return torch.log10(torch.clamp(mel, min=self.floor))


def num_mels_for_window(window: int) -> int:
    """DAC's pairing of window length and mel bands (32 -> 5, ..., 2048 -> 320)."""
    return int(5 * 2 ** (math.log2(window) - 5))
