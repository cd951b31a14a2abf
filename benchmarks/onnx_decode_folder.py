"""Encode and decode a reference set through the ONNX runtime (offline graphs), writing the decoded audio to a
folder that `voxtok eval` scores as `folder:PATH`. This is how the eval table gets the ONNX fp32 and INT8 rows.

    python benchmarks/onnx_decode_folder.py ../shared/data/real --split dev --exclude-tag digits \
        --precision int8 --num-quantizers 12 -o /tmp/onnx_int8
    voxtok eval ../shared/data/real --split dev --exclude-tag digits --metrics pesq,stoi,mel \
        --system onnx-int8@6=folder:/tmp/onnx_int8 --system voxtok@6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codec.audio import load_audio, save_audio
from codec.commands.stream import cached_export
from export.runtime import OfflineCodec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref_dir", type=Path)
    parser.add_argument("--split", default=None, help="a file of relative paths, or dev/train (voxtok's splits)")
    parser.add_argument("--exclude-tag", action="append", default=[])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--num-quantizers", type=int, default=12)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()

    runtime = OfflineCodec(cached_export(None, args.precision == "int8"), precision=args.precision)
    keep = None
    if args.split:
        split = Path(__file__).resolve().parent.parent / "codec" / "splits" / f"real_{args.split}.txt"
        split = split if args.split in ("dev", "train") else Path(args.split)
        keep = {line.strip() for line in split.read_text().splitlines() if line.strip()}
    done = 0
    for line in (args.ref_dir / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if keep is not None and entry["path"] not in keep:
            continue
        if set(entry.get("tags", [])) & set(args.exclude_tag):
            continue
        sr = runtime.codec.sample_rate
        audio = load_audio(args.ref_dir / entry["path"], sr)
        codes = runtime.encode(audio, args.num_quantizers)
        decoded = runtime.decode(codes, len(audio))
        target = args.out / Path(entry["path"]).with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        save_audio(target, decoded, sr)
        done += 1
    print(f"{done} files decoded through ONNX {args.precision} with {args.num_quantizers} codebooks into {args.out}")


if __name__ == "__main__":
    main()
