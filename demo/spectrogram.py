"""Spectrogram images for the page: numpy and PIL only (no plotting library)."""

from __future__ import annotations

import numpy as np

# A dark-to-bright palette (black, purple, orange, pale yellow), so quiet detail stays visible.
_PALETTE_STOPS = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], float)


def _palette(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] -> uint8 RGB, interpolating the palette stops."""
    position = np.clip(values, 0.0, 1.0) * (len(_PALETTE_STOPS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_PALETTE_STOPS) - 2)
    frac = (position - low)[..., None]
    return (_PALETTE_STOPS[low] * (1 - frac) + _PALETTE_STOPS[low + 1] * frac).astype(np.uint8)


def spectrogram_image(samples: np.ndarray, sample_rate: int, n_fft: int = 512, hop: int = 128,
                      dynamic_range_db: float = 80.0, height: int = 256) -> np.ndarray:
    """[n] audio -> [height, frames, 3] uint8 image: log-magnitude STFT, low frequencies at the bottom, the loudest
    bin at full brightness and `dynamic_range_db` below it black (pitch harmonics show as horizontal lines)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    window = np.hanning(n_fft).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * window
    magnitude = np.abs(np.fft.rfft(frames, axis=1)).T  # [bins, frames]
    db = 20 * np.log10(np.maximum(magnitude, 1e-10))
    db = (db - db.max() + dynamic_range_db) / dynamic_range_db
    rgb = _palette(db[::-1])
    if rgb.shape[0] != height:
        rows = np.linspace(0, rgb.shape[0] - 1, height).round().astype(int)
        rgb = rgb[rows]
    return rgb
