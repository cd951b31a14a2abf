"""The voices tab's work: text + a voice prompt (an upload, a recording or a bundled example) -> speech from the
speech LM (lm.tts), streamed through the 12.5 Hz tokenizer's decoder, with the time to first audio and the
real-time factor.

LMs come from lm/pretrained/ (the shipped ones) and from VOXTOK_DEMO_LMS (NAME=DIR pairs, comma-separated, for a
model you trained); VOXTOK_DEMO_TOKENIZER names the tokenizer folder when it is not a shipped one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from demo.codec_tab import DemoInputError, load_upload

MAX_TEXT_CHARS = 400
_lms: dict[str, object] = {}
_lock = threading.Lock()


def available_lms() -> dict[str, str]:
    """Name -> model folder, shipped first."""
    from lm.tts import PRETRAINED_ROOT

    found = {p.name: str(p) for p in sorted(PRETRAINED_ROOT.glob("*")) if (p / "config.json").is_file()}
    for pair in filter(None, os.environ.get("VOXTOK_DEMO_LMS", "").split(",")):
        name, _, folder = pair.partition("=")
        if name and folder:
            found[name.strip()] = folder.strip()
    return found


def _load(name: str):
    from lm.tts import load_lm, tokenizer_for

    models = available_lms()
    if name not in models:
        raise DemoInputError(f"unknown voice model {name!r}; choose one of {', '.join(models) or 'none'}")
    with _lock:
        if name not in _lms:
            lm = load_lm(models[name])
            _lms[name] = (lm, tokenizer_for(lm, os.environ.get("VOXTOK_DEMO_TOKENIZER") or None))
        return _lms[name]


def speak(text: str, voice_path: str | Path | None, model_name: str, temperature: float = 0.8, seed: int = 0,
          max_seconds: float = 20.0) -> tuple[np.ndarray, str]:
    """(16 kHz speech, a Markdown summary); a DemoInputError says what is wrong with the request."""
    from codec.errors import VoxtokError
    from lm.generate import Sampling
    from lm.tts import synthesize

    if not isinstance(text, str) or not text.strip():
        raise DemoInputError("type something for the voice to say")
    if len(text) > MAX_TEXT_CHARS:
        raise DemoInputError(f"the text is {len(text)} characters; at most {MAX_TEXT_CHARS}")
    if not 0.0 <= float(temperature) <= 2.0:
        raise DemoInputError("temperature must be between 0 and 2")
    lm, tokenizer = _load(model_name)
    voice = load_upload(voice_path, max_seconds=30.0) if voice_path else None
    sampling = Sampling(temperature=float(temperature), top_k=50, seed=int(seed),
                        max_frames=max(1, int(max_seconds * lm.config.frame_rate)))
    try:
        audio, stats = synthesize(lm, text, voice, sampling, tokenizer=tokenizer)
    except VoxtokError as exc:  # a phoneme the model does not know, and the like
        raise DemoInputError(str(exc)) from None
    if not len(audio):
        raise DemoInputError("the model ended without speaking; try another seed or a higher temperature")
    summary = (f"**{stats['seconds']:.2f} s** of speech in {stats['wall_s']:.2f} s "
               f"({stats['x_realtime']:g}× real time); first audio after **{stats['first_audio_ms']:.0f} ms**; "
               + ("ended by itself" if stats["ended"] else f"stopped at the {max_seconds:g} s limit")
               + f"; model {model_name} ({lm.config.kind}), voice prompt: "
               + ("yes" if voice is not None else "none"))
    return audio, summary
