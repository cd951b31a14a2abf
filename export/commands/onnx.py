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

    from voxtok.errors import VoxtokError

    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise VoxtokError(f"ONNX export needs {module}: pip install 'voxtok[onnx]'") from None
    from voxtok.export.onnx_export import export_pretrained, verify_export

    out = Path(args.output)
    if args.model:
        from voxtok.compress import load_codec

        model = load_codec(args.model)
        if model.continuous:  # the 12.5 Hz tokenizers: continuous tokens and a flow decoder
            return _export_lowrate(model, args, out)
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


def _export_lowrate(model, args: argparse.Namespace, out) -> int:
    """The 12.5 Hz tokenizer: streaming encoder, conditioning, one flow step and the synthesiser
    (export/lowrate_onnx.py), checked against PyTorch unless --no-verify."""
    import json
    import sys

    from voxtok.errors import VoxtokError
    from voxtok.export.lowrate_onnx import export_lowrate_onnx, verify_lowrate_export
    from voxtok.export.onnx_export import model_weights_sha256, probe_signal, resolve_model_dir

    if args.int8:
        raise VoxtokError(f"{model.model_id}: INT8 graphs are not offered for the 12.5 Hz tokenizer; export fp32")
    manifest = export_lowrate_onnx(model, out, model_weights_sha256(resolve_model_dir(args.model)))
    summary = {"output": str(out), "model_id": manifest["model_id"], "graphs": manifest["graphs"],
               "algorithmic_latency_ms": manifest["latency"]["algorithmic_ms"]}
    if not args.no_verify:
        summary["verify"] = verify_lowrate_export(model, out, probe_signal(model.config.sample_rate))
    print(json.dumps(summary, indent=2) if args.json else
          f"exported {manifest['model_id']} -> {out}: " + ", ".join(manifest["graphs"])
          + (f"; verify {summary['verify']}" if "verify" in summary else ""))
    ok = "verify" not in summary or (summary["verify"]["latent_max_abs_error"] < 1e-3
                                     and summary["verify"]["stream_snr_db"] > 30)
    if not ok:
        print("voxtok: error: the graphs do not match PyTorch (see above)", file=sys.stderr)
        return 1
    return 0
