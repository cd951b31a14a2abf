"""The public API: load a codec, turn audio into codes or .vtok bytes and back.

Long inputs are encoded and decoded in streaming chunks, so memory stays bounded and the codes equal
the one-shot result; batches of files are padded at the end only, which a causal encoder ignores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from voxtok.audio import audio_duration, is_silent, iter_audio, load_audio, save_audio_blocks
from voxtok.binary import ModelTokens, TokenHeader, decode_vtok, encode_vtok
from voxtok.errors import VoxtokError
from voxtok.loading import PRETRAINED_ROOT, available_models, load_codec  # noqa: F401  (re-exported)
from voxtok.model import VoxtokCodec

# Above this many seconds, encode/decode run chunk by chunk through the streaming path.
STREAM_ABOVE_SECONDS = 60.0
STREAM_CHUNK_SECONDS = 20.0
# Pieces a file's blocks go through the streaming encoder in: v2's encoder features are ~40 MB per 10 s in float64.
ENCODE_PIECE_SECONDS = 2.0


@torch.inference_mode()
def encode_samples(model: VoxtokCodec, samples: np.ndarray, num_quantizers: int | None = None) -> np.ndarray:
    """Mono float32 samples at model rate -> codes [n_q, frames] int64."""
    n_q = num_quantizers or model.config.num_quantizers
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, None]
    sr = model.config.sample_rate
    if wav.shape[-1] <= STREAM_ABOVE_SECONDS * sr:
        return model.encode(wav, n_q)[0].numpy()
    chunk = int(STREAM_CHUNK_SECONDS * sr)
    parts = []
    with model.streaming(1, n_q):
        for start in range(0, wav.shape[-1], chunk):
            parts.append(model.encode_chunk(wav[..., start:start + chunk]))
        parts.append(model.flush_encoder())
    return torch.cat(parts, dim=-1)[0].numpy()


@torch.inference_mode()
def encode_batch(model: VoxtokCodec, batch: list[np.ndarray], num_quantizers: int | None = None) -> list[np.ndarray]:
    """Several utterances in one forward pass, padded at the end; each result equals encode_samples."""
    hop = model.config.hop_length
    longest = max(len(s) for s in batch)
    wav = torch.zeros(len(batch), 1, longest)
    for i, s in enumerate(batch):
        wav[i, 0, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.float32))
    codes = model.encode(wav, num_quantizers)
    return [codes[i, :, : -(-len(s) // hop)].numpy() for i, s in enumerate(batch)]


@torch.inference_mode()
def decode_codes(model: VoxtokCodec, codes: np.ndarray, num_samples: int | None = None) -> np.ndarray:
    """codes [n_q, frames] -> mono float32 samples (trimmed to num_samples when given)."""
    codes_t = torch.from_numpy(np.asarray(codes, dtype=np.int64))[None]
    sr, hop = model.config.sample_rate, model.config.hop_length
    frames = codes_t.shape[-1]
    if frames * hop <= STREAM_ABOVE_SECONDS * sr:
        out = model.decode(codes_t)[0, 0]
    else:
        step = int(STREAM_CHUNK_SECONDS * sr) // hop
        parts = []
        with model.streaming(1, codes_t.shape[1]):
            for start in range(0, frames, step):
                parts.append(model.decode_chunk(codes_t[..., start:start + step]))
            parts.append(model.flush_decoder())
        out = torch.cat(parts, dim=-1)[0, 0]
    out = out.float().numpy()
    return out[:num_samples] if num_samples is not None else out


@torch.inference_mode()
def encode_blocks(model: VoxtokCodec, blocks: Iterable[np.ndarray], num_quantizers: int | None = None,
                  source: str = "audio") -> tuple[np.ndarray, int]:
    """Codes for audio that arrives in blocks (a long file read piece by piece), through the streaming encoder:
    memory does not grow with duration and the codes equal encode_samples on the whole signal.
    Returns (codes [n_q, frames], number of samples)."""
    n_q = num_quantizers or model.config.num_quantizers
    parts, num_samples, energy = [], 0, 0.0
    piece = max(1, int(ENCODE_PIECE_SECONDS * model.config.sample_rate))
    with model.streaming(1, n_q):
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float32)
            if not np.isfinite(block).all():
                raise VoxtokError(f"{source}: audio contains NaN or infinite samples")
            num_samples += len(block)
            energy += float(np.square(block, dtype=np.float64).sum())
            for start in range(0, len(block), piece):
                parts.append(model.encode_chunk(torch.from_numpy(block[start:start + piece])[None, None]))
            release_freed_memory()
        parts.append(model.flush_encoder())
    if num_samples == 0:
        raise VoxtokError(f"{source}: audio is empty")
    if np.sqrt(energy / num_samples) < 10 ** (SILENCE_DB / 20):
        raise VoxtokError(f"{source}: audio is silent (nothing above {SILENCE_DB:g} dBFS)")
    return torch.cat(parts, dim=-1)[0].numpy(), num_samples


def encode_file(model: VoxtokCodec, path: str | Path, num_quantizers: int | None = None) -> tuple[np.ndarray, int]:
    """Codes for an audio file of any length and format: files up to STREAM_ABOVE_SECONDS are read whole, longer
    ones block by block. Returns (codes [n_q, frames], number of samples at the model's rate)."""
    sr = model.config.sample_rate
    if audio_duration(path) <= STREAM_ABOVE_SECONDS:
        samples = load_audio(path, sr)
        check_encodable(samples, str(path))
        return encode_samples(model, samples, num_quantizers), len(samples)
    return encode_blocks(model, iter_audio(path, sr), num_quantizers, source=str(path))


def iter_decoded(model: VoxtokCodec, codes: np.ndarray, num_samples: int | None = None) -> Iterator[np.ndarray]:
    """decode_codes in pieces of STREAM_CHUNK_SECONDS through the streaming decoder, for writing long files
    without holding them: the concatenated pieces equal decode_codes (within the streaming tolerance)."""
    codes_t = torch.from_numpy(np.asarray(codes, dtype=np.int64))[None]
    return _iter_streamed(model, codes_t, model.decode_chunk, num_samples, codes_t.shape[1])


def iter_decoded_latents(model, latents: np.ndarray, num_samples: int | None = None) -> Iterator[np.ndarray]:
    """Continuous tokens [frames, dims] (normalised, as a .vlat holds them) -> audio pieces, as iter_decoded."""
    z = torch.from_numpy(np.ascontiguousarray(np.asarray(latents, dtype=np.float32).T))[None]
    return _iter_streamed(model, z, model.decode_latents_chunk, num_samples, num_quantizers=None)


def _iter_streamed(model, frames: torch.Tensor, decode_chunk, num_samples: int | None,
                   num_quantizers: int | None) -> Iterator[np.ndarray]:
    step = max(1, int(STREAM_CHUNK_SECONDS * model.config.frame_rate))
    remaining = num_samples if num_samples is not None else None
    with model.streaming(1, num_quantizers):
        starts = list(range(0, frames.shape[-1], step))
        for start in [*starts, None]:  # None: the overlap-add tail after the last frames
            with torch.inference_mode():
                if start is None:
                    out = model.flush_decoder()
                else:
                    out = decode_chunk(frames[..., start:start + step])
            piece = out[0, 0].float().numpy()
            release_freed_memory()
            if remaining is not None:
                piece = piece[:remaining]
                remaining -= len(piece)
            yield piece


@torch.inference_mode()
def encode_latents_file(model, path: str | Path) -> tuple[np.ndarray, int]:
    """Continuous tokens of an audio file: (latents [frames, dims] float32, normalised; number of samples).
    Long files go through the streaming encoder block by block, as encode_file does."""
    if not model.continuous:
        raise VoxtokError(f"model {model.model_id} has no continuous latents (use the 12.5 Hz tokenizer, "
                          "voxtok-16k-12hz)")
    sr = model.config.sample_rate
    samples = load_audio(path, sr)
    check_encodable(samples, str(path))
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, None]
    if wav.shape[-1] <= STREAM_ABOVE_SECONDS * sr:
        z = model.encode_latents(wav)
    else:
        chunk = int(STREAM_CHUNK_SECONDS * sr)
        with model.streaming(1):
            parts = [model.encode_latents_chunk(wav[..., s:s + chunk]) for s in range(0, wav.shape[-1], chunk)]
            parts.append(model.flush_latents())
        z = torch.cat(parts, dim=-1)
    return z[0].T.float().numpy(), len(samples)


