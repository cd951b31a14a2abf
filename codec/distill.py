"""Auxiliary training terms on the codec's tokens, chosen by the recipe: each term is a class registered here and
configured by its own table, `[terms.NAME]`, so adding one never edits the trainer's loss sum.

    [terms.phone]          # semantic distillation: RVQ-1 predicts the frame's phone
    weight = 1.0
    positions = 1          # phones per code frame (4 for the 12.5 Hz tokenizer: one per 20 ms)
    lr = 0.0               # the head's own constant learning rate (0: the codec's schedule)

A term reads a TermInputs (the encoder's latents, the first codebook's quantized output passed straight through
to the encoder, and the batch's labels) and returns (loss, figures to log). Its own weights (a head) are trained
beside the codec and saved in the checkpoint, not in the shipped model: the codec's interface stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from voxtok.data.align import PHONES
from voxtok.errors import VoxtokError


@dataclass
class TermInputs:
    latents: torch.Tensor  # [B, dim, T] encoder output
    codebooks: list[torch.Tensor]  # [B, dim, T] per codebook (RVQ-1, RVQ-2), gradient straight through
    phones: torch.Tensor | None = None  # [B, T, positions] phone index per code frame, -1 where unlabelled
    context: torch.Tensor | None = None  # [B, T, H] the text LM's state of the word at each frame
    context_mask: torch.Tensor | None = None  # [B, T] 1 inside an aligned word
    sentence: torch.Tensor | None = None  # [B, H] the utterance's sentence embedding (zeros without text)
    audio: torch.Tensor | None = None  # [B, 1, N] the crop itself (for a teacher network)
    decoded: torch.Tensor | None = None  # [B, 1, N] the crop as the decoder says it (when a term needs it)

    @property
    def first_codebook(self) -> torch.Tensor:
        return self.codebooks[0]


class LossTerm(nn.Module):
    """One auxiliary term. `needs` names the labels it reads (the trainer loads them only when asked)."""

    name: str = ""
    needs: frozenset[str] = frozenset()
    codebook: int = 1  # the codebook (1-based) the term distils into; the export records it as semantic

    def __init__(self, latent_dim: int, weight: float = 1.0, lr: float = 0.0):
        super().__init__()
        if float(lr) < 0:
            raise ValueError(f"lr must be positive (or 0: the codec's schedule), not {lr}")
        # The head's own constant learning rate; 0 follows the codec's. A term added to a trained codec starts
        # its head from scratch while the codec's schedule may be near its floor.
        self.weight, self.lr = float(weight), float(lr)

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
    so RVQ-1 has to carry the phones.

    `positions` > 1 asks each code frame for that many phones, at equal steps inside it (the head predicts
    positions x phones logits): an 80 ms token of the 12.5 Hz tokenizer spans a phone or more, and the phone at its
    centre alone would let it drop the short ones at its edges."""

    name = "phone"
    needs = frozenset({"phones"})

    def __init__(self, latent_dim: int, weight: float = 1.0, positions: int = 1, lr: float = 0.0):
        super().__init__(latent_dim, weight, lr)
        if int(positions) < 1:
            raise ValueError(f"positions must be 1 or more, not {positions}")
        self.positions = int(positions)
        self.head = nn.Conv1d(latent_dim, self.positions * len(PHONES), 1)

    def forward(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, float]]:
        labels = inputs.phones  # [B, T] or [B, T, positions]
        if labels.dim() == 2:
            labels = labels[..., None]
        if labels.shape[-1] != self.positions:
            raise VoxtokError(f"[terms.phone] has positions = {self.positions} but the labels have "
                              f"{labels.shape[-1]} per frame")
        logits = self.head(inputs.first_codebook)  # [B, positions * phones, T]
        b, _, t = logits.shape
        logits = logits.view(b, self.positions, len(PHONES), t).permute(0, 3, 1, 2)  # [B, T, positions, phones]
        frames = min(t, labels.shape[1])
        logits, labels = logits[:, :frames], labels[:, :frames]
        known = labels >= 0
        if not bool(known.any()):
            return logits.sum() * 0.0, {"phone_frames": 0.0}
        loss = F.cross_entropy(logits[known], labels[known])
        with torch.no_grad():
            accuracy = (logits.argmax(-1)[known] == labels[known]).float().mean()
        return loss, {"phone_ce": loss.item(), "phone_accuracy": accuracy.item(),
                      "phone_frames": float(known.sum())}


