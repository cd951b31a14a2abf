"""`voxtok eval REF_DIR --system SPEC ...`: quality, bitrate and speed of codecs on a reference set."""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from voxtok.eval.catalog import BASELINES, GROUPS, SPEC_HELP

    p = sub.add_parser(
        "eval",
        help="evaluate codecs on a reference set (PESQ, STOI, SI-SDR, speaker sim, DNSMOS, WER, PER, bitrate)",
        description="Evaluate one or more systems on a reference set: a folder with manifest.jsonl "
        "(path, duration, text, speaker, tags). Needs the eval extra: pip install 'voxtok[eval]'.",
        epilog="system specs:\n" + SPEC_HELP + f"\n\n--baselines adds: {' '.join(BASELINES)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ref_dir", nargs="?", default=None,
                   help="reference set folder with manifest.jsonl (default: $VOXTOK_DATA)")
    p.add_argument("--split", default=None,
                   help="dev or train (voxtok's speaker splits of the real speech set) or a file of relative paths")
    p.add_argument("--system", "-s", action="append", default=[], metavar="SPEC", help="a system to evaluate (repeat)")
    p.add_argument("--baselines", action="store_true", help="add Opus 6/8/12, Codec2 1200/3200, Speex, identity")
    p.add_argument("--metrics", default="all", help=f"comma list from: {','.join(GROUPS)} (default: all)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N selected files")
    p.add_argument("--tag", action="append", default=[], help="keep files with this tag (repeat: all required)")
    p.add_argument("--exclude-tag", action="append", default=[], help="drop files with this tag (repeat)")
    p.add_argument("--json", dest="json_path", default=None, help="write the full per-file report here")
    p.add_argument("--markdown", dest="markdown_path", default=None, help="write the summary table here")
    p.add_argument("--title", default="voxtok eval", help="heading of the --markdown report")
    p.add_argument("--no-align", action="store_true", help="do not remove a constant codec delay before metrics")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per external command (default 300)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from voxtok.errors import VoxtokError
    from voxtok.eval.catalog import BASELINES, GROUPS
    from voxtok.eval.metrics import MetricSuite, parse_metric_list
    from voxtok.eval.report import markdown_report, markdown_table, summary_line, write_json, write_text
    from voxtok.eval.runner import Runner, read_manifest, read_split, select
    from voxtok.eval.systems import parse_system

    ref_arg = args.ref_dir or os.environ.get("VOXTOK_DATA")
    if not ref_arg:
        raise VoxtokError("no reference set: give REF_DIR (a folder with manifest.jsonl) or set VOXTOK_DATA")
    ref_dir = Path(ref_arg)
    if not ref_dir.is_dir():
        raise VoxtokError(f"{ref_dir}: not a folder")
    if args.limit is not None and args.limit < 1:
        raise VoxtokError("--limit must be at least 1")

    specs = list(args.system) + ([s for s in BASELINES if s not in args.system] if args.baselines else [])
    if not specs:
        raise VoxtokError("nothing to evaluate: add --system SPEC (see voxtok eval --help) or --baselines")
    systems = [parse_system(spec, args.timeout) for spec in specs]
    groups = parse_metric_list(args.metrics)
    suite = MetricSuite(groups)
    for system in systems:
        system.check()

    entries = select(read_manifest(ref_dir), read_split(args.split) if args.split else None,
                     args.tag, args.exclude_tag, args.limit)
    runner = Runner(ref_dir, systems, suite, do_align=not args.no_align,
                    progress=not args.no_progress and sys.stderr.isatty())
    result = {
        "command": _command_line(args, ref_dir, specs, groups, len(GROUPS)),
        "ref_dir": str(ref_dir),
        "split": args.split,
        "metrics": suite.columns,
        "systems": [s.name for s in systems],
    }
    result.update(runner.run(entries))

    if args.json_path:
        write_json(args.json_path, result)
    if args.markdown_path:
        write_text(args.markdown_path, markdown_report(result, args.title))
    print(markdown_table(result))
    print(summary_line(result))
    if all(s["ok"] == 0 for s in result["summary"]["systems"]):
        raise VoxtokError("every evaluation failed; see the messages above")
    return 0


def _command_line(args: argparse.Namespace, ref_dir, specs: list[str], groups: list[str], n_groups: int) -> str:
    """The run as one reproducible command (systems spelled out, so --baselines is explicit)."""
    parts = ["voxtok", "eval", str(ref_dir)]
    if args.split:
        parts += ["--split", args.split]
    for spec in specs:
        parts += ["--system", spec]
    if len(groups) != n_groups:
        parts += ["--metrics", ",".join(groups)]
    for tag in args.tag:
        parts += ["--tag", tag]
    for tag in args.exclude_tag:
        parts += ["--exclude-tag", tag]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    if args.no_align:
        parts.append("--no-align")
    return shlex.join(parts)
