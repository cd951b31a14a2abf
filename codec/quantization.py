"""Residual vector quantizer: vector-quantize-pytorch's ResidualVQ for training (EMA codebooks, k-means
init, dead-code expiry, quantizer dropout), and a plain nearest-neighbour search over its codebooks for
inference. The hand-written search gives the same indices, lets callers pick how many codebooks to use,
and exports to ONNX, which ResidualVQ itself does not."""

from __future__ import annotations

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ


def dead_code_churn_warning(threshold: float, frames_per_step: float, codebook_size: int) -> str | None:
    """A warning line when dead-code expiry would re-draw a large share of every codebook at every step.

    vector-quantize-pytorch replaces each code whose EMA use per step is below `threshold` with a vector of the
    batch. EnCodec's 2.0 is 0.4x the mean use with its 4,800 frames per step over 1,024 codes; at v2's 1,600 frames
    (mean use 1.56) it re-drew 43-55% of every codebook at every step, so the codebooks never settled and a shipped
    model's were half a snapshot of its last batch. Above a quarter of the mean use this says so."""
    if threshold <= 0 or frames_per_step <= 0:
        return None
    mean_use = frames_per_step / codebook_size
    if threshold <= 0.25 * mean_use:
        return None
    return (f"warning: dead_code_threshold {threshold:g} is {threshold / mean_use:.2f}x a code's mean use per step "
            f"({frames_per_step:.0f} frames over {codebook_size} codes): much of every codebook will be re-drawn at "
            f"every step; use at most {0.25 * mean_use:.2g} or larger batches")


class ResidualQuantizer(nn.Module):
    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, decay: float = 0.99,
                 dead_code_threshold: float = 2.0, kmeans_iters: int = 10):
        super().__init__()
        self.dim = dim
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.rvq = ResidualVQ(
            dim=dim,
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            decay=decay,
            kmeans_init=True,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=dead_code_threshold,
            quantize_dropout=num_quantizers > 1,
            quantize_dropout_cutoff_index=0,
            commitment_weight=1.0,
        )

    @property
    def codebooks(self) -> torch.Tensor:
        """[num_quantizers, codebook_size, dim]."""
        return self.rvq.codebooks

    def initialized(self) -> bool:
        return all(bool(layer._codebook.initted.item()) for layer in self.rvq.layers)

    @torch.no_grad()
    def initialize(self, latents: torch.Tensor) -> None:
        """Run every layer once without dropout, so lazy k-means init happens for all of them.

        With quantizer dropout a deep layer may not see data for many steps, and an uninitialised codebook
        would silently be initialised from whatever batch reaches it first, even in eval().
        """
        dropout = self.rvq.quantize_dropout
        self.rvq.quantize_dropout = False
        was_training = self.training
        self.train()
        self.rvq(latents.transpose(1, 2))
        self.rvq.quantize_dropout = dropout
        self.train(was_training)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training path on [B, dim, T]: (quantized [B, dim, T], codes [B, n_q, T] with -1 for dropped
        layers, commitment loss)."""
        quantized, codes, commit = self.rvq(latents.transpose(1, 2))
        return quantized.transpose(1, 2), codes.transpose(1, 2), commit.sum()

    def encode(self, latents: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """[B, dim, T] -> codes [B, n_q, T] (int64) by greedy residual nearest-neighbour search."""
        n_q = num_quantizers or self.num_quantizers
        residual = latents.transpose(1, 2)
        codebooks = self.codebooks
        codes = []
        for i in range(n_q):
            book = codebooks[i].to(residual.dtype)
            dist = (book * book).sum(-1) - 2 * residual @ book.t()
            index = dist.argmin(-1)
            codes.append(index)
            residual = residual - book[index]
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n_q, T] -> quantized latents [B, dim, T] (sum of the chosen code vectors)."""
        codebooks = self.codebooks
        out = codebooks[0][codes[:, 0]]
        for i in range(1, codes.shape[1]):
            out = out + codebooks[i][codes[:, i]]
        return out.transpose(1, 2)
