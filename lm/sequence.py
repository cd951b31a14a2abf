"""Building the LM's sequences (the layout lm.model describes) from a prompt, phonemes and target tokens.

    discrete:   prompt codes, delayed | <prompt-end> | phonemes | <sep> | target codes + an EOS frame, delayed
    continuous: prompt latents        | <prompt-end> | phonemes | <sep> | target latents

Discrete: the hidden state at <sep> predicts the first delayed step, each target step the next; the delay's
padding is never a target. Continuous: the state at <sep> and at each target latent predicts the next latent and
whether speech ends there (1 only after the last frame).
"""

from __future__ import annotations

import torch

from lm.delay import apply_delay
from lm.model import MARKER, PROMPT_END, SEPARATOR, SPEECH, TEXT, SpeechLMConfig


def prefix(cfg: SpeechLMConfig, prompt: torch.Tensor, phone_ids: list[int]) -> dict:
    """The part of a sequence generation starts from: prompt, <prompt-end>, phonemes, <sep>. prompt: codes
    [K, Tp] (discrete) or latents [D, Tp] (continuous); Tp may be 0."""
    parts = []
    if prompt.shape[-1]:
        if cfg.kind == "discrete":
            parts.append(_speech(cfg, apply_delay(prompt.long(), cfg.pad_token), segment=0))
        else:
            parts.append(_speech(cfg, prompt.float(), segment=0))
    parts.append(_marker(cfg, PROMPT_END, segment=0))
    parts.append(_text(cfg, phone_ids))
    parts.append(_marker(cfg, SEPARATOR, segment=1))
    return _concat(parts)


def training_item(cfg: SpeechLMConfig, prompt: torch.Tensor, phone_ids: list[int], target: torch.Tensor) -> dict:
    """A whole teacher-forced sequence with its targets; target: codes [K, T] or latents [D, T], T >= 1."""
    head = prefix(cfg, prompt, phone_ids)
    start = head["kinds"].shape[0] - 1  # the <sep> position predicts the first target step
    if cfg.kind == "discrete":
        frames = torch.cat([target.long(), torch.full((cfg.num_codebooks, 1), cfg.eos_token)], dim=1)
        delayed = apply_delay(frames, cfg.pad_token)  # [K, S]
        item = _concat([head, _speech(cfg, delayed[:, :-1], segment=2)])
        length = item["kinds"].shape[0]
        targets = torch.full((cfg.num_codebooks, length), -1, dtype=torch.long)
        targets[:, start:start + delayed.shape[1]] = torch.where(delayed == cfg.pad_token, -1, delayed)
        item["targets"] = targets
        return item
    item = _concat([head, _speech(cfg, target.float(), segment=2)])
    length, frames = item["kinds"].shape[0], target.shape[1]
    target_latents = torch.zeros(cfg.latent_dim, length)
    target_latents[:, start:start + frames] = target.float()
    target_mask = torch.zeros(length, dtype=torch.bool)
    target_mask[start:start + frames] = True
    eos = torch.zeros(length)
    eos[start + frames] = 1.0
    eos_mask = torch.zeros(length, dtype=torch.bool)
    eos_mask[start:start + frames + 1] = True
    item.update(target_latents=target_latents, target_mask=target_mask, eos=eos, eos_mask=eos_mask)
    return item


def collate(items: list[dict]) -> dict:
    """Right-pad items to one length (padding is never a target: it is causal-masked from real positions)."""
    length = max(item["kinds"].shape[-1] for item in items)
    batch = {}
    for key in items[0]:
        pad_value = -1 if key == "targets" else 0
        padded = []
        for item in items:
            value = item[key]
            extra = length - value.shape[-1]
            padded.append(torch.nn.functional.pad(value, (0, extra), value=pad_value) if extra else value)
        batch[key] = torch.stack(padded)
    return batch


def _blank(cfg: SpeechLMConfig, length: int, kind: int, segment: int) -> dict:
    item = {"kinds": torch.full((length,), kind, dtype=torch.long),
            "segments": torch.full((length,), segment, dtype=torch.long),
            "text": torch.zeros(length, dtype=torch.long),
            "markers": torch.zeros(length, dtype=torch.long)}
    if cfg.kind == "discrete":
        item["codes"] = torch.full((cfg.num_codebooks, length), cfg.pad_token, dtype=torch.long)
    else:
        item["latents"] = torch.zeros(cfg.latent_dim, length)
    return item


def _speech(cfg: SpeechLMConfig, values: torch.Tensor, segment: int) -> dict:
    item = _blank(cfg, values.shape[1], SPEECH, segment)
    item["codes" if cfg.kind == "discrete" else "latents"] = values
    return item


def _marker(cfg: SpeechLMConfig, marker: int, segment: int) -> dict:
    item = _blank(cfg, 1, MARKER, segment)
    item["markers"][0] = marker
    return item


def _text(cfg: SpeechLMConfig, phone_ids: list[int]) -> dict:
    item = _blank(cfg, len(phone_ids), TEXT, 1)
    item["text"] = torch.tensor(phone_ids, dtype=torch.long)
    return item


def _concat(parts: list[dict]) -> dict:
    return {key: torch.cat([p[key] for p in parts], dim=-1) for key in parts[0]}
