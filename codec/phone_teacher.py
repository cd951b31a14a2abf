"""voxtok's own phone recogniser: a small CTC model trained on speech whose text is known.

No HuBERT, WavLM or Whisper weights can be had here, so the distillation teacher path (`[terms.teacher]`, which
loads a HuBERT/WavLM folder through transformers) needs a speech encoder of our own to run for real. This is it:
log-mel frames at 20 ms (three stacked), a pre-norm transformer (4 layers, 192 wide: 1.9 M parameters), a CTC
head over espeak-ng phonemes, trained on the synthetic corpus (`voxtok synth`, exact text) and the transcribed part
of the real train split. CTC needs no alignment, so every voice counts, including the espeak-ng voices that
pocketsphinx cannot align.

Why not HuBERT's own layout (a raw-waveform convolutional front end)? Measured on 64 utterances, 200 steps: a
HuBERT-layout model (several sizes, learning rates, norms, initialisations) and transformers' Wav2Vec2-BERT
(conformer on fbank) both stayed on CTC's blank plateau (loss 3.6, all blanks), while this log-mel model left it by
step 75 (loss 1.45 at step 200); on the full corpus the HuBERT layout was still on the plateau after 825 steps. A
CPU cannot wait for the plateau to break.

The folder is voxtok's usual one: config.json (`model_type = "voxtok-phone-ctc"`, the symbol table) beside
model.safetensors. `PhoneRecogniser.from_pretrained(folder)` greedy-decodes phones and force-aligns a known phone
sequence (CTC Viterbi, 20 ms frames); `[terms.teacher]` reads its hidden states as it reads a HuBERT's.

    voxtok teacher train recipes/phone_teacher.toml        # resumable; --export DIR writes the model folder
    voxtok teacher eval --model codec/pretrained/voxtok-phone-ctc   # PER on held-out voices' sentences, real dev
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from voxtok.errors import VoxtokError
from voxtok.features import LogMel
from voxtok.train import learning_rate, optimizer_tensors, restore_optimizer

SAMPLE_RATE = 16000
HOP = 320  # 20 ms frames, the codec's frame rate
FRAME_SECONDS = HOP / SAMPLE_RATE
MODEL_TYPE = "voxtok-phone-ctc"
# The shipped recogniser (voxtok teacher, the distillation terms and LM phone alignment default to it).
DEFAULT_FOLDER = Path(__file__).resolve().parent / "pretrained" / MODEL_TYPE
BLANK = "<blank>"


@dataclass
class PhoneCTCConfig:
    """The recogniser's architecture and its symbol table (index 0 is CTC's blank); config.json of a folder."""

    symbols: list[str] = field(default_factory=lambda: [BLANK])
    n_mels: int = 80
    n_fft: int = 640
    context: int = 1  # frames stacked on each side of the current one
    dim: int = 192
    layers: int = 4
    heads: int = 4
    ff_dim: int = 768
    pos_kernel: int = 31  # a depthwise convolution gives the transformer its positions
    dropout: float = 0.1
    model_type: str = MODEL_TYPE


class PhoneCTC(nn.Module):
    """log-mel (per-utterance mean removed, frames stacked) -> pre-norm transformer -> phone logits, 20 ms."""

    def __init__(self, cfg: PhoneCTCConfig):
        super().__init__()
        self.cfg = cfg
        # Zero padding at the ends (not reflection), so an utterance gives the same frames alone or padded in a batch.
        self.mel = LogMel(SAMPLE_RATE, cfg.n_fft, HOP, cfg.n_mels, pad_mode="constant")
        self.input = nn.Linear(cfg.n_mels * (2 * cfg.context + 1), cfg.dim)
        self.position = nn.Conv1d(cfg.dim, cfg.dim, cfg.pos_kernel, padding=cfg.pos_kernel // 2,
                                  groups=math.gcd(cfg.dim, 16))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ff_dim, cfg.dropout, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, len(cfg.symbols))

    @staticmethod
    def frame_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return lengths // HOP + 1  # centred STFT frames

    def features(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N] -> ([B, T, n_mels * (2 context + 1)], [B, T] True on real frames)."""
        mel = self.mel(audio).transpose(1, 2) * math.log(10.0)  # natural log
        frames = mel.shape[1]
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], device=audio.device)
        valid = torch.arange(frames, device=audio.device)[None] < self.frame_lengths(lengths)[:, None]
        weight = valid[..., None].float()
        # The mean over the utterance's own frames: gain and channel drop out, padding does not count.
        mel = (mel - (mel * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp(min=1)) * weight
        c = self.cfg.context
        padded = F.pad(mel, (0, 0, c, c))
        stacked = torch.cat([padded[:, k:k + frames] for k in range(2 * c + 1)], dim=-1)
        return stacked, valid

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """[B, N] 16 kHz -> (logits [B, T, symbols], valid [B, T], hidden states: the input projection, then
        each block's output, the last one normalised)."""
        x, valid = self.features(audio, lengths)
        h = self.input(x) * valid[..., None]  # padding must not reach real frames through the convolution
        h = h + self.position(h.transpose(1, 2)).transpose(1, 2)
        h = self.dropout(h)
        hidden = [h]
        padding = ~valid
        for block in self.blocks:
            h = block(h, src_key_padding_mask=padding if bool(padding.any()) else None)
            hidden.append(h)
        h = self.norm(h)
        hidden[-1] = h
        return self.head(self.dropout(h)), valid, hidden if output_hidden_states else []

    def ctc_loss(self, audio: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits, valid, _ = self(audio, lengths)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)
        targets = labels >= 0
        return F.ctc_loss(log_probs, labels.clamp(min=0), valid.sum(1), targets.sum(1), blank=0,
                          reduction="mean", zero_infinity=True)

    def save_pretrained(self, folder: str | Path, half: bool = False) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                 for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(asdict(self.cfg), ensure_ascii=False, indent=1) + "\n",
                                            encoding="utf-8")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PhoneCTC:
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise VoxtokError(f"{folder}: not a phone recogniser folder (config.json and model.safetensors)") from None
        if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE or \
                not (folder / "model.safetensors").is_file():
            raise VoxtokError(f"{folder}: not a phone recogniser folder (config.json and model.safetensors)")
        known = {f.name for f in fields(PhoneCTCConfig)}
        model = cls(PhoneCTCConfig(**{k: v for k, v in raw.items() if k in known}))
        model.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
        return model.eval()


