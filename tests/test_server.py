"""`voxtok serve`: real speech through the server equals the offline runtime; bad input of every kind ends only
the offending stream (a good stream running beside it still completes exactly, and the server stays healthy);
limits, backpressure and the load test. Everything talks to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("websockets")

from voxtok.errors import VoxtokError  # noqa: E402
from voxtok.export import loadtest  # noqa: E402
from voxtok.export.client import ServerError, StreamClient, decode, encode, health, run_pipelined  # noqa: E402
from voxtok.export.protocol import codes_to_bytes, float_to_pcm, pcm_to_float  # noqa: E402
from voxtok.export.runtime import ExportedCodec, OfflineCodec  # noqa: E402
from voxtok.export.server import BackgroundServer, ServerConfig  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

SR = 16000
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def onnx_dir():
    """The shipped model's export, made once into the user cache (as `voxtok stream` keeps it)."""
    from voxtok.export.cache import cached_export

    return cached_export(None, False)


@pytest.fixture(scope="module")
def codec(onnx_dir):
    return ExportedCodec(onnx_dir)


@pytest.fixture(scope="module")
def server(codec):
    config = ServerConfig(host="127.0.0.1", port=0, max_streams=8, max_message_bytes=MAX_BYTES, start_timeout=2.0,
                          idle_timeout=3.0, send_timeout=1.0, close_timeout=1.0)
    with BackgroundServer(codec, config) as running:
        yield running


@pytest.fixture(scope="module")
def speech(dev_speech):
    return dev_speech[0][:SR * 3 + 123]  # not a whole number of frames


@pytest.fixture(scope="module")
def offline(codec, speech):
    runtime = OfflineCodec(codec)
    codes = runtime.encode(speech)
    return codes, runtime.decode(codes, len(speech))


