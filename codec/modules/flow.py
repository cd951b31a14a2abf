"""Conditional flow matching pieces shared by the 12.5 Hz tokenizers' flow decoders (voxtok.lowrate, voxtok.stacked):
a causal velocity net conditioned on the flow time, and the residual flow's training and sampling rules.

A residual flow models x1 = target - mu over a regression prediction mu (PriorGrad's data-dependent prior, as a
mean): the path is OT-CFM's straight line x_t = (1 - t) x0 + t x1 with velocity x1 - x0, the starting noise x0 is
scaled per feature by the residual's measured spread, and sampling integrates Euler steps from noise read out of
a fixed table by frame position, so decoding a file twice, or in chunks, draws the same noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from voxtok.modules.conv import CausalConv1d
from voxtok.modules.convnext import ChannelLayerNorm
from voxtok.modules.streaming import State, StreamingModule

# The noise table: wraps after this many frames (82 s at 50 Hz); its seed fixes what every decode draws.
NOISE_FRAMES = 4096
NOISE_SEED = 1234


def fixed_noise(features: int) -> torch.Tensor:
    """[features, NOISE_FRAMES] standard normal noise, the same on every machine."""
    generator = torch.Generator().manual_seed(NOISE_SEED)
    return torch.randn(features, NOISE_FRAMES, generator=generator)


class FlowBlock(StreamingModule):
    """A causal ConvNeXt block whose normalised activations are scaled, shifted and gated by the flow time
    (adaptive LayerNorm, as DiT and the flow heads of VibeVoice / Pocket TTS condition on it)."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int):
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, kernel_size, groups=dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation = nn.Linear(dim, 3 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.pwconv1 = nn.Linear(dim, hidden_dim)
        self.pwconv2 = nn.Linear(hidden_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def _mix(self, x: torch.Tensor, mixed: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.modulation(time)[:, None].chunk(3, dim=-1)
        h = self.norm(mixed.transpose(1, 2)) * (1 + scale) + shift
        h = self.pwconv2(F.gelu(self.pwconv1(h))) * (self.gamma * (1 + gate))
        return x + h.transpose(1, 2)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self._mix(x, self.dwconv(x), time)

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        return self.dwconv.init_state(batch_size, device, dtype)

    def step(self, x: torch.Tensor, time: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        mixed, new_state = self.dwconv.step(x, state)
        return self._mix(x, mixed, time), new_state


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[B] flow times in [0, 1] -> [B, dim] sinusoids."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class VelocityNet(nn.Module):
    """(x_t [B, F, T], flow time [B], conditioning [B, dim, T]) -> velocity [B, F, T]; causal in T."""

    def __init__(self, features: int, cfg):
        """cfg: any config with flow_dim, flow_layers, mlp_ratio and kernel_size."""
        super().__init__()
        dim = cfg.flow_dim
        self.dim = dim
        self.inp = nn.Conv1d(features, dim, 1)
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(FlowBlock(dim, int(dim * cfg.mlp_ratio), cfg.kernel_size)
                                    for _ in range(cfg.flow_layers))
        self.norm = ChannelLayerNorm(dim)
        self.out = nn.Conv1d(dim, features, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # The shortcut's step size d (Frans et al. 2024): d = 0 is the instantaneous velocity flow matching learns,
        # d > 0 the average velocity over a step of that size. Zero-initialised, so it starts as plain flow matching.
        self.step_size = nn.Linear(dim, dim)
        nn.init.zeros_(self.step_size.weight)
        nn.init.zeros_(self.step_size.bias)

    def _time(self, t: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        time = self.time(time_embedding(t, self.dim))
        if d is not None:
            time = time + self.step_size(time_embedding(d, self.dim))
        return time

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, d: torch.Tensor | None = None
                ) -> torch.Tensor:
        h, time = self.inp(x) + cond, self._time(t, d)
        for block in self.blocks:
            h = block(h, time)
        return self.out(self.norm(h))

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> State:
        return [s for block in self.blocks for s in block.init_state(batch_size, device, dtype)]

    def step(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, state: State,
             d: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        h, time = self.inp(x) + cond, self._time(t, d)
        new_state: State = []
        for block, block_state in zip(self.blocks, state):
            h, s = block.step(h, time, [block_state])
            new_state.extend(s)
        return self.out(self.norm(h)), new_state


class ResidualFlowRules:
    """Training and sampling of a residual flow, for a module that has `velocity` (a VelocityNet), `features`, and
    the buffers `noise` (fixed_noise), `residual_std` / `residual_ready` (the starting noise's scale per feature)
    and `shortcut` (1 once the shortcut objective has trained the step-size input)."""

    @torch.no_grad()
    def set_residual_scale(self, residual: torch.Tensor, mask: torch.Tensor) -> None:
        """Per-feature std of residuals [B, features, T] over frames where mask [B, T] is 1."""
        weight = mask[:, None].expand_as(residual)
        count = weight.sum(dim=(0, 2)).clamp(min=1)
        mean = (residual * weight).sum(dim=(0, 2)) / count
        var = (((residual - mean[None, :, None]) ** 2) * weight).sum(dim=(0, 2)) / count
        self.residual_std.copy_(var.sqrt().clamp(min=0.02))
        self.residual_ready.fill_(1)

    def start_noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(like) * self.residual_std.to(like.dtype)[:, None]

    def loss(self, cond: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked MSE between the predicted and the straight path's velocity; target [B, features, T] normalised,
        mask [B, T] at the feature rate."""
        b = target.shape[0]
        t = torch.rand(b, device=target.device, dtype=target.dtype)
        x0 = self.start_noise(target)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * target
        error = (self.velocity(xt, t, cond) - (target - x0)) ** 2
        weight = mask[:, None]
        return (error * weight).sum() / (weight.sum() * self.features).clamp(min=1)

    def shortcut_loss(self, cond: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      max_log2_steps: int = 7) -> torch.Tensor:
        """Self-consistency (shortcut models): one step of size 2d must land where two steps of size d do, the
        two-step target computed without gradient. d = 2^-k, k in 1..max_log2_steps; t on the grid of 2d."""
        b = target.shape[0]
        k = torch.randint(1, max_log2_steps + 1, (b,), device=target.device)
        d = torch.exp2(-k.to(target.dtype))
        t = torch.floor(torch.rand(b, device=target.device, dtype=target.dtype) / (2 * d)) * 2 * d
        x0 = self.start_noise(target)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * target
        with torch.no_grad():
            v1 = self.velocity(xt, t, cond, d)
            v2 = self.velocity(xt + d[:, None, None] * v1, t + d, cond, d)
            goal = (v1 + v2) / 2
        error = (self.velocity(xt, t, cond, 2 * d) - goal) ** 2
        weight = mask[:, None]
        return (error * weight).sum() / (weight.sum() * self.features).clamp(min=1)

    def step_size(self, steps: int, batch: int, like: torch.Tensor) -> torch.Tensor | None:
        """The step-size input for `steps` Euler steps: 1 / steps after shortcut training, else none."""
        if not int(self.shortcut.item()):
            return None
        return torch.full((batch,), 1.0 / steps, device=like.device, dtype=like.dtype)

    def noise_at(self, position: int | torch.Tensor, frames: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """The starting noise for frames position.. (the fixed table, scaled like start_noise)."""
        index = torch.remainder(torch.arange(frames, device=self.noise.device) + position, NOISE_FRAMES)
        scaled = self.noise[:, index] * self.residual_std[:, None].to(self.noise.dtype)
        return scaled.to(dtype)[None].expand(batch, -1, -1)

    def sample(self, cond: torch.Tensor, steps: int, temperature: float = 1.0, position: int = 0) -> torch.Tensor:
        """Offline: conditioning [B, dim, T] (condition()) -> the residual [B, features, T] by `steps` Euler steps."""
        b, _, frames = cond.shape
        x = temperature * self.noise_at(position, frames, b, cond.dtype)
        d = self.step_size(steps, b, cond)
        for k in range(steps):
            t = torch.full((b,), k / steps, device=cond.device, dtype=cond.dtype)
            x = x + self.velocity(x, t, cond, d) / steps
        return x
