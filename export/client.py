"""Python client for `voxtok serve`: stream PCM in and get codes back, or codes in and PCM back.

    python -m voxtok.export.client health [--url URL]
    python -m voxtok.export.client encode speech.flac -o codes.npy [--chunk-ms 20] [--int16] [--codebooks Q]
    python -m voxtok.export.client decode codes.npy -o speech.wav [--frames 1]

In code: `encode(url, samples)` / `decode(url, codes)` run a whole signal through the server, and
`StreamClient` drives one stream message by message (see docs/protocol.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from voxtok.errors import VoxtokError
from voxtok.export.protocol import (
    HEALTH_PATH,
    STREAM_PATH,
    bytes_to_codes,
    codes_to_bytes,
    float_to_pcm,
    pcm_to_float,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

DEFAULT_URL = f"ws://127.0.0.1:8765{STREAM_PATH}"
# Replies are bounded by the protocol (1000 frames of float32 PCM is 1.28 MB); this is a safety cap.
MAX_REPLY_BYTES = 8 * 1024 * 1024


class ServerError(VoxtokError):
    """The server answered with an error message: `code` is its machine-readable error code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"server error {code}: {message}")
        self.code = code


class StreamClient:
    """One stream on one connection. Every send() gets exactly one reply from receive(), in order, so sends
    may run ahead of receives (from another task) as long as someone keeps reading."""

    def __init__(self, ws: ClientConnection, ready: dict):
        self.ws = ws
        self.ready = ready
        self.mode: str = ready["mode"]
        self.sample_format: str = ready["sample_format"]
        self.num_codebooks: int = ready["num_codebooks"]

    @classmethod
    async def open(cls, url: str, mode: str, sample_rate: int, sample_format: str = "float32",
                   num_codebooks: int | None = None, timeout: float = 10.0) -> StreamClient:
        start = {"type": "start", "mode": mode, "sample_format": sample_format, "sample_rate": sample_rate}
        if num_codebooks is not None:
            start["num_codebooks"] = num_codebooks
        try:
            ws = await connect(url, max_size=MAX_REPLY_BYTES, compression=None, open_timeout=timeout)
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            raise VoxtokError(f"cannot connect to {url} ({exc})") from None
        try:
            with contextlib.suppress(ConnectionClosed):
                # A server at its stream limit may refuse before start arrives; its reason is still to be read.
                await ws.send(json.dumps(start))
            reply = await cls._next(ws)
        except BaseException:
            await ws.close()
            raise
        if not isinstance(reply, dict) or reply.get("type") != "ready":
            await ws.close()
            raise VoxtokError(f"{url}: expected a ready message, got {reply!r:.80}")
        return cls(ws, reply)

    async def send(self, value: np.ndarray) -> None:
        """Audio samples (float, [-1, 1]) for an encode stream, codes [q, frames] for a decode stream."""
        data = float_to_pcm(value, self.sample_format) if self.mode == "encode" else codes_to_bytes(value)
        if len(data) > self.ready["max_message_bytes"]:
            raise VoxtokError(f"a {len(data)}-byte message is over the server's limit of "
                              f"{self.ready['max_message_bytes']} bytes; send smaller chunks")
        await self.ws.send(data)

    async def receive(self) -> np.ndarray | dict:
        """The next reply: codes [q, frames] or float32 audio for binary replies, a dict for JSON ones."""
        reply = await self._next(self.ws)
        if isinstance(reply, dict):
            return reply
        if self.mode == "encode":
            return bytes_to_codes(reply, self.num_codebooks, self.ready["codebook_size"])
        return pcm_to_float(reply, self.sample_format)

    async def finish(self, kind: str = "end") -> tuple[np.ndarray, dict]:
        """Send "flush" or "end"; return the last frames' codes / audio tail and the server's counts.
        Call it once every earlier reply has been received."""
        await self.ws.send(json.dumps({"type": kind}))
        tail = await self.receive()
        summary = await self.receive()
        if isinstance(tail, dict) or not isinstance(summary, dict):
            raise VoxtokError(f"unexpected replies to {kind!r}: {type(tail).__name__}, {type(summary).__name__}")
        return tail, summary

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @staticmethod
    async def _next(ws: ClientConnection) -> bytes | dict:
        try:
            message = await ws.recv()
        except ConnectionClosed as exc:
            raise VoxtokError(f"the server closed the stream ({_close_reason(exc)})") from None
        if isinstance(message, bytes):
            return message
        data = json.loads(message)
        if data.get("type") == "error":
            raise ServerError(data.get("code", "unknown"), data.get("message", ""))
        return data


