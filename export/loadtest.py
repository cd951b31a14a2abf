"""Loopback load test for `voxtok serve`: N simulated real-time streams, each checked against an offline run.

Each simulated stream is a live call through the codec: an encode connection fed one chunk per chunk
duration at the audio clock, whose codes are forwarded as they arrive to a decode connection. A chunk's
latency runs from the moment its last sample "arrived" (its due time on the audio clock) to the moment its
decoded audio is back at the client. After the stream ends, its codes must equal the offline encoder's codes
of the same samples exactly and its audio must match the offline decoder's (within float rounding), so a
lost, duplicated or reordered frame anywhere fails the stream.

A level of N streams passes when every stream verifies and the p95 chunk latency is below the chunk
duration; the search doubles N while levels pass, then bisects, within a stream cap and a time budget.

    python -m voxtok.export.loadtest [--onnx DIR | --model M] [--seconds 10] [--budget-s 300] [--server-threads 2]
    python -m voxtok.export.loadtest --url ws://127.0.0.1:8765/v1/stream ...   (a server that is already running)

Only loopback addresses are accepted: this is a capacity probe for the machine it runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from voxtok.errors import VoxtokError
from voxtok.export.client import StreamClient, health
from voxtok.export.protocol import STREAM_PATH
from voxtok.export.runtime import ExportedCodec, OfflineCodec

LOOPBACK = ("127.0.0.1", "localhost", "::1")
AUDIO_TOLERANCE = 1e-4  # batched vs single-stream float rounding is about 1e-5


@dataclass
class Clip:
    """A test signal and the offline runtime's codes and audio for it."""
    samples: np.ndarray
    codes: np.ndarray
    audio: np.ndarray


def make_clips(codec: ExportedCodec, signals: list[np.ndarray], seconds: float, count: int = 4) -> list[Clip]:
    """`count` clips of `seconds` cut from the concatenated signals at different offsets, with references."""
    need = int(round(seconds * codec.sample_rate))
    joined = np.concatenate([np.asarray(s, dtype=np.float32).reshape(-1) for s in signals])
    if len(joined) == 0:
        raise VoxtokError("no audio for the load test")
    while len(joined) < need * 2:
        joined = np.concatenate([joined, joined])
    offline = OfflineCodec(codec)
    clips = []
    for i in range(count):
        start = (len(joined) - need) * i // max(1, count)
        samples = joined[start:start + need].copy()
        codes = offline.encode(samples)
        clips.append(Clip(samples, codes, offline.decode(codes, len(samples))))
    return clips


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise VoxtokError(f"the load test only targets this machine (127.0.0.1), not {host!r}")


async def _open_call(url: str, sample_rate: int) -> tuple[StreamClient, StreamClient]:
    enc = await StreamClient.open(url, "encode", sample_rate)
    try:
        return enc, await StreamClient.open(url, "decode", sample_rate, num_codebooks=enc.num_codebooks)
    except BaseException:
        await enc.close()
        raise


