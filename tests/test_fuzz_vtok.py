"""A seeded mutation fuzzer over .vtok files: bit flips, truncations, insertions and deletions, and crafted headers
and payloads with a valid CRC. Every case must end in a VoxtokError or in a correct decode (the model's sample
rate, finite audio of the header's length), within a time and a memory bound, through the reader, the decoder
and `voxtok info`'s summary."""

from __future__ import annotations

import json
import resource
import struct
import time
import zlib

import numpy as np
import pytest
from voxtok.binary import summarize_vtok
from voxtok.compress import compress, decompress
from voxtok.errors import VoxtokError

CASES = 3000
SEED = 20261201
NASTY = [0, -1, 1, 2, 7, 13, 50, 320, 1023, 1024, 1025, 16000, 8000, 2**31, 2**32, 2**63, 10**30, 10**300, 0.5, -0.0,
         1e308, 1e-308, 49.999, "", "x" * 300, "16000", None, True, False, [], {}, [[[]]], {"a": {"b": {}}}]


def _with_crc(head: bytes, payload: bytes, version: int = 1, flags: int = 0) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(head))
    return struct.pack("<4sBBIII", b"VTOK", version, flags, len(head), len(payload), crc) + head + payload


def _split(data: bytes) -> tuple[dict, bytes]:
    head_len = struct.unpack_from("<I", data, 6)[0]
    return json.loads(data[18:18 + head_len]), data[18 + head_len:]


def _mutate(rng: np.random.Generator, seed: bytes) -> bytes:
    data = bytearray(seed)
    kind = rng.integers(0, 9)
    if kind == 0:  # bit flips anywhere
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(0, len(data))
            data[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # truncation
        data = data[: rng.integers(0, len(data))]
    elif kind == 2:  # insertion of random bytes
        i = rng.integers(0, len(data) + 1)
        data[i:i] = rng.integers(0, 256, rng.integers(1, 64)).astype(np.uint8).tobytes()
    elif kind == 3:  # deletion
        i = rng.integers(0, len(data))
        del data[i:i + rng.integers(1, 32)]
    elif kind == 4:  # a prefix field set to an extreme value
        field = rng.choice([4, 5, 6, 10, 14])
        size = 1 if field in (4, 5) else 4
        value = int(rng.choice([0, 1, 2, 255, 2**31, 2**32 - 1])) % (1 << (8 * size))
        data[field:field + size] = value.to_bytes(size, "little")
    else:  # a crafted header (and maybe payload) behind a valid CRC
        header, payload = _split(bytes(seed))
        if kind in (5, 6):
            key = rng.choice(list(header) + ["x", "zz"])
            header[key] = NASTY[rng.integers(0, len(NASTY))]
            if rng.random() < 0.3:
                header.pop(rng.choice(list(header)), None)
            head = json.dumps(header).encode()
        elif kind == 7:
            head = rng.choice([b"[" * 100_000 + b"]" * 100_000, b"{" + b'"a":{' * 3000 + b"}" * 3001,
                               json.dumps(header).encode("utf-16"), b"\xff\xfe" + json.dumps(header).encode(),
                               json.dumps(header).replace('"n": ', '"n": ' + "9" * 5000).encode(),
                               b'{"m": NaN}', json.dumps(header).encode() + b" " * 70_000])
        else:  # payload replaced or resized, header kept
            n = max(0, len(payload) + int(rng.integers(-8, 9)))
            payload = rng.integers(0, 256, n).astype(np.uint8).tobytes()
            head = json.dumps(header).encode()
        data = bytearray(_with_crc(head, payload))
    return bytes(data)


@pytest.fixture(scope="module")
def seeds(codec_model, dev_speech):
    samples = dev_speech[0][:4800]  # 0.3 s of speech: a decode costs a few ms
    return [compress(codec_model, samples, 16000, kbps) for kbps in (0.5, 1.5, 6.0)]


def test_fuzzed_token_files_fail_cleanly_or_decode_correctly(codec_model, seeds):
    rng = np.random.default_rng(SEED)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = {"refused": 0, "decoded": 0, "summarized": 0}
    slowest = 0.0
    for case in range(CASES):
        data = _mutate(rng, seeds[case % len(seeds)])
        started = time.perf_counter()
        try:
            audio, sr = decompress(codec_model, data, source="fuzz.vtok")
        except VoxtokError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
        else:
            header, _ = _split(data)
            assert sr == codec_model.config.sample_rate, f"case {case}: decoded at {sr} Hz"
            assert len(audio) == header["n"] and np.isfinite(audio).all(), f"case {case}"
            outcomes["decoded"] += 1
        try:
            summarize_vtok(data, source="fuzz.vtok")
            outcomes["summarized"] += 1
        except VoxtokError as exc:
            assert "\n" not in str(exc)
        slowest = max(slowest, time.perf_counter() - started)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"{CASES} mutated files: {outcomes}; slowest case {slowest * 1000:.0f} ms; peak RSS grew {grown_mb:.0f} MB")
    assert slowest < 30.0 and grown_mb < 2048
    # The fuzzer reaches both outcomes: it is not only producing files that fail at the magic.
    assert outcomes["decoded"] > 50 and outcomes["refused"] > CASES // 2
