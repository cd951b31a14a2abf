"""`voxtok serve`: a WebSocket server that streams PCM -> codes and codes -> PCM through the ONNX runtime.

One connection is one stream (protocol in docs/protocol.md, wire format in export/protocol.py). The event
loop only moves bytes; every graph call runs in a thread pool. Streams that are waiting for a step when a
worker frees up go through the graph together as one batch (the step graphs take [B, ...] inputs and every
row is independent), which is what lets a small CPU carry many 20 ms streams: a batch of 8 one-frame steps
costs about a quarter of 8 separate calls.

Every buffer is bounded: a message is at most --max-message-bytes (the websockets library enforces it
before reading the payload), each connection queues at most `queue_size` parsed messages and the library
reads at most `queue_size` more frames, and replies are awaited until the client's socket drains. A client
that stops reading for `send_timeout` seconds is dropped; so is one that sends nothing for `idle_timeout`.

Admission: a connection holds a stream slot only once its start message has arrived. Until then it is
"pending": pending connections have their own limits (in all and per client address), and when one more
arrives the oldest pending one is closed, so connections that never send start cannot keep real clients out.
An optional shared-secret token and an allowed-origins list guard the stream endpoint (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from urllib.parse import parse_qs, urlsplit

import numpy as np
from voxtok.errors import VoxtokError
from voxtok.export.protocol import (
    CLOSE_BUSY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    HEALTH_PATH,
    MAX_FRAMES_PER_MESSAGE,
    STREAM_PATH,
    ProtocolError,
    StreamSpec,
    bytes_to_codes,
    codes_to_bytes,
    error_message,
    float_to_pcm,
    parse_control,
    parse_start,
    pcm_to_float,
)
from voxtok.export.runtime import ExportedCodec
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.http11 import Request, Response
from websockets.protocol import State

log = logging.getLogger("voxtok.serve")
# A pending connection younger than this is never closed to make room: real clients send start within milliseconds.
PENDING_GRACE_S = 1.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    # Streams, i.e. connections that have started; a call that encodes and decodes holds two.
    max_streams: int = 64
    # 0: no per-address limit. Behind a reverse proxy every client has the proxy's address, so a default limit
    # per address would cap the whole service; set one when clients connect directly.
    max_streams_per_client: int = 0
    # Connected but no start message yet. One more closes the oldest that has waited over a second (a real client
    # sends start within milliseconds); when none has, the newcomer is turned away instead. The limits are high
    # enough for a burst of real clients from one address (the load test opens 64 connections at once).
    max_pending: int = 256
    max_pending_per_client: int = 128
    max_message_bytes: int = 256 * 1024
    threads: int = 2  # inference workers; each graph call itself runs on one thread
    max_batch: int = 16  # streams per graph call; 1 runs every stream alone
    queue_size: int = 4  # parsed messages waiting per connection
    start_timeout: float = 5.0
    idle_timeout: float = 60.0
    send_timeout: float = 10.0
    close_timeout: float = 5.0
    token: str | None = None  # shared secret: "Authorization: Bearer TOKEN" or ?token=TOKEN on the stream URL
    allowed_origins: tuple[str, ...] = ()  # browsers' Origin header must be one of these; empty: any origin

    def check(self) -> None:
        for name in ("max_streams", "max_pending", "max_pending_per_client", "threads", "max_batch", "queue_size"):
            if getattr(self, name) < 1:
                raise VoxtokError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_streams_per_client < 0:
            raise VoxtokError(f"max-streams-per-client must be 0 (no limit) or more, got {self.max_streams_per_client}")
        for name in ("start_timeout", "idle_timeout", "send_timeout", "close_timeout"):
            if not getattr(self, name) > 0:
                raise VoxtokError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.token is not None and len(self.token) < 8:
            raise VoxtokError("the token must be at least 8 characters")
        if self.max_message_bytes < 1024:
            raise VoxtokError(f"max-message-bytes must be at least 1024, got {self.max_message_bytes}")
        if not 0 <= self.port <= 65535:
            raise VoxtokError(f"port must be 0..65535, got {self.port}")


# ---- batched graph calls ------------------------------------------------------------------------------

@dataclass
class _Step:
    value: np.ndarray
    states: dict[str, np.ndarray]
    future: asyncio.Future


class StepBatcher:
    """Runs one step graph ("encoder_step" or "decoder_step") for many streams, each with its own states.

    Steps wait in a FIFO; when a worker slot is free, the oldest step and every waiting step of the same input
    shape (up to max_batch) go as one call. Under light load a step runs at once, alone; under heavy load the
    queue fills while the workers are busy and the batches grow, so no waiting window is ever added.
    """

    def __init__(self, codec: ExportedCodec, graph: str, input_name: str, executor: ThreadPoolExecutor,
                 slots: asyncio.Semaphore, max_batch: int):
        self.session = codec.session(graph)
        specs = codec.manifest["states"][graph]
        self.state_names = [s["name"] for s in specs]
        self.output_names = [self.session.get_outputs()[0].name, *[s["output"] for s in specs]]
        self.input_name = input_name
        self.executor = executor
        self.slots = slots
        self.max_batch = max_batch
        self.calls = 0
        self.steps = 0
        self._pending: deque[_Step] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def step(self, value: np.ndarray, states: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """One stream's step: value [1, ...] and its states -> (output [1, ...], new states)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Step(value, states, future))
        self._wakeup.set()
        return await future

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            await self.slots.acquire()
            batch = self._take()
            if not self._pending:
                self._wakeup.clear()
            if not batch:
                self.slots.release()
                continue
            self.calls += 1
            self.steps += len(batch)
            job = loop.run_in_executor(self.executor, self._run, batch)
            job.add_done_callback(partial(self._deliver, batch))

    def _take(self) -> list[_Step]:
        """The oldest live step and the live steps behind it with the same input shape (order kept)."""
        while self._pending and self._pending[0].future.done():  # its stream has gone
            self._pending.popleft()
        if not self._pending:
            return []
        shape = self._pending[0].value.shape
        batch, rest = [], deque()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():
                continue
            if len(batch) < self.max_batch and item.value.shape == shape:
                batch.append(item)
            else:
                rest.append(item)
        self._pending = rest
        return batch

    def _deliver(self, batch: list[_Step], job: asyncio.Future) -> None:
        self.slots.release()
        if job.cancelled():
            results: list = [asyncio.CancelledError()] * len(batch)
        elif job.exception() is not None:
            results = [job.exception()] * len(batch)
        else:
            results = job.result()
        for item, result in zip(batch, results):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _run(self, batch: list[_Step]) -> list:
        """Worker thread: one call for the batch. Inputs are checked before they get here, but should a call
        still fail, each stream is retried alone so one stream's input cannot fail the others."""
        try:
            return self._call(batch)
        except Exception:
            if len(batch) == 1:
                raise
        results = []
        for item in batch:
            try:
                results.extend(self._call([item]))
            except Exception as exc:
                results.append(exc)
        return results

    def _call(self, batch: list[_Step]) -> list[tuple[np.ndarray, dict]]:
        def stacked(arrays: list[np.ndarray]) -> np.ndarray:
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)

        feed = {self.input_name: stacked([item.value for item in batch])}
        for name in self.state_names:
            feed[name] = stacked([item.states[name] for item in batch])
        outputs = self.session.run(self.output_names, feed)
        return [(outputs[0][i:i + 1], {name: out[i:i + 1] for name, out in zip(self.state_names, outputs[1:])})
                for i in range(len(batch))]


