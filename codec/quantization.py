"""Residual vector quantizer: vector-quantize-pytorch's ResidualVQ for training (EMA codebooks, k-means
init, dead-code expiry, quantizer dropout), and a plain nearest-neighbour search over its codebooks for
inference. The hand-written search gives the same indices, lets callers pick how many codebooks to use,
and exports to ONNX, which ResidualVQ itself does not."""

from __future__ import annotations

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ


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
