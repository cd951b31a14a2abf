"""`voxtok info FILE...`: print the header of .vtok token files and what they really cost in bits."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxtok.binary import VtokSummary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print the header of .vtok token files",
        description="Print each .vtok file's header, size, true bitrate (file size / duration) and CRC.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help=".vtok token files or folders (searched recursively)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file and line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxtok.binary import summarize_file
    from voxtok.errors import VoxtokError
    from voxtok.inputs import collect_inputs

    failed = 0
    names = [str(path) for path, _ in collect_inputs(args.files, {".vtok"})]
    for index, name in enumerate(names):
        try:
            summary = summarize_file(name)
        except VoxtokError as exc:
            print(f"voxtok: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(_record(name, summary), ensure_ascii=False))
        else:
            if index:
                print()
            print(_text(name, summary))
        if not summary.crc_ok:
            print(f"voxtok: error: {name}: CRC mismatch, the file is corrupt", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _record(name: str, s: VtokSummary) -> dict:
    h = s.header
    record = {"path": name, **h.to_dict(), "bits_per_code": h.bits, "duration_s": h.duration}
    record.update(
        file_bytes=s.file_bytes,
        header_bytes=s.header_bytes,
        payload_bytes=s.payload_bytes,
        overhead_bytes=s.overhead_bytes,
        bitrate_kbps=s.bitrate_kbps,
        code_bitrate_kbps=s.code_bitrate_kbps,
        crc_ok=s.crc_ok,
    )
    return record


def _text(name: str, s: VtokSummary) -> str:
    h = s.header
    true_rate = f"{s.bitrate_kbps:.3f} kbps" if s.bitrate_kbps is not None else "n/a (zero duration)"
    rows = [
        ("model", h.model_id),
        ("config hash", h.config_hash),
        ("sample rate", f"{h.sample_rate} Hz"),
        ("frame rate", f"{h.frame_rate:g} Hz"),
        ("codebooks", str(h.num_codebooks)),
        ("codebook size", f"{h.codebook_size} ({h.bits} bits per code)"),
        ("duration", f"{h.duration:.3f} s ({h.num_samples} samples)"),
        ("frames", str(h.num_frames)),
        ("bytes", f"{s.file_bytes} ({s.payload_bytes} codes + {s.overhead_bytes} overhead)"),
        ("true bitrate", f"{true_rate} (file size / duration; codes alone {s.code_bitrate_kbps:.3f} kbps)"),
        ("CRC", "ok" if s.crc_ok else "MISMATCH (file is corrupt)"),
    ]
    if h.extra:
        rows.append(("extra", json.dumps(h.extra, ensure_ascii=False)))
    width = max(len(key) for key, _ in rows)
    return "\n".join([name] + [f"  {key:<{width}}  {value}" for key, value in rows])
