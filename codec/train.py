"""Codec training: mel + commitment from step 0, adversarial (multi-period + multi-resolution STFT
discriminators) + feature matching from `adversarial_start`. Resumable from safetensors checkpoints.

Data-parallel under torchrun (`torchrun --nproc_per_node N -m voxtok train RECIPE`, gloo on CPU, NCCL on GPUs):
every rank starts from the same weights, draws its own crops, and after each backward the gradients are averaged
across ranks; the quantizer's EMA codebooks (buffers, not gradients) are broadcast from rank 0 after each step
so all ranks keep one codebook. Rank 0 alone logs, evaluates and writes checkpoints.

A recipe is a TOML file (see recipes/codec_16k.toml) with [model], [data], [optim], [loss] and [train]
tables; `voxtok train RECIPE` runs it and resumes if its output folder already holds a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from voxtok.config import CodecConfig
from voxtok.dataset import CropSampler, load_source, read_manifest
from voxtok.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from voxtok.errors import VoxtokError
from voxtok.loading import model_class_for
from voxtok.losses import (
    MultiResolutionMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from voxtok.quantization import ResidualQuantizer, dead_code_churn_warning


@dataclass
class TrainConfig:
    out_dir: str = "runs/codec_16k"
    seed: int = 0
    steps: int = 20000
    batch_size: int = 8
    crop_seconds: float = 1.0
    lr: float = 6e-4
    disc_lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    mel_weight: float = 15.0
    commit_weight: float = 1.0
    adversarial_weight: float = 1.0
    feature_weight: float = 2.0
    adversarial_start: int = 4000
    use_period_discriminator: bool = True
    use_resolution_discriminator: bool = True
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 250
    eval_files: int = 8
    threads: int = 0
    # Data: real speech root + split file, plus any synthetic corpora (folders with manifest.jsonl).
    real_root: str = "../shared/data/real"
    real_split: str = "codec/splits/real_train.txt"
    real_weight: float = 1.0
    synth_dirs: list[str] = field(default_factory=list)
    synth_weight: float = 1.0
    dev_split: str = "codec/splits/real_dev.txt"


def _init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size): under torchrun (WORLD_SIZE > 1) join the process group, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def average_gradients(parameters, world_size: int) -> None:
    """Data-parallel: every rank's gradients replaced by their mean over the ranks (no-op on one rank)."""
    if world_size > 1:
        import torch.distributed as dist

        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world_size


def barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def agree(flag: bool, world_size: int) -> bool:
    """True on every rank when it is true on any (ranks must stop at the same step)."""
    if world_size == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def learning_rate(step: int, base: float, cfg: TrainConfig) -> float:
    """Linear warm-up over cfg.warmup_steps, then a cosine to cfg.min_lr_ratio of `base` at cfg.steps: the
    schedule of every voxtok trainer (codecs, speech LMs, the phone teacher; any config with those fields)."""
    if step < cfg.warmup_steps:
        return base * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return base * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- optimizer state as safetensors (no pickle) ------------------------------------------------
def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    state = opt.state_dict()
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{prefix}.{index}.{key}"] = value.contiguous()
            else:
                scalars["state"].setdefault(str(index), {})[key] = float(value)
    return tensors, scalars


