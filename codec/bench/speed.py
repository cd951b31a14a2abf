"""Timing harness: real-time factors, per-chunk streaming latency and peak memory of one system.

Every (system, thread count) pair runs in a fresh worker process (`python -m voxtok.bench.speed SPEC OUT`):
thread settings cannot leak from one measurement into the next, and the process's peak resident set
(VmHWM from /proc/self/status, see peak_rss_mb; unlike tracemalloc it sees torch's and onnxruntime's
native allocations) belongs to that system alone. It includes the Python interpreter and whatever was
imported, so the worker also records it before the model is built and after.

Timings are wall clock (time.perf_counter) after one warm-up pass; a figure is the median over repeats.
Real-time factor = audio seconds / compute seconds (higher is faster; 1 = just real time).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from voxtok.errors import VoxtokError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEECH = "librispeech/1089-134686-0000.flac"  # 10.4 s of clean read speech
WARMUP_STREAM_CHUNKS = 10


@dataclass
class RunSpec:
    """One worker's job: a system (`backend` + `options`) at one thread count."""

    backend: str
    options: dict
    threads: int
    input: str
    seconds: float
    repeats: int
    chunk_ms: list[float] = field(default_factory=list)
    stream_seconds: float = 2.0


# ---- measurement (runs inside the worker) -------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB.

    VmHWM belongs to the process's own address space, which starts fresh at exec. ru_maxrss does not:
    Linux carries the launching process's peak across vfork + exec (what subprocess uses), so a worker
    started from a big process would report that process's memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def load_input(path: str | Path, sample_rate: int, seconds: float) -> np.ndarray:
    """The speech file at `sample_rate` (soxr), repeated or cut to exactly `seconds`."""
    from voxtok.audio import load_audio

    audio = load_audio(path, sample_rate)
    length = max(1, int(round(seconds * sample_rate)))
    if len(audio) < length:
        audio = np.tile(audio, -(-length // len(audio)))
    return np.ascontiguousarray(audio[:length], dtype=np.float32)


def time_offline(backend, audio: np.ndarray, repeats: int) -> dict:
    seconds = len(audio) / backend.info.sample_rate
    backend.decode(backend.encode(audio))  # warm-up: first-call allocations and kernel selection
    enc, dec = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        codes = backend.encode(audio)
        encoded = time.perf_counter()
        backend.decode(codes)
        done = time.perf_counter()
        enc.append(encoded - start)
        dec.append(done - encoded)
    return {
        "audio_s": seconds,
        "encode_s": enc,
        "decode_s": dec,
        "encode_rtf": seconds / statistics.median(enc),
        "decode_rtf": seconds / statistics.median(dec),
        "roundtrip_rtf": seconds / statistics.median([e + d for e, d in zip(enc, dec)]),
    }


def time_stream(backend, audio: np.ndarray, chunk_ms: float, repeats: int) -> dict:
    """Feed whole chunks of chunk_ms through the streaming encoder then decoder, timing each chunk.

    first_audio_ms: when the first output sample leaves in a live stream that starts at t = 0, i.e. the
    arrival of the chunk that first yields audio, (k + 1) * chunk_ms, plus its compute time.
    """
    sr = backend.info.sample_rate
    size = max(1, int(round(sr * chunk_ms / 1000)))
    count = len(audio) // size
    if count == 0:
        raise VoxtokError(f"--chunk-ms {chunk_ms:g} is longer than the {len(audio) / sr:g} s streamed")
    chunks = [audio[i * size:(i + 1) * size] for i in range(count)]
    _stream_pass(backend, chunks[:WARMUP_STREAM_CHUNKS], chunk_ms)
    enc, dec, rtfs, firsts = [], [], [], []
    for _ in range(repeats):
        enc_s, dec_s, first = _stream_pass(backend, chunks, chunk_ms)
        enc.extend(enc_s)
        dec.extend(dec_s)
        rtfs.append(count * size / sr / (sum(enc_s) + sum(dec_s)))
        if first is not None:
            firsts.append(first)
    enc_ms, dec_ms = np.array(enc) * 1000, np.array(dec) * 1000
    total_ms = enc_ms + dec_ms
    return {
        "chunk_ms": chunk_ms,
        "chunk_samples": size,
        "chunks_per_pass": count,
        "p50_ms": float(np.percentile(total_ms, 50)),
        "p95_ms": float(np.percentile(total_ms, 95)),
        "max_ms": float(total_ms.max()),
        "encode_p50_ms": float(np.percentile(enc_ms, 50)),
        "decode_p50_ms": float(np.percentile(dec_ms, 50)),
        "first_audio_ms": statistics.median(firsts) if firsts else None,
        "stream_rtf": statistics.median(rtfs),
    }


def _stream_pass(backend, chunks: list[np.ndarray], chunk_ms: float) -> tuple[list[float], list[float], float | None]:
    enc, dec, first = [], [], None
    with backend.stream() as session:
        for k, chunk in enumerate(chunks):
            start = time.perf_counter()
            codes = session.encode(chunk)
            encoded = time.perf_counter()
            produced = session.decode(codes)
            done = time.perf_counter()
            enc.append(encoded - start)
            dec.append(done - encoded)
            if first is None and produced > 0:
                first = (k + 1) * chunk_ms + 1000 * (done - start)
        session.finish()
    return enc, dec, first


def measure(spec: RunSpec) -> dict:
    """Build the system, then time streaming before offline: the peak only grows, and offline holds
    the larger buffers, so this order gives both peaks."""
    from voxtok.bench.registry import make_backend

    rss = {"start_mb": peak_rss_mb()}
    backend = make_backend(spec.backend, spec.options, spec.threads)
    audio = load_input(spec.input, backend.info.sample_rate, spec.seconds)
    rss["loaded_mb"] = peak_rss_mb()
    streaming = []
    if backend.info.streaming and spec.chunk_ms:
        stream_audio = audio[: max(1, int(round(spec.stream_seconds * backend.info.sample_rate)))]
        streaming = [time_stream(backend, stream_audio, ms, spec.repeats) for ms in spec.chunk_ms]
        rss["stream_peak_mb"] = peak_rss_mb()
    offline = time_offline(backend, audio, spec.repeats)
    rss["offline_peak_mb"] = peak_rss_mb()
    return {"system": backend.info.to_dict(), "backend": spec.backend, "threads": spec.threads,
            "offline": offline, "streaming": streaming, "memory": rss}


def worker_main(argv: list[str]) -> int:
    """Entry point of a worker process: read the spec, write the result (or {"error": ...}) as JSON."""
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    try:
        result = measure(RunSpec(**json.loads(spec_path.read_text())))
        code = 0
    except VoxtokError as exc:
        result, code = {"error": str(exc)}, 2
    except Exception as exc:  # a peer library failing is a note in the report, not a crash of the bench
        result, code = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"}, 2
    out_path.write_text(json.dumps(result))
    return code


# ---- orchestration (runs in the CLI process, which never imports torch) ---------------------------


def run_isolated(spec: RunSpec, timeout_s: float | None = None) -> dict:
    """Run one spec in a fresh worker process; return its result or {"error": "one line"}."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(spec.threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory(prefix="voxtok-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        try:
            proc = subprocess.run([sys.executable, "-m", "voxtok.bench.speed", str(spec_path), str(out_path)],
                                  env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"took longer than {timeout_s:g} s"}
        if out_path.is_file():
            return json.loads(out_path.read_text())
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        return {"error": f"worker exited with status {proc.returncode}" + (f": {lines[-1]}" if lines else "")}


@dataclass
class Job:
    label: str
    spec: RunSpec
    required: bool  # failure of a required job stops the bench; an optional one becomes a note


def run_jobs(jobs: list[Job], progress: Callable[[str], None] = lambda line: None) -> tuple[list[dict], list[str]]:
    results, notes = [], []
    for job in jobs:
        start = time.perf_counter()
        progress(f"bench: {job.label}, {job.spec.threads} thread(s) ...")
        result = run_isolated(job.spec)
        if "error" in result:
            if job.required:
                raise VoxtokError(f"{job.label}: {result['error']}")
            notes.append(f"{job.label}: failed, {result['error']}")
            progress(f"bench: {job.label} failed: {result['error']}")
            continue
        results.append(result)
        progress(f"bench: {job.label}, {job.spec.threads} thread(s) done in {time.perf_counter() - start:.0f} s")
    return results, notes


@dataclass
class BenchSettings:
    input: str
    model: str | None = None
    seconds: float = 10.0
    repeats: int = 5
    threads: list[int] = field(default_factory=lambda: [1, 2])
    chunk_ms: list[float] = field(default_factory=lambda: [20.0, 80.0])
    stream_seconds: float = 2.0
    bitrate: float | None = None
    peers: list[str] = field(default_factory=list)
    onnx: str | None = None
    # The 12.5 Hz tokenizer's decoder options ({"decoder": ..., "steps": ...}; voxtok.commands.decoding).
    decoding: dict = field(default_factory=dict)
    command: str = "voxtok bench"


def plan_jobs(settings: BenchSettings) -> tuple[list[Job], list[str]]:
    """The worker runs the settings ask for, and a note for each peer that cannot run here."""
    from voxtok.bench.peers import PEERS, missing

    def spec(backend: str, options: dict, threads: int, chunk_ms: list[float]) -> RunSpec:
        return RunSpec(backend=backend, options=options, threads=threads, input=settings.input,
                       seconds=settings.seconds, repeats=settings.repeats, chunk_ms=chunk_ms,
                       stream_seconds=settings.stream_seconds)

    jobs, notes = [], []
    for threads in settings.threads:
        jobs.append(Job("voxtok (PyTorch)", spec("voxtok", {"model": settings.model, "bitrate": settings.bitrate,
                                                            "decoding": settings.decoding},
                                                 threads, settings.chunk_ms), required=True))
    if settings.onnx is not None:
        from voxtok.bench.backends import onnx_precisions

        for precision in onnx_precisions(settings.onnx):
            for threads in settings.threads:
                options = {"folder": settings.onnx, "precision": precision, "bitrate": settings.bitrate}
                jobs.append(Job(f"voxtok (ONNX {precision})", spec("onnx", options, threads, settings.chunk_ms),
                                required=True))
    for name in settings.peers:
        note = missing(name)
        if note:
            notes.append(note)
            continue
        for threads in settings.threads:
            jobs.append(Job(PEERS[name].label, spec(name, {}, threads, []), required=False))
    return jobs, notes


def run_bench(settings: BenchSettings, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Run every planned job and return the whole report (what --json writes)."""
    import soundfile as sf

    if not Path(settings.input).is_file():
        raise VoxtokError(f"{settings.input}: no such file")
    try:
        info = sf.info(settings.input)
    except Exception as exc:  # libsndfile raises several types
        raise VoxtokError(f"{settings.input}: cannot read audio ({str(exc).strip().splitlines()[0]})") from None
    machine = machine_info()
    jobs, notes = plan_jobs(settings)
    results, failures = run_jobs(jobs, progress)
    machine["loadavg_end"] = _loadavg()
    return {
        "command": settings.command,
        "machine": machine,
        "versions": runtime_versions(),
        "input": {"path": str(settings.input), "file_seconds": round(info.frames / info.samplerate, 3),
                  "file_rate": info.samplerate, "seconds": settings.seconds,
                  "repeated": info.frames / info.samplerate < settings.seconds},
        "settings": asdict(settings),
        "method": {"timer": "time.perf_counter wall clock", "warmup_passes": 1, "statistic": "median",
                   "isolation": "one fresh process per system and thread count",
                   "memory": "peak RSS (VmHWM) of that process"},
        "results": results,
        "notes": notes + failures,
    }


def machine_info() -> dict:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get("model name", platform.processor() or "unknown")
    if "cpu family" in fields and "model" in fields:
        # Virtual machines often report a bare "AMD EPYC"; family and model still name the generation.
        cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": _loadavg()}


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def runtime_versions() -> dict:
    """Package versions, read from metadata so the CLI process need not import them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "numpy", "onnxruntime", "transformers", "snac"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def default_input() -> Path:
    """The default speech: $VOXTOK_DATA, else the shared data folder beside the repo."""
    from voxtok.paths import real_speech_root

    root = real_speech_root()
    path = root / DEFAULT_SPEECH
    if not path.is_file():
        raise VoxtokError(f"no default speech at {path}: pass --input FILE or set VOXTOK_DATA")
    return path


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
