"""Torch-free runtime for an exported voxtok codec: onnxruntime + numpy only.

StreamingEncoder and StreamingDecoder keep the graphs' state tensors between calls, accept any chunk size
(the encoder buffers samples to whole frames), flush at the end and reset. A batch of B independent
streams runs as one [B, ...] call per chunk: each row's result equals what that stream alone would give.
OfflineCodec runs the full-utterance graphs. All three read the folder `voxtok export onnx` writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from voxtok.errors import VoxtokError

MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "int8")
# Frames per graph call on long inputs: bounds the activations' memory (about 20 s of audio).
MAX_FRAMES_PER_CALL = 1000
# Offline calls above this many seconds go through the streaming graphs in pieces (same codes and audio).
OFFLINE_MAX_SECONDS = 60.0


class ExportedCodec:
    """An export folder: its manifest and lazily created onnxruntime sessions (shareable between streams)."""

    def __init__(self, model_dir: str | Path, threads: int = 1, precision: str = "fp32"):
        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir)
        if precision not in PRECISIONS:
            raise VoxtokError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision not in self.manifest["graphs"]:
            raise VoxtokError(f"{self.model_dir}: no {precision} graphs in this export "
                              f"(re-export with `voxtok export onnx --{precision}`)")
        if threads < 1:
            raise VoxtokError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self.precision = precision
        m = self.manifest
        self.sample_rate: int = m["sample_rate"]
        self.frame_size: int = m["frame_size"]
        self.num_quantizers: int = m["num_quantizers"]
        self.codebook_size: int = m["codebook_size"]
        self.decoder_skip: int = m["decoder_skip_samples"]
        self.latency_samples: int = m["latency"]["algorithmic_samples"]
        self._sessions: dict[str, ort.InferenceSession] = {}

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    def session(self, graph: str) -> ort.InferenceSession:
        if graph not in self._sessions:
            path = self.model_dir / self.manifest["graphs"][self.precision][graph]
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Spinning worker threads steal cycles from everything else on a shared CPU for little gain here.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            try:
                self._sessions[graph] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
                raise VoxtokError(f"{path}: cannot load ONNX graph ({str(exc).strip().splitlines()[0]})") from None
        return self._sessions[graph]

    def initial_states(self, graph: str, batch_size: int) -> dict[str, np.ndarray]:
        # Most states are float32; the harmonic synthesiser's phase is float64 and its noise position int64.
        return {s["name"]: np.zeros([batch_size, *s["shape"][1:]], dtype=np.dtype(s.get("dtype", "float32")))
                for s in self.manifest["states"][graph]}

    def check_sample_rate(self, sample_rate: int | None) -> None:
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise VoxtokError(f"audio is at {sample_rate} Hz but {self.model_id} runs at {self.sample_rate} Hz; "
                              "resample it first")

    def check_audio(self, audio, batch_size: int | None = None) -> tuple[np.ndarray, bool]:
        """-> ([B, n] float32, whether the caller passed one 1-D stream)."""
        if not isinstance(audio, np.ndarray):
            raise VoxtokError(f"audio must be a numpy array, got {type(audio).__name__}")
        if not np.issubdtype(audio.dtype, np.floating):
            hint = " (divide int16 PCM by 32768)" if np.issubdtype(audio.dtype, np.integer) else ""
            raise VoxtokError(f"audio must be float samples in [-1, 1], got dtype {audio.dtype}{hint}")
        if audio.ndim not in (1, 2):
            raise VoxtokError(f"audio must be [samples] or [streams, samples], got shape {audio.shape}")
        single = audio.ndim == 1
        batch = audio[None] if single else audio
        if batch_size is not None and batch.shape[0] != batch_size:
            raise VoxtokError(f"audio has {batch.shape[0]} stream(s), this stream object has {batch_size}")
        if not np.isfinite(batch).all():
            raise VoxtokError("audio contains NaN or infinite samples")
        return np.ascontiguousarray(batch, dtype=np.float32), single

    def check_codes(self, codes, batch_size: int | None = None) -> tuple[np.ndarray, bool]:
        """-> ([B, q, T] int64, whether the caller passed one [q, T] stream)."""
        if not isinstance(codes, np.ndarray):
            raise VoxtokError(f"codes must be a numpy array, got {type(codes).__name__}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise VoxtokError(f"codes must be integers, got dtype {codes.dtype}")
        if codes.ndim not in (2, 3):
            raise VoxtokError(f"codes must be [codebooks, frames] or [streams, codebooks, frames], "
                              f"got shape {codes.shape}")
        single = codes.ndim == 2
        batch = codes[None] if single else codes
        if batch_size is not None and batch.shape[0] != batch_size:
            raise VoxtokError(f"codes have {batch.shape[0]} stream(s), this stream object has {batch_size}")
        if not 1 <= batch.shape[1] <= self.num_quantizers:
            raise VoxtokError(f"codes have {batch.shape[1]} codebooks, {self.model_id} has 1..{self.num_quantizers}")
        if batch.size and (batch.min() < 0 or batch.max() >= self.codebook_size):
            raise VoxtokError(f"codes outside 0..{self.codebook_size - 1}")
        return np.ascontiguousarray(batch, dtype=np.int64), single

    def check_num_quantizers(self, num_quantizers: int | None) -> int:
        if num_quantizers is None:
            return self.num_quantizers
        if not 1 <= num_quantizers <= self.num_quantizers:
            raise VoxtokError(f"num_quantizers must be 1..{self.num_quantizers}, got {num_quantizers}")
        return int(num_quantizers)


def load_manifest(model_dir: str | Path) -> dict:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise VoxtokError(f"{model_dir}: not an ONNX export (no {MANIFEST}; run `voxtok export onnx -o DIR`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VoxtokError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != "voxtok-onnx":
        raise VoxtokError(f"{path}: not a voxtok ONNX manifest")
    return manifest


def _codec(model: ExportedCodec | str | Path, threads: int, precision: str) -> ExportedCodec:
    return model if isinstance(model, ExportedCodec) else ExportedCodec(model, threads, precision)


class _StatefulGraph:
    """One step graph and its state tensors for a batch of streams."""

    def __init__(self, codec: ExportedCodec, graph: str, batch_size: int):
        if batch_size < 1:
            raise VoxtokError(f"batch_size must be at least 1, got {batch_size}")
        self.codec = codec
        self.graph = graph
        self.batch_size = batch_size
        self.session = codec.session(graph)
        specs = codec.manifest["states"][graph]
        self.state_names = [s["name"] for s in specs]
        self.output_names = [self.session.get_outputs()[0].name, *[s["output"] for s in specs]]
        self.states = codec.initial_states(graph, batch_size)

    def reset_states(self) -> None:
        self.states = self.codec.initial_states(self.graph, self.batch_size)

    def run(self, name: str, value: np.ndarray) -> np.ndarray:
        outputs = self.session.run(self.output_names, {name: value, **self.states})
        self.states = dict(zip(self.state_names, outputs[1:]))
        return outputs[0]


class StreamingEncoder:
    """Audio chunks of any length -> codes for the frames completed so far.

    push([n] float) -> [q, t] int64 codes; push([B, n]) -> [B, q, t] for B independent streams in lock-step.
    flush() encodes the last partial frame zero-padded (as offline encoding does) and resets for a new stream.
    """

    def __init__(self, model: ExportedCodec | str | Path, batch_size: int = 1, num_quantizers: int | None = None,
                 threads: int = 1, precision: str = "fp32", sample_rate: int | None = None):
        self.codec = _codec(model, threads, precision)
        self.codec.check_sample_rate(sample_rate)
        self.num_quantizers = self.codec.check_num_quantizers(num_quantizers)
        self._graph = _StatefulGraph(self.codec, "encoder_step", batch_size)
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        """Forget all history: the next push starts new streams."""
        self._graph.reset_states()
        self._pending = np.zeros((self.batch_size, 0), dtype=np.float32)
        self._single = self.batch_size == 1

    @property
    def pending_samples(self) -> int:
        """Samples held back until their frame is complete."""
        return self._pending.shape[1]

    def push(self, audio: np.ndarray) -> np.ndarray:
        batch, single = self.codec.check_audio(audio, self.batch_size)
        self._single = single
        joined = np.concatenate([self._pending, batch], axis=1) if self._pending.shape[1] else batch
        hop = self.codec.frame_size
        whole = joined.shape[1] - joined.shape[1] % hop
        self._pending = joined[:, whole:].copy()
        return self._shape(self._encode(joined[:, :whole]), single)

    def flush(self) -> np.ndarray:
        """Codes of the last partial frame (zero-padded); then reset. Empty when no samples are pending."""
        single = self._single
        if self._pending.shape[1] == 0:
            codes = self._encode(self._pending)
        else:
            pad = self.codec.frame_size - self._pending.shape[1]
            codes = self._encode(np.pad(self._pending, ((0, 0), (0, pad))))
        self.reset()
        return self._shape(codes, single)

    def _encode(self, whole: np.ndarray) -> np.ndarray:
        hop = self.codec.frame_size
        frames = whole.shape[1] // hop
        if frames == 0:
            return np.zeros((self.batch_size, self.num_quantizers, 0), dtype=np.int64)
        parts = []
        for start in range(0, frames, MAX_FRAMES_PER_CALL):
            piece = whole[:, start * hop:min(frames, start + MAX_FRAMES_PER_CALL) * hop]
            parts.append(self._graph.run("audio", np.ascontiguousarray(piece[:, None, :])))
        codes = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
        return codes[:, :self.num_quantizers]

    @staticmethod
    def _shape(codes: np.ndarray, single: bool) -> np.ndarray:
        return codes[0] if single else codes


class StreamingDecoder:
    """Codes, any number of frames at a time -> the audio samples that are final so far.

    push([q, t]) -> [n] float32; push([B, q, t]) -> [B, n]. The output is aligned with the encoder's input:
    the graph's first `decoder_skip` samples (the iSTFT offset) are dropped, and flush() returns the
    overlap-add tail the last frames leave, then resets. q may change between pushes (any 1..n_q).
    """

    def __init__(self, model: ExportedCodec | str | Path, batch_size: int = 1, threads: int = 1,
                 precision: str = "fp32"):
        self.codec = _codec(model, threads, precision)
        self._graph = _StatefulGraph(self.codec, "decoder_step", batch_size)
        self._tail_state = self.codec.manifest["decoder_tail_state"]
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self._graph.reset_states()
        self._skip = self.codec.decoder_skip
        self._single = self.batch_size == 1

    def push(self, codes: np.ndarray) -> np.ndarray:
        batch, single = self.codec.check_codes(codes, self.batch_size)
        self._single = single
        frames = batch.shape[-1]
        parts = [np.zeros((self.batch_size, 0), dtype=np.float32)]
        for start in range(0, frames, MAX_FRAMES_PER_CALL):
            piece = np.ascontiguousarray(batch[..., start:start + MAX_FRAMES_PER_CALL])
            parts.append(self._drop_skip(self._graph.run("codes", piece)[:, 0]))
        out = parts[-1] if len(parts) == 2 else np.concatenate(parts, axis=1)
        return out[0] if single else out

    def flush(self) -> np.ndarray:
        """The overlap-add tail still held in the state (what offline decoding ends with); then reset."""
        single = self._single
        tail = self._graph.states[self._tail_state].reshape(self.batch_size, -1)[:, self._skip:].copy()
        self.reset()
        return tail[0] if single else tail

    def _drop_skip(self, audio: np.ndarray) -> np.ndarray:
        if self._skip:
            skip = min(self._skip, audio.shape[1])
            audio = audio[:, skip:]
            self._skip -= skip
        return audio


class OfflineCodec:
    """Whole utterances through the offline graphs: encode([n] or [B, n]) and decode([q, T] or [B, q, T])."""

    def __init__(self, model: ExportedCodec | str | Path, threads: int = 1, precision: str = "fp32"):
        self.codec = _codec(model, threads, precision)

    def encode(self, audio: np.ndarray, num_quantizers: int | None = None,
               sample_rate: int | None = None) -> np.ndarray:
        """-> codes [q, ceil(n / frame)] (or [B, q, ...]); the last partial frame is zero-padded."""
        self.codec.check_sample_rate(sample_rate)
        n_q = self.codec.check_num_quantizers(num_quantizers)
        batch, single = self.codec.check_audio(audio)
        if batch.shape[1] == 0:
            raise VoxtokError("audio is empty")
        if batch.shape[1] > OFFLINE_MAX_SECONDS * self.codec.sample_rate:
            codes = self._stream_encode(batch, n_q)
        else:
            session = self.codec.session("encoder")
            codes = session.run(["codes"], {"audio": batch[:, None, :]})[0][:, :n_q]
        return codes[0] if single else codes

    def decode(self, codes: np.ndarray, num_samples: int | None = None) -> np.ndarray:
        """-> audio [frames * frame_size] (or [B, ...]) aligned with the encoder input, cut to num_samples."""
        batch, single = self.codec.check_codes(codes)
        frames = batch.shape[-1]
        if frames == 0:
            audio = np.zeros((batch.shape[0], 0), dtype=np.float32)
        elif frames * self.codec.frame_size > OFFLINE_MAX_SECONDS * self.codec.sample_rate:
            decoder = StreamingDecoder(self.codec, batch.shape[0])
            audio = np.concatenate([decoder.push(batch), decoder.flush()], axis=1)
        else:
            audio = self.codec.session("decoder").run(["audio"], {"codes": batch})[0][:, 0]
        if num_samples is not None:
            audio = audio[:, :num_samples]
        return audio[0] if single else audio

    def _stream_encode(self, batch: np.ndarray, n_q: int) -> np.ndarray:
        encoder = StreamingEncoder(self.codec, batch.shape[0], n_q)
        return np.concatenate([encoder.push(batch), encoder.flush()], axis=-1)


# ---- streaming loop, latency and speed ------------------------------------------------------------

def _percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    arr = np.asarray(values_ms)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p95_ms": round(float(np.percentile(arr, 95)), 3),
            "max_ms": round(float(arr.max()), 3)}


def iter_chunks(audio: np.ndarray, chunk_samples: int) -> Iterator[np.ndarray]:
    for start in range(0, len(audio), chunk_samples):
        yield audio[start:start + chunk_samples]


def run_stream(encoder: StreamingEncoder, decoder: StreamingDecoder, chunks: Iterable[np.ndarray],
               paced: bool = False) -> tuple[np.ndarray, dict]:
    """Encode and decode one stream of 1-D chunks as a live stream would; return (decoded audio, figures).

    paced: feed chunk k only when the audio clock says it has fully arrived (file input at real speed); a
    live source (microphone) paces itself, so pass paced=False there. Per-chunk latency runs from the
    chunk's arrival to its decoded audio being out; first-audio latency from stream start to the first
    decoded sample. The algorithmic latency is measured from the sample counts: for each output sample n,
    how many input samples had been pushed when it came out, minus n.
    """
    sr = encoder.codec.sample_rate
    latencies, encode_ms, decode_ms = [], [], []
    outputs: list[np.ndarray] = []
    pushed = emitted = 0
    algorithmic = 0
    first_audio = None
    start = time.perf_counter()
    for chunk in chunks:
        if paced:
            due = start + (pushed + len(chunk)) / sr
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        arrival = time.perf_counter()
        codes = encoder.push(chunk)
        encoded = time.perf_counter()
        audio = decoder.push(codes)
        done = time.perf_counter()
        pushed += len(chunk)
        latencies.append(1000 * (done - arrival))
        encode_ms.append(1000 * (encoded - arrival))
        decode_ms.append(1000 * (done - encoded))
        if len(audio):
            algorithmic = max(algorithmic, pushed - emitted)  # its first sample is the one that waited longest
            if first_audio is None:
                first_audio = done - start
            emitted += len(audio)
            outputs.append(audio)
    outputs.append(decoder.push(encoder.flush()))
    outputs.append(decoder.flush())
    total = time.perf_counter() - start
    out = np.concatenate(outputs)[:pushed] if outputs else np.zeros(0, dtype=np.float32)
    seconds = pushed / sr
    compute = (sum(encode_ms) + sum(decode_ms)) / 1000
    figures = {
        "audio_s": round(seconds, 3),
        "chunks": len(latencies),
        "paced": paced,
        "chunk_latency": _percentiles(latencies),
        "encode_chunk": _percentiles(encode_ms),
        "decode_chunk": _percentiles(decode_ms),
        "first_audio_ms": None if first_audio is None else round(1000 * first_audio, 3),
        "algorithmic_latency_ms": round(1000 * algorithmic / sr, 3),
        "stated_latency_ms": round(1000 * encoder.codec.latency_samples / sr, 3),
        "compute_rtf": round(seconds / compute, 1) if compute > 0 else None,
        "wall_s": round(total, 3),
    }
    return out, figures


def benchmark_streaming(model_dir: str | Path | ExportedCodec, audio: np.ndarray, chunk_ms: float,
                        threads: int = 1, precision: str = "fp32", num_quantizers: int | None = None,
                        repeats: int = 1) -> dict:
    """Real-time factors of streaming encode and of streaming decode at one chunk size, each timed alone.

    Encode pushes `chunk_ms` of audio at a time; decode pushes the frames such a chunk yields (at least one).
    rtf = audio seconds / wall seconds spent inside push; cpu_rtf uses this thread's CPU time instead, which
    on a shared machine is the better guide to an idle core (with threads=1 onnxruntime computes on the
    calling thread). The best of `repeats` runs is kept, as is usual for timings on a busy machine.
    """
    codec = _codec(model_dir, threads, precision)
    samples, single = codec.check_audio(audio)
    if not single:
        raise VoxtokError(f"benchmark_streaming takes one mono signal [samples], got shape {audio.shape}")
    samples = samples[0]
    chunk = max(1, int(round(chunk_ms * codec.sample_rate / 1000)))
    frames_per_chunk = max(1, int(round(chunk / codec.frame_size)))
    seconds = len(samples) / codec.sample_rate
    encoder = StreamingEncoder(codec, num_quantizers=num_quantizers)
    decoder = StreamingDecoder(codec)
    # Warm-up: session creation and first-call allocations are not per-chunk costs.
    decoder.push(encoder.push(samples[:codec.frame_size * 2]))
    encoder.reset()
    decoder.reset()

    def timed(push, pieces) -> tuple[float, float, list[float], list]:
        wall = cpu = 0.0
        per_chunk, results = [], []
        for piece in pieces:
            w0, c0 = time.perf_counter(), time.thread_time()
            results.append(push(piece))
            w1, c1 = time.perf_counter(), time.thread_time()
            wall += w1 - w0
            cpu += c1 - c0
            per_chunk.append(1000 * (w1 - w0))
        return wall, cpu, per_chunk, results

    best: dict[str, tuple] = {}
    for _ in range(max(1, repeats)):
        enc = timed(encoder.push, iter_chunks(samples, chunk))
        codes = np.concatenate([*enc[3], encoder.flush()], axis=-1)
        dec = timed(decoder.push, [codes[:, i:i + frames_per_chunk] for i in range(0, codes.shape[1],
                                                                               frames_per_chunk)])
        decoder.flush()
        for name, result in (("encode", enc), ("decode", dec)):
            if name not in best or result[0] < best[name][0]:
                best[name] = result

    def summary(result) -> dict:
        wall, cpu, per_chunk, _ = result
        return {"rtf": round(seconds / wall, 1), "cpu_rtf": round(seconds / cpu, 1) if cpu > 0 else None,
                **_percentiles(per_chunk)}

    return {
        "chunk_ms": chunk_ms, "threads": threads, "precision": precision, "audio_s": round(seconds, 3),
        "decode_frames_per_chunk": frames_per_chunk, "encode": summary(best["encode"]),
        "decode": summary(best["decode"]),
        "onnxruntime": ort.__version__,
    }
