"""`voxtok export onnx [--model NAME] -o DIR [--int8]`: ONNX graphs + manifest.json for the torch-free runtime."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the codec for other runtimes (ONNX)")
    formats = p.add_subparsers(dest="export_format", required=True, metavar="FORMAT")
    o = formats.add_parser("onnx", help="streaming and offline ONNX graphs with the quantizer inside")
    o.add_argument("-o", "--output", required=True, help="output folder (graphs + manifest.json)")
    o.add_argument("--model", default=None, help="shipped model name or model folder (default voxtok-16k)")
    o.add_argument("--int8", action="store_true", help="also write INT8 dynamically quantized graphs")
    o.add_argument("--no-verify", action="store_true", help="skip the PyTorch-vs-ONNX parity check")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    o.set_defaults(func=run_onnx)


def run_onnx(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from codec.errors import VoxtokError

    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise VoxtokError(f"ONNX export needs {module}: pip install 'voxtok[onnx]'") from None
    from export.onnx_export import export_pretrained, verify_export

    out = Path(args.output)
    manifest = export_pretrained(args.model, out, int8=args.int8)
    summary = {
        "output": str(out), "model_id": manifest["model_id"], "config_hash": manifest["config_hash"],
        "opset": manifest["opset"], "graphs": manifest["graphs"],
        "bytes": {name: (out / name).stat().st_size for name in manifest["files_sha256"]},
        "algorithmic_latency_ms": manifest["latency"]["algorithmic_ms"],
    }
    if not args.no_verify:
        summary["verify"] = verify_export(args.model, out)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"exported {summary['model_id']} (config {summary['config_hash']}, opset {summary['opset']}) -> {out}")
        for name, size in summary["bytes"].items():
            print(f"  {name:<24} {size / 1e6:7.1f} MB")
        print(f"  algorithmic latency {summary['algorithmic_latency_ms']:g} ms")
        for precision, figures in summary.get("verify", {}).items():
            print(f"  {precision}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    failed = [p for p, f in summary.get("verify", {}).items() if p == "fp32" and not f["ok"]]
    if failed:
        print("voxtok: error: the fp32 graphs do not match PyTorch (see above)", file=sys.stderr)
        return 1
    return 0