# ---- one stream's codec state ---------------------------------------------------------------------------

class _EncodeStream:
    """PCM -> codes for one connection: whole frames go to the step graph, the rest waits for the next push
    (as voxtok.export.runtime.StreamingEncoder does, with the graph call shared through a StepBatcher)."""

    def __init__(self, codec: ExportedCodec, batcher: StepBatcher, num_codebooks: int):
        self.codec = codec
        self.batcher = batcher
        self.num_codebooks = num_codebooks
        self.reset()

    def reset(self) -> None:
        self.states = self.codec.initial_states("encoder_step", 1)
        self.pending = np.zeros(0, dtype=np.float32)
        self.samples = 0
        self.frames = 0

    async def push(self, samples: np.ndarray) -> np.ndarray:
        joined = np.concatenate([self.pending, samples]) if len(self.pending) else samples
        whole = len(joined) - len(joined) % self.codec.frame_size
        self.pending = joined[whole:].copy()
        self.samples += len(samples)
        return await self._encode(joined[:whole])

    async def flush(self) -> np.ndarray:
        """Codes of the last partial frame, zero-padded as offline encoding pads it."""
        tail = self.pending
        if len(tail):
            tail = np.pad(tail, (0, self.codec.frame_size - len(tail)))
        return await self._encode(tail)

    async def _encode(self, audio: np.ndarray) -> np.ndarray:
        if len(audio) == 0:
            return np.zeros((self.num_codebooks, 0), dtype=np.int64)
        codes, self.states = await self.batcher.step(np.ascontiguousarray(audio[None, None, :]), self.states)
        self.frames += codes.shape[-1]
        return codes[0, :self.num_codebooks]


