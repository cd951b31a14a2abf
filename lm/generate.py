"""Generation with a KV cache: frames come out one at a time, so a caller can decode them as they arrive.

Discrete: at step s codebook k samples group k of frame s - k (the delay pattern); codebooks whose frame has not
started yet are forced to the delay's padding, the end-of-speech token is only allowed in codebook 0, and once it
is drawn the remaining K - 1 steps finish the frames already begun. Continuous: each step draws the next latent
from the flow head and ends when the EOS head says so (probability above one half).

Aligned LMs (SpeechLMConfig.aligned) walk their alignment state over the text as they go (AlignmentWalk): after
each position the advance head says how far the next frame's state moves, and that frame's input carries the
phonemes of its state. The advance is drawn at temperature 1 (argmax when sampling.temperature is 0): a sampled
duration is a plausible one, while the argmax of a per-frame "move on?" decision can hold a phoneme for ever.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from voxtok.lm.model import SPEECH, SpeechLM
from voxtok.lm.sequence import _blank, _speech, aligned_inputs, prefix, sounding_ids


@dataclass
class Sampling:
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0
    seed: int = 0
    max_frames: int = 400  # 32 s at 12.5 Hz
    min_frames: int = 1
    flow_steps: int | None = None  # continuous: Euler steps of the flow head (default: the config's)


def filtered_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """[..., V] logits with everything outside the top-k and the top-p nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token once the probability before it already reaches top_p (the first one always stays).
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def _draw(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filtered_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[..., 0]


class AlignmentWalk:
    """An aligned LM's place in its text during generation (voxtok.lm.align's states: 2k before sounding phoneme k,
    2k + 1 inside it, 2M after the last); <sep> starts it at 0."""

    def __init__(self, model: SpeechLM, phone_ids: list[int], sampling: Sampling, generator: torch.Generator):
        self.model, self.sampling, self.generator = model, sampling, generator
        self.sound_ids = sounding_ids(model.config, phone_ids)
        self.state, self.last = 0, 2 * len(self.sound_ids)
        self.states: list[int] = []  # the state each generated position was given, for callers to inspect

    def advance(self, hidden: torch.Tensor) -> None:
        """Move on by the advance head's draw at the position whose hidden state [1, dim] this is."""
        logits = self.model.advance_head(hidden)[0].float()
        if self.sampling.temperature <= 0:
            delta = int(logits.argmax())
        else:
            delta = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=self.generator)[0])
        self.state = min(self.state + delta, self.last)

    def end(self) -> None:
        self.state = self.last

    def fill(self, item: dict) -> dict:
        """An item of one speech position with this state's aligned inputs."""
        window, place = aligned_inputs(self.model.config, self.sound_ids, torch.tensor([self.state]))
        item["window"], item["place"] = window, place
        self.states.append(self.state)
        return item


@torch.inference_mode()
def generate_frames(model: SpeechLM, prompt: torch.Tensor, phone_ids: list[int],
                    sampling: Sampling | None = None,
                    states_out: list[int] | None = None,
                    speaker: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Yield frames as they complete: codes [K] (discrete) or latents [D] (continuous). Ends at end of speech
    or after sampling.max_frames frames. states_out (aligned LMs): receives the alignment state given to each
    position after <sep>, in order (the one predicting frame 1 first): where in the text the speech is.
    speaker: the voice's speaker embedding [speaker_dim] (LMs with speaker conditioning; None: no voice)."""
    sampling = sampling or Sampling()
    cfg = model.config
    generator = torch.Generator().manual_seed(sampling.seed)
    device = next(model.parameters()).device
    voice = {"speaker": speaker.float()[None].to(device)} if cfg.speaker_dim and speaker is not None else {}
    head = {k: v[None].to(device) for k, v in prefix(cfg, prompt, phone_ids).items()}
    hidden, cache = model.backbone(model.embed({**head, **voice}))
    position = head["kinds"].shape[1]
    state = hidden[:, -1]
    walk = AlignmentWalk(model, phone_ids, sampling, generator) if cfg.aligned else None
    if walk is not None and states_out is not None:
        walk.states = states_out
    if cfg.kind == "continuous":
        yield from _continuous(model, state, cache, position, sampling, generator, walk, voice)
        return
    k_books = cfg.num_codebooks
    history: list[torch.Tensor] = []  # delayed steps drawn so far, [K] each
    ended_at: int | None = None  # the frame index holding end of speech
    step = 0
    while True:
        codes = torch.empty(k_books, dtype=torch.long)
        for k, head_k in enumerate(model.code_heads):  # codebook 0 first: it decides the end
            frame = step - k
            if frame < 0:
                codes[k] = cfg.pad_token
            elif ended_at is not None and frame >= ended_at:
                codes[k] = cfg.eos_token if frame == ended_at else cfg.pad_token
            elif k == 0 and frame >= sampling.max_frames:
                codes[k], ended_at = cfg.eos_token, frame
            else:
                logits = head_k(state)[0].float()
                logits[cfg.pad_token] = float("-inf")
                if k > 0 or frame < sampling.min_frames:
                    logits[cfg.eos_token] = float("-inf")
                codes[k] = _draw(logits, sampling, generator)
                if k == 0 and codes[k] == cfg.eos_token:
                    ended_at = frame
        history.append(codes)
        done = step - (k_books - 1)  # the frame whose last codebook was just drawn
        if done >= 0 and (ended_at is None or done < ended_at):
            yield torch.stack([history[done + k][k] for k in range(k_books)])
        if ended_at is not None and done >= ended_at - 1:
            return
        item = _speech(cfg, codes[:, None], segment=2)
        if walk is not None:  # the next position predicts step + 1: past the end of speech it is told so
            walk.advance(state)
            if ended_at is not None and step + 1 >= ended_at:
                walk.end()
            walk.fill(item)
        x = model.embed({**{key: value[None].to(device) for key, value in item.items()}, **voice})
        hidden, cache = model.backbone(x, position, cache)
        position += 1
        state = hidden[:, -1]
        step += 1


def _continuous(model: SpeechLM, state: torch.Tensor, cache: list, position: int, sampling: Sampling,
                generator: torch.Generator, walk: AlignmentWalk | None, voice: dict) -> Iterator[torch.Tensor]:
    cfg = model.config
    steps = sampling.flow_steps or cfg.flow_steps
    device = state.device
    for frame in range(sampling.max_frames):
        if frame >= sampling.min_frames and torch.sigmoid(model.eos_head(state))[0, 0] > 0.5:
            return
        latent = model.flow_head.sample(state, steps, max(sampling.temperature, 0.0), generator)[0]
        yield latent
        item = _blank(cfg, 1, SPEECH, segment=2)
        item["latents"] = latent[:, None]
        if walk is not None:
            walk.advance(state)
            walk.fill(item)
        item = {**{key: value[None].to(device) for key, value in item.items()}, **voice}
        hidden, cache = model.backbone(model.embed(item), position, cache)
        position += 1
        state = hidden[:, -1]