def _wait_idle(server, timeout: float = 10.0) -> dict:
    """Health once no stream is open any more (closing handshakes finish asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        info = health(server.url)
        if info["active_streams"] == 0 or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def test_round_trip_equals_offline_runtime(server, speech, offline):
    ref_codes, ref_audio = offline
    codes = encode(server.url, speech, SR, chunk_samples=333)  # frames straddle messages
    assert np.array_equal(codes, ref_codes)
    audio = decode(server.url, codes, SR, frames_per_message=3, num_samples=len(speech))
    assert audio.shape == ref_audio.shape
    assert np.abs(audio - ref_audio).max() < 1e-5
    # Fewer codebooks: the first rows of the full codes, as the offline encoder gives them.
    low = encode(server.url, speech, SR, chunk_samples=320, num_codebooks=3)
    assert np.array_equal(low, ref_codes[:3])


def test_int16_pcm_round_trips_every_sample_value():
    every = np.arange(-32768, 32768, dtype=np.int16)
    samples = pcm_to_float(every.tobytes(), "int16")
    assert samples.min() == -1.0 and samples.max() == 32767 / 32768
    assert np.array_equal(np.frombuffer(float_to_pcm(samples, "int16"), dtype="<i2"), every)
    # Out of range and between levels: clipped and rounded to the nearest level.
    edges = np.frombuffer(float_to_pcm(np.array([1.5, -1.5, 1.0, 0.4 / 32768, 0.6 / 32768]), "int16"), "<i2")
    assert edges.tolist() == [32767, -32768, 32767, 0, 1]


def test_int16_streams_match_offline_on_the_same_samples(server, codec, speech):
    quantized = np.clip(np.round(speech * 32768), -32768, 32767).astype(np.int16).astype(np.float32) / 32768
    codes = encode(server.url, quantized, SR, chunk_samples=800, sample_format="int16")
    assert np.array_equal(codes, OfflineCodec(codec).encode(quantized))
    audio = decode(server.url, codes, SR, sample_format="int16", num_samples=len(speech))
    # int16 cannot hold the decoder's peaks above full scale (v2's harmonics can overshoot): they clip.
    ref = np.clip(OfflineCodec(codec).decode(codes, len(speech)), -1.0, 32767 / 32768)
    assert np.abs(audio - ref).max() <= 1.5 / 32768  # int16 rounding only


def test_flush_starts_a_new_utterance_on_the_same_connection(server, speech, offline):
    async def scenario():
        async with await StreamClient.open(server.url, "encode", SR) as client:
            first = await run_pipelined(client, [speech[i:i + 500] for i in range(0, len(speech), 500)])
            tail, summary = await client.finish("flush")
            again = await run_pipelined(client, [speech[i:i + 16000] for i in range(0, len(speech), 16000)])
            with pytest.raises(VoxtokError, match="over the server's limit"):
                await client.send(speech)  # refused by the client before it reaches the server
            tail2, end = await client.finish("end")
        return np.concatenate([*first, tail], axis=-1), summary, np.concatenate([*again, tail2], axis=-1), end

    first, summary, again, end = asyncio.run(scenario())
    assert np.array_equal(first, offline[0]) and np.array_equal(again, offline[0])
    assert summary == {"type": "flushed", "samples": len(speech), "frames": offline[0].shape[1]}
    assert end == {"type": "end", "samples": len(speech), "frames": offline[0].shape[1]}


def test_health_and_unknown_paths(server, codec):
    info = health(server.url)
    assert info["status"] == "ok" and info["model_id"] == codec.model_id
    assert info["sample_rate"] == SR and info["max_streams"] == 8 and info["max_message_bytes"] == MAX_BYTES
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope", timeout=5)
    assert err.value.code == 404


# ---- bad input: each case runs while a good stream is half-way through ------------------------------

async def _expect_error(ws, code: str, close_code: int = 1008) -> None:
    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "error" and message["code"] == code, message
    assert message["message"]
    await asyncio.wait_for(ws.wait_closed(), 10)
    assert ws.close_code == close_code


async def _open(server, start: dict | None = None):
    ws = await connect(server.url, compression=None)
    if start is not None:
        await ws.send(json.dumps({"type": "start", "sample_rate": SR, **start}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
    return ws


ENCODE_F32 = {"mode": "encode", "sample_format": "float32"}


async def _garbage_before_start(server):
    ws = await _open(server)
    await ws.send(os.urandom(1000))
    await _expect_error(ws, "expected_start")


async def _raw_tcp_garbage(server):
    # Not HTTP at all (here a TLS hello and noise): the documented HTTP 400, then the connection closes.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"\x16\x03\x01\x00\xff" + os.urandom(300) + b"\r\n\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and reply.endswith(b"/v1/stream\n")
    writer.close()
    # HTTP without the WebSocket upgrade: refused by the handshake with a 4xx answer.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    assert reply.startswith(b"HTTP/1.1 4"), reply[:80]
    writer.close()


async def _invalid_json(server):
    ws = await _open(server)
    await ws.send("{not json")
    await _expect_error(ws, "invalid_json")


async def _deeply_nested_json(server):
    ws = await _open(server)
    await ws.send("[" * 60000)
    await _expect_error(ws, "invalid_json")


async def _unknown_type(server):
    ws = await _open(server, ENCODE_F32)
    await ws.send(json.dumps({"type": "pause"}))
    await _expect_error(ws, "unknown_type")


async def _wrong_sample_format(server):
    ws = await _open(server)
    await ws.send(json.dumps({"type": "start", "mode": "encode", "sample_format": "float64", "sample_rate": SR}))
    await _expect_error(ws, "bad_start")


async def _wrong_sample_rate(server):
    ws = await _open(server)
    await ws.send(json.dumps({"type": "start", "mode": "encode", "sample_format": "int16", "sample_rate": 44100}))
    await _expect_error(ws, "bad_start")


async def _odd_byte_count(server):
    ws = await _open(server, {"mode": "encode", "sample_format": "int16"})
    await ws.send(b"\x01\x02\x03")
    await _expect_error(ws, "bad_audio")


async def _int16_sent_as_float32(server):
    ws = await _open(server, ENCODE_F32)
    await ws.send(np.full(64, 0x7FC0, dtype="<u2").tobytes())  # bytes that read as float32 NaN
    await _expect_error(ws, "bad_audio")


async def _codes_out_of_range(server):
    ws = await _open(server, {"mode": "decode", "sample_format": "float32", "num_codebooks": 2})
    await ws.send(codes_to_bytes(np.array([[5, 7], [3, 4000]])))
    await _expect_error(ws, "bad_codes")


async def _oversized_frame(server):
    ws = await _open(server, ENCODE_F32)
    await ws.send(b"\x00" * (MAX_BYTES + 4))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def _second_start(server):
    ws = await _open(server, ENCODE_F32)
    await ws.send(json.dumps({"type": "start", "sample_rate": SR, **ENCODE_F32}))
    await _expect_error(ws, "already_started")


async def _abrupt_disconnect_mid_stream(server):
    ws = await _open(server, ENCODE_F32)
    for _ in range(5):
        await ws.send(np.zeros(320, dtype="<f4").tobytes())
    ws.transport.abort()  # no close frame: the TCP connection just drops


async def _disconnect_during_inference(server):
    ws = await _open(server, {"mode": "decode", "sample_format": "float32", "num_codebooks": 12})
    await ws.send(codes_to_bytes(np.zeros((12, 1000), dtype=np.int64)))  # a long decode is now running
    await asyncio.sleep(0.05)
    ws.transport.abort()


BAD_INPUTS = [_garbage_before_start, _raw_tcp_garbage, _invalid_json, _deeply_nested_json, _unknown_type,
              _wrong_sample_format, _wrong_sample_rate, _odd_byte_count, _int16_sent_as_float32, _codes_out_of_range,
              _oversized_frame, _second_start, _abrupt_disconnect_mid_stream, _disconnect_during_inference]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[f.__name__.strip("_") for f in BAD_INPUTS])
def test_bad_input_ends_only_its_own_stream(server, speech, offline, bad):
    chunks = [speech[i:i + 320] for i in range(0, len(speech), 320)]
    half = len(chunks) // 2

    async def scenario():
        async with await StreamClient.open(server.url, "encode", SR) as good:
            first = await run_pipelined(good, chunks[:half])
            await bad(server)
            second = await run_pipelined(good, chunks[half:])
            tail, _ = await good.finish("end")
        return np.concatenate([*first, *second, tail], axis=-1)

    assert np.array_equal(asyncio.run(scenario()), offline[0])
    info = _wait_idle(server)
    assert info["status"] == "ok" and info["active_streams"] == 0 and info["errors"] == 0


def test_disconnects_racing_the_server_never_leak_a_stream(server):
    """Clients that drop the TCP connection while their messages are still being read and answered: the reader's
    cancellation can race recv() completing (on Python 3.11 asyncio.wait_for once lost it, and the stream stayed
    counted as active for ever). Every drop, at every point in the stream, must be counted out."""
    async def drop_after(messages: int):
        ws = await _open(server, ENCODE_F32)
        for _ in range(messages):
            await ws.send(np.zeros(320, dtype="<f4").tobytes())
        ws.transport.abort()

    for attempt in range(40):
        asyncio.run(drop_after(attempt % 8))
        info = _wait_idle(server)
        assert info["active_streams"] == 0, f"a stream dropped after {attempt % 8} messages was never counted out"
    assert info["errors"] == 0


def test_silent_client_times_out_and_nothing_else_changes(server):
    async def scenario():
        ws = await _open(server)  # never sends start
        await _expect_error(ws, "start_timeout")
        ws = await _open(server, ENCODE_F32)  # starts, then goes quiet
        await _expect_error(ws, "idle_timeout")

    asyncio.run(scenario())
    assert _wait_idle(server)["active_streams"] == 0


def test_slow_reader_is_dropped_and_health_stays_responsive(server):
    """A decode client that sends fast and never reads: its replies (1.28 MB each) fill the socket, the server
    stops taking its messages (a bounded queue, not a growing one) and drops it after send_timeout. The
    event loop, with inference off it, answers health checks promptly all along."""
    async def scenario():
        steps_before = (await asyncio.to_thread(health, server.url))["graph_steps"]
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ws = await connect(server.url, sock=sock, max_queue=1, compression=None, max_size=None)
        await ws.send(json.dumps({"type": "start", "mode": "decode", "sample_format": "float32",
                                  "sample_rate": SR, "num_codebooks": 1}))
        message = codes_to_bytes(np.zeros((1, 1000), dtype=np.int64))
        sent, health_ms = 0, []
        began = time.monotonic()
        with contextlib.suppress(ConnectionClosed, asyncio.TimeoutError):
            while time.monotonic() - began < 20:
                await asyncio.wait_for(ws.send(message), 2.0)
                sent += 1
                if sent % 50 == 0:
                    t = time.perf_counter()
                    info = await asyncio.to_thread(health, server.url)
                    health_ms.append(1000 * (time.perf_counter() - t))
                    if info["active_streams"] == 0:
                        break
        deadline = time.monotonic() + 15
        while (await asyncio.to_thread(health, server.url))["active_streams"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        info = await asyncio.to_thread(health, server.url)
        ws.transport.abort()
        return sent, info, info["graph_steps"] - steps_before, health_ms

    sent, info, steps, health_ms = asyncio.run(scenario())
    print(f"slow reader: sent {sent} messages, the server decoded {steps} of them; "
          f"health answered in at most {max(health_ms, default=0):.1f} ms")
    assert info["active_streams"] == 0, "the server kept a client that does not read"
    # Only what fits in the socket buffers and the per-connection queue was ever decoded.
    assert 1 <= steps <= 12 < sent
    assert health_ms and max(health_ms) < 1000
    assert info["errors"] == 0


def test_max_streams_refuses_the_extra_stream(codec, speech):
    config = ServerConfig(host="127.0.0.1", port=0, max_streams=2)
    with BackgroundServer(codec, config) as small:
        async def scenario():
            first = await StreamClient.open(small.url, "encode", SR)
            second = await StreamClient.open(small.url, "decode", SR, num_codebooks=12)
            with pytest.raises(ServerError) as refused:
                await StreamClient.open(small.url, "encode", SR)
            assert refused.value.code == "too_many_streams"
            assert "2 streams" in str(refused.value)
            info = await asyncio.to_thread(health, small.url)
            await first.close()
            await second.close()
            return info

        info = asyncio.run(scenario())
        assert info["active_streams"] == 2 and info["refused"] == 1
        _wait_idle(small)
        # Once the streams are gone, a new one is served again.
        assert encode(small.url, speech[:3200], SR).shape == (12, 10)


def test_client_reports_server_errors_as_one_line(server):
    with pytest.raises(ServerError, match="bad_start.*sample_rate must be 16000"):
        encode(server.url, np.zeros(320, dtype=np.float32), 8000)
    with pytest.raises(VoxtokError, match="cannot connect"):
        encode(f"ws://127.0.0.1:{loadtest._free_port()}/v1/stream", np.zeros(320, dtype=np.float32), SR)


# ---- load test --------------------------------------------------------------------------------------

def test_small_load_test_verifies_every_stream(server, codec, dev_speech):
    clips = loadtest.make_clips(codec, [dev_speech[0]], seconds=3.0, count=3)
    report = loadtest.run_level(server.url, clips, streams=3)
    print("load test, 3 streams x 3 s:", json.dumps(report))
    assert report["verified"] == 3 and report["failed"] == 0 and not report["errors"]
    assert report["chunks"] == 3 * 150
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["max_ms"]
    assert report["worst_audio_error"] < 1e-4
    assert report["passed"] == (report["p95_ms"] < 20.0)


def test_load_test_only_targets_loopback():
    with pytest.raises(VoxtokError, match="only targets this machine"):
        loadtest.check_loopback("ws://10.0.0.1:8765/v1/stream")


def test_capacity_search_doubles_then_bisects(monkeypatch):
    tried = []

    def fake_level(url, clips, n, chunk_ms, server_pid=None):
        tried.append(n)
        return {"streams": n, "passed": n <= 11, "failed": 0, "mean_batch": 1.0, "server_cpu_per_audio_s": 0.1}

    monkeypatch.setattr(loadtest, "run_level", fake_level)
    report = loadtest.find_capacity("ws://127.0.0.1:1/v1/stream", [], max_streams=64, budget_s=1e6)
    assert report["max_realtime_streams"] == 11 and not report["limit_reached"]
    assert tried == [1, 2, 4, 8, 16, 16, 12, 12, 10, 11]  # a late level gets a second run
    assert [level["streams"] for level in report["levels"]] == [1, 2, 4, 8, 16, 12, 10, 11]
    assert [row["streams"] for row in report["compute_bound"]] == [1, 2, 4, 8, 10, 11, 12, 16]
    assert report["compute_bound"][0]["streams_per_free_core"] == 10.0


# ---- the command line ---------------------------------------------------------------------------------

def test_cli_defaults_match_the_server_config():
    from voxtok.export.commands import serve

    defaults = ServerConfig()
    for key, value in serve.DEFAULTS.items():
        assert getattr(defaults, key) == value, key


def test_serve_command_serves_and_stops_cleanly_on_sigterm(onnx_dir, speech, offline):
    port = loadtest._free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen([sys.executable, "-m", "voxtok.export.commands.serve", "--onnx", str(onnx_dir), "--port",
                                str(port), "--max-streams", "4"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"ws://127.0.0.1:{port}/v1/stream"
        deadline = time.monotonic() + 60
        while True:
            try:
                assert health(url, timeout=1)["max_streams"] == 4
                break
            except VoxtokError:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert np.array_equal(encode(url, speech, SR), offline[0])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        log = process.stderr.read()
        assert f"on ws://127.0.0.1:{port}/v1/stream" in log and "Traceback" not in log
    finally:
        process.kill()
        process.wait()


@pytest.mark.needs_data  # its default audio is the real dev speech
def test_loadtest_command_runs_a_server_process(onnx_dir, tmp_path):
    """`python -m voxtok.export.loadtest` starts `python -m voxtok.export.commands.serve` on 127.0.0.1, runs one
    level and stops it; the JSON report carries the server's CPU cost per second of audio."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run([sys.executable, "-m", "voxtok.export.loadtest", "--onnx", str(onnx_dir), "--seconds", "1",
                             "--max-streams", "1", "--budget-s", "30", "--json"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    level = report["levels"][0]
    assert level["streams"] == 1 and level["verified"] == 1 and level["server_cpu_per_audio_s"] > 0
    bad = subprocess.run([sys.executable, "-m", "voxtok.export.commands.serve", "--onnx", str(onnx_dir),
                          "--max-streams", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 1 and bad.stderr.strip() == "voxtok: error: max-streams must be at least 1, got 0"


# ---- admission and access control ---------------------------------------------------------------------

def test_idle_connections_do_not_lock_out_a_real_client(codec, speech, offline):
    """32 connections that never send start (the lock-out attack) hold no stream slot. With the default limits a
    real client streams at once beside them. With a pending limit of 16, connections past it within the grace
    second are turned away (real clients in a burst never evict each other), and a real client arriving later
    closes the oldest idle one to make room and is served."""
    async def idle_then_stream(url: str, wait: float):
        idle, refused = [], 0
        for _ in range(32):
            ws = await connect(url)
            try:
                message = await asyncio.wait_for(ws.recv(), 0.05)
                refused += json.loads(message)["code"] == "too_many_pending"
            except TimeoutError:
                idle.append(ws)
        await asyncio.sleep(wait)
        codes = await asyncio.to_thread(encode, url, speech, SR)
        info = await asyncio.to_thread(health, url)
        for ws in idle:
            await ws.close()
        return codes, info, refused

    with BackgroundServer(codec, ServerConfig(host="127.0.0.1", port=0, max_streams=4, start_timeout=30.0)) as big:
        codes, info, refused = asyncio.run(idle_then_stream(big.url, 0.0))
        assert np.array_equal(codes, offline[0]) and refused == 0
        assert info["pending_connections"] == 32 and info["evicted"] == 0
    config = ServerConfig(host="127.0.0.1", port=0, max_streams=4, max_pending=16, max_pending_per_client=16,
                          start_timeout=30.0)
    with BackgroundServer(codec, config) as small:
        codes, info, refused = asyncio.run(idle_then_stream(small.url, 1.2))
        assert np.array_equal(codes, offline[0])
        assert refused == 16 and info["evicted"] == 1 and info["pending_connections"] == 15


def test_per_client_stream_limit(codec):
    config = ServerConfig(host="127.0.0.1", port=0, max_streams=8, max_streams_per_client=2)
    with BackgroundServer(codec, config) as small:
        async def scenario():
            first = await StreamClient.open(small.url, "encode", SR)
            second = await StreamClient.open(small.url, "encode", SR)
            with pytest.raises(ServerError) as refused:
                await StreamClient.open(small.url, "encode", SR)
            await first.close()
            await second.close()
            return refused.value

        refused = asyncio.run(scenario())
        assert refused.code == "too_many_streams" and "client address" in str(refused)


def test_token_and_allowed_origins(codec, speech, offline):
    token = "s3cret-token-for-tests"
    config = ServerConfig(host="127.0.0.1", port=0, token=token, allowed_origins=("https://app.example",))
    with BackgroundServer(codec, config) as guarded:
        def status(url: str, headers: dict | None = None) -> int:
            async def attempt():
                try:
                    async with connect(url, additional_headers=headers or {}):
                        return 101
                except Exception as exc:  # websockets.InvalidStatus carries the HTTP response
                    return exc.response.status_code

            return asyncio.run(attempt())

        assert status(guarded.url) == 401
        assert status(guarded.url + "?token=wrong-token-xyz") == 401
        assert status(guarded.url, {"Authorization": f"Bearer {token}"}) == 101
        assert status(guarded.url + f"?token={token}", {"Origin": "https://evil.example"}) == 403
        assert status(guarded.url + f"?token={token}", {"Origin": "https://app.example"}) == 101
        # A real stream with the token in the URL (the client needs no change), and health stays open.
        assert np.array_equal(encode(guarded.url + f"?token={token}", speech, SR), offline[0])
        info = health(guarded.url)
        assert info["unauthorized"] == 3
    with pytest.raises(VoxtokError, match="at least 8"):
        ServerConfig(token="short").check()