def _close_reason(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "connection lost"
    return f"code {frame.code}" + (f": {frame.reason}" if frame.reason else "")


async def run_pipelined(client: StreamClient, payloads: Sequence[np.ndarray], window: int = 8) -> list:
    """Send every payload and return the replies in order, with at most `window` unanswered messages, so
    neither side ever buffers more than that."""
    credit = asyncio.Semaphore(window)
    replies: list = []

    async def sender() -> None:
        for payload in payloads:
            await credit.acquire()
            await client.send(payload)

    async def receiver() -> None:
        for _ in payloads:
            replies.append(await client.receive())
            credit.release()

    tasks = [asyncio.create_task(sender()), asyncio.create_task(receiver())]
    try:
        # Whichever side fails first (a refused send, a server error) ends both.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
    return replies


async def encode_async(url: str, samples: np.ndarray, sample_rate: int, chunk_samples: int = 320,
                       sample_format: str = "float32", num_codebooks: int | None = None) -> np.ndarray:
    """Stream `samples` through an encode stream in chunks; -> codes [q, ceil(n / frame_size)]."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    chunks = [samples[i:i + chunk_samples] for i in range(0, len(samples), chunk_samples)]
    async with await StreamClient.open(url, "encode", sample_rate, sample_format, num_codebooks) as client:
        replies = await run_pipelined(client, chunks)
        tail, _ = await client.finish("end")
        return np.concatenate([*replies, tail], axis=-1)


async def decode_async(url: str, codes: np.ndarray, sample_rate: int, frames_per_message: int = 1,
                       sample_format: str = "float32", num_samples: int | None = None) -> np.ndarray:
    """Stream codes [q, T] through a decode stream; -> float32 audio aligned with the encoder's input."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise VoxtokError(f"codes must be [codebooks, frames], got shape {codes.shape}")
    pieces = [codes[:, i:i + frames_per_message] for i in range(0, codes.shape[1], frames_per_message)]
    async with await StreamClient.open(url, "decode", sample_rate, sample_format, codes.shape[0]) as client:
        replies = await run_pipelined(client, pieces)
        tail, _ = await client.finish("end")
    audio = np.concatenate([*replies, tail])
    return audio if num_samples is None else audio[:num_samples]


def encode(url: str, samples: np.ndarray, sample_rate: int, **kwargs) -> np.ndarray:
    return asyncio.run(encode_async(url, samples, sample_rate, **kwargs))


def decode(url: str, codes: np.ndarray, sample_rate: int, **kwargs) -> np.ndarray:
    return asyncio.run(decode_async(url, codes, sample_rate, **kwargs))


def health_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, HEALTH_PATH, "", ""))


def health(url: str, timeout: float = 5.0) -> dict:
    """GET /health of the server behind a stream URL."""
    target = health_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise VoxtokError(f"{target}: no healthy server ({exc})") from None


# ---- command line -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voxtok.export.client", description="Client for `voxtok serve`.")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"stream URL (default {DEFAULT_URL})")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("health", help="print the server's health JSON")
    enc = sub.add_parser("encode", help="audio file -> int16 .npy codes [n_q, T]")
    enc.add_argument("input")
    enc.add_argument("-o", "--output", required=True)
    enc.add_argument("--chunk-ms", type=float, default=20.0)
    enc.add_argument("--int16", action="store_true", help="send int16 PCM instead of float32")
    enc.add_argument("--codebooks", type=int, default=None)
    dec = sub.add_parser("decode", help=".npy codes -> .wav/.flac")
    dec.add_argument("input")
    dec.add_argument("-o", "--output", required=True)
    dec.add_argument("--frames", type=int, default=1, help="frames per message (default 1)")
    args = parser.parse_args(argv)
    try:
        info = health(args.url)
        if args.action == "health":
            print(json.dumps(info, indent=2))
        elif args.action == "encode":
            from voxtok.audio import load_audio
            from voxtok.binary import save_codes_npy

            samples = load_audio(args.input, info["sample_rate"])
            chunk = max(1, int(round(args.chunk_ms * info["sample_rate"] / 1000)))
            codes = encode(args.url, samples, info["sample_rate"], chunk_samples=chunk,
                           sample_format="int16" if args.int16 else "float32", num_codebooks=args.codebooks)
            save_codes_npy(args.output, codes)
            print(f"{args.input}: {codes.shape[1]} frames x {codes.shape[0]} codebooks -> {args.output}")
        else:
            from voxtok.audio import save_audio
            from voxtok.binary import load_codes_npy

            codes = load_codes_npy(args.input)
            if args.frames < 1:
                raise VoxtokError(f"--frames must be at least 1, got {args.frames}")
            audio = decode(args.url, codes, info["sample_rate"], frames_per_message=args.frames)
            save_audio(args.output, audio, info["sample_rate"])
            print(f"{args.input}: {len(audio) / info['sample_rate']:.2f} s -> {args.output}")
    except VoxtokError as exc:
        print(f"voxtok client: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
