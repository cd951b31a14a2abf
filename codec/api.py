"""The few calls most users need, re-exported as `voxtok.load`, `voxtok.encode`, … (see README, "Use").

Thin wrappers over voxtok.compress (codes, streaming, .vtok bytes) and voxtok.lm.tts (speech from text): numpy in,
numpy out, mono float32 at the model's sample rate (16 kHz)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from voxtok.errors import VoxtokError


def load(name_or_path: str | Path | None = None, device: str = "cpu"):
    """A shipped codec or tokenizer by name (default: voxtok-16k-v2; "voxtok-16k-12hz" for the LM tokens) or a
    folder with config.json + model.safetensors."""
    from voxtok.compress import load_codec

    return load_codec(name_or_path, device=device)


def encode(model, samples: np.ndarray, bitrate_kbps: float | None = None) -> np.ndarray:
    """Discrete codes [codebooks, frames] int64 of mono samples; the most codebooks that fit `bitrate_kbps`."""
    from voxtok.compress import check_encodable, encode_samples

    check_encodable(samples)
    return encode_samples(model, samples, model.num_quantizers_for(bitrate_kbps))


def decode(model, codes: np.ndarray, num_samples: int | None = None) -> np.ndarray:
    """Audio of codes [codebooks, frames] (trimmed to num_samples when given)."""
    from voxtok.compress import decode_codes

    return decode_codes(model, codes, num_samples)


def tokenize(tokenizer, samples: np.ndarray) -> np.ndarray:
    """Continuous tokens [frames, dims] float32 (normalised, as the speech LM reads them) of mono samples."""
    import torch
    from voxtok.compress import STREAM_ABOVE_SECONDS, check_encodable

    _require_continuous(tokenizer)
    check_encodable(samples)
    if len(samples) > STREAM_ABOVE_SECONDS * tokenizer.config.sample_rate:
        raise VoxtokError("tokenize takes at most a minute of audio at a time (use `voxtok encode --format latents`"
                          " for long files: it streams)")
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, None]
    with torch.inference_mode():
        return tokenizer.encode_latents(wav)[0].T.float().numpy()


def detokenize(tokenizer, latents: np.ndarray, num_samples: int | None = None) -> np.ndarray:
    """Audio of continuous tokens [frames, dims] (tokenize's output), through the tokenizer's current decoder."""
    from voxtok.compress import iter_decoded_latents

    _require_continuous(tokenizer)
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 2 or latents.shape[1] != tokenizer.config.latent_dim:
        raise VoxtokError(f"latents must be [frames, {tokenizer.config.latent_dim}], got {list(latents.shape)}")
    pieces = list(iter_decoded_latents(tokenizer, latents, num_samples))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def tts(text: str, voice: np.ndarray | None = None, lm: str | Path | None = None, seed: int = 0) -> np.ndarray:
    """16 kHz speech for `text`, in the voice of `voice` (3-30 s of 16 kHz samples) when given, from a shipped
    speech LM by name or folder (default: voxtok-lm-continuous)."""
    from voxtok.lm.generate import Sampling
    from voxtok.lm.tts import check_voice_prompt, synthesize

    if not text.strip():
        raise VoxtokError("text is empty: there is nothing to say")
    if voice is not None:
        check_voice_prompt(voice)
    model, tokenizer = _speech_lm(str(lm) if lm is not None else None)
    # The sampling `voxtok tts` uses by default (the model's own temperature).
    sampling = Sampling(temperature=model.config.temperature, top_k=50, seed=seed, max_frames=250)
    audio, _ = synthesize(model, text, voice, sampling, tokenizer)
    return audio


@functools.cache
def _speech_lm(name_or_path: str | None):
    """One LM and its tokenizer per process: loading both takes a few seconds."""
    from voxtok.lm.tts import load_lm, tokenizer_for

    model = load_lm(name_or_path)
    return model, tokenizer_for(model)


def _require_continuous(model) -> None:
    if not getattr(model, "continuous", False):
        raise VoxtokError(f"{model.model_id} has no continuous tokens (load the 12.5 Hz tokenizer: "
                          "voxtok.load('voxtok-16k-12hz'))")
