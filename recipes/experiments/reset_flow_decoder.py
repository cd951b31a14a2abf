"""Restart the flow decoder inside a 12.5 Hz tokenizer checkpoint, keeping the encoder and regression decoder (and
their Adam moments): fresh flow weights, no optimizer state for them. Used once, when the flow's target changed
from the whole parameters to the residual over the regression decoder (voxtok.lowrate.FlowDecoder): the flow reads
detached latents, so restarting it leaves the rest of the training untouched.

    python recipes/experiments/reset_flow_decoder.py runs/lowrate_12hz/checkpoint
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from voxtok.config import LowRateConfig
from voxtok.lowrate import LowRateCodec


def main() -> None:
    ckpt = Path(sys.argv[1])
    cfg = LowRateConfig.load(ckpt / "config.json")
    torch.manual_seed(0)
    fresh = LowRateCodec(cfg)
    weights = load_file(str(ckpt / "model.safetensors"))
    fresh_state = fresh.state_dict()
    flow_keys = [k for k in fresh_state if k.startswith("flow.")]
    for k in flow_keys:
        weights[k] = fresh_state[k].to(weights[k].dtype if k in weights else fresh_state[k].dtype).contiguous()
    # keep the statistics the flow measured on training data (they do not depend on its weights)
    old = load_file(str(ckpt / "model.safetensors"))
    for k in ("flow.feature_mean", "flow.feature_std", "flow.stats_ready"):
        weights[k] = old[k]
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    names = [n for n, _ in fresh.named_parameters()]
    flow_index = {i for i, n in enumerate(names) if n.startswith("flow.")}
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    kept = {k: v for k, v in tensors.items() if not (k.startswith("g.") and int(k.split(".")[1]) in flow_index)}
    save_file(kept, str(ckpt / "optimizer.safetensors"))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    g = state["optimizers"]["g"]
    g["state"] = {i: v for i, v in g["state"].items() if int(i) not in flow_index}
    g["param_groups"][0]["params"] = list(range(len(names)))
    (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=1))
    print(f"{ckpt}: flow decoder restarted ({len(flow_keys)} tensors, {len(flow_index)} parameters without "
          f"Adam state); step {state['step']}")


if __name__ == "__main__":
    main()
