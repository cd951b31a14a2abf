"""Time the ONNX step graphs alone (no Python buffering around them), one call per chunk of T frames.

    python benchmarks/onnx_step_graphs.py [EXPORT_DIR] [--frames 1,4,16] [--precision fp32]

Prints the median over 7 rounds of 50 calls, in ms per call and as × real time, for the encoder step and the
decoder step. The difference between T=1 and larger T separates what every call costs (reading all the
weights, node dispatch) from what each frame adds. Then the two graphs alternately, one call each per chunk, as
streaming runs them: when their weights do not both stay in the cache, each call costs more than alone.
EXPORT_DIR defaults to the shipped model's cached export.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from voxtok.export.runtime import ExportedCodec


def _feed(codec: ExportedCodec, graph: str, frames: int) -> dict:
    rng = np.random.default_rng(0)
    if graph == "encoder_step":
        feed = {"audio": (0.1 * rng.standard_normal((1, 1, codec.frame_size * frames))).astype(np.float32)}
    else:
        feed = {"codes": rng.integers(0, codec.codebook_size, (1, codec.num_quantizers, frames), dtype=np.int64)}
    feed.update(codec.initial_states(graph, 1))
    return feed


def time_graphs(codec: ExportedCodec, graphs: tuple[str, ...], frames: int, rounds: int = 7,
                calls: int = 50) -> float:
    """Median seconds per round of one call of each of `graphs` in turn, on `frames` frames, states at their
    initial values."""
    runs = [(codec.session(graph), _feed(codec, graph, frames)) for graph in graphs]
    for _ in range(20):
        for session, feed in runs:
            session.run(None, feed)
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            for session, feed in runs:
                session.run(None, feed)
        per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call)


def time_graph(codec: ExportedCodec, graph: str, frames: int, rounds: int = 7, calls: int = 50) -> float:
    """Median seconds per call of `graph` on `frames` frames, states at their initial values."""
    return time_graphs(codec, (graph,), frames, rounds, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", nargs="?", default=None)
    parser.add_argument("--frames", default="1,4,16")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    args = parser.parse_args()
    if args.export_dir is None:
        from voxtok.export.cache import cached_export

        args.export_dir = cached_export(None, args.precision == "int8")
    codec = ExportedCodec(args.export_dir, threads=1, precision=args.precision)
    frame_s = codec.frame_size / codec.sample_rate
    for graph in ("encoder_step", "decoder_step"):
        for frames in (int(f) for f in args.frames.split(",")):
            seconds = time_graph(codec, graph, frames)
            print(f"{args.precision} {graph} T={frames}: {1e3 * seconds:.3f} ms per call, "
                  f"{frame_s * frames / seconds:.0f}x real time")
    for frames in (int(f) for f in args.frames.split(",")):
        seconds = time_graphs(codec, ("encoder_step", "decoder_step"), frames)
        print(f"{args.precision} encoder_step + decoder_step alternately T={frames}: {1e3 * seconds:.3f} ms per "
              f"chunk, {frame_s * frames / seconds:.0f}x real time")


if __name__ == "__main__":
    main()