def is_phone_ctc_folder(folder: str | Path) -> bool:
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("model_type") == MODEL_TYPE
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


@dataclass
class TeacherTrainConfig:
    """[train] of a phone-teacher recipe."""

    out_dir: str = "runs/phone_teacher"
    synth_dirs: list[str] = field(default_factory=lambda: ["data/synth_train"])
    real_root: str = "../shared/data/real"
    real_split: str = "codec/splits/real_train.txt"
    real_repeat: int = 3  # the real transcribed files are ~25 min beside hours of synthetic speech
    heldout_dir: str = "data/synth_heldout"
    dev_split: str = "codec/splits/real_dev.txt"
    steps: int = 3000
    batch_seconds: float = 40.0
    max_utterance_seconds: float = 12.0
    lr: float = 1.5e-3
    warmup_steps: int = 300
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    log_every: int = 25
    checkpoint_every: int = 250
    eval_every: int = 1000
    eval_files: int = 60
    seed: int = 0
    threads: int = 0


def teacher_phones(text: str) -> list[str]:
    """The recogniser's target for a text: espeak-ng phonemes without word/clause boundaries and stress marks
    (voxtok.lm.phonemes.SILENT): neither is a sound a 20 ms frame can show, and CTC would have to spend outputs
    on them."""
    from voxtok.lm.phonemes import phonemize, sounding

    symbols = phonemize(text)
    return [symbols[i] for i in sounding(symbols)]


def read_recipe(path: str | Path) -> tuple[dict, TeacherTrainConfig]:
    """([model] overrides of PhoneCTCConfig, [train] config) from a TOML recipe."""
    from voxtok.recipe import read_recipe_tables

    tables = read_recipe_tables(path)
    model, train_table = tables.get("model", {}), tables.get("train", {})
    for table, cls, name in ((model, PhoneCTCConfig, "model"), (train_table, TeacherTrainConfig, "train")):
        unknown = sorted(set(table) - {f.name for f in fields(cls)} - {"symbols", "model_type"})
        if unknown:
            raise VoxtokError(f"{path}: unknown [{name}] keys: {', '.join(unknown)}")
    return model, TeacherTrainConfig(**train_table)


# ----------------------------------------------------------------------------------------------------- data


@dataclass
class Utterance:
    name: str
    samples: np.ndarray  # int16
    phones: list[int]