async def _one_stream(call: tuple[StreamClient, StreamClient], clip: Clip, sample_rate: int, chunk: int,
                      start_at: float) -> dict:
    """One paced call: encode -> forward codes -> decode; returns latencies and the verification."""
    enc, dec = call
    chunks = [clip.samples[i:i + chunk] for i in range(0, len(clip.samples), chunk)]
    due = [start_at + min((k + 1) * chunk, len(clip.samples)) / sample_rate for k in range(len(chunks))]
    codes_parts: list[np.ndarray] = []
    audio_parts: list[np.ndarray] = []
    latencies: list[float] = []

    async def feed() -> None:
        for k, piece in enumerate(chunks):
            delay = due[k] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await enc.send(piece)

    async def forward() -> None:
        for _ in chunks:
            codes = await enc.receive()
            if isinstance(codes, dict):
                raise VoxtokError(f"unexpected control message from an encode stream: {codes}")
            codes_parts.append(codes)
            await dec.send(codes)

    async def collect() -> None:
        for k in range(len(chunks)):
            audio = await dec.receive()
            if isinstance(audio, dict):
                raise VoxtokError(f"unexpected control message from a decode stream: {audio}")
            latencies.append(1000 * (time.perf_counter() - due[k]))
            audio_parts.append(audio)

    tasks = [asyncio.create_task(job()) for job in (feed, forward, collect)]
    try:
        # A failure anywhere (a server error, a dropped connection) ends the whole call at once.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
        tail_codes, enc_summary = await enc.finish("end")
        codes_parts.append(tail_codes)
        await dec.send(tail_codes)
        audio_parts.append(await dec.receive())
        tail_audio, dec_summary = await dec.finish("end")
        audio_parts.append(tail_audio)
    finally:
        for task in tasks:
            task.cancel()
        await enc.close()
        await dec.close()
    codes = np.concatenate(codes_parts, axis=-1)
    audio = np.concatenate(audio_parts)[:len(clip.samples)]
    codes_exact = codes.shape == clip.codes.shape and bool(np.array_equal(codes, clip.codes))
    audio_error = float(np.abs(audio - clip.audio).max()) if audio.shape == clip.audio.shape else float("inf")
    counts_ok = (enc_summary.get("samples") == len(clip.samples) and enc_summary.get("frames") == clip.codes.shape[1]
                 and dec_summary.get("frames") == clip.codes.shape[1])
    return {"latencies_ms": latencies, "codes_exact": codes_exact, "audio_max_error": audio_error,
            "ok": codes_exact and audio_error <= AUDIO_TOLERANCE and counts_ok, "counts_ok": counts_ok}


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc); None where that cannot be read."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_level_async(url: str, clips: list[Clip], streams: int, chunk_ms: float = 20.0,
                          server_pid: int | None = None) -> dict:
    """N concurrent paced streams; -> latency percentiles over all chunks and how many streams verified.
    With the server's pid, also its CPU seconds per second of streamed audio."""
    check_loopback(url)
    info = health(url)
    sr = info["sample_rate"]
    chunk = max(1, int(round(chunk_ms * sr / 1000)))
    chunk_ms = 1000 * chunk / sr
    before = info["graph_calls"], info["graph_steps"]
    # Every connection opens first, so the clock starts on a quiet server; then the streams start spread over
    # one chunk period, as independent callers would be.
    opened = await asyncio.gather(*(_open_call(url, sr) for _ in range(streams)), return_exceptions=True)
    t0 = time.perf_counter() + 0.1
    jobs = [_one_stream(call, clips[i % len(clips)], sr, chunk, t0 + (i / streams) * chunk / sr)
            for i, call in enumerate(opened) if not isinstance(call, BaseException)]
    cpu_before = process_cpu_seconds(server_pid)
    results = [call for call in opened if isinstance(call, BaseException)]
    results += await asyncio.gather(*jobs, return_exceptions=True)
    cpu_after = process_cpu_seconds(server_pid)
    after = health(url)
    latencies = [v for r in results if isinstance(r, dict) for v in r["latencies_ms"]]
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    verified = sum(1 for r in results if isinstance(r, dict) and r["ok"])
    calls, steps = after["graph_calls"] - before[0], after["graph_steps"] - before[1]
    p50, p95 = (np.percentile(latencies, [50, 95]).round(2).tolist() if latencies else (None, None))
    return {
        "streams": streams, "chunk_ms": chunk_ms, "audio_s": round(len(clips[0].samples) / sr, 3),
        "chunks": len(latencies), "p50_ms": p50, "p95_ms": p95,
        "max_ms": round(max(latencies), 2) if latencies else None,
        "verified": verified, "failed": streams - verified, "errors": failures[:3],
        "worst_audio_error": max((r["audio_max_error"] for r in results if isinstance(r, dict)), default=None),
        "mean_batch": round(steps / calls, 2) if calls > 0 else None,
        "server_cpu_per_audio_s": (round((cpu_after - cpu_before) / (streams * len(clips[0].samples) / sr), 4)
                                   if cpu_before is not None and cpu_after is not None else None),
        "passed": verified == streams and p95 is not None and p95 < chunk_ms,
    }


def run_level(url: str, clips: list[Clip], streams: int, chunk_ms: float = 20.0,
              server_pid: int | None = None) -> dict:
    return asyncio.run(run_level_async(url, clips, streams, chunk_ms, server_pid))


def find_capacity(url: str, clips: list[Clip], max_streams: int, budget_s: float, chunk_ms: float = 20.0,
                  start: int = 1, log=None, server_pid: int | None = None) -> dict:
    """Double N while levels pass, then bisect between the last pass and the first failure; stop at
    max_streams or when the next level would overrun the time budget. A level whose streams all verified but
    whose p95 was too high is run once more before it counts as failed."""
    check_loopback(url)
    began = time.perf_counter()
    levels: list[dict] = []
    best, worst = 0, max_streams + 1
    n = max(1, min(start, max_streams))
    while n is not None:
        result = run_level(url, clips, n, chunk_ms, server_pid)
        if not result["passed"] and result["failed"] == 0:
            # Late but correct: on a shared machine one hiccup can push p95 over, so the level gets one more go.
            # A stream that failed verification is never retried.
            if log is not None:
                log(result)
            result = run_level(url, clips, n, chunk_ms, server_pid)
        levels.append(result)
        if log is not None:
            log(result)
        if result["passed"]:
            best = max(best, n)
        else:
            worst = min(worst, n)
        spent = time.perf_counter() - began
        per_level = spent / len(levels)
        if spent + per_level * 1.5 > budget_s:
            break
        if worst > max_streams:  # nothing failed yet: double
            n = min(2 * n, max_streams) if n < max_streams else None
        else:
            n = (best + worst) // 2 if worst - best > 1 else None
    # Compute alone: how many streams one core nothing else uses could carry at each level's batching. On a
    # shared machine the latency search measures the CPU left over; this measures the server's own cost.
    compute = [{"streams": level["streams"], "mean_batch": level.get("mean_batch"),
                "streams_per_free_core": round(1 / level["server_cpu_per_audio_s"], 1)}
               for level in sorted(levels, key=lambda x: x["streams"]) if level.get("server_cpu_per_audio_s")]
    return {"max_realtime_streams": best, "limit_reached": worst > max_streams, "levels": levels,
            "compute_bound": compute, "wall_s": round(time.perf_counter() - began, 1)}


