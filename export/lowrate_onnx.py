"""ONNX export of the 12.5 Hz tokenizers (voxtok.stacked, voxtok.lowrate): the streaming encoder and one flow step,
with the pieces around them, so the torch-free runtime (export/lowrate_runtime.py) encodes and decodes chunk by
chunk. The model says what its pieces are (flow_prior_path, flow_prior, renderer, render_input): for the stacked
tokenizer the encoder graph includes codec v2's encoder and the synth graph is v2's decoder and synthesiser.

Graphs (float32, batch and length dynamic):
  latent_encoder_step: audio [B, 1, 1280 k] + states -> normalised latents [B, D, k] + new states
  flow_cond_step:      latents [B, D, k] + states -> conditioning [B, C, 4 k], mu [B, F, 4 k] + new states
                       (mu: the regression decoder's prediction, which the flow's residual sample is added to)
  flow_step:           x [B, F, n], t [B], step size d [B], conditioning [B, C, n] + states -> velocity + states
  synth_step:          mu and the flow's residual sample [B, F, n] + states -> audio [B, 1, 320 n] + new states
                       (voxtok.lowrate: the sample's F0 / voicing channels are dropped, pitch comes from mu)
The Euler loop, the noise table (flow_noise.npy, read by frame position) and FSQ (tanh, round, the level
centroids in the manifest) are a few lines of numpy in the runtime. Each Euler step has its own flow_step
states: the velocity net is causal in time, so step k of a chunk continues step k of the previous chunk.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from voxtok.audio import atomic_write
from voxtok.errors import VoxtokError
from voxtok.export.onnx_export import OPSET, _describe_states, _export, _quiet_exporter, _rewrite_convs, _sha256

FORMAT = "voxtok-lowrate-onnx"
GRAPHS = {name: f"{name}.onnx" for name in ("latent_encoder_step", "flow_cond_step", "flow_step", "synth_step")}
NOISE_FILE = "flow_noise.npy"


class _EncoderStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder, self.quantizer = model.encoder, model.quantizer

    def forward(self, audio, states):
        latents, new = self.encoder.step(audio, list(states))
        return self.quantizer.normalise(latents), tuple(new)


class _CondStep(nn.Module):
    """latents -> (the flow's conditioning, mu: the regression decoder's prediction the flow adds its sample to)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.cond_states = len(model.flow.cond.init_state(1))

    def forward(self, latents, states):
        states, model = list(states), self.model
        cond, new_cond = model.flow.cond.step(latents, states[: self.cond_states])
        prior, new_prior = model.flow_prior_path.step(latents, states[self.cond_states:])
        mu = model.flow_prior(prior)
        return model.flow.condition(cond, mu), mu, tuple(new_cond + new_prior)


class _FlowStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.velocity = model.flow.velocity

    def forward(self, x, t, d, cond, states):
        v, new = self.velocity.step(x, t, cond, list(states), d)
        return v, tuple(new)


