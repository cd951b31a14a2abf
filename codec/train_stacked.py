"""Training the 12.5 Hz stage stacked on codec v2 (voxtok.stacked) on cached v2 latents: regression and flow
matching, no audio in the loop.

    loss = latent_weight * L1(decoded base latents, the base latents)              (per dimension, normalised)
         + [v2's regression terms on what v2's decoder makes of the decoded latents, against what it makes of the
            true ones: log-mel bands L1 (params_weight), log2 F0 L1 on voiced frames (f0_weight), voicing BCE
            (voicing_weight)]
         + flow_weight * CFM(flow decoder | tokens, detached) + shortcut_weight * shortcut self-consistency
         + kl_weight * mean(mu^2)                                     (the sigma-VAE's KL: an L2 on the mean)

Each crop's decoders read either the continuous tokens (mu normalised, plus noise of a random per-crop scale
|N(0, vae_noise)|: VibeVoice's sigma-VAE) or their FSQ twin (straight-through), with probability discrete_prob.
The flow decoder reads the tokens detached: it learns to decode them but does not shape them.

Data: `sources`, each "ROOT:SPLIT" (a split of a real corpus) or "ROOT" (a synthetic folder), encoded once by the
base codec into voxtok.data.latent_cache (filled on first use). Checkpoints, resume and logging are
codec.train.Trainer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from voxtok.config import StackedConfig
from voxtok.data.latent_cache import DEFAULT_CACHE, LatentCorpus, latent_sources
from voxtok.errors import VoxtokError
from voxtok.train import TrainConfig, Trainer


@dataclass
class StackedTrainConfig(TrainConfig):
    sources: list[str] = field(default_factory=lambda: ["../shared/data/real:train"])
    source_weights: list[float] = field(default_factory=list)  # default: in proportion to each source's length
    latent_cache: str = DEFAULT_CACHE
    crop_tokens: int = 50
    latent_weight: float = 1.0
    params_weight: float = 1.0
    f0_weight: float = 5.0
    voicing_weight: float = 1.0
    kl_weight: float = 1e-4
    vae_noise: float = 0.5
    discrete_prob: float = 0.5
    flow_weight: float = 1.0
    shortcut_weight: float = 0.0
    eval_flow_steps: int = 8
    # Train the decoders only: the encoder and the shipped latent statistics stay, so the tokens do not change.
    freeze_encoder: bool = False
    use_period_discriminator: bool = False
    use_resolution_discriminator: bool = False
    adversarial_start: int = 1 << 62


class LatentCropSampler:
    """Random crops of whole tokens (crop_tokens x frames_per_token base frames) from cached latents, with a mask
    over the frames that exist (files shorter than a crop are padded)."""

    def __init__(self, corpora: list[LatentCorpus], weights: list[float], crop_tokens: int, frames_per_token: int,
                 seed: int):
        self.corpora, self.crop_tokens, self.per = corpora, crop_tokens, frames_per_token
        totals = np.array([c.total_frames for c in corpora], dtype=np.float64)
        w = np.asarray(weights if weights else totals, dtype=np.float64)
        self.source_p = w / w.sum()
        self.file_p = [c.frames / c.frames.sum() for c in corpora]
        self.rng = np.random.default_rng(seed)

    def _crop(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.rng.choice(len(self.corpora), p=self.source_p)
        corpus = self.corpora[s]
        h = corpus.file(self.rng.choice(len(corpus), p=self.file_p[s]))
        frames = self.crop_tokens * self.per
        tokens = len(h) // self.per
        start = self.rng.integers(0, max(1, tokens - self.crop_tokens + 1)) * self.per
        piece = h[start:start + frames]
        out = np.zeros((frames, h.shape[1]), dtype=np.float32)
        mask = np.zeros(frames, dtype=np.float32)
        out[: len(piece)], mask[: len(piece)] = piece, 1.0
        return out.T, mask

    def batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """([B, dim, frames] latents, [B, frames] mask)."""
        crops = [self._crop() for _ in range(batch_size)]
        return np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops])


class StackedTrainer(Trainer):
    config_class = StackedTrainConfig

    def __init__(self, model_cfg: StackedConfig, cfg: StackedTrainConfig, device: str = "cpu",
                 progress: bool = True):
        from voxtok.compress import load_codec

        super().__init__(model_cfg, cfg, device, progress)
        base = load_codec(model_cfg.base_model)
        base.use_fast_encoder()
        base.decoder.float()
        if not model_cfg.base_tokens_hash:
            model_cfg.base_tokens_hash = base.tokens_hash()
        self.model.attach_base(base)
        self.model.to(self.device)
        self.resumed = False

    def load_checkpoint(self) -> bool:
        self.resumed = super().load_checkpoint()
        return self.resumed

    # ---- data ---------------------------------------------------------------------------------------------
    def build_data(self) -> None:
        from voxtok.eval.runner import read_manifest, read_split, select

        cfg, mcfg = self.cfg, self.model.config
        base = self.model.base
        named = latent_sources(base, cfg.sources, cfg.latent_cache, self.progress)
        for spec, corpus in named:
            print(f"data: {spec}: {len(corpus)} files, {corpus.total_frames / base.config.frame_rate / 3600:.2f} h "
                  "of cached base latents")
        if cfg.source_weights and len(cfg.source_weights) != len(named):
            raise VoxtokError(f"source_weights has {len(cfg.source_weights)} entries for {len(named)} sources")
        corpora = [c for _, c in named]
        self.sampler = LatentCropSampler(corpora, cfg.source_weights, cfg.crop_tokens,
                                         mcfg.feature_frames_per_token, seed=self.data_seed())
        if not self.resumed and not cfg.freeze_encoder:
            # The base latents' statistics: the stage's input normalisation and its decoder's output scale.
            sample = np.concatenate([c.latents[:: max(1, c.total_frames // 200_000)] for c in corpora])
            mean, std = torch.from_numpy(sample.mean(0)), torch.from_numpy(sample.std(0)).clamp(min=1e-4)
            for affine in (self.model.encoder.base_norm, self.model.decoder.base_denorm):
                affine.mean.copy_(mean)
                affine.std.copy_(std)
        root = Path(cfg.real_root)
        dev = select(read_manifest(root), read_split(cfg.dev_split), exclude_tags=["digits"])
        stride = max(1, len(dev) // max(1, cfg.eval_files))
        self.dev_rows = [{"path": e.path} for e in dev[::stride][: cfg.eval_files]]

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        h, mask = self.sampler.batch(self.cfg.batch_size)
        return torch.from_numpy(h).to(self.device), torch.from_numpy(mask).to(self.device)

    def initialize_quantizer(self) -> None:
        if self.model.quantizer.initialized():
            return
        with torch.no_grad():
            mu = torch.cat([self.model.encoder.from_base_latents(self.batch()[0]) for _ in range(8)])
        self.model.quantizer.initialize(mu)

    def prepare_export(self, batches: int = 32) -> None:
        """Latent statistics measured on training crops with the final weights (the EMA lags the encoder's last
        steps), from a fixed seed so an export is reproducible. A frozen encoder keeps its statistics."""
        if self.cfg.freeze_encoder:
            return
        self.build_data()
        self.sampler.rng = np.random.default_rng(12345)
        self.model.eval()
        with torch.no_grad():
            mu = torch.cat([self.model.encoder.from_base_latents(self.batch()[0]) for _ in range(batches)])
        self.model.quantizer.initialize(mu)
        print(f"latent statistics from {batches} batches: std {self.model.quantizer.latent_std.min():.3f}.."
              f"{self.model.quantizer.latent_std.max():.3f}")

    # ---- the step -----------------------------------------------------------------------------------------
    def base_parameter_losses(self, predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict:
        """What the base decoder makes of predicted base latents against what it makes of the true ones [B, dim,
        T]: log-mel L1, log2 F0 L1 where the target is voiced, voicing BCE against the target's probability."""
        decoder = self.model.base.decoder
        bands = decoder.parameters_head.bands
        with torch.no_grad():
            goal = decoder.raw_parameters(target)
        raw = decoder.raw_parameters(predicted)
        sub = mask.repeat_interleave(raw.shape[-1] // mask.shape[-1], dim=-1)[:, None]
        count = sub.sum().clamp(min=1)
        mel = ((raw[:, :bands] - goal[:, :bands]).abs() * sub).sum() / (count * bands)
        voiced = torch.sigmoid(goal[:, bands + 1:bands + 2])
        weight = voiced * sub
        f0 = ((raw[:, bands] - goal[:, bands]).abs()[:, None] * weight).sum() / weight.sum().clamp(min=1)
        voicing = (F.binary_cross_entropy_with_logits(raw[:, bands + 1:bands + 2], voiced, reduction="none")
                   * sub).sum() / count
        with torch.no_grad():
            decided = ((raw[:, bands + 1:bands + 2] > 0) != (goal[:, bands + 1:bands + 2] > 0)).float()
            voicing_error = (decided * sub).sum() / count
        return {"params_mel": mel, "params_f0": f0, "params_voicing": voicing,
                "f0_cents": 1200 * f0.item(), "voicing_error": float(voicing_error)}

    def train_step(self) -> dict:
        cfg, mcfg, model = self.cfg, self.model.config, self.model
        lr = self.set_generator_lr()
        h, mask = self.batch()
        hn = model.encoder.base_norm(h)
        if cfg.freeze_encoder:
            with torch.no_grad():
                mu = model.encoder.from_base_latents(h)
            z = model.quantizer.normalise(mu)
        else:
            mu = model.encoder.from_base_latents(h)
            model.quantizer.update_statistics(mu.detach())
            z = model.quantizer.normalise_by_batch(mu)
        b = z.shape[0]
        scale = torch.randn(b, 1, 1, device=z.device).abs() * cfg.vae_noise
        continuous = z + scale * torch.randn_like(z)
        discrete = model.quantizer.straight_through(z)
        use_discrete = (torch.rand(b, 1, 1, device=z.device) < cfg.discrete_prob).to(z.dtype)
        tokens = use_discrete * discrete + (1 - use_discrete) * continuous
        lead = mcfg.lookahead_tokens
        frame_lead = lead * mcfg.feature_frames_per_token
        padded = F.pad(tokens, (0, lead))
        predicted = model.decoder.normalised_path(padded)[..., frame_lead:]
        frame_mask = mask[:, None]
        count = (frame_mask.sum() * mcfg.base_latent_dim).clamp(min=1)
        latent = ((predicted - hn).abs() * frame_mask).sum() / count
        loss = cfg.latent_weight * latent
        figures = {"latent_l1": latent.item()}
        if cfg.params_weight or cfg.f0_weight or cfg.voicing_weight:
            terms = self.base_parameter_losses(model.decoder.base_denorm(predicted), h, mask)
            loss = loss + (cfg.params_weight * terms["params_mel"] + cfg.f0_weight * terms["params_f0"]
                           + cfg.voicing_weight * terms["params_voicing"])
            figures.update({k: float(v) for k, v in terms.items()})
        flow = model.flow
        residual = hn - predicted.detach()
        if not flow.residual_ready.item():
            flow.set_residual_scale(residual, mask)
        cond = flow.condition(flow.cond(padded.detach())[..., frame_lead:], predicted.detach())
        flow_loss = flow.loss(cond, residual, mask) if cfg.flow_weight else latent.new_zeros(())
        shortcut = latent.new_zeros(())
        if cfg.shortcut_weight:
            flow.shortcut.fill_(1)
            shortcut = flow.shortcut_loss(cond, residual, mask)
        kl = mu.pow(2).mean()
        loss = loss + cfg.flow_weight * flow_loss + cfg.shortcut_weight * shortcut + cfg.kl_weight * kl
        trainable = [p for p in model.parameters() if p.requires_grad]
        grad_norm = self.optimizer_step(self.opt_g, loss, trainable)
        with torch.no_grad():
            used = torch.unique(model.quantizer.codes_of_normalised(z.detach())).numel()
        return {"mel": figures.get("params_mel", latent.item()), **figures, "flow": flow_loss.item(),
                "shortcut": shortcut.item(), "kl": kl.item(), "codes_used": float(used), "grad_norm": grad_norm,
                "loss": loss.item(), "lr": lr}

    # ---- evaluation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Dev files (no digits) through both token kinds and both decoders, and the base at its full rate as
        the ceiling: log-mel L1, PESQ-WB and STOI (the last two when the eval extra is installed)."""
        from voxtok.audio import load_audio, save_audio
        from voxtok.train import _signal_metrics

        model = self.model
        model.eval()
        kind, steps = model.decoder_kind, model.flow_steps
        sr = model.config.sample_rate
        results: dict[str, list[float]] = {}
        sample_dir = self.out / "samples" / f"step_{self.step:07d}"
        for i, row in enumerate(self.dev_rows):
            ref = load_audio(Path(self.cfg.real_root) / row["path"], sr)[: sr * 10]
            x = torch.from_numpy(ref)[None, None].to(self.device)
            z = model.encode_latents(x)
            outputs = {}
            for token_kind, tokens in (("cont", z), ("fsq", model.quantizer.decode(model.quantizer
                                                                                   .codes_of_normalised(z)))):
                for decoder in ("regression", "flow"):
                    model.set_decoding(decoder, self.cfg.eval_flow_steps)
                    outputs[f"{token_kind}_{decoder}"] = model.decode_latents(tokens)[..., : x.shape[-1]]
            for name, y in outputs.items():
                results.setdefault(f"mel_{name}", []).append(self.mel_loss(y.float(), x).item())
                for metric, value in _signal_metrics(ref, y[0, 0].float().cpu().numpy()).items():
                    results.setdefault(f"{metric}_{name}", []).append(value)
                if i < 2:
                    save_audio(sample_dir / f"{i}_{name}.wav", y[0, 0].float().cpu().numpy(), sr)
            if i < 2:
                save_audio(sample_dir / f"{i}_ref.wav", ref, sr)
        model.set_decoding(kind, steps)
        model.train()
        return {k: float(np.mean(v)) for k, v in results.items()}

