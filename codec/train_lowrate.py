"""Training the 12.5 Hz tokenizer (voxtok.lowrate) on a CPU: regression and flow matching, no GAN.

    loss = [the v2 regression terms on the regression decoder's synthesiser parameters]   (voxtok.train_harmonic)
         + flow_weight * CFM(flow decoder | latents, detached)
         + kl_weight * mean(mu^2)                                   (the sigma-VAE's KL: an L2 on the mean)

Each crop's decoders read either the continuous tokens, mu normalised plus noise of a random per-crop scale
(|N(0, vae_noise)|, VibeVoice's sigma-VAE: the scale is drawn, not learned, so the latent cannot collapse its
variance), or their FSQ twin (straight-through), with probability discrete_prob. The flow decoder reads the
latents detached: it learns to decode them but does not shape them, so it and the regression control decode the
same tokens. The encoder and regression decoder may start from codec v2's weights (`init_from`): their layers
before the 12.5 Hz stage have v2's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from voxtok.config import LowRateConfig
from voxtok.train_harmonic import HarmonicTrainConfig, HarmonicTrainer


@dataclass
class LowRateTrainConfig(HarmonicTrainConfig):
    flow_weight: float = 1.0
    kl_weight: float = 1e-4
    vae_noise: float = 0.5
    discrete_prob: float = 0.5
    # Shortcut self-consistency (voxtok.lowrate.FlowDecoder.shortcut_loss): the few-step flow decoder.
    shortcut_weight: float = 0.0
    init_from: str = ""  # a codec v2 model folder whose encoder / decoder layers start this model
    eval_flow_steps: int = 8
    # Train the decoders only: the encoder and the shipped latent statistics stay as they are, so the tokens do
    # not change and LMs trained on them keep working with the new decoders.
    freeze_encoder: bool = False


class LowRateTrainer(HarmonicTrainer):
    config_class = LowRateTrainConfig

    def __init__(self, model_cfg: LowRateConfig, cfg: LowRateTrainConfig, device: str = "cpu",
                 progress: bool = True):
        super().__init__(model_cfg, cfg, device, progress)

    def load_checkpoint(self) -> bool:
        self._upgrade_checkpoint()
        resumed = super().load_checkpoint()
        if not resumed and self.cfg.init_from:
            copied = initialise_from_v2(self.model, self.cfg.init_from)
            print(f"initialised {copied} tensors from {self.cfg.init_from}")
        return resumed

    # Tensors added to the model after checkpoints existed, all registered last (so the optimizer's parameter
    # order is unchanged) and all starting at zero: a checkpoint without them gets zeros and fresh Adam moments.
    ADDED_TENSORS = ("flow.velocity.step_size.weight", "flow.velocity.step_size.bias", "flow.shortcut",
                     "flow.prior.weight", "flow.prior.bias", "flow.residual_std", "flow.residual_ready")

    def _upgrade_checkpoint(self) -> None:
        import json

        from safetensors.torch import load_file, save_file

        weights = self.ckpt / "model.safetensors"
        if not weights.is_file():
            return
        state = load_file(str(weights))
        missing = [k for k in self.ADDED_TENSORS if k not in state]
        if not missing:
            return
        current = self.model.state_dict()
        state.update({k: torch.zeros_like(current[k]) for k in missing})
        save_file(state, str(weights), metadata={"format": "pt"})
        trainer_state = json.loads((self.ckpt / "trainer_state.json").read_text())
        groups = trainer_state["optimizers"]["g"]["param_groups"]
        groups[-1]["params"] = list(range(sum(len(g["params"]) for g in groups[:-1]),
                                          len(list(self.model.parameters()))))
        (self.ckpt / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        print(f"checkpoint upgraded: {', '.join(missing)} added (zeros)")

    @torch.no_grad()
    def prepare_export(self, batches: int = 32) -> None:
        """Latent statistics measured exactly on training crops with the final weights (the EMA lags the
        encoder's last steps), from a fixed seed so an export is reproducible. A frozen encoder keeps the
        statistics it came with: they define the tokens."""
        if self.cfg.freeze_encoder:
            return
        self.build_data()
        self.sampler.rng = np.random.default_rng(12345)
        self.model.eval()
        latents = torch.cat([self.model.encoder(self.batch()) for _ in range(batches)])
        self.model.quantizer.initialize(latents)
        print(f"latent statistics from {batches} batches: mean |mu| {latents.abs().mean():.3f}, "
              f"std {self.model.quantizer.latent_std.min():.3f}..{self.model.quantizer.latent_std.max():.3f}")

    def train_step(self) -> dict:
        cfg, mcfg, model = self.cfg, self.model.config, self.model
        lr = self.set_generator_lr()
        audio, f0, voiced, mask, phones, context, context_mask, sentence = self.next_batch()
        with torch.no_grad():
            target_mel = self.analysis(audio)
        flow = model.flow
        targets = flow.targets(target_mel, f0, voiced)
        if not flow.stats_ready.item():
            flow.set_statistics(targets, mask)
        if cfg.freeze_encoder:
            with torch.no_grad():
                mu = model.encoder(audio)
            z = model.quantizer.normalise(mu)
        else:
            mu = model.encoder(audio)
            model.quantizer.update_statistics(mu.detach())
            z = model.quantizer.normalise_by_batch(mu)
        b = z.shape[0]
        scale = torch.randn(b, 1, 1, device=z.device).abs() * cfg.vae_noise
        continuous = z + scale * torch.randn_like(z)
        discrete = model.quantizer.straight_through(z)
        use_discrete = (torch.rand(b, 1, 1, device=z.device) < cfg.discrete_prob).to(z.dtype)
        tokens = use_discrete * discrete + (1 - use_discrete) * continuous
        # The decoders run lookahead_tokens behind: feed that many zero tokens more and drop as much output.
        lead = mcfg.lookahead_tokens
        padded = F.pad(tokens, (0, lead))
        sub_lead = lead * mcfg.subframes_per_frame
        raw = model.decoder.raw_parameters(padded)[..., sub_lead:]
        mel, f0_loss, voicing, figures = self.parameter_losses(raw, target_mel, f0, voiced, mask)
        frame_lead = lead * mcfg.feature_frames_per_token
        # The flow learns the residual over the regression decoder's (detached) prediction, and sees it.
        prior = flow.prior_mean(model.decoder.parameters_head.squash(raw.detach()))
        cond = flow.condition(flow.cond(padded.detach())[..., frame_lead:], prior)
        per = mcfg.subframes_per_feature_frame
        feature_mask = mask.reshape(b, -1, per).amin(dim=-1)
        residual = flow.fold(targets) - prior
        if not flow.residual_ready.item():
            flow.set_residual_scale(residual, feature_mask)
        flow_loss = flow.loss(cond, residual, feature_mask)
        shortcut = flow_loss.new_zeros(())
        if cfg.shortcut_weight:
            flow.shortcut.fill_(1)
            shortcut = flow.shortcut_loss(cond, residual, feature_mask)
        kl = mu.pow(2).mean()
        loss = (cfg.mel_weight * mel + cfg.f0_weight * f0_loss + cfg.voicing_weight * voicing
                + cfg.flow_weight * flow_loss + cfg.shortcut_weight * shortcut + cfg.kl_weight * kl)
        term_figures = {}
        if len(self.terms):
            # The distillation terms read the latent mean, normalised (what the LMs read): [terms.phone] puts the
            # phones into it, as the phone head on the latent asks; labels are per 80 ms token.
            from voxtok.distill import TermInputs

            inputs = TermInputs(z, [z], phones=phones, context=context.float(), context_mask=context_mask,
                                sentence=sentence, audio=audio, decoded=self.decoded_for_terms(raw, audio.shape[-1]))
            for term in self.terms.values():
                term_loss, figures_k = term(inputs)
                loss = loss + term.weight * term_loss
                term_figures.update(figures_k)
            self.set_term_lr(lr)
        grad_norm = self.optimizer_step(self.opt_g, loss, list(model.parameters()) + list(self.terms.parameters()))
        if self.opt_terms is not None:
            self.opt_terms.step()
        with torch.no_grad():
            levels = model.quantizer.levels_of(z)
            used = torch.unique(model.quantizer.encode(mu.detach())).numel()
        return {"mel": mel.item(), **figures, "flow": flow_loss.item(), "shortcut": shortcut.item(), "kl": kl.item(),
                "mid_level": (levels == (mcfg.fsq_levels - 1) // 2).float().mean().item(),
                "codes_used": float(used), "grad_norm": grad_norm, "loss": loss.item(), **term_figures}

    def synth_delay(self) -> int:
        """The parameters train_step holds have the decoders' look-ahead dropped already."""
        mcfg = self.model.config
        return mcfg.decoder_delay - mcfg.lookahead_tokens * mcfg.hop_length

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Dev files through both token kinds and both decoders: log-mel L1 (and PESQ-WB / STOI when the eval
        extra is installed)."""
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
            latents = {"cont": model.encode_latents(x), "fsq": model.quantizer.decode(model.encode(x))}
            for token_kind, z in latents.items():
                for decoder in ("regression", "flow"):
                    model.set_decoding(decoder, self.cfg.eval_flow_steps)
                    y = model.decode_latents(z)[..., : x.shape[-1]]
                    name = f"{token_kind}_{decoder}"
                    results.setdefault(f"mel_{name}", []).append(self.mel_loss(y, x).item())
                    for metric, value in _signal_metrics(ref, y[0, 0].cpu().numpy()).items():
                        results.setdefault(f"{metric}_{name}", []).append(value)
                    if i < 2:
                        save_audio(sample_dir / f"{i}_{name}.wav", y[0, 0].cpu().numpy(), sr)
            if i < 2:
                save_audio(sample_dir / f"{i}_ref.wav", ref, sr)
        model.set_decoding(kind, steps)
        model.train()
        return {k: float(np.mean(v)) for k, v in results.items()}


def initialise_from_v2(model, directory: str) -> int:
    """Copy codec v2's encoder layers 0-10 and decoder layers 1-9 (its LayerNorms, ConvNeXt blocks and parameter
    head) into the low-rate model where the shapes match; returns how many tensors were copied."""
    from safetensors.torch import load_file
    from voxtok.errors import VoxtokError

    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise VoxtokError(f"init_from: {directory} has no model.safetensors")
    source = load_file(str(path))
    target = model.state_dict()
    copied = 0
    for name, tensor in source.items():
        parts = name.split(".")
        if parts[0] == "encoder" and parts[1] == "layers" and int(parts[2]) <= 10:
            mapped = name
        elif parts[0] == "decoder" and parts[1] == "layers" and 1 <= int(parts[2]) <= 9:
            mapped = ".".join(["decoder", "layers", str(int(parts[2]) + 1), *parts[3:]])
        else:
            continue
        if mapped in target and target[mapped].shape == tensor.shape:
            target[mapped].copy_(tensor.to(target[mapped].dtype))
            copied += 1
    return copied
