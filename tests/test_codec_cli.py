"""`voxtok encode/decode/roundtrip` as a user runs them, including every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from voxtok.binary import TokenHeader, encode_vtok, read_vtok
from voxtok.cli import main

SPEECH = "librispeech/1089-134686-0000.flac"  # 10.4 s of clean read speech


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_decode_roundtrip_keeps_the_speech(tmp_path, capsys, real_root, codec_model):
    src = real_root / SPEECH
    code, _, _ = run_cli(capsys, "encode", str(src), "-o", str(tmp_path / "a.vtok"), "--bitrate", "1.5")
    assert code == 0
    header, codes = read_vtok(tmp_path / "a.vtok")
    info = sf.info(str(src))
    assert header.num_samples == info.frames and header.num_codebooks == 3
    assert codes.shape == (3, -(-info.frames // 320))
    # The file size is the true bitrate: codes plus a small fixed header.
    kbps = 8 * (tmp_path / "a.vtok").stat().st_size / (info.frames / 16000) / 1000
    assert 1.5 <= kbps < 1.7
    code, _, _ = run_cli(capsys, "decode", str(tmp_path / "a.vtok"), "-o", str(tmp_path / "a.wav"))
    assert code == 0
    decoded, sr = sf.read(str(tmp_path / "a.wav"))
    ref, _ = sf.read(str(src))
    assert sr == 16000 and len(decoded) == len(ref)
    # Same loudness contour: the decoded envelope follows the original (fails for noise or silence).
    frame = 1600
    env = lambda x: np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))  # noqa: E731
    assert np.corrcoef(env(ref), env(decoded))[0, 1] > 0.8


def test_stereo_44k_input_is_downmixed_and_resampled(tmp_path, capsys, dev_speech):
    import soxr

    mono = soxr.resample(dev_speech[0][:32000], 16000, 44100)
    sf.write(str(tmp_path / "stereo.wav"), np.stack([mono, 0.5 * mono], axis=1), 44100, subtype="PCM_24")
    code, _, _ = run_cli(capsys, "encode", str(tmp_path / "stereo.wav"), "-o", str(tmp_path / "s.vtok"))
    assert code == 0
    header, _ = read_vtok(tmp_path / "s.vtok")
    assert header.sample_rate == 16000 and abs(header.num_samples - 32000) <= 2


def test_folder_and_manifest_inputs_and_npy_format(tmp_path, capsys, real_root, real_rows):
    rows = [r for r in real_rows if r["path"].startswith("librivox/")][:3]
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    for r in rows:
        shutil.copy(real_root / r["path"], folder / Path(r["path"]).name)
    code, _, _ = run_cli(capsys, "encode", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                         "--format", "npy", "--bitrate", "1", "--quiet")
    assert code == 0
    outputs = sorted((tmp_path / "out").rglob("*.npy"))
    assert [p.relative_to(tmp_path / "out").parent.name for p in outputs] == ["nested"] * len(rows)
    arr = np.load(outputs[0])
    assert arr.dtype == np.int16 and arr.shape[0] == 2
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": r["path"]}) + "\n" for r in rows))
    shutil.copytree(real_root / "librivox", tmp_path / "librivox")
    code, _, _ = run_cli(capsys, "encode", str(manifest), "-o", str(tmp_path / "vt"), "--quiet")
    assert code == 0
    assert len(list((tmp_path / "vt").rglob("*.vtok"))) == len(rows)
    code, _, _ = run_cli(capsys, "decode", str(tmp_path / "vt"), "-o", str(tmp_path / "wavs"), "--quiet")
    assert code == 0 and len(list((tmp_path / "wavs").rglob("*.wav"))) == len(rows)


@pytest.mark.parametrize("kind", ["garbage", "empty", "silent", "truncated_flac"])
def test_bad_audio_gives_one_line_error_and_no_output(tmp_path, capsys, real_root, kind):
    bad = tmp_path / f"{kind}.wav"
    if kind == "garbage":
        bad.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "silent":
        sf.write(str(bad), np.zeros(16000, dtype=np.float32), 16000)
    else:
        bad = tmp_path / "cut.flac"
        bad.write_bytes((real_root / SPEECH).read_bytes()[:300])
    code, _, err = run_cli(capsys, "encode", str(bad), "-o", str(tmp_path / "x.vtok"))
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("voxtok: error:")
    assert "Traceback" not in err
    assert not (tmp_path / "x.vtok").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_batch_reports_failures_and_goes_on(tmp_path, capsys, real_root):
    shutil.copy(real_root / SPEECH, tmp_path / "good.flac")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not audio")
    code, _, err = run_cli(capsys, "encode", str(tmp_path / "good.flac"), str(tmp_path / "bad.wav"),
                           str(tmp_path / "missing.wav"), "-o", str(tmp_path / "out"), "--quiet")
    assert code == 1
    assert (tmp_path / "out" / "good.vtok").is_file()
    assert "bad.wav" in err and "missing.wav" in err and "2 of 3 files failed" in err


def _good_vtok(tmp_path, capsys, real_root) -> Path:
    path = tmp_path / "good.vtok"
    assert run_cli(capsys, "encode", str(real_root / SPEECH), "-o", str(path), "--bitrate", "1")[0] == 0
    return path


@pytest.mark.parametrize("damage", ["magic", "truncate", "crc", "other_model"])
def test_bad_token_files_are_refused(tmp_path, capsys, real_root, damage, codec_model):
    data = bytearray(_good_vtok(tmp_path, capsys, real_root).read_bytes())
    if damage == "magic":
        data[:4] = b"RIFF"
    elif damage == "truncate":
        data = data[: len(data) - 37]
    elif damage == "crc":
        data[-5] ^= 0x40
    else:
        _, codes = read_vtok(tmp_path / "good.vtok")
        header = TokenHeader(model_id="someone-elses-codec", config_hash="0123456789ab", sample_rate=16000,
                             frame_rate=50, num_codebooks=codes.shape[0], codebook_size=1024,
                             num_samples=codes.shape[1] * 320, num_frames=codes.shape[1])
        data = bytearray(encode_vtok(header, codes))
    bad = tmp_path / "bad.vtok"
    bad.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "decode", str(bad), "-o", str(tmp_path / "out.wav"))
    assert code != 0 and err.startswith("voxtok: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.wav").exists()
    expected = {"magic": "not a", "truncate": "truncated", "crc": "CRC", "other_model": "someone-elses-codec"}
    assert expected[damage] in err


def test_roundtrip_prints_bitrate_and_quality(tmp_path, capsys, real_root):
    code, out, _ = run_cli(capsys, "roundtrip", str(real_root / SPEECH), "-o", str(tmp_path / "r.wav"),
                           "--bitrate", "3", "--json")
    assert code == 0
    figures = json.loads(out)
    assert 3.0 <= figures["kbps"] < 3.2
    assert (tmp_path / "r.wav").is_file()


def test_unknown_model_and_bitrate_too_low(tmp_path, capsys, real_root):
    code, _, err = run_cli(capsys, "encode", str(real_root / SPEECH), "-o", str(tmp_path / "a.vtok"),
                           "--model", "no-such-model")
    assert code == 1 and "unknown model" in err
    code, _, err = run_cli(capsys, "encode", str(real_root / SPEECH), "-o", str(tmp_path / "a.vtok"),
                           "--bitrate", "0.2")
    assert code == 1 and "below one codebook" in err
