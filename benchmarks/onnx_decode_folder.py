"""Encode and decode a reference set through the ONNX runtime (offline graphs), writing the decoded audio to a
folder that `voxtok eval` scores as `folder:PATH`. This is how the eval table gets the ONNX fp32 and INT8 rows.

    python benchmarks/onnx_decode_folder.py ../shared/data/real --split dev --exclude-tag digits \
        --precision int8 --num-quantizers 12 -o /tmp/onnx_int8
    voxtok eval ../shared/data/real --split dev --exclude-tag digits --metrics pesq,stoi,mel \
        --system onnx-int8-6kbps=folder:/tmp/onnx_int8 --system voxtok@6
"""

from __future__ import annotations

import argparse
from pathlib import Path

from voxtok.audio import load_audio, save_audio
from voxtok.eval.runner import read_manifest, read_split, select
from voxtok.export.cache import cached_export
from voxtok.export.runtime import OfflineCodec


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
    # The same file selection as `voxtok eval`, so the folder matches the eval run file for file.
    entries = select(read_manifest(args.ref_dir), read_split(args.split) if args.split else None,
                     exclude_tags=args.exclude_tag)
    sr = runtime.codec.sample_rate
    for entry in entries:
        audio = load_audio(args.ref_dir / entry.path, sr)
        decoded = runtime.decode(runtime.encode(audio, args.num_quantizers), len(audio))
        target = args.out / Path(entry.path).with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        save_audio(target, decoded, sr)
    print(f"{len(entries)} files decoded through ONNX {args.precision} with {args.num_quantizers} codebooks "
          f"into {args.out}")


if __name__ == "__main__":
    main()
