"""Building the LM's sequences (the layout voxtok.lm.model describes) from a prompt, phonemes and target tokens.

    discrete:   prompt codes, delayed | <prompt-end> | phonemes | <sep> | target codes + an EOS frame, delayed
    continuous: prompt latents        | <prompt-end> | phonemes | <sep> | target latents

Discrete: the hidden state at <sep> predicts the first delayed step, each target step the next; the delay's
padding is never a target. Continuous: the state at <sep> and at each target latent predicts the next latent and
whether speech ends there (1 only after the last frame).

Aligned LMs (SpeechLMConfig.aligned) also get, at the position that predicts step s >= 1, the alignment state of
frame s (voxtok.lm.align: which sounding phoneme, pause or end; steps past the last frame are "ended") as a window of
phonemes around it, and learn at the position predicting step s how far the state moves to frame s + 1 (the
advance head; <sep> counts from state 0). Generation draws the advance and feeds the state on (voxtok.lm.generate).
"""

from __future__ import annotations

import torch
from voxtok.lm.delay import apply_delay
from voxtok.lm.model import ALIGN_WINDOW, MARKER, PROMPT_END, SEPARATOR, SPEECH, TEXT, SpeechLMConfig
from voxtok.lm.phonemes import sounding

# What an aligned position is told besides its phonemes (SpeechLM.place_embedding): 0 = not an aligned position.
NOT_ALIGNED, PAUSE, INSIDE, ENDED = 0, 1, 2, 3


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


def sounding_ids(cfg: SpeechLMConfig, phone_ids: list[int]) -> list[int]:
    """The ids of the phonemes an alignment places (boundaries and stress marks left out), in order."""
    return [phone_ids[i] for i in sounding([cfg.phone_symbols[k] for k in phone_ids])]


def aligned_inputs(cfg: SpeechLMConfig, sound_ids: list[int], states: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """For alignment states [n] (voxtok.lm.align: 2k before sounding phoneme k, 2k + 1 inside it, 2M after the last):
    the phoneme ids around each state's phoneme k at ALIGN_WINDOW's offsets [W, n] (len(phone_symbols) where the
    window runs off the text) and what the position is told besides: PAUSE, INSIDE or ENDED [n]."""
    count, pad = len(sound_ids), len(cfg.phone_symbols)
    states = states.long().clamp(0, 2 * count)
    ids = torch.tensor(sound_ids + [pad], dtype=torch.long)
    k = states // 2
    window = torch.stack([ids[torch.where((k + o >= 0) & (k + o < count), k + o, count)] for o in ALIGN_WINDOW])
    place = torch.where(states == 2 * count, ENDED, torch.where(states % 2 == 1, INSIDE, PAUSE))
    return window, place


def _add_alignment(cfg: SpeechLMConfig, item: dict, start: int, sound_ids: list[int], states: torch.Tensor) -> None:
    """Fill the aligned inputs and advance targets of a training item whose step s is predicted at start + s."""
    length, frames = item["kinds"].shape[0], states.shape[0]
    steps = length - start  # steps predicted, the frames' own and what follows them (EOS, the delay's tail)
    ended = torch.full((steps,), 2 * len(sound_ids), dtype=torch.long)
    ended[:min(frames, steps)] = states[:steps]
    window, place = aligned_inputs(cfg, sound_ids, ended)
    item["window"][:, start + 1:] = window[:, 1:]  # step 0's position is <sep>: no frame state yet
    item["place"][start + 1:] = place[1:]
    # The position predicting step s learns how far the state moves from frame s to s + 1; the last frame's moves
    # to "ended" (the state the EOS step is given), and <sep>, which has no frame state, counts from 0.
    following = torch.cat([states.long(), torch.tensor([2 * len(sound_ids)])])
    current = following[:-1].clone()
    current[0] = 0
    item["advance"][start:start + frames] = (following[1:] - current).clamp(0, cfg.advance_classes - 1)


def training_item(cfg: SpeechLMConfig, prompt: torch.Tensor, phone_ids: list[int], target: torch.Tensor,
                  states: torch.Tensor | None = None) -> dict:
    """A whole teacher-forced sequence with its targets; target: codes [K, T] or latents [D, T], T >= 1.
    states: the target frames' alignment states [T] (voxtok.lm.align.frame_states), required by aligned LMs."""
    if cfg.aligned and (states is None or states.shape[0] != target.shape[1]):
        raise ValueError("an aligned LM needs one alignment state per target frame")
    head = prefix(cfg, prompt, phone_ids)
    start = head["kinds"].shape[0] - 1  # the <sep> position predicts the first target step
    item = _with_targets(cfg, head, start, target)
    if cfg.aligned:
        _add_alignment(cfg, item, start, sounding_ids(cfg, phone_ids), states)
    return item


def _with_targets(cfg: SpeechLMConfig, head: dict, start: int, target: torch.Tensor) -> dict:
    """The prefix `head` followed by the target speech, with the losses' targets from position `start` on."""
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


# Per-sequence entries of an item (one vector, not one value per position): stacked, never padded.
PER_SEQUENCE = ("speaker",)


def collate(items: list[dict]) -> dict:
    """Right-pad items to one length (padding is never a target: it is causal-masked from real positions)."""
    length = max(item["kinds"].shape[-1] for item in items)
    batch = {}
    for key in items[0]:
        if key in PER_SEQUENCE:
            batch[key] = torch.stack([item[key] for item in items])
            continue
        pad_value = -1 if key in ("targets", "advance") else 0
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
    if cfg.aligned:
        item["window"] = torch.zeros(len(ALIGN_WINDOW), length, dtype=torch.long)
        item["place"] = torch.full((length,), NOT_ALIGNED, dtype=torch.long)
        item["advance"] = torch.full((length,), -1, dtype=torch.long)
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
