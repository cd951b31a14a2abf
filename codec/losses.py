"""Reconstruction and adversarial losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from voxtok.features import LogMel, num_mels_for_window


class MultiResolutionMelLoss(nn.Module):
    """L1 between log-mel spectrograms at several window lengths (DAC: 32 ... 2048 samples)."""

    def __init__(self, sample_rate: int, windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)):
        super().__init__()
        self.mels = nn.ModuleList(
            LogMel(sample_rate, w, w // 4, num_mels_for_window(w)) for w in windows
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros(())
        for mel in self.mels:
            total = total + F.l1_loss(mel(estimate), mel(target))
        return total / len(self.mels)


def discriminator_loss(real_scores: list[torch.Tensor], fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """Least-squares GAN loss for the discriminator (HiFi-GAN)."""
    loss = real_scores[0].new_zeros(())
    for real, fake in zip(real_scores, fake_scores):
        loss = loss + torch.mean((1 - real) ** 2) + torch.mean(fake**2)
    return loss / len(real_scores)


def generator_adversarial_loss(fake_scores: list[torch.Tensor]) -> torch.Tensor:
    loss = fake_scores[0].new_zeros(())
    for fake in fake_scores:
        loss = loss + torch.mean((1 - fake) ** 2)
    return loss / len(fake_scores)


def feature_matching_loss(real_features: list[list[torch.Tensor]],
                          fake_features: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 between discriminator activations on real and generated audio, each layer scaled by the
    real activation's mean magnitude so no layer dominates."""
    loss = fake_features[0][0].new_zeros(())
    count = 0
    for real_layers, fake_layers in zip(real_features, fake_features):
        for real, fake in zip(real_layers, fake_layers):
            real = real.detach()
            loss = loss + F.l1_loss(fake, real) / (real.abs().mean() + 1e-5)
            count += 1
    return loss / max(count, 1)