class _DecodeStream:
    """codes -> PCM for one connection, aligned with the encoder's input (voxtok.export.runtime.StreamingDecoder's
    rules: the first `decoder_skip` samples are dropped, flush returns the overlap-add tail)."""

    def __init__(self, codec: ExportedCodec, batcher: StepBatcher):
        self.codec = codec
        self.batcher = batcher
        self.tail_state = codec.manifest["decoder_tail_state"]
        self.reset()

    def reset(self) -> None:
        self.states = self.codec.initial_states("decoder_step", 1)
        self.skip = self.codec.decoder_skip
        self.samples = 0
        self.frames = 0

    async def push(self, codes: np.ndarray) -> np.ndarray:
        self.frames += codes.shape[-1]
        if codes.shape[-1] == 0:
            return np.zeros(0, dtype=np.float32)
        audio, self.states = await self.batcher.step(codes[None], self.states)
        return self._emit(audio[0, 0])

    async def flush(self) -> np.ndarray:
        tail = self.states[self.tail_state].reshape(-1)
        return self._emit(tail)

    def _emit(self, audio: np.ndarray) -> np.ndarray:
        if self.skip:
            dropped = min(self.skip, len(audio))
            audio = audio[dropped:]
            self.skip -= dropped
        self.samples += len(audio)
        return audio


# ---- connections ----------------------------------------------------------------------------------------

class _SlowClient(Exception):
    pass


