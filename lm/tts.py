"""Text + a voice prompt -> speech, streamed: the LM's frames are decoded by the tokenizer as they come.

    from voxtok.lm.tts import load_lm, synthesize
    lm = load_lm("voxtok-lm-continuous")        # a shipped name (the default) or a model folder
    audio, stats = synthesize(lm, "Hello there.", voice=prompt_samples, sampling=Sampling(seed=1))
    stats["first_audio_ms"]                                  # wall time until the first audio samples

The tokenizer is the one the LM was trained on (its id and config hash are in the LM's config; a mismatch is
refused rather than decoded into noise).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from voxtok.errors import VoxtokError
from voxtok.lm.generate import Sampling, generate_frames
from voxtok.lm.model import SpeechLM
from voxtok.lm.phonemes import phonemize, symbols_to_ids

PRETRAINED_ROOT = Path(__file__).resolve().parent / "pretrained"
# The continuous LM on the 12.5 Hz tokens stacked on codec v2 (issue #28); the LMs of the retired 12.5 Hz
# tokenizer stay as voxtok-lm-continuous-v1 / voxtok-lm-discrete-v1.
DEFAULT_LM = "voxtok-lm-continuous"
MAX_PROMPT_SECONDS = 10.0  # the LM reads at most this much of the prompt
# A voice prompt shorter than this carries too little of the voice (Resemblyzer wants >= 1.6 s of speech), and one
# longer than the upper bound is almost surely the wrong file: both are refused instead of silently used.
PROMPT_SECONDS_RANGE = (1.0, 120.0)


def check_voice_prompt(voice: np.ndarray, source: str = "voice prompt", sample_rate: int = 16000) -> None:
    """One clear error for a prompt the LM cannot take a voice from: empty, NaN, silent, too short or too long."""
    from voxtok.compress import check_encodable

    check_encodable(voice, source)
    seconds = len(voice) / sample_rate
    low, high = PROMPT_SECONDS_RANGE
    if seconds < low:
        raise VoxtokError(f"{source}: {seconds:.2f} s of audio is too short for a voice prompt (give {low:g}-"
                          f"{high:g} s of the voice speaking)")
    if seconds > high:
        raise VoxtokError(f"{source}: {seconds:.0f} s of audio is too long for a voice prompt (give {low:g}-"
                          f"{high:g} s; the LM reads the first {MAX_PROMPT_SECONDS:g} s)")


def load_lm(name_or_path: str | Path | None = None, device: str = "cpu") -> SpeechLM:
    target = Path(name_or_path or DEFAULT_LM)
    if not target.is_dir():
        shipped = PRETRAINED_ROOT / str(name_or_path or DEFAULT_LM)
        if not shipped.is_dir():
            known = sorted(p.name for p in PRETRAINED_ROOT.glob("*") if (p / "config.json").is_file())
            raise VoxtokError(f"unknown LM {str(name_or_path or DEFAULT_LM)!r} (shipped: {', '.join(known) or 'none'}; "
                              "or pass a model folder)")
        target = shipped
    return SpeechLM.from_pretrained(target, device=device)


def tokenizer_for(lm: SpeechLM, tokenizer: str | Path | None = None):
    from voxtok.compress import load_codec

    cfg = lm.config
    if tokenizer is None:  # the folder the LM's corpus was tokenised with, where it is at hand; else the name
        tokenizer = cfg.tokenizer_source if cfg.tokenizer_source and Path(cfg.tokenizer_source).is_dir() \
            else cfg.tokenizer
    model = load_codec(tokenizer)
    if model.config.config_hash() != cfg.tokenizer_config_hash:
        raise VoxtokError(f"the LM was trained on tokenizer {cfg.tokenizer} (config "
                          f"{cfg.tokenizer_config_hash}); {model.model_id} has config "
                          f"{model.config.config_hash()}")
    # The token-defining weights where the LM recorded them (a decoder fine-tune is welcome), else all of them.
    if cfg.tokenizer_tokens_hash:
        weights, wanted = model.tokens_hash(), cfg.tokenizer_tokens_hash
    else:
        weights, wanted = (model.weights_hash() if cfg.tokenizer_weights_hash else ""), cfg.tokenizer_weights_hash
    if weights != wanted:
        where = f" (it was read from {cfg.tokenizer_source})" if cfg.tokenizer_source else ""
        raise VoxtokError(f"the LM was trained on other weights of tokenizer {cfg.tokenizer}{where}: "
                          f"{tokenizer} has weights {weights}, the LM's are "
                          f"{wanted}; pass --tokenizer with the folder it was trained on")
    return model


@torch.inference_mode()
def synthesize(lm: SpeechLM, text: str, voice: np.ndarray | None = None, sampling: Sampling | None = None,
               tokenizer=None, on_audio=None) -> tuple[np.ndarray, dict]:
    """Mono 16 kHz float32 speech for `text` in the voice of `voice` (16 kHz samples; None: no prompt).
    on_audio(samples) is called with each decoded piece as it becomes final (streaming playback)."""
    sampling = sampling or Sampling()
    codec = tokenizer or tokenizer_for(lm)
    started = time.perf_counter()
    ids = symbols_to_ids(phonemize(text), lm.config.phone_symbols)
    prompt = prompt_tokens(lm, codec, voice)
    return speak(lm, ids, prompt, sampling, codec, on_audio, started=started, speaker=voice_embedding(lm, voice))


def voice_embedding(lm: SpeechLM, voice: np.ndarray | None) -> torch.Tensor | None:
    """The speaker embedding an LM with speaker conditioning reads for a voice (16 kHz samples; Resemblyzer, as
    its corpus was embedded); None for an LM without it or without a voice."""
    if not lm.config.speaker_dim or voice is None:
        return None
    from voxtok.eval.models import require

    require("resemblyzer", f"{lm.config.name}'s speaker conditioning")
    embedding = _speaker_encoder().embed(voice[: int(MAX_PROMPT_SECONDS * 16000)])
    if embedding.shape[0] != lm.config.speaker_dim:
        raise VoxtokError(f"{lm.config.name} reads {lm.config.speaker_dim}-dim speaker embeddings, "
                          f"Resemblyzer gives {embedding.shape[0]}")
    return torch.from_numpy(embedding)


@functools.cache
def _speaker_encoder():
    """One Resemblyzer encoder per process (it loads its weights once)."""
    from voxtok.eval.models import SpeakerEncoder

    return SpeakerEncoder()


@torch.inference_mode()
def prompt_tokens(lm: SpeechLM, codec, voice: np.ndarray | None) -> torch.Tensor:
    """The voice prompt as the LM reads it: FSQ codes [K, T] (discrete) or normalised latents [D, T]
    (continuous) of at most MAX_PROMPT_SECONDS of `voice`; empty (T = 0) without a voice."""
    discrete = lm.config.kind == "discrete"
    if voice is None:
        return torch.zeros(lm.config.num_codebooks if discrete else lm.config.latent_dim, 0,
                           dtype=torch.long if discrete else torch.float32)
    voice = voice[: int(MAX_PROMPT_SECONDS * codec.config.sample_rate)]
    wav = torch.from_numpy(np.ascontiguousarray(voice, dtype=np.float32))[None, None]
    z = codec.encode_latents(wav)[0]
    return codec.codes_of_latents(z[None])[0] if discrete else z.float()


def speak(lm: SpeechLM, ids: list[int], prompt: torch.Tensor, sampling: Sampling, codec,
          on_audio=None, started: float | None = None, speaker: torch.Tensor | None = None
          ) -> tuple[np.ndarray, dict]:
    """Generate from phoneme ids and prompt tokens (prompt_tokens) and the voice's speaker embedding
    (voice_embedding), decoding each frame as it comes through the tokenizer's streaming decoder; the audio and
    the figures (frames, seconds, first_audio_ms, x_realtime)."""
    pieces, stats = [], {}
    for samples, figures in stream_speech(lm, ids, prompt, sampling, codec, started, speaker):
        stats = figures
        if samples.size:
            pieces.append(samples)
            if on_audio is not None:
                on_audio(samples)
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)), stats


@torch.inference_mode()
def stream_speech(lm: SpeechLM, ids: list[int], prompt: torch.Tensor, sampling: Sampling, codec,
                  started: float | None = None, speaker: torch.Tensor | None = None
                  ) -> Iterator[tuple[np.ndarray, dict]]:
    """speak() as a generator: (samples that became final, the figures so far) per generated frame; the last
    item's figures are final. The samples add up to exactly frames × hop (the decoder's tail is cut)."""
    started = time.perf_counter() if started is None else started
    discrete = lm.config.kind == "discrete"
    hop, rate = codec.config.hop_length, codec.config.sample_rate
    first_audio, frames, emitted = None, 0, 0

    def figures(final: bool) -> dict:
        total = time.perf_counter() - started
        seconds = emitted / rate
        return {"frames": frames, "seconds": round(seconds, 3),
                "ended": frames < sampling.max_frames if final else None,
                "first_audio_ms": None if first_audio is None else round(1000 * first_audio, 1),
                "wall_s": round(total, 3), "x_realtime": round(seconds / total, 2) if total > 0 else None}

    def final_part(piece: torch.Tensor) -> np.ndarray:
        nonlocal first_audio, emitted
        samples = piece[0, 0].float().numpy()[: max(0, frames * hop - emitted)]
        if samples.size and first_audio is None:
            first_audio = time.perf_counter() - started
        emitted += samples.size
        return samples

    with codec.streaming(1):
        for frame in generate_frames(lm, prompt, ids, sampling, speaker=speaker):
            frames += 1
            frame = frame.cpu()  # the LM may run on a GPU; the tokenizer decodes on the CPU
            if discrete:
                piece = codec.decode_chunk(frame[None, :, None])
            else:
                piece = codec.decode_latents_chunk(frame[None, :, None].double())
            yield final_part(piece), figures(False)
        tail = final_part(codec.flush_decoder()) if frames else np.zeros(0, dtype=np.float32)
    yield tail, figures(True)
