"""Scale a 12.5 Hz tokenizer checkpoint's latent means back to unit size: the encoder's last conv and the latent
statistics divided by the current spread, which leaves every normalised latent (all that the decoders, FSQ and the
LMs read) unchanged. Used once, after the encoder's output scale ran away under detached batch statistics
(voxtok.lowrate.FSQuantizer.normalise_by_batch).

    python recipes/experiments/rescale_latent.py runs/lowrate_12hz/checkpoint
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    ckpt = Path(sys.argv[1])
    weights = load_file(str(ckpt / "model.safetensors"))
    conv = sorted({k.rsplit(".", 1)[0] for k in weights if k.startswith("encoder.layers.")},
                  key=lambda k: int(k.split(".")[2]))[-1]
    std = weights["quantizer.latent_std"].float()
    scale = float(std.mean())
    weights[f"{conv}.weight"] = (weights[f"{conv}.weight"].float() / scale).to(weights[f"{conv}.weight"].dtype)
    weights[f"{conv}.bias"] = (weights[f"{conv}.bias"].float() / scale).to(weights[f"{conv}.bias"].dtype)
    weights["quantizer.latent_mean"] = weights["quantizer.latent_mean"] / scale
    weights["quantizer.latent_std"] = weights["quantizer.latent_std"] / scale
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    print(f"{ckpt}: {conv} and the latent statistics divided by {scale:.3f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
