"""Explicit streaming state.

Every layer that needs past input offers two paths: `forward(x)` on a whole signal (zero left padding)
and `step(x, state) -> (y, new_state)` on a chunk, where `state` is a list of tensors the layer owns.
Keeping the state as plain tensors in and out (rather than hidden in the module) lets the same code run
under `torch.onnx.export` with the state as named graph inputs and outputs.
"""

from __future__ import annotations

import torch
from torch import nn

State = list[torch.Tensor]


class StreamingModule(nn.Module):
    """A layer with a functional streaming step. Stateless layers return an empty state."""

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        return []

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self(x), []


class StreamingSequential(StreamingModule):
    """Runs layers in order; each consumes as many state tensors as its init_state returned."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self._state_counts: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        states: State = []
        counts = []
        for layer in self.layers:
            layer_state = layer.init_state(batch_size, device, dtype) if isinstance(layer, StreamingModule) else []
            counts.append(len(layer_state))
            states.extend(layer_state)
        self._state_counts = counts
        return states

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self._state_counts is None:
            self.init_state(1)
        new_state: State = []
        offset = 0
        for layer, count in zip(self.layers, self._state_counts):
            if isinstance(layer, StreamingModule):
                x, layer_state = layer.step(x, state[offset:offset + count])
                new_state.extend(layer_state)
            else:
                x = layer(x)
            offset += count
        return x, new_state
