"""The .vtok container: bit-exact packing, each corruption refused in one line, `voxtok info`, npy codes."""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from voxtok.binary import (
    PREFIX_SIZE,
    VTOK_MAGIC,
    VTOK_VERSION,
    TokenHeader,
    bits_for,
    decode_vtok,
    encode_vtok,
    load_codes_npy,
    pack_codes,
    read_header,
    read_vtok,
    save_codes_npy,
    unpack_codes,
    write_vtok,
)
from voxtok.cli import main
from voxtok.errors import VoxtokError

DOC = Path(__file__).resolve().parents[1] / "docs" / "vtok_format.md"


def make(n_q: int = 8, T: int = 500, k: int = 1024, seed: int = 0, **kw) -> tuple[TokenHeader, np.ndarray]:
    codes = np.random.default_rng(seed).integers(0, k, size=(n_q, T))
    fields = dict(
        model_id="voxtok-16k-v1",
        config_hash="3f2a9c1b4d5e",
        sample_rate=16000,
        frame_rate=50.0,
        num_codebooks=n_q,
        codebook_size=k,
        num_samples=T * 320,
        num_frames=T,
    )
    fields.update(kw)
    return TokenHeader(**fields), codes


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(VoxtokError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("k", [2, 3, 1000, 1024, 2048, 4096, 65536, 1 << 20])
@pytest.mark.parametrize("shape", [(1, 0), (8, 0), (1, 1), (3, 1), (8, 7), (5, 333)])
def test_pack_round_trip_exact_size(k: int, shape: tuple[int, int]) -> None:
    n_q, T = shape
    bits = bits_for(k)
    codes = np.random.default_rng(k + T).integers(0, k, size=shape)
    codes[..., :1] = k - 1  # the largest code must survive at every width
    packed = pack_codes(codes, bits)
    assert len(packed) == -(-n_q * T * bits // 8)
    back = unpack_codes(packed, n_q, T, bits)
    assert back.dtype == np.int64 and back.shape == shape
    np.testing.assert_array_equal(back, codes)


def test_bits_per_code() -> None:
    sizes = (2, 3, 4, 1000, 1024, 1025, 2048, 4096, 65536)
    assert [bits_for(k) for k in sizes] == [1, 2, 2, 10, 10, 11, 11, 12, 16]


def test_packing_is_frame_major_msb_first() -> None:
    # The worked example of docs/vtok_format.md, byte for byte.
    codes = np.array([[1, 2, 3], [1023, 0, 512]])
    assert pack_codes(codes, 10).hex() == "007ff0080000e000"
    header = TokenHeader("voxtok-16k-v1", "3f2a9c1b4d5e", 16000, 50.0, 2, 1024, 960, 3)
    data = encode_vtok(header, codes)
    assert len(data) == 114 and data[:18].hex() == "56544f4b0100580000000800000098c1bc2c"
    # Cutting after frame 1 gives the prefix of the packed bit stream: frames are contiguous.
    full = np.unpackbits(np.frombuffer(pack_codes(codes, 10), np.uint8))
    first = np.unpackbits(np.frombuffer(pack_codes(codes[:, :1], 10), np.uint8))
    np.testing.assert_array_equal(full[:20], first[:20])


def test_pack_rejects_out_of_range_and_bad_shapes() -> None:
    assert "out of range" in error_of(pack_codes, np.array([[0, 1024]]), 10)
    assert "out of range" in error_of(pack_codes, np.array([[-1, 3]]), 10)
    assert "shape" in error_of(pack_codes, np.zeros(5, dtype=np.int64), 10)
    assert "integers" in error_of(pack_codes, np.zeros((2, 2), dtype=np.float32), 10)
    assert "bytes" in error_of(unpack_codes, b"\x00" * 3, 2, 2, 10)


def test_pack_speed_32_codebooks_100k_frames() -> None:
    codes = np.random.default_rng(1).integers(0, 2048, size=(32, 100_000))
    start = time.perf_counter()
    packed = pack_codes(codes, 11)
    packing = time.perf_counter() - start
    back = unpack_codes(packed, 32, 100_000, 11)
    total = time.perf_counter() - start
    np.testing.assert_array_equal(back, codes)
    # Reported rather than asserted: the machine is shared with training runs.
    print(f"pack {packing:.3f} s, pack + unpack {total:.3f} s for 3.2M codes")


def test_file_round_trip_and_true_size(tmp_path: Path) -> None:
    header, codes = make(extra={"lang": "en", "note": "naïve"})
    path = tmp_path / "a.vtok"
    write_vtok(path, header, codes)
    data = path.read_bytes()
    head_len = len(header.to_json().encode())
    assert len(data) == PREFIX_SIZE + head_len + 5000  # 8 x 500 x 10 bits
    expect = dict(expect_model_id=header.model_id, expect_config_hash=header.config_hash)
    got_header, got_codes = read_vtok(path, **expect)
    assert got_header == header
    np.testing.assert_array_equal(got_codes, codes)
    assert read_header(path) == header
    assert [p.name for p in tmp_path.iterdir()] == ["a.vtok"]  # no temporary left behind


def test_header_overhead_is_small() -> None:
    header, codes = make(n_q=1, T=1000, frame_rate=100.0, num_samples=160000)  # 10 s at 1 kbps
    data = encode_vtok(header, codes)
    assert len(data) - 1250 == PREFIX_SIZE + len(header.to_json()) == 113  # the figure in the doc


def test_numpy_scalars_in_header_are_accepted() -> None:
    header, codes = make(num_samples=np.int64(160000), num_frames=np.int64(500), frame_rate=np.float32(50))
    back, _ = decode_vtok(encode_vtok(header, codes))
    assert back.num_samples == 160000 and type(back.num_samples) is int and back.frame_rate == 50.0


def test_encode_validates_codes_against_header() -> None:
    header, codes = make(k=1000)
    codes[3, 7] = 1000  # fits in 10 bits but not in the codebook
    assert "codebook size is 1000" in error_of(encode_vtok, header, codes)
    header, codes = make()
    assert "shape" in error_of(encode_vtok, header, codes[:, :-1])
    header.sample_rate = 0
    assert "sample_rate" in error_of(encode_vtok, header, codes)


def test_decoded_code_beyond_codebook_is_refused() -> None:
    # A code of 1000 in a 1000-entry codebook still fits 10 bits: build such a file by hand with a valid CRC.
    header, codes = make(n_q=2, T=3, k=1000)
    codes[1, 2] = 1000
    head = header.to_json().encode()
    payload = pack_codes(codes, 10)
    crc = zlib.crc32(head + payload)
    data = struct.pack("<4sBBIII", b"VTOK", 1, 0, len(head), len(payload), crc) + head + payload
    assert "code 1000 out of range for codebook size 1000" in error_of(decode_vtok, data)


def test_corrupt_payload_byte_is_a_crc_error() -> None:
    header, codes = make()
    data = bytearray(encode_vtok(header, codes))
    for offset in (len(data) - 1, len(data) // 2, PREFIX_SIZE + 5):  # payload twice, then inside the header
        bad = bytearray(data)
        bad[offset] ^= 0x10
        assert "CRC mismatch" in error_of(decode_vtok, bytes(bad), source="x.vtok")


def test_truncation_at_every_kind_of_offset(tmp_path: Path) -> None:
    header, codes = make()
    data = encode_vtok(header, codes)
    for cut in (2, 5, 10, PREFIX_SIZE - 1, PREFIX_SIZE, PREFIX_SIZE + 40, len(data) - 1000, len(data) - 1):
        path = tmp_path / f"cut{cut}.vtok"
        path.write_bytes(data[:cut])
        message = error_of(read_vtok, path)
        assert message.startswith(str(path)) and "truncated" in message, message
    path.write_bytes(data + b"\x00")
    assert "unexpected bytes" in error_of(read_vtok, path)
    path.write_bytes(data[: PREFIX_SIZE + 40])
    assert "truncated" in error_of(read_header, path)


def test_bad_magic_empty_version_flags(tmp_path: Path) -> None:
    header, codes = make()
    data = encode_vtok(header, codes)
    assert "empty file" in error_of(decode_vtok, b"", source="e.vtok")
    message = error_of(decode_vtok, b"RIFF" + data[4:], source="w.vtok")
    assert message.startswith("w.vtok: not a .vtok token file") and "WAV" in message
    assert "not a .vtok" in error_of(decode_vtok, b"VTOX" + data[4:])
    future = data[:4] + bytes([VTOK_VERSION + 1]) + data[5:]
    assert "unsupported .vtok version 2" in error_of(decode_vtok, future)
    flagged = data[:5] + b"\x01" + data[6:]
    assert "flags" in error_of(decode_vtok, flagged)
    (tmp_path / "empty.vtok").write_bytes(b"")
    assert "empty file" in error_of(read_header, tmp_path / "empty.vtok")
    assert "no such file" in error_of(read_vtok, tmp_path / "missing.vtok")


def _with_header(record: dict | bytes, payload: bytes = b"") -> bytes:
    head = record if isinstance(record, bytes) else json.dumps(record).encode()
    crc = zlib.crc32(head + payload)
    return struct.pack("<4sBBIII", VTOK_MAGIC, VTOK_VERSION, 0, len(head), len(payload), crc) + head + payload


def test_bad_header_json_and_fields() -> None:
    good = json.loads(make(T=0)[0].to_json())
    assert "not valid JSON" in error_of(decode_vtok, _with_header(b'{"m": "x",'))
    assert "not a JSON object" in error_of(decode_vtok, _with_header(b"[1, 2]"))
    missing = {key: value for key, value in good.items() if key != "sr"}
    assert "missing field(s) sr (sample_rate)" in error_of(decode_vtok, _with_header(missing))
    assert "must be an integer" in error_of(decode_vtok, _with_header({**good, "q": "8"}))
    assert "codebook_size" in error_of(decode_vtok, _with_header({**good, "k": 1}))
    # The header says 8 x 0 codes but 4 payload bytes follow: the sizes disagree.
    assert "payload is 4 bytes" in error_of(decode_vtok, _with_header(good, b"\x00" * 4))
    # Unknown keys are allowed (forward compatible) and ignored.
    header, _ = decode_vtok(_with_header({**good, "zz": 1}))
    assert header.num_frames == 0


def test_other_model_is_refused(tmp_path: Path) -> None:
    header, codes = make()
    path = tmp_path / "other.vtok"
    write_vtok(path, header, codes)
    message = error_of(read_vtok, path, expect_model_id="voxtok-24k-v2", expect_config_hash="0000aaaa")
    assert message == (
        f"{path}: made by model voxtok-16k-v1 (config 3f2a9c1b4d5e), "
        "this is model voxtok-24k-v2 (config 0000aaaa)"
    )
    other_config = error_of(read_vtok, path, expect_model_id=header.model_id, expect_config_hash="ff")
    # Same model, other weights: the line names both configs and says what to do.
    assert other_config == (
        f"{path}: made by model voxtok-16k-v1 (config 3f2a9c1b4d5e), "
        "this is model voxtok-16k-v1 (config ff); decode with the model folder that encoded it"
    )


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    header, codes = make()
    path = tmp_path / "out.vtok"
    codes[0, 0] = 5000
    error_of(write_vtok, path, header, codes)
    assert list(tmp_path.iterdir()) == []


def test_documented_reader_matches(tmp_path: Path) -> None:
    pattern = r"## Reading a file without voxtok\n\n```python\n(.*?)```"
    block = re.search(pattern, DOC.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 15
    namespace: dict = {}
    exec(block, namespace)
    for k, shape in ((1024, (8, 123)), (2048, (3, 1)), (65536, (2, 9)), (2, (1, 0))):
        header, codes = make(n_q=shape[0], T=shape[1], k=k, seed=k)
        path = tmp_path / f"{k}.vtok"
        write_vtok(path, header, codes)
        record, got = namespace["read_vtok"](str(path))
        assert record["m"] == "voxtok-16k-v1" and record["k"] == k
        np.testing.assert_array_equal(got, codes)


def test_info_cli_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    header, codes = make()  # 10 s, 8 x 1024 at 50 Hz = 4 kbps of codes
    path = tmp_path / "a.vtok"
    write_vtok(path, header, codes)
    size = path.stat().st_size
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    expected_lines = [
        "model          voxtok-16k-v1",
        "config hash    3f2a9c1b4d5e",
        "sample rate    16000 Hz",
        "frame rate     50 Hz",
        "codebooks      8",
        "codebook size  1024 (10 bits per code)",
        "duration       10.000 s (160000 samples)",
        "frames         500",
        f"bytes          {size} (5000 codes + {size - 5000} overhead)",
        f"true bitrate   {size * 8 / 10 / 1000:.3f} kbps (file size / duration; codes alone 4.000 kbps)",
        "CRC            ok",
    ]
    for expected in expected_lines:
        assert expected in out, (expected, out)
    assert main(["info", "--json", str(path)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file_bytes"] == size and record["crc_ok"] is True
    assert record["bitrate_kbps"] == pytest.approx(size * 8 / 10 / 1000)
    assert record["code_bitrate_kbps"] == pytest.approx(4.0)


def test_info_cli_reports_each_bad_file_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    header, codes = make()
    good = tmp_path / "good.vtok"
    write_vtok(good, header, codes)
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.vtok"
    corrupt.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    short = tmp_path / "short.vtok"
    short.write_bytes(data[:100])
    wav = tmp_path / "audio.vtok"
    wav.write_bytes(b"RIFF" + b"\x00" * 40)
    code = main(["info", str(corrupt), str(short), str(wav), str(good)])
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("voxtok: error: ") for line in errors)
    assert "corrupt.vtok: CRC mismatch" in errors[0]
    assert "short.vtok: truncated" in errors[1]
    assert "audio.vtok: not a .vtok token file" in errors[2]
    # The corrupt file's header is still shown (flagged), and the good file after the failures is reported.
    assert "MISMATCH" in captured.out and str(good) in captured.out


def test_npy_codes_round_trip_and_validation(tmp_path: Path) -> None:
    _, codes = make(k=2048)
    path = tmp_path / "codes.npy"
    save_codes_npy(path, codes)
    raw = np.load(path)
    assert raw.dtype == np.int16 and raw.shape == (8, 500)
    np.testing.assert_array_equal(load_codes_npy(path), codes)
    big = tmp_path / "big.npy"
    assert "int16" in error_of(save_codes_npy, big, np.array([[40000]]))
    assert not big.exists()
    np.save(tmp_path / "f.npy", np.zeros((2, 3), dtype=np.float32))
    assert "integers" in error_of(load_codes_npy, tmp_path / "f.npy")
    np.save(tmp_path / "v.npy", np.zeros(3, dtype=np.int16))
    assert "shape" in error_of(load_codes_npy, tmp_path / "v.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert "not a readable .npy" in error_of(load_codes_npy, tmp_path / "junk.npy")