class _SynthStep(nn.Module):
    """mu and the flow's residual sample -> audio (the synthesiser, or the base codec's decoder)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, mu, x, states):
        audio, new = self.model.renderer.step(self.model.render_input(mu, x), list(states))
        return audio, tuple(new)


def export_lowrate_onnx(model, out_dir: str | Path, weights_sha256: str | None = None) -> dict:
    """Write the graphs, the noise table and manifest.json (last: its presence marks a complete export)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise VoxtokError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    _quiet_exporter()
    model = copy.deepcopy(model).float().eval()
    _rewrite_convs(model)
    cfg = model.config
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=1, max=10_000_000)
    enc_states = model.encoder.init_state(2)
    cond_states = model.flow.cond.init_state(2) + model.flow_prior_path.init_state(2)
    flow_states = model.flow.velocity.init_state(2)
    synth_states = model.renderer.init_state(2)
    descs = {"latent_encoder_step": _describe_states("enc", enc_states),
             "flow_cond_step": _describe_states("cond", cond_states),
             "flow_step": _describe_states("flow", flow_states),
             "synth_step": _describe_states("synth", synth_states)}
    hop, per = cfg.hop_length, cfg.feature_frames_per_token
    audio = torch.randn(2, 1, 3 * hop) * 0.1
    latents = torch.randn(2, cfg.latent_dim, 3)
    x = torch.randn(2, model.flow.features, 3 * per)
    cond = torch.randn(2, cfg.flow_dim, 3 * per)
    t = torch.full((2,), 0.25)

    def names(key):
        return [s["name"] for s in descs[key]], [s["output"] for s in descs[key]]

    def states(n):
        return tuple({0: batch} for _ in range(n))

    with torch.no_grad():
        i, o = names("latent_encoder_step")
        _export(_EncoderStep(model), (audio, tuple(enc_states)), out_dir / GRAPHS["latent_encoder_step"],
                ["audio", *i], ["latents", *o], {"audio": {0: batch, 2: hop * frames},
                                                   "states": states(len(enc_states))})
        i, o = names("flow_cond_step")
        _export(_CondStep(model), (latents, tuple(cond_states)), out_dir / GRAPHS["flow_cond_step"],
                ["latents", *i], ["cond", "mu", *o],
                {"latents": {0: batch, 2: frames}, "states": states(len(cond_states))})
        i, o = names("flow_step")
        _export(_FlowStep(model), (x, t, t.clone(), cond, tuple(flow_states)), out_dir / GRAPHS["flow_step"],
                ["x", "t", "d", "cond", *i], ["velocity", *o],
                {"x": {0: batch, 2: frames}, "t": {0: batch}, "d": {0: batch}, "cond": {0: batch, 2: frames},
                 "states": states(len(flow_states))})
        i, o = names("synth_step")
        # Distinct example tensors: the exporter merges inputs given the same tensor object.
        _export(_SynthStep(model), (torch.randn_like(x), x, tuple(synth_states)), out_dir / GRAPHS["synth_step"],
                ["mu", "x", *i], ["audio", *o],
                {"mu": {0: batch, 2: frames}, "x": {0: batch, 2: frames}, "states": states(len(synth_states))})
    # The table as the decoder draws it: already scaled by the residual's spread (FlowDecoder.noise_at).
    noise = (model.flow.noise * model.flow.residual_std[:, None]).float().numpy()
    atomic_write(out_dir / NOISE_FILE, lambda tmp: np.save(open(tmp, "wb"), noise))
    manifest = {
        "format": FORMAT, "format_version": 1, "model_id": model.model_id, "config_hash": cfg.config_hash(),
        "weights_sha256": weights_sha256, "config": cfg.to_dict(), "opset": OPSET, "dtype": "float32",
        "sample_rate": cfg.sample_rate, "frame_size": hop, "frame_rate": cfg.frame_rate,
        "feature_frames_per_token": per, "latent_dim": cfg.latent_dim, "flow_steps": cfg.flow_steps,
        "shortcut": bool(model.flow.shortcut.item()),
        "fsq": {"levels": cfg.fsq_levels, "groups": cfg.num_quantizers,
                "centroids": model.quantizer.centroids.tolist()},
        "graphs": dict(GRAPHS), "noise": NOISE_FILE, "states": descs,
        "decoder_skip_samples": cfg.decoder_delay, "synth_tail_state": descs["synth_step"][-1]["name"],
        "latency": {"algorithmic_samples": cfg.latency_samples,
                    "algorithmic_ms": 1000 * cfg.latency_samples / cfg.sample_rate,
                    "note": "a whole 80 ms token, the decoders' look-ahead token, and the synthesiser's overlap"},
    }
    manifest["files_sha256"] = {name: _sha256(out_dir / name) for name in [*GRAPHS.values(), NOISE_FILE]}
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(out_dir / "manifest.json", lambda tmp: Path(tmp).write_text(text))
    return manifest


def verify_lowrate_export(model, out_dir: str | Path, audio: np.ndarray, steps: int = 4) -> dict:
    """PyTorch against the ONNX runtime on `audio`: the largest latent difference, and the SNR of the runtime's
    streamed flow decoding (odd chunk sizes) against PyTorch's offline decoding of the same latents."""
    from voxtok.export.lowrate_runtime import LowRateRuntime
    from voxtok.export.onnx_export import snr_db

    runtime = LowRateRuntime(out_dir)
    with torch.inference_mode():
        z = model.encode_latents(torch.from_numpy(audio)[None, None])
        model.set_decoding("flow", steps)
        reference = model.decode_latents(z)[0, 0].float().numpy()
    got = runtime.encode_latents(audio)
    latent_error = float(np.abs(got - z[0].float().numpy()).max())
    decoder = runtime.streaming_decoder(steps=steps)
    zs = z[0].float().numpy()
    pieces = [decoder.push(zs[:, i:i + 3]) for i in range(0, zs.shape[1], 3)] + [decoder.flush()]
    streamed = np.concatenate(pieces)[: len(reference)]
    return {"latent_max_abs_error": latent_error, "stream_snr_db": round(snr_db(reference, streamed), 1)}
