"""Streaming equals offline: same codes, audio within 1e-4, for any chunking of real speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from voxtok.compress import decode_codes, encode_batch, encode_samples


def _stream_encode(model, wav: torch.Tensor, chunk: int, n_q: int) -> torch.Tensor:
    parts = []
    with model.streaming(1, n_q):
        for start in range(0, wav.shape[-1], chunk):
            parts.append(model.encode_chunk(wav[..., start:start + chunk]))
        parts.append(model.flush_encoder())
    return torch.cat(parts, dim=-1)


def _stream_decode(model, codes: torch.Tensor, frames_per_chunk: int) -> torch.Tensor:
    parts = []
    with model.streaming(1, codes.shape[1]):
        for start in range(0, codes.shape[-1], frames_per_chunk):
            parts.append(model.decode_chunk(codes[..., start:start + frames_per_chunk]))
        parts.append(model.flush_decoder())
    return torch.cat(parts, dim=-1)


@pytest.mark.parametrize("chunk", [320, 1, 77, 333, 1000, 16000 + 13, 48000])
@torch.inference_mode()
def test_streaming_encode_matches_offline(codec_model, dev_speech, chunk):
    samples = dev_speech[0][: 16000 * 4 + 123]  # a length that is not a whole number of frames
    wav = torch.from_numpy(samples)[None, None]
    if chunk == 1:
        wav = wav[..., :3200 + 17]  # one sample at a time is slow; 0.2 s proves the point
    n_q = codec_model.config.num_quantizers
    offline = codec_model.encode(wav, n_q)
    streamed = _stream_encode(codec_model, wav, chunk, n_q)
    assert streamed.shape == offline.shape
    assert torch.equal(streamed, offline)


@pytest.mark.parametrize("frames_per_chunk", [1, 3, 50, 10_000])
@torch.inference_mode()
def test_streaming_decode_matches_offline(codec_model, dev_speech, frames_per_chunk):
    wav = torch.from_numpy(dev_speech[0][: 16000 * 4])[None, None]
    codes = codec_model.encode(wav, 6)
    offline = codec_model.decode(codes)
    streamed = _stream_decode(codec_model, codes, frames_per_chunk)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() < 1e-4


@torch.inference_mode()
def test_stream_latency_is_one_frame_plus_istft_overlap(codec_model):
    cfg = codec_model.config
    # 320-sample frame + 240-sample overlap-add tail = 35 ms at 16 kHz.
    assert cfg.latency_samples == cfg.hop_length + cfg.window - cfg.subframe
    assert 1000 * cfg.latency_samples / cfg.sample_rate <= 40
    # The first frame's codes exist as soon as its last sample arrives, not before.
    with codec_model.streaming(1):
        assert codec_model.encode_chunk(torch.zeros(1, 1, cfg.hop_length - 1)).shape[-1] == 0
        assert codec_model.encode_chunk(torch.zeros(1, 1, 1)).shape[-1] == 1


def test_batched_encoding_equals_one_by_one(codec_model, real_root, real_rows):
    from voxtok.audio import load_audio

    paths = [r["path"] for r in real_rows if r["path"].startswith("speechocean762/")][:3]
    clips = [load_audio(real_root / p, 16000)[: 16000 * (2 + i)] for i, p in enumerate(paths)]
    batched = encode_batch(codec_model, clips, 3)
    for clip, codes in zip(clips, batched):
        assert np.array_equal(codes, encode_samples(codec_model, clip, 3))


def test_long_input_streams_in_chunks_with_same_codes(codec_model, dev_speech, monkeypatch):
    import voxtok.compress as compress

    samples = np.concatenate([dev_speech[0]] * 2)  # ~21 s
    one_shot = encode_samples(codec_model, samples, 3)
    monkeypatch.setattr(compress, "STREAM_ABOVE_SECONDS", 5.0)
    monkeypatch.setattr(compress, "STREAM_CHUNK_SECONDS", 3.3)
    chunked = encode_samples(codec_model, samples, 3)
    assert np.array_equal(one_shot, chunked)
    decoded_chunked = decode_codes(codec_model, chunked, len(samples))
    monkeypatch.setattr(compress, "STREAM_ABOVE_SECONDS", 1e9)
    decoded_once = decode_codes(codec_model, chunked, len(samples))
    assert decoded_chunked.shape == (len(samples),)
    assert np.abs(decoded_chunked - decoded_once).max() < 1e-4
