"""Pitch, voicing and aperiodicity targets from WORLD (pyworld), aligned to the synthesis frames.

Frame j of voxtok.modules.harmonic describes the window that ends at sample (j + 1) * hop, whose centre is
(j + 1) * hop - window / 2; WORLD's frame i is centred at i * hop. With window = 4 * hop the centre of frame j is
WORLD frame j - 1 (the first frame repeats WORLD frame 0). These targets are for training and evaluation only:
the codec never runs WORLD when it encodes or decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from voxtok.errors import VoxtokError


@dataclass
class PitchFeatures:
    f0: np.ndarray  # [frames] Hz, unvoiced frames hold the nearest voiced F0 (so the phase keeps a sane rate)
    voiced: np.ndarray  # [frames] 1.0 voiced, 0.0 unvoiced
    aperiodicity: np.ndarray  # [frames, ap_bands] noise share of the power, 0..1


def world_features(samples: np.ndarray, sample_rate: int, hop: int, ap_bands: int, window: int | None = None,
                   method: str = "harvest") -> PitchFeatures:
    """F0 (harvest + stonemask, or dio + stonemask), voicing and D4C aperiodicity per synthesis frame."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyworld 0.3 imports the deprecated pkg_resources
            import pyworld
    except ImportError:
        raise VoxtokError("pitch targets need pyworld (pip install 'voxtok[train]')") from None
    window = window or 4 * hop
    x = np.asarray(samples, dtype=np.float64)
    period_ms = 1000.0 * hop / sample_rate
    track = pyworld.harvest if method == "harvest" else pyworld.dio
    f0, times = track(x, sample_rate, f0_floor=50.0, f0_ceil=600.0, frame_period=period_ms)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    ap = pyworld.d4c(x, f0, times, sample_rate) if ap_bands else None
    frames = len(x) // hop
    shift = window // (2 * hop) - 1  # WORLD frames between the start and frame 0's centre, minus one
    index = np.clip(np.arange(frames) - shift, 0, len(f0) - 1)
    f0 = f0[index]
    voiced = (f0 > 0).astype(np.float32)
    f0 = _fill_unvoiced(f0)
    if ap is not None:
        ap = ap[index] ** 2  # WORLD's aperiodicity is an amplitude ratio; the noise share of the power is its square
        aperiodicity = _to_bands(ap, ap_bands).astype(np.float32)
    else:
        aperiodicity = np.zeros((frames, 0), dtype=np.float32)
    return PitchFeatures(f0.astype(np.float32), voiced, aperiodicity)


def _fill_unvoiced(f0: np.ndarray, default: float = 120.0) -> np.ndarray:
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) == 0:
        return np.full_like(f0, default)
    return np.interp(np.arange(len(f0)), voiced, f0[voiced])


def _to_bands(ap: np.ndarray, bands: int) -> np.ndarray:
    """[frames, bins] on a linear frequency axis -> [frames, bands], band edges evenly spaced on the mel scale
    (the aperiodicity channels of HarmonicSynth spread linearly over its mel bands)."""
    bins = ap.shape[1]
    freqs = np.linspace(0, 1, bins)
    mel = np.log1p(freqs * 8000 / 700)
    edges = np.linspace(0, mel[-1], bands + 1)
    out = np.empty((ap.shape[0], bands))
    for b in range(bands):
        mask = (mel >= edges[b]) & (mel <= edges[b + 1])
        out[:, b] = ap[:, mask].mean(axis=1)
    return out


# ---- the cache ---------------------------------------------------------------------------------------------
# WORLD's harvest runs at about 0.3x real time on one core: targets are computed once per file and kept as
# small .npz files (f0 and voicing at 200 Hz, 8 aperiodicity bands: ~20 kB per 10 s).

CACHE_VERSION = 1


def cache_file(cache_dir, rel_path: str, hop: int, ap_bands: int, method: str):
    from pathlib import Path

    return Path(cache_dir) / f"v{CACHE_VERSION}-{method}-hop{hop}-ap{ap_bands}" / (rel_path + ".npz")


def cached_world_features(audio_path, rel_path: str, cache_dir, sample_rate: int, hop: int, ap_bands: int,
                          method: str = "harvest", samples: np.ndarray | None = None) -> PitchFeatures:
    """world_features for one file, read from the cache when present, else computed and stored atomically."""
    from voxtok.audio import atomic_savez, load_audio

    path = cache_file(cache_dir, rel_path, hop, ap_bands, method)
    if path.is_file():
        with np.load(path) as data:
            return PitchFeatures(data["f0"], data["voiced"], data["aperiodicity"])
    if samples is None:
        samples = load_audio(audio_path, sample_rate)
    feats = world_features(samples, sample_rate, hop, ap_bands, method=method)
    atomic_savez(path, f0=feats.f0, voiced=feats.voiced, aperiodicity=feats.aperiodicity)
    return feats


def main(argv: list[str] | None = None) -> None:
    """python -m voxtok.data.pitch ROOT --split train --cache data/cache/world: fill the cache for a split
    (`--synth`: every file of a synthetic folder, as a recipe's synth_dirs reads it)."""
    import argparse
    import time
    from pathlib import Path

    from tqdm import tqdm
    from voxtok.data import SYNTH_HELP, cache_entries

    parser = argparse.ArgumentParser(prog="python -m voxtok.data.pitch")
    parser.add_argument("root")
    parser.add_argument("--split", default="train")
    parser.add_argument("--cache", default="data/cache/world")
    parser.add_argument("--hop", type=int, default=80)
    parser.add_argument("--ap-bands", type=int, default=8)
    parser.add_argument("--method", default="harvest", choices=["harvest", "dio"])
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--synth", action="store_true", help=SYNTH_HELP)
    parser.add_argument("--shard", default="0/1", metavar="K/N",
                        help="only every N-th file from the K-th (0-based): run N processes to use N cores")
    args = parser.parse_args(argv)
    try:
        shard, shards = (int(part) for part in args.shard.split("/"))
        if not 0 <= shard < shards:
            raise ValueError
    except ValueError:
        parser.error(f"--shard wants K/N with 0 <= K < N, got {args.shard!r}")
    root = Path(args.root)
    prefix, entries = cache_entries(root, args.split, args.synth)
    entries = entries[shard::shards]
    started = time.time()
    for entry in tqdm(entries, unit="file"):
        cached_world_features(root / entry.path, prefix + entry.path, args.cache, args.sample_rate, args.hop,
                              args.ap_bands, args.method)
    print(f"{len(entries)} files in {time.time() - started:.0f} s -> {args.cache}")


if __name__ == "__main__":
    main()
