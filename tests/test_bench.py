"""`voxtok bench` end to end on real speech: a well-formed report, clean degradation, one-line errors.

No timing thresholds here: speed claims live in docs/results_speed.md, measured with the command shown
there. These tests check that the harness measures something sensible, not how fast it is.
"""

from __future__ import annotations

import json
import math

import pytest
from voxtok.cli import main

SPEECH = "librispeech/1089-134686-0000.flac"
# 1 s offline, 0.5 s streamed in 40 ms chunks, one repeat, one thread: a few seconds per worker.
SHORT = ["--seconds", "1", "--repeats", "1", "--threads", "1", "--stream-seconds", "0.5", "--quiet"]


def run_bench(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["bench", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_report_is_well_formed(tmp_path, capsys, real_root, codec_model):
    out_json, out_md = tmp_path / "speed.json", tmp_path / "speed.md"
    code, out, _ = run_bench(capsys, *SHORT, "--chunk-ms", "40", "--input", str(real_root / SPEECH),
                             "--json", str(out_json), "--markdown", str(out_md))
    assert code == 0
    report = json.loads(out_json.read_text())
    (result,) = report["results"]
    assert result["backend"] == "voxtok" and result["threads"] == 1
    cfg = codec_model.config
    system = result["system"]
    assert system["name"] == codec_model.model_id and system["sample_rate"] == cfg.sample_rate
    assert system["kbps"] == pytest.approx(cfg.num_quantizers * cfg.kbps_per_codebook)
    assert system["algorithmic_latency_ms"] == pytest.approx(1000 * cfg.latency_samples / cfg.sample_rate)

    offline = result["offline"]
    assert offline["audio_s"] == pytest.approx(1.0)
    assert len(offline["encode_s"]) == len(offline["decode_s"]) == 1
    assert all(_positive(offline[k]) for k in ("encode_rtf", "decode_rtf", "roundtrip_rtf"))
    # The round trip takes encode + decode, so its rate is below either part's.
    assert offline["roundtrip_rtf"] < min(offline["encode_rtf"], offline["decode_rtf"])

    (stream,) = result["streaming"]
    assert stream["chunk_ms"] == 40 and stream["chunk_samples"] == 640
    assert stream["chunks_per_pass"] == 8000 // 640
    assert 0 < stream["p50_ms"] <= stream["p95_ms"] <= stream["max_ms"]
    assert 0 < stream["encode_p50_ms"] < stream["max_ms"] and 0 < stream["decode_p50_ms"] < stream["max_ms"]
    assert _positive(stream["stream_rtf"])
    # The first output cannot leave before the first chunk has arrived.
    assert stream["first_audio_ms"] > 40

    mem = result["memory"]
    assert 0 < mem["start_mb"] < mem["loaded_mb"] <= mem["stream_peak_mb"] <= mem["offline_peak_mb"]

    assert out_md.read_text() == out
    assert out.startswith("# voxtok speed benchmark")
    assert f"Command: `{report['command']}`" in out and "--seconds 1 --repeats 1" in report["command"]
    assert f"| {codec_model.model_id} | PyTorch" in out and "| 40 |" in out
    assert "on 1 thread (bar ≥ 20×:" in out


def test_peers_not_installed_degrade_cleanly(tmp_path, capsys, real_root, monkeypatch):
    import voxtok.bench.peers as peers

    monkeypatch.setattr(peers, "_installed", lambda module: False)
    out_json = tmp_path / "speed.json"
    code, out, _ = run_bench(capsys, *SHORT, "--chunk-ms", "none", "--peers", "--input", str(real_root / SPEECH),
                             "--json", str(out_json))
    assert code == 0
    report = json.loads(out_json.read_text())
    assert [r["backend"] for r in report["results"]] == ["voxtok"]
    assert report["results"][0]["streaming"] == []
    skipped = [n for n in report["notes"] if "skipped" in n]
    assert len(skipped) == len(peers.PEERS)
    assert all("\n" not in n and "pip install" in n for n in skipped)
    for note in skipped:
        assert f"- {note}" in out
    assert "## Streaming" not in out


def test_peer_runs_beside_voxtok_with_random_weights(tmp_path, capsys, real_root):
    pytest.importorskip("snac")
    out_json = tmp_path / "speed.json"
    code, out, _ = run_bench(capsys, *SHORT, "--chunk-ms", "none", "--peers", "snac",
                             "--input", str(real_root / SPEECH), "--json", str(out_json))
    assert code == 0
    voxtok, snac = json.loads(out_json.read_text())["results"]
    assert voxtok["backend"] == "voxtok" and snac["backend"] == "snac"
    assert snac["system"]["random_weights"] and snac["system"]["sample_rate"] == 24000
    assert snac["system"]["kbps"] == pytest.approx(0.98, abs=0.01)
    assert snac["offline"]["audio_s"] == pytest.approx(1.0) and _positive(snac["offline"]["roundtrip_rtf"])
    assert "random weights" in out and "| SNAC 24 kHz |" in out


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads"),
    (["--chunk-ms", "20,fast"], "--chunk-ms"),
    (["--repeats", "0"], "--repeats"),
    pytest.param(["--peers", "wavtokenizer"], "unknown peer", marks=pytest.mark.needs_data),  # after the default speech
    (["--input", "/nonexistent/speech.flac"], "no such file"),
])
def test_bad_options_fail_with_one_line(capsys, argv, message):
    code, out, err = run_bench(capsys, *argv)
    assert code == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_onnx_folder_without_export_fails_with_one_line(tmp_path, capsys, real_root):
    code, _, err = run_bench(capsys, *SHORT, "--input", str(real_root / SPEECH), "--onnx", str(tmp_path))
    assert code == 1
    assert "manifest.json" in err and len(err.strip().splitlines()) == 1


def test_failing_worker_reports_its_error_in_one_line(capsys, real_root):
    code, _, err = run_bench(capsys, *SHORT, "--chunk-ms", "none", "--input", str(real_root / SPEECH),
                             "--model", "no-such-model")
    assert code == 1
    assert "unknown model 'no-such-model'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_onnx_export_is_timed_like_the_torch_model(tmp_path, capsys, real_root):
    pytest.importorskip("onnxruntime")
    export = pytest.importorskip("voxtok.export.onnx_export")
    export.export_pretrained(None, tmp_path / "onnx")
    out_json = tmp_path / "speed.json"
    code, out, _ = run_bench(capsys, *SHORT, "--chunk-ms", "40", "--input", str(real_root / SPEECH),
                             "--onnx", str(tmp_path / "onnx"), "--json", str(out_json))
    assert code == 0
    torch_run, onnx_run = json.loads(out_json.read_text())["results"]
    assert onnx_run["backend"] == "onnx"
    assert onnx_run["system"]["kbps"] == torch_run["system"]["kbps"]
    (stream,) = onnx_run["streaming"]
    assert 0 < stream["p50_ms"] <= stream["p95_ms"] and stream["first_audio_ms"] > 40
    assert _positive(onnx_run["offline"]["roundtrip_rtf"])
    assert "ONNX fp32" in out
