"""The phone recogniser's PER per kind of speech: the real dev split's transcribed files grouped by manifest tags
(spoken digits, children, non-native adults, native read), and the held-out synthetic sentences by engine. The
per-group rows of codec/pretrained/voxtok-phone-ctc/MODEL_CARD.md.

    python recipes/experiments/teacher_per_by_tag.py
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path


def group_of(tags: list[str]) -> str:
    if "digits" in tags:
        return "digits"
    if "child" in tags:
        return "child"
    return "non-native adult" if "non-native" in tags else "native read"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="codec/pretrained/voxtok-phone-ctc")
    parser.add_argument("--real", default="../shared/data/real")
    parser.add_argument("--heldout", default="data/synth_heldout")
    args = parser.parse_args()

    from voxtok.eval.runner import read_manifest
    from voxtok.phone_teacher import PhoneRecogniser, load_utterances, phone_error_rate

    recogniser = PhoneRecogniser.from_pretrained(args.model)
    tags = {e.path: e.tags for e in read_manifest(Path(args.real))}
    groups = defaultdict(list)
    for u in load_utterances(args.real, "dev", recogniser.index, max_seconds=30.0, progress=False)[0]:
        groups["real dev: " + group_of(tags[u.name.split("/", 1)[1]])].append(u)
    for u in load_utterances(args.heldout, None, recogniser.index, max_seconds=30.0, progress=False)[0]:
        groups["held-out synthetic: " + u.name.split("/")[1]].append(u)  # the engine's folder
    for name, utterances in groups.items():
        print(f"{name}: {len(utterances)} files, PER {phone_error_rate(recogniser.model, utterances):.1%}")


if __name__ == "__main__":
    main()
