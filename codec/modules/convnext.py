"""Causal ConvNeXt block (Vocos-style backbone layer): depthwise causal conv, LayerNorm, MLP, layer scale."""

from __future__ import annotations

import torch
from torch import nn
from voxtok.modules.conv import CausalConv1d
from voxtok.modules.streaming import State, StreamingModule


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a [B, C, T] tensor; per frame, so it needs no streaming state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvNeXtBlock(StreamingModule):
    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 7, layer_scale: float = 1e-2):
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, kernel_size, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def _mix(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        h = mixed.transpose(1, 2)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mix(x, self.dwconv(x))

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        return self.dwconv.init_state(batch_size, device, dtype)

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        mixed, new_state = self.dwconv.step(x, state)
        return self._mix(x, mixed), new_state
