"""Codec v2's 50 Hz latents, computed once per corpus: what the 12.5 Hz stage (voxtok.stacked) trains on.

    python -m voxtok.data.latent_cache ../shared/data/real --split train      # the real train split
    python -m voxtok.data.latent_cache data/synth_train --synth                # every file of a synthetic folder

Why: the 12.5 Hz stage maps v2's latents to tokens and back, so its training needs v2's encoder output, never audio:
with the latents cached, a training step is a few small convolutions (no feature extraction, no synthesis), and
thousands of steps cost minutes on a CPU.

One file per (model, source): CACHE/<tokens hash>/<key>.npz with `latents` [frames, dim] float32 (the encoder's
output before the quantizer, all files end to end), `offsets` and `frames` [files] int64, and `paths` (the cache
keys, as voxtok.data.cache_entries names them). The tokens hash of the model is in the folder name, so a cache of
other encoder weights is never read. Written atomically: a cache file is whole or absent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from voxtok.errors import VoxtokError

DEFAULT_CACHE = "data/cache/v2_latents"
# Files longer than this are encoded in pieces through the streaming path (same latents, bounded memory).
PIECE_SECONDS = 30.0


@dataclass
class LatentCorpus:
    """The cached latents of one source: per-file views into one array."""

    latents: np.ndarray  # [total frames, dim] float32
    offsets: np.ndarray  # [files] int64
    frames: np.ndarray  # [files] int64
    paths: list[str]

    def file(self, index: int) -> np.ndarray:
        """[frames, dim] of file `index`."""
        start = int(self.offsets[index])
        return self.latents[start:start + int(self.frames[index])]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def total_frames(self) -> int:
        return int(self.frames.sum())


def cache_path(cache_dir: str | Path, tokens_hash: str, root: str | Path, split: str, synth: bool) -> Path:
    """Where the latents of (model, source) live: the key names the folder and split, plus a short hash of the
    resolved root, so two folders of the same name cannot share a file."""
    root = Path(root)
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    key = f"{root.name}-{'all' if synth else Path(split).stem}-{where}"
    return Path(cache_dir) / tokens_hash / f"{key}.npz"


@torch.inference_mode()
def encode_file(model, samples: np.ndarray) -> np.ndarray:
    """Mono samples at the model's rate -> the encoder's latents [frames, dim] float32 (ceil(N / hop) frames)."""
    sr, hop = model.config.sample_rate, model.config.hop_length
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, None]
    if wav.shape[-1] <= PIECE_SECONDS * sr:
        h = model.encoder(model._pad_to_frames(wav.to(model.encoder_dtype)))
        return h[0].T.float().numpy()
    piece = int(PIECE_SECONDS * sr) // hop * hop
    parts = []
    with model.streaming(1):
        for start in range(0, wav.shape[-1], piece):
            h = model.encoder_chunk(wav[..., start:start + piece])
            if h is not None:
                parts.append(h)
        padding = model.final_padding()
        if padding is not None:
            parts.append(model.encoder_chunk(padding))
    return torch.cat(parts, dim=-1)[0].T.float().numpy()


def build_latent_cache(model, root: str | Path, split: str = "train", synth: bool = False,
                       cache_dir: str | Path = DEFAULT_CACHE, progress: bool = True) -> Path:
    """Encode every file of a source (a split of a real corpus, or with `synth` a whole synthetic folder) and write
    its cache file; returns its path. An existing cache file is kept (it is whole, and keyed by the weights)."""
    from tqdm import tqdm
    from voxtok.audio import atomic_savez, load_audio
    from voxtok.data import cache_entries

    out = cache_path(cache_dir, model.tokens_hash(), root, split, synth)
    if out.is_file():
        return out
    prefix, entries = cache_entries(Path(root), split, synth)
    sr = model.config.sample_rate
    parts, frames, paths = [], [], []
    for entry in tqdm(entries, desc=f"v2 latents of {root}", disable=not progress, unit="file"):
        try:
            samples = load_audio(Path(root) / entry.path, sr)
        except VoxtokError as exc:
            tqdm.write(f"skipped: {exc}")
            continue
        h = encode_file(model, samples)
        parts.append(h)
        frames.append(len(h))
        paths.append(prefix + entry.path)
    if not parts:
        raise VoxtokError(f"{root}: no file could be encoded; nothing to cache")
    frames_arr = np.asarray(frames, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(frames_arr)[:-1]]).astype(np.int64)
    atomic_savez(out, latents=np.concatenate(parts).astype(np.float32), offsets=offsets, frames=frames_arr,
                 paths=np.asarray(paths))
    return out


def load_latent_cache(path: str | Path) -> LatentCorpus:
    path = Path(path)
    if not path.is_file():
        raise VoxtokError(f"{path}: no such latent cache (python -m voxtok.data.latent_cache fills it)")
    with np.load(path) as data:
        return LatentCorpus(data["latents"], data["offsets"], data["frames"], [str(p) for p in data["paths"]])


def latent_sources(model, specs: list[str], cache_dir: str | Path = DEFAULT_CACHE,
                   progress: bool = True) -> list[tuple[str, LatentCorpus]]:
    """Recipe sources "ROOT:SPLIT" (a split of a real corpus) or "ROOT" (every file of a synthetic folder), each
    read from its cache, filled first where it is missing."""
    out = []
    for spec in specs:
        root, _, split = spec.partition(":")
        out.append((spec, load_latent_cache(build_latent_cache(model, root, split or "train", not split,
                                                               cache_dir, progress))))
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse
    import time

    from voxtok.compress import load_codec
    from voxtok.data import SYNTH_HELP

    parser = argparse.ArgumentParser(prog="python -m voxtok.data.latent_cache",
                                     description="cache a codec's encoder latents for a corpus (voxtok.stacked)")
    parser.add_argument("root")
    parser.add_argument("--split", default="train")
    parser.add_argument("--synth", action="store_true", help=SYNTH_HELP)
    parser.add_argument("--model", default="voxtok-16k-v2")
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_codec(args.model)
    model.use_fast_encoder()  # one pass per file: float64's chunking exactness is not needed, and it is 2-3x slower
    started = time.time()
    path = build_latent_cache(model, args.root, args.split, args.synth, args.cache)
    corpus = load_latent_cache(path)
    print(f"{path}: {len(corpus)} files, {corpus.total_frames / model.config.frame_rate / 3600:.2f} h, "
          f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
