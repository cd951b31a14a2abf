"""Auxiliary training terms on the codec's tokens, chosen by the recipe: each term is a class registered here and
configured by its own table, `[terms.NAME]`, so adding one never edits the trainer's loss sum.

    [terms.phone]          # semantic distillation: RVQ-1 predicts the frame's phone
    weight = 1.0

A term reads a TermInputs (the encoder's latents, the first codebook's quantized output passed straight through
to the encoder, and the batch's labels) and returns (loss, figures to log). Its own weights (a head) are trained
beside the codec and saved in the checkpoint, not in the shipped model: the codec's interface stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.data.align import PHONES
from codec.errors import VoxtokError


@dataclass
class TermInputs:
    latents: torch.Tensor  # [B, dim, T] encoder output
    first_codebook: torch.Tensor  # [B, dim, T] RVQ-1's code vectors, gradient straight through to the encoder
    phones: torch.Tensor | None = None  # [B, T] phone index per code frame, -1 where unlabelled


class LossTerm(nn.Module):
    """One auxiliary term. `needs` names the labels it reads (the trainer loads them only when asked)."""

    name: str = ""
    needs: frozenset[str] = frozenset()

    def __init__(self, latent_dim: int, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


TERMS: dict[str, type[LossTerm]] = {}


def register(cls: type[LossTerm]) -> type[LossTerm]:
    TERMS[cls.name] = cls
    return cls


@register
class PhoneTerm(LossTerm):
    """Semantic distillation without a self-supervised teacher (PAST's recipe): a linear head on the first
    codebook's code vector predicts the frame's forced-aligned phone (framewise cross-entropy, silence a class),
    so RVQ-1 has to carry the phones."""

    name = "phone"
    needs = frozenset({"phones"})

    def __init__(self, latent_dim: int, weight: float = 1.0):
        super().__init__(latent_dim, weight)
        self.head = nn.Conv1d(latent_dim, len(PHONES), 1)

    def forward(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, float]]:
        labels = inputs.phones
        logits = self.head(inputs.first_codebook)  # [B, phones, T]
        frames = min(logits.shape[-1], labels.shape[-1])
        logits, labels = logits[..., :frames], labels[:, :frames]
        known = labels >= 0
        if not bool(known.any()):
            return logits.sum() * 0.0, {"phone_frames": 0.0}
        loss = F.cross_entropy(logits.transpose(1, 2)[known], labels[known])
        with torch.no_grad():
            accuracy = (logits.argmax(1)[known] == labels[known]).float().mean()
        return loss, {"phone_ce": loss.item(), "phone_accuracy": accuracy.item(),
                      "phone_frames": float(known.sum())}


def build_terms(tables: dict, latent_dim: int) -> nn.ModuleDict:
    """The recipe's [terms.*] tables -> the term modules, by registered name."""
    terms = nn.ModuleDict()
    for name, table in tables.items():
        if name not in TERMS:
            raise VoxtokError(f"unknown training term [terms.{name}]; known: {', '.join(sorted(TERMS))}")
        if not isinstance(table, dict):
            raise VoxtokError(f"[terms.{name}] must be a table")
        try:
            terms[name] = TERMS[name](latent_dim, **table)
        except TypeError as exc:
            raise VoxtokError(f"[terms.{name}]: {exc}") from None
    return terms


def first_codebook_straight_through(latents: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor
                                    ) -> torch.Tensor:
    """RVQ-1's code vectors [B, dim, T] whose gradient goes to the latents (the straight-through estimator, as
    the quantizer itself passes gradients), so a term on them trains the encoder."""
    first = codebooks[0][codes[:, 0].clamp(min=0)].transpose(1, 2).to(latents.dtype)
    return latents + (first - latents).detach()
