"""Which benchmark system a name means: voxtok's own backends (voxtok.bench.backends) and the peers
(voxtok.bench.peers), both importing the Backend base and neither importing the other or this registry."""

from __future__ import annotations

from voxtok.bench.backends import Backend, OnnxCodec, TorchCodec
from voxtok.bench.peers import PEERS, build_peer
from voxtok.errors import VoxtokError


def make_backend(kind: str, options: dict, threads: int) -> Backend:
    """`voxtok` (PyTorch), `onnx` (an exported folder) or a peer name from voxtok.bench.peers."""
    if kind == "voxtok":
        return TorchCodec(options.get("model"), options.get("bitrate"), threads, options.get("decoding"))
    if kind == "onnx":
        return OnnxCodec(options["folder"], options.get("precision", "fp32"), options.get("bitrate"), threads)
    if kind in PEERS:
        return build_peer(kind, threads)
    raise VoxtokError(f"unknown benchmark system {kind!r}")