class CodecServer:
    """The server: admission, the health endpoint, one task pair per connection, the shared batchers."""

    def __init__(self, codec: ExportedCodec, config: ServerConfig):
        config.check()
        self.codec = codec
        self.config = config
        self.active = 0
        self.started = time.time()
        self.totals = {"streams": 0, "refused": 0, "errors": 0, "evicted": 0, "unauthorized": 0}
        self._batchers: dict[str, StepBatcher] = {}
        # Admission bookkeeping: pending connections in arrival order, and started streams per client address.
        self._pending: dict[ServerConnection, tuple[str, float]] = {}
        self._streams_by_client: dict[str, int] = {}

    async def run(self, stop: asyncio.Event, on_ready: Callable[[int], None] | None = None) -> None:
        """Serve until `stop` is set; on_ready gets the bound port (useful with port 0)."""
        cfg = self.config
        executor = ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="voxtok-infer")
        slots = asyncio.Semaphore(cfg.threads)
        loop = asyncio.get_running_loop()
        try:
            # Session creation and first-call allocations happen here, not in the first client's latency.
            await loop.run_in_executor(executor, self._warm_up)
            self._batchers = {
                "encode": StepBatcher(self.codec, "encoder_step", "audio", executor, slots, cfg.max_batch),
                "decode": StepBatcher(self.codec, "decoder_step", "codes", executor, slots, cfg.max_batch),
            }
            for batcher in self._batchers.values():
                batcher.start()
            async with serve(self._handle, cfg.host, cfg.port, process_request=self._process_request,
                             create_connection=_Connection,
                             max_size=cfg.max_message_bytes, max_queue=cfg.queue_size, compression=None,
                             close_timeout=cfg.close_timeout, open_timeout=cfg.start_timeout,
                             logger=logging.getLogger("voxtok.serve.websockets")) as server:
                port = server.sockets[0].getsockname()[1]
                log.info("voxtok serve: %s on ws://%s:%d%s (health: http://%s:%d%s)", self.codec.model_id,
                         cfg.host, port, STREAM_PATH, cfg.host, port, HEALTH_PATH)
                if on_ready is not None:
                    on_ready(port)
                await stop.wait()
        finally:
            for batcher in self._batchers.values():
                await batcher.stop()
            executor.shutdown(wait=True, cancel_futures=True)

    def _warm_up(self) -> None:
        for graph, name, value in (
            ("encoder_step", "audio", np.zeros((1, 1, self.codec.frame_size), dtype=np.float32)),
            ("decoder_step", "codes", np.zeros((1, self.codec.num_quantizers, 1), dtype=np.int64)),
        ):
            session = self.codec.session(graph)
            session.run(None, {name: value, **self.codec.initial_states(graph, 1)})

    def health(self) -> dict:
        calls = sum(b.calls for b in self._batchers.values())
        steps = sum(b.steps for b in self._batchers.values())
        return {
            "status": "ok", "model_id": self.codec.model_id, "precision": self.codec.precision,
            "sample_rate": self.codec.sample_rate, "frame_size": self.codec.frame_size,
            "num_codebooks": self.codec.num_quantizers, "codebook_size": self.codec.codebook_size,
            "active_streams": self.active, "max_streams": self.config.max_streams,
            "pending_connections": len(self._pending), "max_pending": self.config.max_pending,
            "max_message_bytes": self.config.max_message_bytes, "threads": self.config.threads,
            "graph_calls": calls, "graph_steps": steps, "mean_batch": round(steps / calls, 2) if calls else None,
            "uptime_s": round(time.time() - self.started, 1), **self.totals,
        }

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == HEALTH_PATH:
            response = connection.respond(http.HTTPStatus.OK, json.dumps(self.health()) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        if path != STREAM_PATH:
            return connection.respond(http.HTTPStatus.NOT_FOUND,
                                      f"not found: streams go to {STREAM_PATH}, health to {HEALTH_PATH}\n")
        origin = request.headers.get("Origin")
        if self.config.allowed_origins and origin is not None and origin not in self.config.allowed_origins:
            self.totals["unauthorized"] += 1
            return connection.respond(http.HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed\n")
        if self.config.token is not None and not self._authorized(request):
            self.totals["unauthorized"] += 1
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return None

    def _authorized(self, request: Request) -> bool:
        expected = self.config.token.encode()
        header = request.headers.get("Authorization", "")
        offered = [header[7:]] if header.startswith("Bearer ") else []
        offered += parse_qs(urlsplit(request.path).query).get("token", [])
        # compare_digest: the time taken does not say how much of a guess was right.
        return any(hmac.compare_digest(value.encode(), expected) for value in offered)

    async def _admit_pending(self, ws: ServerConnection) -> bool:
        """Count a new connection as pending. Past a pending limit, close the oldest pending connection (of the same
        client address for the per-client limit) if it has waited over PENDING_GRACE_S, else turn the newcomer away;
        never a started stream. False when the newcomer was turned away."""
        client, now = _client(ws), time.monotonic()
        same_client = [c for c, (address, _) in self._pending.items() if address == client]
        candidates = []
        if len(same_client) >= self.config.max_pending_per_client:
            candidates = same_client
        elif len(self._pending) >= self.config.max_pending:
            candidates = list(self._pending)
        if candidates:
            oldest = candidates[0]
            if now - self._pending[oldest][1] < PENDING_GRACE_S:
                self.totals["refused"] += 1
                await self._fail(ws, ProtocolError("too_many_pending", "too many connections are waiting to start; "
                                                   "try again later"), CLOSE_BUSY)
                return False
            self._pending.pop(oldest)
            self.totals["evicted"] += 1
            # Closing it makes its pending recv() fail, which ends that handler the ordinary way.
            asyncio.create_task(self._fail(oldest, ProtocolError(
                "start_timeout", "closed before a start message arrived: too many connections are waiting"),
                CLOSE_BUSY))
        self._pending[ws] = (client, now)
        return True

    async def _handle(self, ws: ServerConnection) -> None:
        if not await self._admit_pending(ws):
            return
        counted = False
        client = _client(ws)
        try:
            try:
                spec = await self._receive_start(ws)
            except ProtocolError as err:
                await self._fail(ws, err)
                return
            finally:
                self._pending.pop(ws, None)
            limit = self.config.max_streams_per_client
            if self.active >= self.config.max_streams or (limit and self._streams_by_client.get(client, 0) >= limit):
                self.totals["refused"] += 1
                which = (f"the server is at its limit of {self.config.max_streams} streams"
                         if self.active >= self.config.max_streams
                         else f"this client address is at its limit of {limit} streams")
                await self._fail(ws, ProtocolError("too_many_streams", f"{which}; try again later"), CLOSE_BUSY)
                return
            self.active += 1
            self._streams_by_client[client] = self._streams_by_client.get(client, 0) + 1
            counted = True
            self.totals["streams"] += 1
            await self._stream(ws, spec)
        except ConnectionClosed:
            log.info("%s: client went away", _peer(ws))
        except _SlowClient:
            # A close frame would wait behind the unread replies, so the TCP connection is just cut.
            log.info("%s: dropped: the client did not read replies for %g s", _peer(ws), self.config.send_timeout)
            await _abort(ws)
        except Exception:
            self.totals["errors"] += 1
            log.exception("%s: internal error", _peer(ws))
            await self._fail(ws, ProtocolError("internal_error", "the server failed on this stream"), CLOSE_INTERNAL)
        finally:
            if counted:
                self.active -= 1
                self._streams_by_client[client] -= 1
                if not self._streams_by_client[client]:
                    del self._streams_by_client[client]

    async def _stream(self, ws: ServerConnection, spec: StreamSpec) -> None:
        if spec.mode == "encode":
            session: _EncodeStream | _DecodeStream = _EncodeStream(self.codec, self._batchers["encode"],
                                                                   spec.num_codebooks)
        else:
            session = _DecodeStream(self.codec, self._batchers["decode"])
        await self._send(ws, json.dumps({
            "type": "ready", "mode": spec.mode, "sample_format": spec.sample_format,
            "sample_rate": spec.sample_rate, "num_codebooks": spec.num_codebooks,
            "frame_size": self.codec.frame_size, "codebook_size": self.codec.codebook_size,
            "code_format": "uint16le", "model_id": self.codec.model_id,
            "max_message_bytes": self.config.max_message_bytes, "max_frames_per_message": MAX_FRAMES_PER_MESSAGE,
        }))
        log.info("%s: %s stream started (%s)", _peer(ws), spec.mode, json.dumps(asdict(spec)))
        queue: asyncio.Queue = asyncio.Queue(self.config.queue_size)
        reader = asyncio.create_task(self._read(ws, spec, queue))
        try:
            await self._work(ws, spec, session, queue)
        finally:
            await _cancel(reader)

    async def _receive_start(self, ws: ServerConnection) -> StreamSpec:
        try:
            async with asyncio.timeout(self.config.start_timeout):
                message = await ws.recv()
        except TimeoutError:
            raise ProtocolError("start_timeout", f"no start message within {self.config.start_timeout:g} s") from None
        if isinstance(message, bytes):
            raise ProtocolError("expected_start", f"the first message must be a JSON start message, got "
                                                  f"{len(message)} binary bytes")
        control = parse_control(message)
        if control["type"] != "start":
            raise ProtocolError("expected_start", f"the first message must be a start message, got "
                                                  f"{control['type']!r}")
        return parse_start(control, self.codec.sample_rate, self.codec.num_quantizers)

    async def _read(self, ws: ServerConnection, spec: StreamSpec, queue: asyncio.Queue) -> None:
        """Parse incoming messages into the bounded queue; a full queue stops reading, which stops the socket."""
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation that
                    # ends this task when recv() completes at the same moment, leaving the task blocked on a put.
                    async with asyncio.timeout(self.config.idle_timeout):
                        message = await ws.recv()
                except TimeoutError:
                    await queue.put(("error", ProtocolError(
                        "idle_timeout", f"no message for {self.config.idle_timeout:g} s")))
                    return
                try:
                    item = self._parse(message, spec)
                except ProtocolError as err:
                    await queue.put(("error", err))
                    return
                await queue.put(item)
                if item[0] == "end":
                    return
        except ConnectionClosed:
            await queue.put(("closed", None))
        except Exception:
            # The worker waits on this queue: a reader that died silently would leave the stream hanging.
            self.totals["errors"] += 1
            log.exception("%s: internal error while reading", _peer(ws))
            await queue.put(("error", ProtocolError("internal_error", "the server failed on this stream")))

    def _parse(self, message: str | bytes, spec: StreamSpec) -> tuple[str, np.ndarray | None]:
        if isinstance(message, bytes):
            if spec.mode == "encode":
                value = pcm_to_float(message, spec.sample_format)
                frames = -(-len(value) // self.codec.frame_size)
            else:
                value = bytes_to_codes(message, spec.num_codebooks, self.codec.codebook_size)
                frames = value.shape[-1]
            if frames > MAX_FRAMES_PER_MESSAGE:
                raise ProtocolError("too_long", f"a message holds at most {MAX_FRAMES_PER_MESSAGE} frames "
                                                f"({MAX_FRAMES_PER_MESSAGE * self.codec.frame_size} samples), "
                                                f"got {frames}")
            return "data", value
        control = parse_control(message)
        if control["type"] == "start":
            raise ProtocolError("already_started", "this stream has started; open a new connection for another")
        return control["type"], None

    async def _work(self, ws: ServerConnection, spec: StreamSpec, session, queue: asyncio.Queue) -> None:
        reply = ((lambda codes: codes_to_bytes(codes)) if spec.mode == "encode"
                 else (lambda audio: float_to_pcm(audio, spec.sample_format)))
        while True:
            kind, value = await queue.get()
            if kind == "data":
                await self._send(ws, reply(await session.push(value)))
            elif kind in ("flush", "end"):
                await self._send(ws, reply(await session.flush()))
                counts = {"samples": session.samples, "frames": session.frames}
                session.reset()
                await self._send(ws, json.dumps({"type": "flushed" if kind == "flush" else "end", **counts}))
                if kind == "end":
                    log.info("%s: %s stream ended", _peer(ws), spec.mode)
                    await self._close(ws, CLOSE_NORMAL, "")
                    return
            elif kind == "error":
                await self._fail(ws, value)
                return
            else:  # "closed": the client went away; nothing is left to answer
                log.info("%s: client went away mid-stream", _peer(ws))
                return

    async def _send(self, ws: ServerConnection, data: str | bytes) -> None:
        try:
            async with asyncio.timeout(self.config.send_timeout):
                await ws.send(data)
        except TimeoutError:
            raise _SlowClient from None

    async def _fail(self, ws: ServerConnection, err: ProtocolError, close_code: int = CLOSE_POLICY) -> None:
        """Tell the client what was wrong, then close; the client may already be gone."""
        log.info("%s: %s: %s", _peer(ws), err.code, err.message)
        try:
            await self._send(ws, error_message(err.code, err.message))
        except ConnectionClosed:
            return
        except _SlowClient:
            await _abort(ws)
            return
        await self._close(ws, close_code, err.code)

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """The closing handshake, bounded: websockets' close() waits for unread replies to drain first, which a
        client that stopped reading would make last forever."""
        try:
            async with asyncio.timeout(self.config.close_timeout):
                await ws.close(code, reason)
        except TimeoutError:
            await _abort(ws)


async def _cancel(task: asyncio.Task) -> None:
    """Cancel a task and wait for it to end. Cancelling again until it has ended, because a cancellation that
    arrives just as an awaited operation completes can be lost (and the stream would never be counted out)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class _Connection(ServerConnection):
    """The websockets connection, plus the HTTP 400 the protocol documents for bytes that are not an HTTP request
    (the library closes such a connection without a reply)."""

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol.state is State.CONNECTING and protocol.handshake_exc is None:
            protocol.receive_data(data)
            if isinstance(protocol.handshake_exc, InvalidMessage):
                body = b"not an HTTP request: streams are WebSocket connections to " + STREAM_PATH.encode() + b"\n"
                headers = Headers([("Connection", "close"), ("Content-Type", "text/plain; charset=utf-8"),
                                   ("Content-Length", str(len(body)))])
                self.transport.write(Response(400, "Bad Request", headers, body).serialize())
            data = b""  # already fed; what follows writes the library's replies and handles its events
        super().data_received(data)


def _client(ws: ServerConnection) -> str:
    address = ws.remote_address
    return str(address[0]) if address else "unknown"


async def _abort(ws: ServerConnection) -> None:
    ws.transport.abort()
    await ws.wait_closed()


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else "client"


# ---- running it ----------------------------------------------------------------------------------------

def serve_forever(codec: ExportedCodec, config: ServerConfig) -> None:
    """Run in the foreground until SIGINT/SIGTERM, then close every stream (code 1001) and return."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await CodecServer(codec, config).run(stop)

    try:
        asyncio.run(main())
    except OSError as exc:  # the port is taken, or the address is not ours
        raise VoxtokError(f"cannot listen on {config.host}:{config.port} ({exc.strerror or exc})") from None


class BackgroundServer:
    """The server on its own event loop in a thread (tests, the load test): `with BackgroundServer(...) as s:`."""

    def __init__(self, codec: ExportedCodec, config: ServerConfig):
        self.server = CodecServer(codec, config)
        self.port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="voxtok-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.server.config.host}:{self.port}{STREAM_PATH}"

    @property
    def health_url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}{HEALTH_PATH}"

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise VoxtokError(f"server did not start within {timeout:g} s")
        if self._error is not None:
            raise VoxtokError(f"server failed to start ({self._error})")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.server.run(self._stop, on_ready=self._started)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def _started(self, port: int) -> None:
        self.port = port
        self._ready.set()