def restore_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict, scalars: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        head, index, key = name.split(".", 2)
        if head == prefix:
            state.setdefault(int(index), {})[key] = value
    for index, entry in scalars["state"].items():
        for key, value in entry.items():
            state.setdefault(int(index), {})[key] = torch.tensor(value)
    opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def _signal_metrics(ref: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """PESQ-WB and STOI as `voxtok eval` computes them, when the eval extra is installed."""
    try:
        from voxtok.eval.metrics import MetricUndefined, pesq_wb, stoi
    except ImportError:
        return {}
    out = {}
    for name, fn in (("pesq", pesq_wb), ("stoi", stoi)):
        try:
            out[name] = fn(ref, decoded)
        except (MetricUndefined, ImportError):
            pass
    return out


class Trainer:
    config_class = TrainConfig

    def __init__(self, model_cfg: CodecConfig, cfg: TrainConfig, device: str = "cpu", progress: bool = True):
        self.rank, self.world_size = _init_distributed(device)
        if self.world_size > 1 and device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.cfg, self.device = cfg, torch.device(device)
        self.progress = progress and self.rank == 0
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model = model_class_for(model_cfg)(model_cfg).to(self.device)
        self.mpd = MultiPeriodDiscriminator().to(self.device) if cfg.use_period_discriminator else None
        self.mrd = MultiResolutionDiscriminator().to(self.device) if cfg.use_resolution_discriminator else None
        self.discriminators = [d for d in (self.mpd, self.mrd) if d is not None]
        self.mel_loss = MultiResolutionMelLoss(model_cfg.sample_rate).to(self.device)
        self.opt_g = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                       weight_decay=cfg.weight_decay)
        disc_params = [p for d in self.discriminators for p in d.parameters()]
        self.opt_d = torch.optim.AdamW(disc_params, lr=cfg.disc_lr, betas=cfg.betas,
                                       weight_decay=cfg.weight_decay) if disc_params else None
        self.step = 0
        self.rewarm_from: int | None = None
        self.out = Path(cfg.out_dir)
        self.ckpt = self.out / "checkpoint"
        self.writer = None
        if isinstance(getattr(self.model, "quantizer", None), ResidualQuantizer) and self.rank == 0:
            frames = cfg.batch_size * cfg.crop_seconds * model_cfg.frame_rate
            churn = dead_code_churn_warning(model_cfg.dead_code_threshold, frames, model_cfg.codebook_size)
            if churn:
                print(churn)

    # ---- data ------------------------------------------------------------------------------------
    def build_data(self) -> None:
        cfg, sr = self.cfg, self.model.config.sample_rate
        sources = [load_source("real", cfg.real_root, cfg.real_weight, sr, cfg.real_split, self.progress)]
        for d in cfg.synth_dirs:
            if (Path(d) / "manifest.jsonl").is_file():
                sources.append(load_source(f"synth:{d}", d, cfg.synth_weight / len(cfg.synth_dirs), sr,
                                           progress=self.progress))
            else:
                print(f"warning: synthetic corpus {d} not found (run `voxtok synth {d}`); training without it")
        for s in sources:
            print(f"data: {s.name}: {len(s.clips)} files, {s.seconds / 60:.1f} min, weight {s.weight}")
        self.sampler = CropSampler(sources, int(cfg.crop_seconds * sr), seed=self.data_seed())
        dev_rows = read_manifest(cfg.real_root, cfg.dev_split)
        # A fixed, varied handful: every k-th dev file.
        stride = max(1, len(dev_rows) // max(1, cfg.eval_files))
        self.dev_rows = dev_rows[::stride][: cfg.eval_files]

    def batch(self) -> torch.Tensor:
        return torch.from_numpy(self.sampler.batch(self.cfg.batch_size)).to(self.device)

    def data_seed(self) -> int:
        """Crops differ by rank and by the step a run resumed at, and repeat for the same (seed, step, rank)."""
        return self.cfg.seed + self.step + 1_000_003 * self.rank

    # ---- data-parallel ---------------------------------------------------------------------------------
    def set_generator_lr(self) -> float:
        """This step's learning rate (the schedule, re-warmed after a resume without optimizer state), set on the
        generator's optimizer and returned."""
        cfg = self.cfg
        lr = learning_rate(self.step, cfg.lr, cfg)
        if self.rewarm_from is not None and self.step - self.rewarm_from < cfg.warmup_steps:
            lr *= (self.step - self.rewarm_from + 1) / cfg.warmup_steps
        for group in self.opt_g.param_groups:
            group["lr"] = lr
        return lr

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                       parameters: list[torch.nn.Parameter]) -> float:
        """zero_grad, backward, average the gradients over ranks, clip, step; returns the gradient norm."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(parameters, self.world_size)
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, self.cfg.grad_clip))
        optimizer.step()
        return norm

    def sync_buffers(self) -> None:
        """Rank 0's buffers (the EMA codebooks and their statistics) to every rank."""
        if self.world_size > 1:
            import torch.distributed as dist

            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)

    # ---- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        disc_state = {}
        for name, d in (("mpd", self.mpd), ("mrd", self.mrd)):
            if d is not None:
                disc_state.update({f"{name}.{k}": v.contiguous() for k, v in d.state_dict().items()})
        if disc_state:
            save_file(disc_state, str(tmp / "discriminators.safetensors"))
        tensors, scalars = optimizer_tensors(self.opt_g, "g")
        meta = {"g": scalars}
        if self.opt_d is not None:
            d_tensors, d_scalars = optimizer_tensors(self.opt_d, "d")
            tensors.update(d_tensors)
            meta["d"] = d_scalars
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        self.save_extra(tmp)
        (tmp / "trainer_state.json").write_text(json.dumps(
            {"step": self.step, "optimizers": meta, "train_config": self.cfg.__dict__}, indent=1))
        shutil.rmtree(self.ckpt, ignore_errors=True)
        os.replace(tmp, self.ckpt)

    def load_checkpoint(self) -> bool:
        if not (self.ckpt / "trainer_state.json").is_file():
            return False
        state = json.loads((self.ckpt / "trainer_state.json").read_text())
        weights = load_file(str(self.ckpt / "model.safetensors"), device=str(self.device))
        self.model.load_state_dict(weights)
        step = state["step"]
        discriminators_loaded = False
        if (self.ckpt / "discriminators.safetensors").is_file():
            disc = load_file(str(self.ckpt / "discriminators.safetensors"), device=str(self.device))
            try:
                for name, d in (("mpd", self.mpd), ("mrd", self.mrd)):
                    part = {k[len(name) + 1:]: v for k, v in disc.items() if k.startswith(name + ".")}
                    if d is not None and part:
                        d.load_state_dict(part)
                discriminators_loaded = True
            except RuntimeError:
                # Before adversarial training starts the discriminators are untrained, so a changed
                # discriminator design may start fresh; after that it would silently reset the GAN.
                if step > self.cfg.adversarial_start:
                    raise VoxtokError(f"{self.ckpt}: discriminators do not match this recipe") from None
                print("discriminator design changed before adversarial_start: starting them fresh")
        if (self.ckpt / "optimizer.safetensors").is_file():
            tensors = load_file(str(self.ckpt / "optimizer.safetensors"), device=str(self.device))
            restore_optimizer(self.opt_g, "g", tensors, state["optimizers"]["g"])
            if self.opt_d is not None and "d" in state["optimizers"] and discriminators_loaded:
                restore_optimizer(self.opt_d, "d", tensors, state["optimizers"]["d"])
        else:
            # A committed checkpoint may leave the optimizer out (it is twice the model's size): Adam's
            # moments then start from zero, so the learning rate warms up again from this step.
            print("no optimizer state in checkpoint: fresh Adam moments, learning rate re-warmed")
            self.rewarm_from = step
        self.step = state["step"]
        self.load_extra(self.ckpt)
        return True

    def initialize_quantizer(self) -> None:
        """The bottleneck's first statistics (k-means codebooks, latent statistics) from 8 batches, unless a
        checkpoint brought them."""
        if self.model.quantizer.initialized():
            return
        init_batch = torch.cat([self.batch() for _ in range(8)])
        with torch.no_grad():
            self.model.quantizer.initialize(self.model.encoder(init_batch))

    def prepare_export(self) -> None:
        """Hook: anything a shipped model needs beyond the checkpoint's weights (run before `--export`)."""

    def save_extra(self, directory: Path) -> None:
        """Hook: a subclass's own checkpoint files, written into the checkpoint before it replaces the last."""

    def load_extra(self, directory: Path) -> None:
        """Hook: read what save_extra wrote (a checkpoint may predate it)."""

    # ---- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        from voxtok.audio import load_audio, save_audio

        self.model.eval()
        sr = self.model.config.sample_rate
        results: dict[str, list[float]] = {}
        sample_dir = self.out / "samples" / f"step_{self.step:07d}"
        for i, row in enumerate(self.dev_rows):
            ref = load_audio(Path(self.cfg.real_root) / row["path"], sr)[: sr * 10]
            x = torch.from_numpy(ref)[None, None].to(self.device)
            for n_q, kbps in self.model.operating_points:
                y = self.model.decode(self.model.encode(x, n_q))[..., : x.shape[-1]]
                results.setdefault(f"mel@{kbps}", []).append(self.mel_loss(y, x).item())
                for name, value in _signal_metrics(ref, y[0, 0].cpu().numpy()).items():
                    results.setdefault(f"{name}@{kbps}", []).append(value)
                if i < 2:
                    save_audio(sample_dir / f"{i}_{kbps}kbps.wav", y[0, 0].cpu().numpy(), sr)
            if i < 2:
                save_audio(sample_dir / f"{i}_ref.wav", ref, sr)
        self.model.train()
        return {k: float(np.mean(v)) for k, v in results.items()}

    # ---- training --------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, record["step"])

    def train(self, steps: int | None = None, max_seconds: float | None = None) -> None:
        """Train to `steps` (default: the recipe's), or until max_seconds of wall time have passed; either way the
        run ends with a checkpoint, so a time-boxed run (a lent GPU) always brings its progress back."""
        cfg = self.cfg
        total = steps if steps is not None else cfg.steps
        deadline = time.time() + max_seconds if max_seconds else None
        lead = self.rank == 0
        if lead:
            self.out.mkdir(parents=True, exist_ok=True)
        self.barrier()
        resumed = self.load_checkpoint()
        if lead:
            print(f"{'resumed at' if resumed else 'starting from'} step {self.step}; target {total}"
                  + (f" on {self.world_size} ranks" if self.world_size > 1 else ""))
        self.build_data()
        if lead:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                print("tensorboard not installed: logging to log.jsonl only")
        self.model.train()
        self.initialize_quantizer()
        self.sync_buffers()
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, dynamic_ncols=True)
        started, running = time.time(), {}
        while self.step < total:
            metrics = self.train_step()
            self.sync_buffers()
            for k, v in metrics.items():
                running[k] = running.get(k, 0.0) + v
            self.step += 1
            bar.update(1)
            out_of_time = deadline is not None and self._agree(time.time() > deadline)
            if out_of_time:
                total = self.step
            if not lead:
                continue
            if self.step % cfg.log_every == 0:
                record = {"step": self.step, **{k: v / cfg.log_every for k, v in running.items()},
                          "lr": learning_rate(self.step, cfg.lr, cfg),
                          "steps_per_s": cfg.log_every / (time.time() - started)}
                bar.set_postfix(mel=f"{record['mel']:.3f}", sps=f"{record['steps_per_s']:.2f}")
                self.log(record)
                running, started = {}, time.time()
            if self.step % cfg.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint()
            if self.step % cfg.eval_every == 0 or self.step == total:
                dev = self.evaluate()
                self.log({"step": self.step, **{f"dev/{k}": v for k, v in dev.items()}})
                tqdm.write(f"step {self.step} dev " + " ".join(f"{k}={v:.3f}" for k, v in dev.items()))
        bar.close()
        if deadline is not None and lead:
            print(f"stopped at step {self.step} after the time limit; checkpoint in {self.ckpt}")
        self.barrier()

    def barrier(self) -> None:
        barrier(self.world_size)

    def _agree(self, flag: bool) -> bool:
        return agree(flag, self.world_size)

    def train_step(self) -> dict:
        cfg = self.cfg
        self.set_generator_lr()
        x = self.batch()
        y, _codes, commit = self.model(x)
        y = y[..., : x.shape[-1]]
        mel = self.mel_loss(y, x)
        loss = cfg.mel_weight * mel + cfg.commit_weight * commit
        metrics = {"mel": mel.item(), "commit": commit.item()}
        adversarial = self.step >= cfg.adversarial_start and self.discriminators
        if adversarial:
            for group in self.opt_d.param_groups:
                group["lr"] = learning_rate(self.step - cfg.adversarial_start, cfg.disc_lr, cfg)
            # One pass over the real audio serves both the discriminator loss and (detached) feature matching.
            real_outputs = [d(x) for d in self.discriminators]
            d_loss = y.new_zeros(())
            for d, (real_scores, _) in zip(self.discriminators, real_outputs):
                fake_scores, _ = d(y.detach())
                d_loss = d_loss + discriminator_loss(real_scores, fake_scores)
            self.optimizer_step(self.opt_d, d_loss, [p for d in self.discriminators for p in d.parameters()])
            g_adv, g_fm = y.new_zeros(()), y.new_zeros(())
            for d, (_, real_features) in zip(self.discriminators, real_outputs):
                fake_scores, fake_features = d(y)
                g_adv = g_adv + generator_adversarial_loss(fake_scores)
                g_fm = g_fm + feature_matching_loss(real_features, fake_features)
            loss = loss + cfg.adversarial_weight * g_adv + cfg.feature_weight * g_fm
            metrics.update({"d_loss": d_loss.item(), "g_adv": g_adv.item(), "feature": g_fm.item()})
        metrics["grad_norm"] = self.optimizer_step(self.opt_g, loss, list(self.model.parameters()))
        metrics["loss"] = loss.item()
        return metrics