def d_axis_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SpeechTokenizer's "D-axis" loss: for each feature dimension, the cosine similarity along time between the
    prediction and the target (masked frames only), through -log sigmoid, averaged over dimensions and items.
    predicted, target [B, T, D]; mask [B, T]."""
    m = mask[..., None]
    p, t = predicted * m, target * m
    cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1)).clamp(min=1e-8)  # [B, D]
    usable = mask.sum(1) >= 2
    if not bool(usable.any()):
        return predicted.sum() * 0.0
    return -F.logsigmoid(cos[usable]).mean()


@register
class ContextTerm(LossTerm):
    """Contextual distillation (DM-Codec / FuseCodec): a projection of one codebook's code vectors (RVQ-1 by
    default) follows the text LM's state of the word being spoken (d_axis loss over the aligned frames), and its
    mean over the utterance follows the sentence embedding (1 - cosine) with global_weight."""

    name = "context"
    needs = frozenset({"context"})

    def __init__(self, latent_dim: int, weight: float = 1.0, global_weight: float = 1.0, codebook: int = 1,
                 hidden: int = 384, lr: float = 0.0):
        super().__init__(latent_dim, weight, lr)
        if codebook not in (1, 2):
            raise ValueError(f"codebook must be 1 or 2, not {codebook}")
        self.codebook, self.global_weight = codebook, float(global_weight)
        self.projection = nn.Conv1d(latent_dim, hidden, 1)

    def forward(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, float]]:
        projected = self.projection(inputs.codebooks[self.codebook - 1]).transpose(1, 2)  # [B, T, H]
        frames = min(projected.shape[1], inputs.context.shape[1])
        projected, target, mask = projected[:, :frames], inputs.context[:, :frames], inputs.context_mask[:, :frames]
        word = d_axis_loss(projected, target, mask)
        has_text = inputs.sentence.norm(dim=1) > 0
        speech = mask.sum(1) > 0
        use = has_text & speech
        if bool(use.any()):
            pooled = (projected * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            sentence = 1 - F.cosine_similarity(pooled[use], inputs.sentence[use], dim=1).mean()
        else:
            sentence = projected.sum() * 0.0
        loss = word + self.global_weight * sentence
        return loss, {"context_word": word.item(), "context_sentence": sentence.item(),
                      "context_frames": float(mask.sum())}


@register
class TeacherTerm(LossTerm):
    """Distillation from a speech encoder's hidden states (SpeechTokenizer / DM-Codec): a projection of RVQ-1
    follows layer `layer` of a frozen teacher with the d_axis loss. The teacher is a local folder: a HuBERT or
    WavLM (loaded by transformers), or voxtok's own phone-CTC recogniser (voxtok.phone_teacher, model_type
    "voxtok-phone-ctc"). The teacher's frames (20 ms) are matched to the codec's frames by index, the last
    repeated to the codec's length. The teacher is not part of this term's state: checkpoints keep only the
    projection."""

    name = "teacher"
    needs = frozenset({"audio"})

    def __init__(self, latent_dim: int, model: str = "", weight: float = 1.0, layer: int = -1,
                 codebook: int = 1, lr: float = 0.0):
        super().__init__(latent_dim, weight, lr)
        from pathlib import Path

        from voxtok.phone_teacher import PhoneCTC, is_phone_ctc_folder

        folder = Path(model)
        if not model or not (folder / "config.json").is_file():
            raise ValueError(f"model must be a local folder with config.json (got {model!r})")
        self.normalise = False
        self.own = is_phone_ctc_folder(folder)
        if self.own:
            teacher = PhoneCTC.from_pretrained(folder)
            hidden = teacher.cfg.dim
        else:
            try:
                from transformers import AutoModel
            except ImportError:
                raise ValueError("a teacher needs transformers (pip install 'voxtok[distill]')") from None
            teacher = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
            hidden = int(teacher.config.hidden_size)
            preprocessor = folder / "preprocessor_config.json"
            if preprocessor.is_file():
                import json

                self.normalise = bool(json.loads(preprocessor.read_text()).get("do_normalize", False))
        for p in teacher.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: kept out of state_dict and optimizers
        self.layer, self.codebook = int(layer), int(codebook)
        self.projection = nn.Conv1d(latent_dim, hidden, 1)

    def teacher_states(self, audio: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, 1, N] -> the teacher layer's states [B, frames, hidden], frame-matched to the codec."""
        x = audio[:, 0].float()
        if self.normalise:
            x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-7)
        with torch.no_grad():
            self.teacher.to(x.device)
            if self.own:
                states = self.teacher(x, output_hidden_states=True)[2][self.layer]
            else:
                states = self.teacher(x, output_hidden_states=True).hidden_states[self.layer]
        if states.shape[1] < frames:
            states = torch.cat([states, states[:, -1:].expand(-1, frames - states.shape[1], -1)], dim=1)
        return states[:, :frames]

    def forward(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, float]]:
        projected = self.projection(inputs.codebooks[self.codebook - 1]).transpose(1, 2)
        target = self.teacher_states(inputs.audio, projected.shape[1])
        mask = torch.ones(projected.shape[:2], device=projected.device)
        loss = d_axis_loss(projected, target, mask)
        return loss, {"teacher_d_axis": loss.item()}