def load_utterances(root: str | Path, split: str | None, table: dict[str, int] | None, repeat: int = 1,
                    max_seconds: float = 12.0, limit: int | None = None,
                    progress: bool = True) -> tuple[list[Utterance], dict[str, int]]:
    """The transcribed files of a corpus folder (a split of it, if given) with their phone targets. `table`:
    a model's symbol table (its unknown symbols refuse the utterance); None grows a new one."""
    from tqdm import tqdm
    from voxtok.audio import load_audio
    from voxtok.eval.runner import read_manifest, read_split, select, spread_evenly

    root = Path(root)
    entries = [e for e in select(read_manifest(root), read_split(split) if split else None) if e.text]
    if limit is not None:
        entries = spread_evenly(entries, limit)
    growing = table is None
    table = {BLANK: 0} if table is None else table
    out: list[Utterance] = []
    for entry in tqdm(entries, desc=f"loading {root.name}", disable=not progress, leave=False):
        if entry.duration is not None and entry.duration > max_seconds:
            continue
        try:
            phones = teacher_phones(entry.text)
        except VoxtokError:
            continue
        if growing:
            for p in phones:
                table.setdefault(p, len(table))
        elif any(p not in table for p in phones):
            continue
        samples = load_audio(root / entry.path, SAMPLE_RATE)
        if len(samples) > max_seconds * SAMPLE_RATE or len(samples) < 0.3 * SAMPLE_RATE:
            continue
        ids = [table[p] for p in phones]
        # CTC needs at least one frame per target (two between repeats): a file too short for its text is noise.
        if len(samples) / HOP < 1.2 * len(ids):
            continue
        clip = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        out.extend(Utterance(f"{root.name}/{entry.path}", clip, ids) for _ in range(repeat))
    return out, table


