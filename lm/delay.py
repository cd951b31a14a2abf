"""The MusicGen delay pattern, the one implementation of the rule: codebook k of frame t sits at step t + k.

With the FSQ twin's 8 groups at 12.5 Hz, step s predicts group k of frame s - k having seen groups < k of that
frame (emitted at earlier steps), so the groups of one frame are not sampled independently, at the cost of
K - 1 extra steps (7 x 80 ms = 560 ms before the last group of the first frame). A depth transformer (Moshi)
models the same dependency exactly, but runs K small passes per frame; at this CPU budget the delay's one pass per
step wins.
"""

from __future__ import annotations

import torch


def apply_delay(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """[K, T] codes -> [K, T + K - 1] with codebook k shifted right by k steps, `pad` where nothing sits."""
    k, t = codes.shape
    out = torch.full((k, t + k - 1), pad, dtype=codes.dtype, device=codes.device)
    for i in range(k):
        out[i, i:i + t] = codes[i]
    return out


def undo_delay(delayed: torch.Tensor) -> torch.Tensor:
    """apply_delay's inverse: [K, S] -> [K, S - K + 1] (the frames every codebook has reached)."""
    k, s = delayed.shape
    frames = s - k + 1
    if frames < 0:
        raise ValueError(f"{s} delayed steps hold no complete frame of {k} codebooks")
    return torch.stack([delayed[i, i:i + frames] for i in range(k)])
