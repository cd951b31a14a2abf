"""`voxtok eval` as a user runs it: a small real reference set with broken entries, several systems."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf
from voxtok.cli import main

LONG = "librispeech/1089-134691-0000.flac"  # 2.085 s, transcript "HE COULD WAIT NO LONGER"
SHORT = "ljspeech/LJ001-0002.flac"  # 1.9 s, transcript "in being comparatively modern."
# Encoder that crashes on inputs longer than 2 s (16-bit 16 kHz WAV: 44-byte header + 32000 bytes/s).
CRASHY = "crashy=cmd:sh -c 'test $(wc -c < {in}) -le 64044 && cp {in} {out}'::cp {in} {out}"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ref_set(tmp_path, real_root, real_rows):
    """Two good files, one resampled to 8 kHz, one listed but missing, one that is not audio."""
    root = tmp_path / "refs"
    rows = {r["path"]: r for r in real_rows}
    lines = []
    for rel in (LONG, SHORT):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_root / rel, root / rel)
        lines.append({k: rows[rel][k] for k in ("path", "duration", "text", "speaker", "tags")})
    audio, _ = sf.read(str(real_root / SHORT), dtype="float32")
    sf.write(str(root / "rate8k.wav"), audio[::2][:12000], 8000, subtype="PCM_16")
    lines.append({"path": "rate8k.wav", "duration": 1.5, "text": None, "speaker": "x", "tags": ["odd-rate"]})
    lines.append({"path": "missing.flac", "duration": 1.0, "text": "gone", "speaker": "y", "tags": []})
    (root / "broken.flac").write_bytes(b"this is not a flac file" * 50)
    lines.append({"path": "broken.flac", "duration": 1.0, "text": None, "speaker": "z", "tags": []})
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def test_bad_files_and_a_crashing_system_are_counted_and_the_run_goes_on(tmp_path, ref_set, capsys):
    out_json, out_md = tmp_path / "eval.json", tmp_path / "eval.md"
    code, out, err = run_cli(
        capsys, "eval", str(ref_set), "--system", "identity", "--system", "opus:6", "--system", CRASHY,
        "--metrics", "pesq,sisdr,mel", "--json", str(out_json), "--markdown", str(out_md), "--no-progress",
    )
    assert code == 0
    result = json.loads(out_json.read_text())
    files = {f["path"]: f for f in result["files"]}
    assert "listed in the manifest but missing" in files["missing.flac"]["error"]
    assert "cannot read audio" in files["broken.flac"]["error"]
    assert "8000 Hz" in files["rate8k.wav"]["warnings"][0]
    assert files["rate8k.wav"]["duration"] == pytest.approx(1.5, abs=0.01)
    crash = files[LONG]["systems"]["crashy"]["error"]
    assert crash.startswith("sh exited with status 1")

    summary = result["summary"]
    assert summary["files"] == 5 and summary["reference_failures"] == 2 and summary["warnings"] == 1
    by_name = {s["name"]: s for s in summary["systems"]}
    assert (by_name["identity"]["ok"], by_name["identity"]["failed"]) == (3, 0)
    assert (by_name["crashy"]["ok"], by_name["crashy"]["failed"]) == (2, 1)
    assert by_name["identity"]["metrics"]["pesq"] == pytest.approx(4.64, abs=0.01)
    assert by_name["crashy"]["metrics"]["si_sdr"] > 80  # cp is lossless (up to 16-bit rounding)
    opus = by_name["opus:6"]
    assert opus["ok"] == 3 and 1.5 < opus["metrics"]["pesq"] < 4.0
    # ~6 kbps of payload plus Ogg headers, which weigh a lot on 1.5-2 s clips.
    assert 6.0 < opus["kbps"] < 16.0
    assert opus["encode_s"] > 0 and opus["decode_s"] > 0

    # Each failure was reported as it happened, and the terminal summary counts them.
    assert "missing.flac: listed in the manifest but missing" in err
    assert f"{LONG}: crashy: sh exited with status 1" in err
    assert "8 evaluations done, 1 failed; 2 of 5 reference files unusable; 1 warning(s)" in out
    assert "| identity | 3/5 |" in out and "| crashy | 2/5 |" in out
    report = out_md.read_text()
    assert report.count("\n```\nvoxtok eval ") == 1 and "Failures (3):" in report


def test_split_tag_limit_and_decoded_folder(tmp_path, real_root, capsys):
    # A folder of "decoded" files: the references themselves for one digit, nothing for the other.
    folder = tmp_path / "decoded" / "fsdd"
    folder.mkdir(parents=True)
    audio, _ = sf.read(str(real_root / "fsdd/0_george_0.flac"), dtype="float32")
    sf.write(str(folder / "0_george_0.wav"), audio, 16000, subtype="PCM_16")
    out_json = tmp_path / "eval.json"
    code, out, err = run_cli(
        capsys, "eval", str(real_root), "--split", "dev", "--tag", "digits", "--limit", "2",
        "--system", f"mine=folder:{tmp_path / 'decoded'}", "--metrics", "sisdr", "--json", str(out_json),
    )
    assert code == 0
    result = json.loads(out_json.read_text())
    assert [f["path"] for f in result["files"]] == ["fsdd/0_george_0.flac", "fsdd/0_george_1.flac"]
    mine = result["summary"]["systems"][0]
    assert mine["name"] == "mine" and mine["ok"] == 1 and mine["failed"] == 1 and mine["kbps"] is None
    assert "no decoded file for fsdd/0_george_1.flac" in err


def test_voxtok_system_through_the_public_api(tmp_path, real_root, capsys):
    out_json = tmp_path / "eval.json"
    code, out, _ = run_cli(
        capsys, "eval", str(real_root), "--split", "dev", "--tag", "digits", "--limit", "1",
        "--system", "voxtok@1.5kbps", "--metrics", "sisdr", "--json", str(out_json),
    )
    assert code == 0
    system = json.loads(out_json.read_text())["summary"]["systems"][0]
    assert system["name"] == "voxtok@1.5kbps" and system["ok"] == 1
    assert system["kbps"] > 1.0 and system["encode_s"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--system", "mp3:128"], "unknown system 'mp3:128'"),
        (["--system", "opus:three"], "kbps must be a number"),
        (["--system", "codec2:999"], "codec2 mode '999' unknown"),
        (["--system", "cmd:cp {in} {out}"], "write cmd:ENCODE_TEMPLATE::DECODE_TEMPLATE"),
        (["--system", "identity", "--metrics", "pesq,loudness"], "unknown metric 'loudness'"),
        (["--system", "identity", "--system", "flac"], "two systems are named 'identity'"),
        (["--system", "identity", "--split", "nosuch.txt"], "neither dev, train nor a file"),
        (["--system", "identity", "--tag", "no-such-tag"], "no reference files left"),
        ([], "nothing to evaluate"),
    ],
)
def test_bad_usage_is_one_clear_line(ref_set, capsys, argv, message):
    metrics = [] if "--metrics" in argv else ["--metrics", "sisdr"]
    code, _, err = run_cli(capsys, "eval", str(ref_set), *metrics, *argv)
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_reference_set_is_required(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VOXTOK_DATA", raising=False)
    code, _, err = run_cli(capsys, "eval", "--system", "identity")
    assert code == 1 and "give REF_DIR" in err
    code, _, err = run_cli(capsys, "eval", str(tmp_path), "--system", "identity")
    assert code == 1 and "no manifest.jsonl" in err
    (tmp_path / "manifest.jsonl").write_text('{"path": "a.flac"}\nnot json\n')
    code, _, err = run_cli(capsys, "eval", str(tmp_path), "--system", "identity", "--metrics", "sisdr")
    assert code == 1 and "manifest.jsonl:2: not valid JSON" in err


def test_every_evaluation_failing_is_an_error(tmp_path, capsys):
    (tmp_path / "manifest.jsonl").write_text('{"path": "gone.flac"}\n')
    code, out, err = run_cli(capsys, "eval", str(tmp_path), "--system", "identity", "--metrics", "sisdr",
                             "--json", str(tmp_path / "r.json"))
    assert code == 1 and "every evaluation failed" in err
    # The report is still written, so the failures can be read.
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["reference_failures"] == 1
