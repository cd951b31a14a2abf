"""How well voxtok's phone recogniser places words, against pocketsphinx's forced alignment (the cached one the
distillation terms use), on real speech whose text is known.

For each file both aligned, the text's espeak-ng phonemes are force-aligned by the recogniser (CTC Viterbi,
20 ms) and grouped back into words; where espeak-ng and pocketsphinx agree on the word count, each word's start
and end are compared. Prints the median and mean absolute boundary difference, the share within 20 / 50 ms,
and the median signed difference of starts and of ends (ours minus pocketsphinx's).

    python recipes/experiments/teacher_alignment.py ../shared/data/real --split dev
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--model", default="codec/pretrained/voxtok-phone-ctc")
    parser.add_argument("--cache", default="data/cache/align")
    parser.add_argument("--reach", type=int, default=2, help="PhoneRecogniser.align reach_frames")
    args = parser.parse_args()

    from voxtok.audio import load_audio
    from voxtok.data.align import FRAME_MS, cached_alignment
    from voxtok.errors import VoxtokError
    from voxtok.eval.runner import read_manifest, read_split, select
    from voxtok.lm.phonemes import WORD, phonemize
    from voxtok.phone_teacher import _DROPPED, PhoneRecogniser

    recogniser = PhoneRecogniser.from_pretrained(args.model)
    root = Path(args.root)
    starts, ends, used, skipped = [], [], 0, 0
    for entry in select(read_manifest(root), read_split(args.split)):
        if not entry.text:
            continue
        samples = load_audio(root / entry.path, 16000)
        try:
            reference = cached_alignment(root / entry.path, entry.path, entry.text, args.cache, samples)
            symbols = phonemize(entry.text)
        except VoxtokError:
            skipped += 1
            continue
        words, current = [], []  # espeak-ng phonemes per word (stress and boundaries dropped)
        for s in symbols + [WORD]:
            if s in (WORD, "|"):
                if current:
                    words.append(current)
                current = []
            elif s not in _DROPPED:
                current.append(s)
        if len(words) != len(reference.words) or any(p not in recogniser.index for w in words for p in w):
            skipped += 1
            continue
        try:
            spans = recogniser.align(samples, [p for w in words for p in w], reach_frames=args.reach)
        except VoxtokError:
            skipped += 1
            continue
        k = 0
        for (_, first, end), word in zip(reference.words, words):
            ours = spans[k:k + len(word)]
            k += len(word)
            starts.append(ours[0][1] - first * FRAME_MS / 1000)
            ends.append(ours[-1][2] - end * FRAME_MS / 1000)
        used += 1
    both = np.abs(np.array(starts + ends)) * 1000
    print(json.dumps({"files": used, "skipped": skipped, "boundaries": int(both.size),
                      "start_bias_ms": round(float(np.median(starts)) * 1000, 1),
                      "end_bias_ms": round(float(np.median(ends)) * 1000, 1),
                      "median_ms": round(float(np.median(both)), 1), "mean_ms": round(float(both.mean()), 1),
                      "within_20ms": round(float((both <= 20).mean()), 3),
                      "within_50ms": round(float((both <= 50).mean()), 3)}, indent=1))


if __name__ == "__main__":
    main()