class LengthBatcher:
    """Batches of about `batch_seconds` of audio from neighbours in length order (little padding), random
    windows, so each step sees utterances of one length."""

    def __init__(self, utterances: list[Utterance], batch_seconds: float, seed: int):
        self.items = sorted(utterances, key=lambda u: len(u.samples))
        self.batch_samples = batch_seconds * SAMPLE_RATE
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> list[Utterance]:
        start = int(self.rng.integers(0, len(self.items)))
        count = max(1, int(self.batch_samples // max(1, len(self.items[start].samples))))
        start = min(start, max(0, len(self.items) - count))
        return self.items[start:start + count]


def collate(batch: list[Utterance]) -> dict[str, torch.Tensor]:
    """Padded audio, its lengths in samples, and CTC labels padded with -100."""
    longest = max(len(u.samples) for u in batch)
    audio = torch.zeros(len(batch), longest)
    labels = torch.full((len(batch), max(len(u.phones) for u in batch)), -100, dtype=torch.long)
    for i, u in enumerate(batch):
        audio[i, :len(u.samples)] = torch.from_numpy(u.samples.astype(np.float32) / 32768.0)
        labels[i, :len(u.phones)] = torch.tensor(u.phones)
    lengths = torch.tensor([len(u.samples) for u in batch])
    return {"audio": audio, "lengths": lengths, "labels": labels}


# ---------------------------------------------------------------------------------------------- recogniser


def edit_distance(a: list, b: list) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def greedy_decode(log_probs: np.ndarray) -> list[int]:
    """Best path: argmax per frame, repeats merged, blanks (index 0) removed."""
    best = log_probs.argmax(-1)
    return [int(k) for i, k in enumerate(best) if k != 0 and (i == 0 or k != best[i - 1])]


def forced_align(log_probs: np.ndarray, targets: list[int]) -> list[tuple[int, int, int]]:
    """CTC Viterbi: the most likely frame path that spells `targets` exactly -> (target index, first frame,
    last frame) per target, in order. log_probs: [frames, symbols], blank 0."""
    frames, n = log_probs.shape[0], len(targets)
    if n == 0:
        return []
    states = np.zeros(2 * n + 1, dtype=np.int64)  # blank, t0, blank, t1, ..., blank
    states[1::2] = targets
    repeat_forbidden = np.zeros(2 * n + 1, dtype=bool)  # a skip over a blank is not allowed between equal labels
    repeat_forbidden[3::2] = np.asarray(targets[1:]) == np.asarray(targets[:-1])
    needed = n + int(repeat_forbidden.sum())
    if frames < needed:
        raise VoxtokError(f"{frames} frames cannot spell {n} phones ({needed} frames needed)")
    score = np.full(2 * n + 1, -np.inf)
    score[0], score[1] = log_probs[0, 0], log_probs[0, states[1]]
    back = np.zeros((frames, 2 * n + 1), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, frames):
        stay = score
        step = np.concatenate([[-np.inf], score[:-1]])
        skip = np.concatenate([[-np.inf, -np.inf], score[:-2]])
        skip[0::2] = -np.inf
        skip[repeat_forbidden] = -np.inf
        choice = np.stack([stay, step, skip])
        back[t] = choice.argmax(0)
        score = choice.max(0) + log_probs[t, states]
    s = 2 * n if score[2 * n] >= score[2 * n - 1] else 2 * n - 1
    path = np.zeros(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    spans = []
    for k in range(n):
        hit = np.flatnonzero(path == 2 * k + 1)
        spans.append((k, int(hit[0]), int(hit[-1])))
    return spans


class PhoneRecogniser:
    """A trained phone-CTC folder: phones of speech, and where known phones sit in it."""

    def __init__(self, model: PhoneCTC):
        self.model = model.eval()
        self.symbols = model.cfg.symbols
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PhoneRecogniser:
        return cls(PhoneCTC.from_pretrained(folder))

    @torch.no_grad()
    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """[frames, symbols] log-posteriors of 16 kHz float samples (20 ms frames)."""
        logits, _, _ = self.model(torch.from_numpy(np.asarray(samples, dtype=np.float32))[None])
        return torch.log_softmax(logits[0].float(), -1).numpy()

    def recognise(self, samples: np.ndarray) -> list[str]:
        return [self.symbols[k] for k in greedy_decode(self.log_probs(samples))]

    def align(self, samples: np.ndarray, phones: list[str], reach_frames: int = 2) -> list[tuple[str, float, float]]:
        """(phone, start s, end s) of each of `phones` in the speech (CTC forced alignment). CTC's outputs are
        spikes: a phone's own frames are a few, with blanks around them. Each phone takes the blank frames on either
        side, up to `reach_frames` (20 ms each) and at most half of a gap it shares with a neighbour, so a pause
        stays a pause (measured on real dev speech against pocketsphinx's word boundaries: with 0 frames, starts
        fall 30 ms late and ends 40 ms early; recipes/experiments/teacher_alignment.py)."""
        unknown = sorted({p for p in phones if p not in self.index})
        if unknown:
            raise VoxtokError(f"the recogniser does not know the phones {' '.join(unknown)}")
        log_probs = self.log_probs(samples)
        spans = [[a, b] for _, a, b in forced_align(log_probs, [self.index[p] for p in phones])]
        for k, span in enumerate(spans):
            before = span[0] - (spans[k - 1][1] + 1 if k else 0)  # free frames before this phone
            after = (spans[k + 1][0] if k + 1 < len(spans) else len(log_probs)) - span[1] - 1
            span_start = span[0] - min(reach_frames, before if k == 0 else before // 2)
            span_end = span[1] + min(reach_frames, after if k + 1 == len(spans) else (after + 1) // 2)
            span[0], span[1] = span_start, span_end
        # Frame k of the centred analysis is centred on k * 20 ms.
        return [(phones[k], max(0.0, (a - 0.5) * FRAME_SECONDS), (b + 0.5) * FRAME_SECONDS)
                for k, (a, b) in enumerate(spans)]


@torch.no_grad()
def phone_error_rate(model: PhoneCTC, utterances: list[Utterance]) -> float:
    """Edit distance over reference length, summed over utterances, greedy decoding."""
    errors = total = 0
    was_training = model.training
    model.eval()
    for u in utterances:
        logits, _, _ = model(torch.from_numpy(u.samples.astype(np.float32) / 32768.0)[None])
        errors += edit_distance(greedy_decode(logits[0].numpy()), u.phones)
        total += len(u.phones)
    model.train(was_training)
    return errors / max(1, total)


# ------------------------------------------------------------------------------------------------ training


class TeacherTrainer:
    def __init__(self, model_overrides: dict, cfg: TeacherTrainConfig, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out_dir)
        self.checkpoint = self.out / "checkpoint"
        torch.manual_seed(cfg.seed)
        resuming = (self.checkpoint / "config.json").is_file()
        table = None
        if resuming:
            symbols = json.loads((self.checkpoint / "config.json").read_text(encoding="utf-8"))["symbols"]
            table = {s: i for i, s in enumerate(symbols)}
        train: list[Utterance] = []
        for folder in cfg.synth_dirs:
            part, table = load_utterances(folder, None, table, 1, cfg.max_utterance_seconds, progress=progress)
            train += part
        if cfg.real_repeat > 0:
            part, table = load_utterances(cfg.real_root, cfg.real_split, table, cfg.real_repeat,
                                          cfg.max_utterance_seconds, progress=progress)
            train += part
        if not train:
            raise VoxtokError("no transcribed training speech (synth_dirs and the real split give no text)")
        self.train_utterances = train
        self.batcher = LengthBatcher(train, cfg.batch_seconds, cfg.seed)
        self.heldout: dict[str, list[Utterance]] = {}
        if cfg.heldout_dir and Path(cfg.heldout_dir, "manifest.jsonl").is_file():
            self.heldout["heldout_voices"] = load_utterances(cfg.heldout_dir, None, table, 1, 30.0,
                                                             limit=cfg.eval_files, progress=progress)[0]
        if cfg.dev_split:
            self.heldout["real_dev"] = load_utterances(cfg.real_root, cfg.dev_split, table, 1, 30.0,
                                                       limit=cfg.eval_files, progress=progress)[0]
        if resuming:
            self.model = PhoneCTC.from_pretrained(self.checkpoint).train()
        else:
            known = {f.name for f in fields(PhoneCTCConfig)} - {"symbols", "model_type"}
            symbols = [s for s, _ in sorted(table.items(), key=lambda kv: kv[1])]
            self.model = PhoneCTC(PhoneCTCConfig(symbols=symbols,
                                                 **{k: v for k, v in model_overrides.items() if k in known}))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           betas=(0.9, 0.98))
        self.step = 0
        state_file = self.checkpoint / "trainer_state.json"
        if state_file.is_file():
            from safetensors.torch import load_file

            state = json.loads(state_file.read_text())
            tensors = load_file(str(self.checkpoint / "optimizer.safetensors"))
            torch.set_rng_state(tensors.pop("rng.torch"))
            restore_optimizer(self.optimizer, "o", tensors, state["optimizer"])
            self.step = int(state["step"])
            self.batcher.rng.bit_generator.state = state["batcher_rng"]

    def lr_at(self, step: int) -> float:
        return learning_rate(step, self.cfg.lr, self.cfg)

    def save(self) -> None:
        """The checkpoint as the codec and LM trainers write theirs: safetensors and JSON (no pickle), the new one
        whole before it replaces the last."""
        import os
        import shutil

        from safetensors.torch import save_file

        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        tensors, scalars = optimizer_tensors(self.optimizer, "o")
        save_file({**tensors, "rng.torch": torch.get_rng_state()}, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(
            {"step": self.step, "optimizer": scalars, "batcher_rng": self.batcher.rng.bit_generator.state,
             "train_config": asdict(self.cfg)}, indent=1) + "\n")
        shutil.rmtree(self.checkpoint, ignore_errors=True)
        os.replace(tmp, self.checkpoint)

    def evaluate(self) -> dict[str, float]:
        return {f"per/{name}": phone_error_rate(self.model, utts) for name, utts in self.heldout.items() if utts}

    def train(self, steps: int | None = None, max_seconds: float | None = None) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        last = min(steps or cfg.steps, cfg.steps)
        hours = sum(len(u.samples) for u in self.train_utterances) / SAMPLE_RATE / 3600
        print(f"phone teacher: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters, "
              f"{len(self.model.cfg.symbols)} symbols, {len(self.train_utterances)} utterances ({hours:.2f} h), "
              f"from step {self.step} to {last}", flush=True)
        self.model.train()
        started, window = time.time(), []
        with (self.out / "log.jsonl").open("a") as log:
            while self.step < last:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_at(self.step)
                loss = self.model.ctc_loss(**collate(self.batcher()))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
                self.optimizer.step()
                self.step += 1
                window.append(float(loss.detach()))
                record: dict[str, float] = {}
                if self.step % cfg.log_every == 0:
                    record = {"ctc": float(np.mean(window)), "lr": self.lr_at(self.step - 1),
                              "seconds": round(time.time() - started, 1)}
                    window = []
                if self.step % cfg.eval_every == 0 or self.step == last:
                    record.update(self.evaluate())
                if record:
                    record["step"] = self.step
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if self.progress:
                        print(json.dumps(record), flush=True)
                out_of_time = max_seconds is not None and time.time() - started > max_seconds
                if self.step % cfg.checkpoint_every == 0 or self.step == last or out_of_time:
                    self.save()
                if out_of_time:
                    break
