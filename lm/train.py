"""Training the speech LM from a recipe on a corpus (voxtok.lm.corpus): resumable, time-boxed, logged.

    voxtok lm train recipes/lm_discrete.toml [--steps N] [--max-minutes M] [--device cuda]

Each example is one training utterance with text: its phonemes, its tokens as the target, and as the voice prompt
a random 1-3 s crop of another utterance of the same speaker (none for a speaker with one utterance, and for 10%
of examples, so the model also speaks without a prompt). Held-out utterances (sentences never trained on) give
the teacher-forced held-out loss, beside a bigram baseline per codebook for the discrete LM.
Checkpoints are model folders (config.json + model.safetensors) plus the optimizer and trainer state.

Data-parallel: `torchrun --standalone --nproc_per_node N -m voxtok lm train RECIPE` (gloo on CPU, NCCL on GPUs); every
rank starts from the same weights, draws its own examples, and averages gradients after each backward; rank 0 alone
logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from voxtok.errors import VoxtokError
from voxtok.lm.corpus import Utterance, load_corpus
from voxtok.lm.model import SpeechLM, SpeechLMConfig
from voxtok.lm.phonemes import symbols_to_ids
from voxtok.lm.sequence import collate, training_item
from voxtok.recipe import read_recipe_tables
from voxtok.train import agree, average_gradients, barrier


@dataclass
class LMTrainConfig:
    corpus: str = "data/lm_corpus"
    out_dir: str = "runs/lm_discrete"
    seed: int = 0
    steps: int = 20000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 300
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Residual dropout while training: a few hours of speech against a few million parameters memorises the
    # training sentences (held-out CE of the first codebook rose after step 500 in the first run without it).
    dropout: float = 0.0
    # Guided attention (voxtok.lm.model.guided_attention_loss) on half the heads of the middle layer: its weight
    # (0 = off) and the width of the diagonal it asks for.
    guided_attention: float = 0.0
    guided_sigma: float = 0.2
    max_target_frames: int = 200  # 16 s; longer utterances are left out
    prompt_seconds: tuple[float, float] = (1.0, 3.0)
    no_prompt_prob: float = 0.1
    log_every: int = 25
    checkpoint_every: int = 250
    eval_every: int = 500
    eval_utterances: int = 64
    # Every sample_every steps (0: never) the lead rank speaks the first held-out sentence and writes
    # samples/step_NNNNNN.wav (and TensorBoard audio): hearing a run is how a broken one is caught early.
    sample_every: int = 1000
    sample_tokenizer: str = ""  # the tokenizer that decodes the samples (default: the one the corpus names)
    threads: int = 0


def load_lm_recipe(path: str | Path) -> tuple[dict, LMTrainConfig]:
    """A TOML recipe -> ([model] table, train config); the model table is completed from the corpus."""
    recipe = read_recipe_tables(path)
    flat = dict(recipe.get("train", {}))
    known = {f.name for f in fields(LMTrainConfig)}
    unknown = set(flat) - known
    if unknown:
        raise VoxtokError(f"{path}: unknown [train] keys {sorted(unknown)}")
    if "prompt_seconds" in flat:
        flat["prompt_seconds"] = tuple(flat["prompt_seconds"])
    return dict(recipe.get("model", {})), LMTrainConfig(**flat)


def learning_rate(step: int, cfg: LMTrainConfig) -> float:
    from voxtok.train import learning_rate as warmup_cosine  # the one schedule rule, shared with the codecs

    return warmup_cosine(step, cfg.lr, cfg)


class LMTrainer:
    def __init__(self, model_table: dict, cfg: LMTrainConfig, device: str = "cpu", progress: bool = True):
        from voxtok.train import _init_distributed

        self.rank, self.world_size = _init_distributed(device)
        if self.world_size > 1 and device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.cfg, self.device, self.progress = cfg, torch.device(device), progress and self.rank == 0
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.meta, utterances = load_corpus(cfg.corpus)
        table = dict(model_table)
        table.update(tokenizer=self.meta["tokenizer"], tokenizer_config_hash=self.meta["tokenizer_config_hash"],
                     tokenizer_weights_hash=self.meta.get("tokenizer_weights_hash", ""),
                     tokenizer_tokens_hash=self.meta.get("tokenizer_tokens_hash", ""),
                     tokenizer_source=self.meta.get("tokenizer_source", ""),
                     frame_rate=self.meta["frame_rate"], num_codebooks=self.meta["num_codebooks"],
                     codebook_size=self.meta["codebook_size"], latent_dim=self.meta["latent_dim"],
                     phone_symbols=self.meta["symbols"])
        try:
            model_cfg = SpeechLMConfig.from_dict(table)
        except (ValueError, TypeError) as exc:
            raise VoxtokError(f"bad [model] table ({exc})") from None
        self.model = SpeechLM(model_cfg).to(self.device)
        try:
            self.model.set_dropout(cfg.dropout)
        except ValueError as exc:
            raise VoxtokError(f"[train] {exc}") from None
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.95))
        self.step = 0
        self.rewarm_from: int | None = None
        self.sample_codec = None  # loaded on the first sample; False once it could not be
        self.out = Path(cfg.out_dir)
        self.ckpt = self.out / "checkpoint"
        self.rng = np.random.default_rng(cfg.seed + 1_000_003 * self.rank)
        fits = [u for u in utterances if u.codes.shape[1] <= cfg.max_target_frames]
        if model_cfg.aligned:
            from voxtok.lm.phonemes import sounding

            fits = [u for u in fits if u.alignment is not None and u.alignment[0] == sounding(u.phones or [])]
            if not fits:
                raise VoxtokError(f"{cfg.corpus}: no aligned utterance; an aligned LM needs `voxtok lm align "
                                  f"{cfg.corpus}` first")
        if model_cfg.speaker_dim:
            dims = {u.speaker_embedding.shape[0] if u.speaker_embedding is not None else None for u in utterances}
            if dims != {model_cfg.speaker_dim}:
                raise VoxtokError(f"{cfg.corpus}: the LM's speaker_dim is {model_cfg.speaker_dim}, but the corpus has "
                                  "no speaker embeddings of that size (rebuild it with `voxtok lm corpus`)")
        self.train_set = [u for u in fits if u.split == "train" and u.phones]
        self.heldout = [u for u in fits if u.split == "heldout" and u.phones][: cfg.eval_utterances]
        if not self.train_set:
            raise VoxtokError(f"{cfg.corpus}: no training utterance with text fits {cfg.max_target_frames} frames")
        self.by_speaker: dict[str, list[Utterance]] = defaultdict(list)
        for u in utterances:
            if u.split == "train":
                self.by_speaker[u.speaker].append(u)
        self.writer = None

    # ---- examples ---------------------------------------------------------------------------------------
    def _tokens(self, u: Utterance) -> torch.Tensor:
        return torch.from_numpy(u.codes if self.model.config.kind == "discrete" else u.latents)

    def prompt_for(self, u: Utterance, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A random crop of another utterance of u's speaker (empty when there is none, or by chance), and that
        utterance's speaker embedding (zeros without a prompt; None for an LM without speaker conditioning)."""
        others = [o for o in self.by_speaker.get(u.speaker, []) if o.id != u.id]
        empty = self._tokens(u)[:, :0]
        dim = self.model.config.speaker_dim
        no_voice = torch.zeros(dim) if dim else None
        if not others or rng.random() < self.cfg.no_prompt_prob:
            return empty, no_voice
        other = others[rng.integers(len(others))]
        rate = self.model.config.frame_rate
        length = int(rng.uniform(*self.cfg.prompt_seconds) * rate)
        tokens = self._tokens(other)
        length = max(1, min(length, tokens.shape[1]))
        start = int(rng.integers(0, tokens.shape[1] - length + 1))
        speaker = torch.from_numpy(other.speaker_embedding) if dim else None
        return tokens[:, start:start + length], speaker

    def states(self, u: Utterance, phones: int | None = None) -> torch.Tensor | None:
        """u's alignment states per frame (aligned LMs; None otherwise). phones: rescale them onto a text with
        that many sounding phonemes (same timing, other words: the held-out text gain's counterfactual)."""
        if not self.model.config.aligned:
            return None
        from voxtok.lm.align import frame_states

        states = frame_states(u.alignment[1], u.codes.shape[1], self.model.config.frame_rate)
        if phones is not None:
            states = states * phones // len(u.alignment[1])  # monotone, and the end maps onto the end
        return torch.from_numpy(states)

    def example(self, u: Utterance, rng: np.random.Generator, phones: list[str] | None = None,
                states: torch.Tensor | None = None) -> dict:
        """u's teacher-forced item (phones / states: another text's, for the text-gain counterfactual)."""
        ids = symbols_to_ids(phones or u.phones, self.model.config.phone_symbols)
        prompt, speaker = self.prompt_for(u, rng)
        item = training_item(self.model.config, prompt, ids, self._tokens(u),
                             states if states is not None else self.states(u))
        return item if speaker is None else {**item, "speaker": speaker}

    def batch(self) -> dict:
        picks = self.rng.integers(len(self.train_set), size=self.cfg.batch_size)
        items = [self.example(self.train_set[i], self.rng) for i in picks]
        return {k: v.to(self.device) for k, v in collate(items).items()}

    # ---- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        from voxtok.train import optimizer_tensors

        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        tensors, scalars = optimizer_tensors(self.opt, "o")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps({"step": self.step, "optimizer": scalars,
                                                            "train_config": self.cfg.__dict__}, indent=1))
        shutil.rmtree(self.ckpt, ignore_errors=True)
        os.replace(tmp, self.ckpt)

    def load_checkpoint(self) -> bool:
        from voxtok.train import restore_optimizer

        if not (self.ckpt / "trainer_state.json").is_file():
            return False
        state = json.loads((self.ckpt / "trainer_state.json").read_text())
        loaded = SpeechLM.from_pretrained(self.ckpt, device=str(self.device))
        if loaded.config != self.model.config:
            raise VoxtokError(f"{self.ckpt}: the checkpoint's model config differs from this recipe and corpus")
        self.model.load_state_dict(loaded.state_dict())
        self.step = state["step"]
        if (self.ckpt / "optimizer.safetensors").is_file():
            tensors = load_file(str(self.ckpt / "optimizer.safetensors"), device=str(self.device))
            restore_optimizer(self.opt, "o", tensors, state["optimizer"])
        else:
            # A committed checkpoint leaves the optimizer out (twice the model's size): fresh Adam moments, and the
            # learning rate warms up again from this step.
            print("no optimizer state in checkpoint: fresh Adam moments, learning rate re-warmed")
            self.rewarm_from = self.step
        self.rng = np.random.default_rng(self.cfg.seed + self.step + 1_000_003 * self.rank)
        return True

    # ---- evaluation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Teacher-forced loss on the held-out utterances (fixed prompts: a seeded generator per utterance)."""
        if not self.heldout:
            return {}
        self.model.eval()
        totals: dict[str, list[float]] = defaultdict(list)
        for i, u in enumerate(self.heldout):
            item = self.example(u, np.random.default_rng(i))
            loss, figures = self.model.loss({k: v.to(self.device) for k, v in collate([item]).items()})
            totals["loss"].append(loss.item())
            loss = loss - figures.get("advance_ce", 0.0)  # the text gain compares the speech's own loss
            for k, v in figures.items():
                totals[k].append(v)
            if len(self.heldout) > 1:
                # The same target and prompt with another sentence's phonemes: how much the text helps.
                j = (i + 7) % len(self.heldout)
                other = self.heldout[j if j != i else (i + 1) % len(self.heldout)]
                other_count = len(other.alignment[1]) if self.model.config.aligned else None
                wrong = self.example(u, np.random.default_rng(i), other.phones, self.states(u, other_count))
                wrong_loss, wrong_figures = self.model.loss({k: v.to(self.device)
                                                             for k, v in collate([wrong]).items()})
                wrong_loss = wrong_loss - wrong_figures.get("advance_ce", 0.0)
                totals["text_gain"].append(wrong_loss.item() - loss.item())
        self.model.train()
        return {f"heldout/{k}": float(np.mean(v)) for k, v in totals.items()}

    # ---- samples --------------------------------------------------------------------------------------------
    def write_sample(self) -> Path | None:
        """Speak the first held-out sentence (a prompt from another utterance of its voice) through the streaming
        tts path; the wav path, or None when there is nothing to speak or no tokenizer to decode with."""
        from voxtok.audio import save_audio
        from voxtok.lm.evaluate import PROMPT_SECONDS, heldout_with_prompts
        from voxtok.lm.generate import Sampling
        from voxtok.lm.tts import speak, tokenizer_for

        pairs = heldout_with_prompts(self.train_set + self.heldout, 1)
        if not pairs or self.sample_codec is False:
            return None
        if self.sample_codec is None:
            try:
                self.sample_codec = tokenizer_for(self.model, self.cfg.sample_tokenizer or None)
            except VoxtokError as exc:
                print(f"no samples in this run: {exc}")
                self.sample_codec = False
                return None
        u, prompt_u = pairs[0]
        discrete = self.model.config.kind == "discrete"
        frames = int(PROMPT_SECONDS * self.model.config.frame_rate)
        prompt = torch.from_numpy((prompt_u.codes if discrete else prompt_u.latents)[:, :frames])
        speaker = torch.from_numpy(prompt_u.speaker_embedding) if self.model.config.speaker_dim else None
        self.model.eval()
        try:
            ids = symbols_to_ids(u.phones, self.model.config.phone_symbols)
            audio, _ = speak(self.model, ids, prompt, Sampling(seed=0, max_frames=2 * u.codes.shape[1] + 10),
                             self.sample_codec, speaker=speaker)
        finally:
            self.model.train()
        path = self.out / "samples" / f"step_{self.step:06d}.wav"
        sample_rate = self.sample_codec.config.sample_rate
        if len(audio):
            save_audio(path, audio, sample_rate)
            if self.writer is not None:
                self.writer.add_audio("sample", torch.from_numpy(audio)[None], self.step, sample_rate)
        return path if len(audio) else None

    def log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, record["step"])

    def train(self, steps: int | None = None, max_seconds: float | None = None) -> None:
        cfg = self.cfg
        total = steps if steps is not None else cfg.steps
        deadline = time.time() + max_seconds if max_seconds else None
        lead = self.rank == 0
        if lead:
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(self.world_size)
        resumed = self.load_checkpoint()
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        if lead:
            print(f"{'resumed at' if resumed else 'starting from'} step {self.step}; target {total}; "
                  f"{self.model.config.kind} LM, {params:.2f} M parameters; {len(self.train_set)} training and "
                  f"{len(self.heldout)} held-out utterances"
                  + (f" on {self.world_size} ranks" if self.world_size > 1 else ""))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard")) if lead else None
        except ImportError:
            print("tensorboard not installed: logging to log.jsonl only")
        if lead and self.model.config.kind == "discrete" and self.heldout and not resumed:
            # The bar's baseline, logged once beside the LM's held-out cross-entropy per codebook.
            baseline = bigram_cross_entropy([u.codes for u in self.train_set], [u.codes for u in self.heldout],
                                            self.model.config.codebook_size)
            self.log({"step": self.step, **{f"heldout/bigram_ce_{k}": v for k, v in enumerate(baseline)}})
            print("bigram baseline, held-out cross-entropy per codebook: "
                  + " ".join(f"{v:.3f}" for v in baseline))
        self.model.train()
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, dynamic_ncols=True)
        running: dict[str, float] = defaultdict(float)
        started = time.time()
        while self.step < total:
            lr = learning_rate(self.step, cfg)
            if self.rewarm_from is not None and self.step - self.rewarm_from < cfg.warmup_steps:
                lr *= (self.step - self.rewarm_from + 1) / cfg.warmup_steps
            for group in self.opt.param_groups:
                group["lr"] = lr
            loss, figures = self.model.loss(self.batch(), guided=(cfg.guided_attention, cfg.guided_sigma))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(self.model.parameters(), self.world_size)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
            self.opt.step()
            self.step += 1
            bar.update(1)
            for k, v in {"loss": loss.item(), "grad_norm": grad_norm, **figures}.items():
                running[k] += v
            if deadline is not None and agree(time.time() > deadline, self.world_size):
                total = self.step
            if not lead:
                continue
            if self.step % cfg.log_every == 0:
                record = {"step": self.step, **{k: v / cfg.log_every for k, v in running.items()}, "lr": lr,
                          "steps_per_s": cfg.log_every / (time.time() - started)}
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                self.log(record)
                running, started = defaultdict(float), time.time()
            if self.step % cfg.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint()
            if cfg.sample_every and self.step % cfg.sample_every == 0:
                self.write_sample()
            if self.step % cfg.eval_every == 0 or self.step == total:
                figures = self.evaluate()
                if figures:
                    self.log({"step": self.step, **figures})
                    tqdm.write(f"step {self.step} " + " ".join(f"{k}={v:.3f}" for k, v in figures.items()))
        bar.close()
        barrier(self.world_size)


def bigram_cross_entropy(train: list[np.ndarray], heldout: list[np.ndarray], vocab: int) -> list[float]:
    """Per codebook, the held-out cross-entropy (nats) of a bigram model P(c_t | c_t-1) fitted on the training
    codes with add-one smoothing: the baseline the LM's teacher-forced loss is compared with."""
    books = train[0].shape[0]
    out = []
    for k in range(books):
        counts = np.ones((vocab, vocab))
        for codes in train:
            np.add.at(counts, (codes[k, :-1], codes[k, 1:]), 1)
        logp = np.log(counts / counts.sum(axis=1, keepdims=True))
        nll = [-logp[c[k, :-1], c[k, 1:]].mean() for c in heldout if c.shape[1] > 1]
        out.append(float(np.mean(nll)))
    return out
