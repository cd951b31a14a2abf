"""Torch-free runtime for the 12.5 Hz tokenizer's ONNX export (export/lowrate_onnx.py): onnxruntime + numpy.

    runtime = LowRateRuntime("onnx_12hz/")
    latents = runtime.encode_latents(audio)              # [D, frames], normalised (what a .vlat holds)
    codes = runtime.fsq_codes(latents)                   # [groups, frames], the discrete twin
    decoder = runtime.streaming_decoder(steps=4)
    for chunk in chunks_of(latents):                     # any number of tokens per push
        play(decoder.push(chunk))
    play(decoder.flush())
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from voxtok.errors import VoxtokError


class LowRateRuntime:
    def __init__(self, folder: str | Path, threads: int = 1):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise VoxtokError(f"{self.folder}: no manifest.json (not a finished `voxtok export onnx` folder)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != "voxtok-lowrate-onnx":
            raise VoxtokError(f"{self.folder}: not a 12.5 Hz tokenizer export")
        self.threads = threads
        self.noise = np.load(self.folder / self.manifest["noise"]).astype(np.float32)
        self._sessions: dict[str, ort.InferenceSession] = {}

    def session(self, graph: str) -> ort.InferenceSession:
        if graph not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            self._sessions[graph] = ort.InferenceSession(str(self.folder / self.manifest["graphs"][graph]),
                                                         options, providers=["CPUExecutionProvider"])
        return self._sessions[graph]

    def initial_states(self, graph: str, batch: int = 1) -> list[np.ndarray]:
        return [np.zeros([batch, *s["shape"][1:]], dtype=np.dtype(s["dtype"])) for s in self.manifest["states"][graph]]

    def run(self, graph: str, inputs: dict, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        descs = self.manifest["states"][graph]
        feeds = dict(inputs)
        feeds.update({d["name"]: s for d, s in zip(descs, states)})
        outputs = self.session(graph).run(None, feeds)
        return outputs[0], list(outputs[1:])

    def encode_latents(self, audio: np.ndarray) -> np.ndarray:
        """Mono float32 audio at the model's rate -> normalised latents [D, ceil(N / frame_size)]."""
        hop = self.manifest["frame_size"]
        padded = np.zeros(-(-len(audio) // hop) * hop, dtype=np.float32)
        padded[: len(audio)] = audio
        latents, _ = self.run("latent_encoder_step", {"audio": padded[None, None]},
                              self.initial_states("latent_encoder_step"))
        return latents[0]

    def fsq_codes(self, latents: np.ndarray) -> np.ndarray:
        """Normalised latents [D, T] -> FSQ codes [groups, T] (voxtok.lowrate.FSQuantizer's rule)."""
        fsq = self.manifest["fsq"]
        levels, groups = fsq["levels"], fsq["groups"]
        half = (levels - 1) / 2
        index = np.clip(np.round(half * np.tanh(latents / 2) + half), 0, levels - 1).astype(np.int64)
        d, t = index.shape
        radix = levels ** np.arange(d // groups)
        return (index.reshape(groups, d // groups, t) * radix[None, :, None]).sum(axis=1)

    def streaming_decoder(self, steps: int | None = None, temperature: float = 1.0) -> StreamingLatentDecoder:
        return StreamingLatentDecoder(self, steps or self.manifest["flow_steps"], temperature)


class StreamingLatentDecoder:
    """Latents in, audio out: conditioning, `steps` Euler steps (each with its own flow_step states), synthesis."""

    def __init__(self, runtime: LowRateRuntime, steps: int, temperature: float):
        self.runtime, self.steps, self.temperature = runtime, steps, temperature
        self.cond_states = runtime.initial_states("flow_cond_step")
        self.flow_states = [runtime.initial_states("flow_step") for _ in range(steps)]
        self.synth_states = runtime.initial_states("synth_step")
        self.position = 0
        self.skip = runtime.manifest["decoder_skip_samples"]

    def push(self, latents: np.ndarray) -> np.ndarray:
        """Latents [D, t] -> the audio samples that are final after them."""
        if latents.shape[-1] == 0:
            return np.zeros(0, dtype=np.float32)
        rt = self.runtime
        outputs = rt.session("flow_cond_step").run(None, {
            "latents": latents[None].astype(np.float32),
            **{d["name"]: st for d, st in zip(rt.manifest["states"]["flow_cond_step"], self.cond_states)}})
        cond, mu, self.cond_states = outputs[0], outputs[1], list(outputs[2:])
        frames = cond.shape[-1]
        index = (self.position + np.arange(frames)) % rt.noise.shape[1]
        x = (self.temperature * rt.noise[:, index])[None]
        # The step-size input: 1 / steps for a shortcut-trained decoder; 0 (instantaneous velocity) otherwise.
        d = np.full((1,), 1.0 / self.steps if rt.manifest.get("shortcut") else 0.0, dtype=np.float32)
        for k in range(self.steps):
            t = np.full((1,), k / self.steps, dtype=np.float32)
            v, self.flow_states[k] = rt.run("flow_step", {"x": x, "t": t, "d": d, "cond": cond}, self.flow_states[k])
            x = x + v / self.steps
        self.position += frames
        audio, self.synth_states = rt.run("synth_step", {"mu": mu, "x": x.astype(np.float32)}, self.synth_states)
        out = audio[0, 0]
        if self.skip:
            cut = min(self.skip, len(out))
            out, self.skip = out[cut:], self.skip - cut
        return out

    def flush(self) -> np.ndarray:
        """The look-ahead's zero tokens, then the synthesiser's overlap-add tail."""
        lookahead = self.runtime.manifest["config"]["lookahead_tokens"]
        parts = [self.push(np.zeros((self.runtime.manifest["latent_dim"], lookahead), dtype=np.float32))]
        tail = self.synth_states[-1].reshape(-1)
        parts.append(tail[self.skip:])
        return np.concatenate(parts)
