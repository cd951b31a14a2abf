"""ONNX exports kept in the user cache ($VOXTOK_CACHE, else ~/.cache/voxtok): `voxtok stream` and `voxtok serve`
run a shipped model through the torch-free runtime without an explicit `voxtok export onnx` first."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("VOXTOK_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "voxtok"


def cached_export(model: str | None, int8: bool) -> Path:
    """An export of `model` in the user cache, made (or remade, when the weights changed) on demand."""
    import hashlib
    import json
    import sys

    from voxtok.errors import VoxtokError

    model_dir = shipped_model_dir(model)
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise VoxtokError(f"{model_dir}: not a voxtok model (no model.safetensors)")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    target = cache_root() / "onnx" / digest[:16]
    manifest = target / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        if data.get("weights_sha256") == digest and (not int8 or "int8" in data.get("graphs", {})):
            return target
    try:
        from voxtok.export.onnx_export import export_pretrained
    except ImportError as exc:
        raise VoxtokError(f"no ONNX export at hand and cannot make one ({exc}); install voxtok[onnx] "
                          "or pass --onnx DIR") from None
    print(f"voxtok: exporting {model or 'the default model'} to ONNX once, into {target}", file=sys.stderr)
    export_pretrained(str(model_dir), target, int8=int8)
    return target


def shipped_model_dir(model: str | None) -> Path:
    """The folder of a shipped model name or a model path, found without importing torch."""
    from voxtok.config import DEFAULT_MODEL
    from voxtok.errors import VoxtokError

    target = model or DEFAULT_MODEL
    path = Path(target)
    if path.is_dir():
        return path
    shipped = Path(str(resources.files("voxtok") / "pretrained" / target))
    if not shipped.is_dir():
        raise VoxtokError(f"unknown model {target!r} (pass a shipped model name or a model folder)")
    return shipped
