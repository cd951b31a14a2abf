"""The voices tab's work: text + a voice prompt (an upload, a recording or a bundled example) -> speech from the
speech LM (voxtok.lm.tts), streamed through the 12.5 Hz tokenizer's decoder, with the time to first audio and the
real-time factor.

LMs come from lm/pretrained/ (the shipped ones) and from VOXTOK_DEMO_LMS (NAME=DIR pairs, comma-separated, for a
model you trained); VOXTOK_DEMO_TOKENIZER names the tokenizer folder of those when it is not a shipped one (the
shipped LMs decode with the tokenizer they name)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from voxtok.demo.codec_tab import DemoInputError, load_upload

MAX_TEXT_CHARS = 400
_lms: dict[str, object] = {}
_lock = threading.Lock()


def available_lms() -> dict[str, str]:
    """Name -> model folder, shipped first."""
    from voxtok.lm.tts import DEFAULT_LM, PRETRAINED_ROOT

    # The default first, retired versions (a "-vN" suffix: they speak through a retired tokenizer) last.
    shipped = sorted(PRETRAINED_ROOT.glob("*"),
                     key=lambda p: (p.name != DEFAULT_LM, re.search(r"-v\d+$", p.name) is not None, p.name))
    found = {p.name: str(p) for p in shipped if (p / "config.json").is_file()}
    found.update(_environment_lms())
    return found


def model_temperature(folder: str | Path) -> float:
    """The sampling temperature an LM folder's config names (its card's), read without loading the weights."""
    import json

    from voxtok.lm.model import SpeechLMConfig

    try:
        return SpeechLMConfig.from_dict(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
                                        ).temperature
    except (OSError, ValueError, TypeError):
        return SpeechLMConfig.temperature  # the config's own default, for a folder that will fail to load anyway


def _environment_lms() -> dict[str, str]:
    found = {}
    for pair in filter(None, os.environ.get("VOXTOK_DEMO_LMS", "").split(",")):
        name, _, folder = pair.partition("=")
        if name.strip() and folder.strip():
            found[name.strip()] = folder.strip()
    return found


def _load(name: str):
    from voxtok.lm.tts import load_lm, tokenizer_for

    models = available_lms()
    if name not in models:
        raise DemoInputError(f"unknown voice model {name!r}; choose one of {', '.join(models) or 'none'}")
    with _lock:
        if name not in _lms:
            lm = load_lm(models[name])
            tokenizer = os.environ.get("VOXTOK_DEMO_TOKENIZER") if name in _environment_lms() else None
            _lms[name] = (lm, tokenizer_for(lm, tokenizer or None))
        return _lms[name]


def speak(text: str, voice_path: str | Path | None, model_name: str, temperature: float | None = None, seed: int = 0,
          max_seconds: float = 20.0, steps: int | None = None) -> tuple[np.ndarray, str]:
    """(16 kHz speech, a Markdown summary); a DemoInputError says what is wrong with the request."""
    pieces, summary = [], ""
    for piece, latest in speak_stream(text, voice_path, model_name, temperature, seed, max_seconds, steps):
        pieces.append(piece)
        summary = latest
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32), summary


def speak_stream(text: str, voice_path: str | Path | None, model_name: str, temperature: float | None = None,
                 seed: int = 0, max_seconds: float = 20.0,
                 steps: int | None = None) -> Iterator[tuple[np.ndarray, str]]:
    """The speech as it is generated: (16 kHz samples that became final, a Markdown summary with the phonemes
    and the figures so far); the request is checked before the first item, so a DemoInputError comes first.
    `steps`: the flow head's Euler steps of a continuous LM (None: the model's own; a discrete LM ignores it)."""
    from voxtok.errors import VoxtokError
    from voxtok.lm.generate import Sampling
    from voxtok.lm.phonemes import phonemize, symbols_to_ids
    from voxtok.lm.tts import prompt_tokens, stream_speech, voice_embedding

    if not isinstance(text, str) or not text.strip():
        raise DemoInputError("type something for the voice to say")
    if len(text) > MAX_TEXT_CHARS:
        raise DemoInputError(f"the text is {len(text)} characters; at most {MAX_TEXT_CHARS}")
    if temperature is not None and not 0.0 <= float(temperature) <= 2.0:
        raise DemoInputError("temperature must be between 0 and 2")
    if steps is not None and not 1 <= int(steps) <= 64:
        raise DemoInputError("flow steps must be between 1 and 64")
    lm, tokenizer = _load(model_name)
    voice = load_upload(voice_path, max_seconds=30.0) if voice_path else None
    if voice is not None:
        from voxtok.lm.tts import check_voice_prompt

        try:
            check_voice_prompt(voice, "the voice prompt")
        except VoxtokError as exc:  # silent, or too short to carry a voice
            raise DemoInputError(str(exc)) from None
    temperature = lm.config.temperature if temperature is None else float(temperature)
    sampling = Sampling(temperature=temperature, top_k=50, seed=int(seed),
                        max_frames=max(1, int(max_seconds * lm.config.frame_rate)),
                        flow_steps=None if steps is None else int(steps))
    try:
        symbols = phonemize(text)
        ids = symbols_to_ids(symbols, lm.config.phone_symbols)
    except VoxtokError as exc:  # a phoneme the model does not know, and the like
        raise DemoInputError(str(exc)) from None
    phonemes = "".join(symbols).strip()
    flow = f", {sampling.flow_steps or lm.config.flow_steps} flow steps" if lm.config.kind == "continuous" else ""
    prompt = prompt_tokens(lm, tokenizer, voice)
    spoken = 0
    for samples, stats in stream_speech(lm, ids, prompt, sampling, tokenizer, speaker=voice_embedding(lm, voice)):
        spoken += samples.size
        if stats["ended"] is None:
            summary = f"phonemes: `{phonemes}`\n\nspeaking… {stats['seconds']:.2f} s so far"
        elif not spoken:
            raise DemoInputError("the model ended without speaking; try another seed or a higher temperature")
        else:
            summary = (f"phonemes: `{phonemes}`\n\n**{stats['seconds']:.2f} s** of speech in {stats['wall_s']:.2f} s "
                       f"({stats['x_realtime']:g}× real time); first audio after **{stats['first_audio_ms']:.0f} ms**; "
                       + ("ended by itself" if stats["ended"] else f"stopped at the {max_seconds:g} s limit")
                       + f"; model {model_name} ({lm.config.kind}{flow}), voice prompt: "
                       + ("yes" if voice is not None else "none"))
        yield samples, summary
