"""iSTFT head: per-frame magnitude and phase for a few short sub-frames, turned into audio with plain
matmuls and overlap-add (no torch.istft), so the same code exports to ONNX and streams.

Each backbone frame predicts `subframes` spectra of `window // 2 + 1` bins. An inverse real DFT as a fixed
[2 * bins, window] matrix (window and overlap normalisation folded in) makes each spectrum a windowed frame;
frames overlap-add with hop `subframe`. Output block m is the sum of the R = window / subframe frames that
cover it; in streaming the R - 1 blocks still waiting for later frames are the state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from voxtok.modules.streaming import State, StreamingModule


def inverse_rdft_basis(window: int, hop: int) -> torch.Tensor:
    """[2 * bins, window]: real rows then imaginary rows, times a periodic Hann window / OLA gain."""
    bins = window // 2 + 1
    n = torch.arange(window, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if window % 2 == 0:
        weight[-1] = 1.0
    angle = 2 * math.pi * k * n / window
    real_rows = weight * torch.cos(angle) / window
    imag_rows = -weight * torch.sin(angle) / window
    hann = torch.hann_window(window, periodic=True, dtype=torch.float64)
    ola_gain = (hann**2).sum() / hop  # constant sum of squared windows at this overlap
    return (torch.cat([real_rows, imag_rows]) * hann / ola_gain).float()


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """[B, J, window] -> blocks [B, J + R - 1, hop] with R = window / hop; block m = sum over r of frame m - r's
    r-th block. Pads and adds, with no scatter, so it exports to ONNX as plain ops."""
    b, j, window = frames.shape
    r_total = window // hop
    pieces = frames.reshape(b, j, r_total, hop)
    out = F.pad(pieces[:, :, 0], (0, 0, 0, r_total - 1))
    for r in range(1, r_total):
        out = out + F.pad(pieces[:, :, r], (0, 0, r, r_total - 1 - r))
    return out


class ISTFTHead(StreamingModule):
    def __init__(self, dim: int, subframes: int, window: int, hop: int):
        super().__init__()
        if window % hop:
            raise ValueError("window must be a multiple of hop")
        self.subframes = subframes
        self.window = window
        self.hop = hop
        self.overlap_blocks = window // hop
        self.bins = window // 2 + 1
        self.out = nn.Linear(dim, subframes * 2 * self.bins)
        self.register_buffer("basis", inverse_rdft_basis(window, hop), persistent=False)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """[B, dim, T] -> windowed time frames [B, T * subframes, window]."""
        b, _, t = x.shape
        h = self.out(x.transpose(1, 2)).reshape(b, t * self.subframes, 2, self.bins)
        # Magnitude as exp of a clipped log keeps it positive and bounded (as in Vocos).
        magnitude = torch.exp(torch.clamp(h[:, :, 0], max=math.log(100.0)))
        phase = h[:, :, 1]
        spectrum = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1)
        return spectrum @ self.basis

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        return overlap_add(frames, self.hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline: all blocks, including the R - 1 trailing partial ones, flattened: [B, 1, (J + R - 1) * hop]."""
        blocks = self.overlap_add(self.frames(x))
        return blocks.reshape(x.shape[0], 1, -1)

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        dtype = dtype or self.out.weight.dtype
        return [torch.zeros(batch_size, self.overlap_blocks - 1, self.hop, device=device, dtype=dtype)]

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Streaming: the blocks that no later frame touches, [B, 1, J * hop]; the rest waits in the state."""
        blocks = self.overlap_add(self.frames(x))
        pending = self.overlap_blocks - 1
        j = blocks.shape[1] - pending
        head = blocks[:, :pending] + state[0]
        blocks = torch.cat([head, blocks[:, pending:]], dim=1)
        return blocks[:, :j].reshape(x.shape[0], 1, -1), [blocks[:, j:]]
