"""Causal 1-D convolution that keeps exactly its left context when streaming."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from voxtok.modules.streaming import State, StreamingModule


class CausalConv1d(StreamingModule):
    """Output frame j sees input up to (j + 1) * stride - 1 and nothing later.

    Left context is kernel_size - stride samples: offline it is zero padding, streaming it is the tail of
    the previous chunk, so both paths compute the same numbers. Inputs must be whole multiples of stride.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        if kernel_size < stride:
            raise ValueError("kernel_size must be >= stride for a causal strided conv")
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        self.in_channels = in_channels
        self.stride = stride
        self.context = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.context, 0)))

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        if self.context == 0:
            return []
        dtype = dtype or self.conv.weight.dtype
        return [torch.zeros(batch_size, self.in_channels, self.context, device=device, dtype=dtype)]

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.context == 0:
            return self.conv(x), []
        joined = torch.cat([state[0], x], dim=-1)
        return self.conv(joined), [joined[..., joined.shape[-1] - self.context:]]