# ---- command line: a server in a child process, so client and server do not share one interpreter ----

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(onnx_dir: Path, threads: int, max_streams: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "voxtok.export.commands.serve", "--onnx", str(onnx_dir), "--host", "127.0.0.1",
               "--port", str(port), "--threads", str(threads), "--max-streams", str(max_streams),
               "--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"ws://127.0.0.1:{port}{STREAM_PATH}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VoxtokError(f"the server exited: {log_path.read_text(errors='replace').strip()[-400:]}")
        try:
            health(url, timeout=1.0)
            return process, url
        except VoxtokError:
            time.sleep(0.3)
    process.kill()
    raise VoxtokError("the server did not come up within 60 s")


def _default_signals(sample_rate: int) -> list[np.ndarray]:
    from voxtok.audio import load_audio
    from voxtok.paths import real_speech_root, split_file

    root = real_speech_root()
    names = [line.strip() for line in split_file("real_dev.txt").splitlines() if line.startswith("librispeech/")]
    paths = [root / name for name in names if (root / name).is_file()][:4]
    if not paths:
        raise VoxtokError(f"no dev speech under {root}; pass --audio FILES or set VOXTOK_DATA")
    return [load_audio(p, sample_rate) for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voxtok.export.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running local server's stream URL (else one is started)")
    parser.add_argument("--onnx", default=None, help="export folder for the server and the offline reference")
    parser.add_argument("--model", default=None, help="model to export into the cache when --onnx is not given")
    parser.add_argument("--audio", nargs="+", default=None, help="speech files to stream (default: dev speech)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream and level (default 10)")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="chunk length (default 20)")
    parser.add_argument("--max-streams", type=int, default=32,
                        help="largest N (simulated calls) tried (default 32: each call holds an encode and a decode "
                             "stream, so 32 calls fill a default server's 64 streams)")
    parser.add_argument("--start", type=int, default=1, help="first N (default 1)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop searching after this long (default 300)")
    parser.add_argument("--server-threads", type=int, default=2, help="server inference threads (default 2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    process = None
    try:
        if args.seconds <= 0 or args.chunk_ms <= 0 or args.max_streams < 1 or args.budget_s <= 0:
            raise VoxtokError("--seconds, --chunk-ms, --max-streams and --budget-s must be positive")
        from voxtok.export.cache import cached_export

        onnx_dir = Path(args.onnx) if args.onnx else cached_export(args.model, False)
        codec = ExportedCodec(onnx_dir)
        if args.audio:
            from voxtok.audio import load_audio

            signals = [load_audio(p, codec.sample_rate) for p in args.audio]
        else:
            signals = _default_signals(codec.sample_rate)
        clips = make_clips(codec, signals, args.seconds)
        with tempfile.TemporaryDirectory(prefix="voxtok-loadtest-") as tmp:
            if args.url:
                check_loopback(args.url)
                url = args.url
                # Never ask a running server for more streams than it admits: each call takes two.
                room = health(url, timeout=5.0)["max_streams"] // 2
                if args.max_streams > room:
                    print(f"the server admits {2 * room} streams: testing at most {room} calls", file=sys.stderr)
                    args.max_streams = room
            else:
                # Each simulated stream holds two connections (encode + decode).
                process, url = _start_server(onnx_dir, args.server_threads, 2 * args.max_streams + 2,
                                             Path(tmp) / "server.log")

            def log(level: dict) -> None:
                if not args.json:
                    print(f"N={level['streams']:3d}  p50 {level['p50_ms']} ms  p95 {level['p95_ms']} ms  "
                          f"max {level['max_ms']} ms  verified {level['verified']}/{level['streams']}  "
                          f"mean batch {level['mean_batch']}  server CPU {level['server_cpu_per_audio_s']} s "
                          f"per audio s  {'pass' if level['passed'] else 'FAIL'}",
                          file=sys.stderr)

            report = find_capacity(url, clips, args.max_streams, args.budget_s, args.chunk_ms, args.start, log,
                                   server_pid=None if process is None else process.pid)
        report.update({"chunk_ms": args.chunk_ms, "seconds_per_level": args.seconds,
                       "server_threads": None if args.url else args.server_threads, "cpus": os.cpu_count()})
        if args.json:
            print(json.dumps(report))
        else:
            print(f"max real-time streams with p95 chunk latency < {args.chunk_ms:g} ms: "
                  f"{report['max_realtime_streams']}" + (" (the cap; more may fit)" if report["limit_reached"] else ""))
            for row in report["compute_bound"]:
                print(f"  by server CPU alone at N={row['streams']} (mean batch {row['mean_batch']}): "
                      f"{row['streams_per_free_core']} streams per free core")
    except VoxtokError as exc:
        print(f"voxtok loadtest: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
