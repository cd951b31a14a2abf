"""ONNX export and the torch-free runtime: parity with PyTorch on real speech, streaming == offline,
independent batched streams, latency, bad input, and that the runtime never imports torch."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from voxtok.errors import VoxtokError  # noqa: E402
from voxtok.export.onnx_export import snr_db, verify_export  # noqa: E402
from voxtok.export.runtime import (  # noqa: E402
    ExportedCodec,
    OfflineCodec,
    StreamingDecoder,
    StreamingEncoder,
    benchmark_streaming,
    iter_chunks,
    run_stream,
)

SR = 16000
# This module tests the export machinery on codec v1, the model whose INT8 graphs are supported; the default
# (v2, harmonic) model's export is tested in tests/test_harmonic_codec.py.
MODEL = "voxtok-16k"


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="voxtok")
    module.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    """One export per session, through the CLI handler (fp32 + INT8 graphs, parity check skipped here
    because the tests below make it on real speech)."""
    from voxtok.export.commands import onnx as export_command

    out = tmp_path_factory.mktemp("onnx")
    args = _parse(export_command, ["export", "onnx", "-o", str(out), "--model", MODEL, "--int8", "--no-verify",
                                   "--json"])
    assert args.func(args) == 0
    return out


@pytest.fixture(scope="session")
def v1_model():
    from voxtok.compress import load_codec

    return load_codec(MODEL)


@pytest.fixture(scope="session")
def codec(onnx_dir):
    return ExportedCodec(onnx_dir)


@pytest.fixture(scope="session")
def speech(dev_speech):
    return dev_speech[0]


@pytest.fixture(scope="session")
def torch_reference(v1_model, speech):
    """PyTorch codes (the shipped float64 inference encoder) and PyTorch decoded audio of those codes."""
    from voxtok.compress import decode_codes, encode_samples

    codes = encode_samples(v1_model, speech)
    return codes, decode_codes(v1_model, codes)


def test_manifest_describes_the_graphs(onnx_dir, codec, v1_model):
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    cfg = v1_model.config
    assert manifest["model_id"] == cfg.name and manifest["config_hash"] == cfg.config_hash()
    assert manifest["frame_size"] == 320 and manifest["sample_rate"] == SR and manifest["opset"] >= 17
    assert manifest["latency"]["algorithmic_ms"] == 35.0 <= 40
    assert set(manifest["graphs"]) == {"fp32", "int8"}
    for graph in ("encoder_step", "decoder_step"):
        inputs = {i.name: i.shape for i in codec.session(graph).get_inputs()}
        for state in manifest["states"][graph]:
            assert inputs[state["name"]][1:] == state["shape"][1:]
        outputs = {o.name for o in codec.session(graph).get_outputs()}
        assert {s["output"] for s in manifest["states"][graph]} <= outputs


def test_onnx_codes_match_pytorch(codec, speech, torch_reference):
    ref_codes, _ = torch_reference
    codes = OfflineCodec(codec).encode(speech)
    assert codes.shape == ref_codes.shape == (12, -(-len(speech) // 320))
    frames_equal = (codes == ref_codes).all(axis=0).mean()
    assert frames_equal >= 0.995, frames_equal


def test_onnx_decoder_matches_pytorch(codec, torch_reference):
    ref_codes, ref_audio = torch_reference
    audio = OfflineCodec(codec).decode(ref_codes)
    assert audio.shape == ref_audio.shape
    assert snr_db(ref_audio, audio) >= 40.0
    # Fewer codebooks (a lower bitrate) decode too, and differ from the full-rate audio.
    low = OfflineCodec(codec).decode(ref_codes[:2])
    assert low.shape == ref_audio.shape and snr_db(audio, low) < 30


@pytest.mark.parametrize("chunk", [320, 77, 1000, 16000 + 13])
def test_streaming_equals_offline(codec, speech, chunk):
    samples = speech[:SR * 3 + 123]  # not a whole number of frames
    offline = OfflineCodec(codec)
    ref_codes = offline.encode(samples)
    ref_audio = offline.decode(ref_codes)
    encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
    codes = np.concatenate([*(encoder.push(c) for c in iter_chunks(samples, chunk)), encoder.flush()], axis=-1)
    assert np.array_equal(codes, ref_codes)
    frames = max(1, chunk // 320)
    audio = np.concatenate([*(decoder.push(codes[:, i:i + frames]) for i in range(0, codes.shape[1], frames)),
                            decoder.flush()])
    assert audio.shape == ref_audio.shape
    assert np.abs(audio - ref_audio).max() < 1e-5


def test_flush_resets_for_a_new_stream(codec, speech):
    encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
    first = np.concatenate([encoder.push(speech[:8000]), encoder.flush()], axis=-1)
    assert encoder.pending_samples == 0
    again = np.concatenate([encoder.push(speech[:8000]), encoder.flush()], axis=-1)
    assert np.array_equal(first, again)
    decoder.push(first[:, :10])
    decoder.reset()
    out = np.concatenate([decoder.push(first), decoder.flush()])
    assert np.abs(out - OfflineCodec(codec).decode(first)).max() < 1e-5


def test_batch_of_streams_equals_single_streams(codec, speech):
    length = SR * 2
    rows = np.stack([speech[i * length:(i + 1) * length] for i in range(3)])
    rows[1] *= 0.3  # a quieter stream beside louder ones must not leak into them
    chunk = 800  # 50 ms: frames straddle pushes
    encoder, decoder = StreamingEncoder(codec, batch_size=3), StreamingDecoder(codec, batch_size=3)
    codes = np.concatenate([*(encoder.push(rows[:, i:i + chunk]) for i in range(0, length, chunk)),
                            encoder.flush()], axis=-1)
    audio = np.concatenate([decoder.push(codes[:, :, i:i + 2]) for i in range(0, codes.shape[-1], 2)]
                           + [decoder.flush()], axis=-1)
    assert codes.shape == (3, 12, length // 320) and audio.shape == (3, length)
    for i in range(3):
        single_enc, single_dec = StreamingEncoder(codec), StreamingDecoder(codec)
        single = np.concatenate([*(single_enc.push(c) for c in iter_chunks(rows[i], chunk)), single_enc.flush()],
                                axis=-1)
        assert np.array_equal(codes[i], single)
        single_audio = np.concatenate([single_dec.push(single), single_dec.flush()])
        assert np.abs(audio[i] - single_audio).max() < 1e-5


def test_stream_loop_latency_and_output(codec, speech):
    samples = speech[:SR * 2]
    decoded, figures = run_stream(StreamingEncoder(codec), StreamingDecoder(codec), iter_chunks(samples, 320))
    offline = OfflineCodec(codec)
    assert np.abs(decoded - offline.decode(offline.encode(samples), len(samples))).max() < 1e-5
    # One 20 ms frame, then the 15 ms iSTFT overlap: measured from the sample counts, and within the bar.
    assert figures["algorithmic_latency_ms"] == figures["stated_latency_ms"] == 35.0
    assert figures["chunks"] == 100 and figures["first_audio_ms"] > 0
    _, larger = run_stream(StreamingEncoder(codec), StreamingDecoder(codec), iter_chunks(samples, 1280))
    assert larger["algorithmic_latency_ms"] == 80 + 15  # a chunk of four frames waits for all four


def test_verify_export_reports_parity(onnx_dir, speech):
    results = verify_export(MODEL, onnx_dir, audio=speech[:SR * 3])
    fp32 = results["fp32"]
    assert fp32["ok"] and fp32["stream_codes_equal_offline"] and fp32["decode_snr_db"] >= 40
    assert "ok" not in results["int8"] and results["int8"]["decode_snr_db"] < fp32["decode_snr_db"]


def test_int8_graphs_cost_little_quality(codec, onnx_dir, speech, torch_reference):
    ref_codes, ref_audio = torch_reference
    int8 = OfflineCodec(ExportedCodec(onnx_dir, precision="int8"))
    assert snr_db(ref_audio, int8.decode(ref_codes)) > 20
    fp32_codes = OfflineCodec(codec).encode(speech)
    assert (int8.encode(speech) == fp32_codes)[0].mean() > 0.8  # the first (coarsest) codebook mostly agrees


def test_benchmark_streaming_reports_rates(codec, speech):
    result = benchmark_streaming(codec, speech[:SR], chunk_ms=40)
    assert result["threads"] == 1 and result["decode_frames_per_chunk"] == 2
    for part in ("encode", "decode"):
        assert result[part]["rtf"] > 1 and result[part]["p50_ms"] <= result[part]["max_ms"]


def test_runtime_never_imports_torch(onnx_dir, speech, tmp_path):
    np.save(tmp_path / "x.npy", speech[:SR])
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from voxtok.export.runtime import OfflineCodec, StreamingDecoder, StreamingEncoder
codes = OfflineCodec({str(onnx_dir)!r}).encode(np.load({str(tmp_path / "x.npy")!r}))
enc, dec = StreamingEncoder({str(onnx_dir)!r}), StreamingDecoder({str(onnx_dir)!r})
audio = dec.push(enc.push(np.load({str(tmp_path / "x.npy")!r})))
import voxtok.export.commands.stream
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
print(codes.shape, audio.shape)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(12,", "50)", "(15760,)"]


def test_bad_input_gives_clear_errors(codec, onnx_dir, tmp_path):
    encoder, decoder, offline = StreamingEncoder(codec), StreamingDecoder(codec), OfflineCodec(codec)
    with pytest.raises(VoxtokError, match="float samples.*int16.*32768"):
        encoder.push(np.zeros(320, dtype=np.int16))
    with pytest.raises(VoxtokError, match="shape"):
        encoder.push(np.zeros((1, 1, 320), dtype=np.float32))
    with pytest.raises(VoxtokError, match="2 stream"):
        encoder.push(np.zeros((2, 320), dtype=np.float32))
    with pytest.raises(VoxtokError, match="NaN"):
        offline.encode(np.full(320, np.nan, dtype=np.float32))
    with pytest.raises(VoxtokError, match="44100 Hz.*16000 Hz"):
        offline.encode(np.zeros(441, dtype=np.float32), sample_rate=44100)
    with pytest.raises(VoxtokError, match="44100 Hz"):
        StreamingEncoder(codec, sample_rate=44100)
    with pytest.raises(VoxtokError, match="integers"):
        decoder.push(np.zeros((12, 3), dtype=np.float32))
    with pytest.raises(VoxtokError, match="13 codebooks"):
        decoder.push(np.zeros((13, 3), dtype=np.int64))
    with pytest.raises(VoxtokError, match="outside 0..1023"):
        offline.decode(np.full((12, 3), 1024))
    with pytest.raises(VoxtokError, match="num_quantizers"):
        StreamingEncoder(codec, num_quantizers=0)
    with pytest.raises(VoxtokError, match="not an ONNX export"):
        ExportedCodec(tmp_path)
    with pytest.raises(VoxtokError, match="precision"):
        ExportedCodec(onnx_dir, precision="fp16")


def test_stream_command_writes_audio_and_reports(onnx_dir, speech, tmp_path, capsys):
    from voxtok.audio import load_audio, save_audio
    from voxtok.export.commands import stream as stream_command

    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    save_audio(src, speech[:SR], SR)
    args = _parse(stream_command, ["stream", str(src), "-o", str(out), "--onnx", str(onnx_dir), "--fast",
                                   "--chunk-ms", "40", "--bitrate", "3", "--json"])
    assert args.func(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["codebooks"] == 6 and figures["chunks"] == 25 and figures["algorithmic_latency_ms"] == 55.0
    assert {"p50_ms", "p95_ms", "max_ms"} <= set(figures["chunk_latency"]) and figures["first_audio_ms"] > 0
    assert len(load_audio(out, SR)) == SR
    # At the audio clock the first chunk has to arrive before anything can come out.
    paced = _parse(stream_command, ["stream", str(src), "-o", str(out), "--onnx", str(onnx_dir), "--json"])
    src_short = tmp_path / "short.wav"
    save_audio(src_short, speech[:SR // 4], SR)
    paced.input = str(src_short)
    assert paced.func(paced) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["paced"] and figures["first_audio_ms"] >= 20 and figures["wall_s"] >= 0.25
    missing = _parse(stream_command, ["stream", str(tmp_path / "nope.wav"), "-o", str(out), "--onnx", str(onnx_dir)])
    with pytest.raises(VoxtokError, match="no such file"):
        missing.func(missing)


class _FakeMicrophone:
    """Stands in for the sounddevice module: an input stream that delivers speech blocks from a thread."""

    class PortAudioError(Exception):
        pass

    def __init__(self, samples: np.ndarray):
        self.samples = samples

    def query_devices(self, kind=None):
        return {"name": "fake input", "max_input_channels": 1}

    def InputStream(self, samplerate, channels, dtype, blocksize, callback):  # noqa: N802 (sounddevice's name)
        import contextlib
        import threading

        samples = self.samples

        @contextlib.contextmanager
        def stream():
            stop = threading.Event()

            def feed():
                for start in range(0, len(samples), blocksize):
                    if stop.is_set():
                        return
                    callback(samples[start:start + blocksize, None], blocksize, None, None)

            worker = threading.Thread(target=feed, daemon=True)
            worker.start()
            try:
                yield
            finally:
                stop.set()
                worker.join()

        return stream()


def test_stream_command_from_microphone(onnx_dir, speech, tmp_path, capsys, monkeypatch):
    from voxtok.audio import load_audio
    from voxtok.export.commands import stream as stream_command

    monkeypatch.setitem(sys.modules, "sounddevice", _FakeMicrophone(speech[:SR]))
    out = tmp_path / "mic.wav"
    args = _parse(stream_command, ["stream", "mic", "-o", str(out), "--onnx", str(onnx_dir), "--seconds", "0.5",
                                   "--json"])
    assert args.func(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["source"] == "mic" and figures["audio_s"] == 0.5 and figures["chunks"] == 25
    assert len(load_audio(out, SR)) == SR // 2