def decode_to_file(model: VoxtokCodec, codes: np.ndarray, path: str | Path, num_samples: int | None = None) -> None:
    """Decode codes straight into a .wav/.flac, written piece by piece and renamed into place at the end."""
    save_audio_blocks(path, iter_decoded(model, codes, num_samples), model.config.sample_rate)


def release_freed_memory() -> None:
    """Hand memory freed by the last chunk back to the OS (glibc's malloc_trim). Without it glibc keeps the freed
    chunk buffers and the process grows by ~1.4 MB per 10 s of audio, so a 2-hour file would grow by ~1 GB
    although nothing is held. Elsewhere (no glibc) this does nothing."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def model_tokens(model: VoxtokCodec) -> ModelTokens:
    """The header fields a .vtok file must carry for this model to decode it."""
    cfg = model.config
    return ModelTokens(model_id=model.model_id, config_hash=cfg.config_hash(), sample_rate=cfg.sample_rate,
                       frame_rate=cfg.frame_rate, codebook_size=cfg.codebook_size,
                       max_codebooks=cfg.num_quantizers)


def read_tokens(model: VoxtokCodec, data: bytes, source: str = "vtok data") -> tuple[TokenHeader, np.ndarray]:
    """.vtok bytes -> (header, codes), every header field checked against the model before unpacking."""
    header, codes = decode_vtok(data, expect=model_tokens(model), source=source)
    check_codes(model, codes, source)
    return header, codes


def check_codes(model: VoxtokCodec, codes: np.ndarray, source: str = "codes") -> None:
    if codes.ndim != 2:
        raise VoxtokError(f"{source}: codes must be [codebooks, frames], got shape {codes.shape}")
    if codes.shape[1] == 0:
        raise VoxtokError(f"{source}: holds no frames, there is nothing to decode")
    if not 1 <= codes.shape[0] <= model.config.num_quantizers:
        raise VoxtokError(f"{source}: {codes.shape[0]} codebooks, this model has 1..{model.config.num_quantizers}")
    if codes.size and (codes.min() < 0 or codes.max() >= model.config.codebook_size):
        raise VoxtokError(f"{source}: codes outside 0..{model.config.codebook_size - 1}")


def make_header(model: VoxtokCodec, codes: np.ndarray, num_samples: int) -> TokenHeader:
    cfg = model.config
    return TokenHeader(model_id=model.model_id, config_hash=cfg.config_hash(), sample_rate=cfg.sample_rate,
                       frame_rate=cfg.frame_rate, num_codebooks=int(codes.shape[0]),
                       codebook_size=cfg.codebook_size, num_samples=int(num_samples),
                       num_frames=int(codes.shape[1]))


# Audio whose RMS level is below this is refused as silent (whole files and streamed ones alike).
SILENCE_DB = -90.0


def check_encodable(samples: np.ndarray, source: str = "audio") -> None:
    if samples.size == 0:
        raise VoxtokError(f"{source}: audio is empty")
    if not np.isfinite(samples).all():
        raise VoxtokError(f"{source}: audio contains NaN or infinite samples")
    if is_silent(samples, threshold_db=SILENCE_DB):
        raise VoxtokError(f"{source}: audio is silent (nothing above {SILENCE_DB:g} dBFS)")


def compress(model: VoxtokCodec, samples: np.ndarray, sample_rate: int,
             bitrate_kbps: float | None = None) -> bytes:
    """Mono float32 samples -> .vtok bytes. Resamples when sample_rate differs from the model's."""
    if sample_rate != model.config.sample_rate:
        import soxr

        samples = soxr.resample(samples, sample_rate, model.config.sample_rate, quality="HQ").astype(np.float32)
    check_encodable(samples)
    codes = encode_samples(model, samples, model.num_quantizers_for(bitrate_kbps))
    return encode_vtok(make_header(model, codes, len(samples)), codes)


def decompress(model: VoxtokCodec, data: bytes, source: str = "vtok data") -> tuple[np.ndarray, int]:
    """.vtok bytes -> (mono float32 samples, sample rate); refuses files made by another model."""
    header, codes = read_tokens(model, data, source)
    return decode_codes(model, codes, header.num_samples), header.sample_rate
