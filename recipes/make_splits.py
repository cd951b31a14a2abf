"""Split ../shared/data/real into train and dev by whole speakers, deterministically.

Writes codec/splits/real_train.txt and codec/splits/real_dev.txt (paths relative to the data root).
Speakers joined with '+' (meetings) are merged with every speaker they contain, so no voice is on both
sides. Each corpus folder contributes about 10% of its duration to dev, chosen by a hash of the speaker
group, so rerunning gives the same split.
"""

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path

DEV_FRACTION = 0.10
# LibriSpeech test-clean speaker 1089 has transcripts; keeping it in dev gives WER/PER on clean read speech.
FORCED_DEV_GROUPS = {"librispeech:1089"}


def speaker_groups(rows: list[dict]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in rows:
        prefix, _, names = row["speaker"].partition(":")
        members = [f"{prefix}:{n}" for n in names.split("+")]
        for m in members[1:]:
            parent[find(m)] = find(members[0])
    return {row["path"]: find(row["speaker"].split("+")[0]) for row in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_root", nargs="?", default="../shared/data/real")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "codec" / "splits"))
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(Path(args.data_root) / "manifest.jsonl")]
    group_of = speaker_groups(rows)
    by_folder: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        by_folder[row["path"].split("/")[0]][group_of[row["path"]]] += row["duration"]
    dev_groups: set[str] = {g for g in set(group_of.values()) if g in FORCED_DEV_GROUPS}
    for _folder, groups in sorted(by_folder.items()):
        total = sum(groups.values())
        if len(groups) < 2:
            continue  # a one-speaker folder cannot be split by speaker; it stays in train
        taken = sum(d for g, d in groups.items() if g in dev_groups)
        for g in sorted(groups, key=lambda g: hashlib.sha1(g.encode()).hexdigest()):
            if taken >= DEV_FRACTION * total:
                break
            if taken + groups[g] > 2.5 * DEV_FRACTION * total:
                continue
            dev_groups.add(g)
            taken += groups[g]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = sorted(r["path"] for r in rows if group_of[r["path"]] in dev_groups)
    train = sorted(r["path"] for r in rows if group_of[r["path"]] not in dev_groups)
    (out / "real_dev.txt").write_text("\n".join(dev) + "\n")
    (out / "real_train.txt").write_text("\n".join(train) + "\n")
    dur = {r["path"]: r["duration"] for r in rows}
    print(f"dev: {len(dev)} files {sum(dur[p] for p in dev) / 60:.1f} min; "
          f"train: {len(train)} files {sum(dur[p] for p in train) / 60:.1f} min")


if __name__ == "__main__":
    main()
