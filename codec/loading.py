"""Loading codec and tokenizer folders: the one registry from a config's type to its model class, and the checks
every folder goes through. Models do not import this module (a stacked tokenizer's base is loaded through the
`load` its finish_loading hook is given), so the registry can import every model class."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from voxtok.config import (
    DEFAULT_MODEL,
    CodecConfig,
    HarmonicCodecConfig,
    LowRateConfig,
    StackedConfig,
    config_from_dict,
)
from voxtok.errors import VoxtokError
from voxtok.harmonic_codec import HarmonicCodec
from voxtok.lowrate import LowRateCodec
from voxtok.model import TRAINING_ONLY_BUFFERS, VoxtokCodec, codebooks_fingerprint
from voxtok.stacked import StackedCodec

PRETRAINED_ROOT = Path(__file__).resolve().parent / "pretrained"
# A model folder from elsewhere is refused above this size before anything is allocated (the shipped model has
# 7.3 M parameters; 200 M float32 parameters are 800 MB).
MAX_PARAMETERS = 200_000_000
# Most specific first: a StackedConfig and a LowRateConfig are HarmonicCodecConfigs too.
MODEL_CLASSES: tuple[tuple[type[CodecConfig], type[VoxtokCodec]], ...] = (
    (StackedConfig, StackedCodec),
    (LowRateConfig, LowRateCodec),
    (HarmonicCodecConfig, HarmonicCodec),
    (CodecConfig, VoxtokCodec),
)


def model_class_for(config: CodecConfig) -> type[VoxtokCodec]:
    """The model class a config describes: the one place this is decided."""
    return next(model for config_type, model in MODEL_CLASSES if isinstance(config, config_type))


def available_models() -> list[str]:
    if not PRETRAINED_ROOT.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_ROOT.iterdir() if (p / "config.json").is_file())


def load_codec(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> VoxtokCodec:
    """A shipped model by name (default: DEFAULT_MODEL) or a folder with config.json + model.safetensors."""
    target = name_or_path or DEFAULT_MODEL
    path = Path(target)
    if not path.is_dir():
        path = PRETRAINED_ROOT / str(target)
        if not path.is_dir():
            known = ", ".join(available_models()) or "none installed"
            raise VoxtokError(f"unknown model {target!r} (shipped models: {known}; or pass a model folder)")
    return load_model_folder(path, device=device)


def load_model_folder(directory: str | Path, device: str | torch.device = "cpu") -> VoxtokCodec:
    """Load a model folder. Everything in it is checked before use, each failure one VoxtokError: the config's
    types and bounds, the model's size (counted on the meta device, allocating nothing), each tensor's name,
    dtype and shape (from the safetensors header), and that every weight is finite."""
    directory = Path(directory)
    weights, config_path = directory / "model.safetensors", directory / "config.json"
    if not weights.is_file() or not config_path.is_file():
        raise VoxtokError(f"{directory}: not a voxtok model (needs config.json and model.safetensors)")
    try:
        config = config_from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        cls = model_class_for(config)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise VoxtokError(f"{config_path}: not a valid codec config ({_first_line(exc)})") from None
    with torch.device("meta"):
        skeleton = cls(config)
    size = sum(p.numel() for p in skeleton.parameters())
    if size > MAX_PARAMETERS:
        raise VoxtokError(f"{config_path}: describes a model of {size:,} parameters, "
                          f"more than voxtok loads ({MAX_PARAMETERS:,})")
    expected = {k: v for k, v in skeleton.state_dict().items()}
    state = _load_checked(weights, expected, device)
    model = cls(config)
    model.load_state_dict(state, strict=False)
    model.to(device)
    model.finish_loading(directory, load_codec)
    model.eval()
    model.use_exact_encoder()
    if not model.quantizer.initialized():
        raise VoxtokError(f"{directory}: codebooks were never initialised (an untrained checkpoint)")
    if config.codebooks_hash and codebooks_fingerprint(state) != config.codebooks_hash:
        raise VoxtokError(f"{directory}: config.json names codebooks {config.codebooks_hash}, model.safetensors "
                          f"holds {codebooks_fingerprint(state)} (files from two different exports)")
    return model




def _load_checked(weights: Path, expected: dict[str, torch.Tensor], device: str | torch.device
                  ) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, refused unless names, shapes and dtypes match `expected` (read from the
    file's header, before any tensor is loaded) and every floating value is finite."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt", device=str(device)) as f:
            names = set(f.keys())
            missing = [k for k in expected if k not in names and not k.endswith(TRAINING_ONLY_BUFFERS)]
            unexpected = sorted(names - set(expected))
            if missing or unexpected:
                raise VoxtokError(f"{weights}: weights do not match config.json "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
            for name in sorted(names):
                shape = list(f.get_slice(name).get_shape())
                if shape != list(expected[name].shape):
                    raise VoxtokError(f"{weights}: tensor {name} has shape {shape}, "
                                      f"config.json needs {list(expected[name].shape)}")
            state = {}
            for name in sorted(names):
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() != expected[name].is_floating_point():
                    raise VoxtokError(f"{weights}: tensor {name} has dtype {tensor.dtype}, "
                                      f"expected {expected[name].dtype}")
                if tensor.is_floating_point():
                    tensor = tensor.float()
                    if not torch.isfinite(tensor).all():
                        raise VoxtokError(f"{weights}: tensor {name} holds NaN or infinite values")
                state[name] = tensor
    except VoxtokError:
        raise
    except Exception as exc:  # safetensors raises its own error types (and OSError) for damaged files
        raise VoxtokError(f"{weights}: not a readable safetensors file ({_first_line(exc)})") from None
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