@register
class RecognisedPhonesTerm(LossTerm):
    """Intelligibility of the decoded audio: a frozen phone recogniser (voxtok's own phone-CTC model) should hear
    the same phones in the decoded crop as in the original, KL(p_original || p_decoded) per 20 ms frame.

    The other terms shape the tokens; this one shapes what the decoder says from them. A decoder trained by
    regression on log-mel bands spends its error where the bands are large, not where the phones differ (at 80 ms
    per token the 12.5 Hz tokenizer's decodes lose ~40% of the phones a recogniser hears in the original while
    their log-mel error is small). The posteriors of the original are the target, so no labels are needed and
    every crop counts. F0 reaches the recogniser detached (a magnitude loss says nothing useful about phase; the
    trainer synthesises the decoded crop so). Like the teacher, the recogniser is not part of the term's state."""

    name = "recognised_phones"
    needs = frozenset({"audio", "decoded"})

    def __init__(self, latent_dim: int, model: str = "", weight: float = 1.0, lr: float = 0.0):
        super().__init__(latent_dim, weight, lr)
        from voxtok.phone_teacher import DEFAULT_FOLDER, PhoneCTC, is_phone_ctc_folder

        model = model or str(DEFAULT_FOLDER)  # the shipped recogniser
        if not is_phone_ctc_folder(model):
            raise ValueError(f"model must be a phone recogniser folder (voxtok teacher train), got {model!r}")
        recogniser = PhoneCTC.from_pretrained(model)
        for p in recogniser.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "recogniser", recogniser)  # not a submodule: kept out of state_dict and optimizers

    def forward(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, float]]:
        recogniser = self.recogniser.to(inputs.decoded.device).eval()
        with torch.no_grad():
            target = recogniser(inputs.audio[:, 0].float())[0].log_softmax(-1)
        got = recogniser(inputs.decoded[:, 0].float())[0].log_softmax(-1)
        frames = min(target.shape[1], got.shape[1])
        target, got = target[:, :frames], got[:, :frames]
        loss = (target.exp() * (target - got)).sum(-1).mean()
        with torch.no_grad():
            # Where the recogniser hears a phone in the original (CTC's blank, index 0, fills most frames).
            heard = target.argmax(-1)
            spoken = heard != 0
            agree = (heard == got.argmax(-1))[spoken].float().mean() if bool(spoken.any()) else loss.new_ones(())
        return loss, {"recognised_kl": loss.item(), "recognised_agreement": agree.item()}


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
        except (TypeError, ValueError) as exc:
            raise VoxtokError(f"[terms.{name}]: {exc}") from None
    return terms


def codebooks_straight_through(latents: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor,
                               count: int = 2) -> list[torch.Tensor]:
    """The code vectors of the first `count` codebooks, [B, dim, T] each, whose gradients go to the encoder by
    the straight-through estimator (as the quantizer passes its own): RVQ-k stands in for the residual it
    quantized, so a term on it trains the encoder."""
    out, residual = [], latents
    for k in range(min(count, codes.shape[1])):
        vectors = codebooks[k][codes[:, k].clamp(min=0)].transpose(1, 2).to(latents.dtype)
        out.append(residual + (vectors - residual).detach())
        residual = residual - vectors.detach()
    return out
