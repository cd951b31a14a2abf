"""How much a speech LM reads its text: teacher-forced held-out cross-entropy per codebook with the right phonemes
and with another held-out sentence's (same prompt, same target), on the first 40 held-out utterances of the
recipe's corpus. The LM cards' "text gain" rows; the trainer logs the same gap (mean over codebooks, 64
utterances) as heldout/text_gain.

    python recipes/experiments/lm_text_gain.py recipes/checkpoints/lm_discrete_small [recipes/lm_discrete_small.toml]
    python recipes/experiments/lm_text_gain.py lm/pretrained/voxtok-lm-discrete recipes/lm_discrete_small_aligned.toml

An aligned LM (give its recipe, so the corpus's alignments are read) keeps the target's timing with the other
sentence: its alignment states are stretched onto the other text's phonemes (LMTrainer.states).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from voxtok.lm.model import SpeechLM
from voxtok.lm.sequence import collate
from voxtok.lm.train import LMTrainer, load_lm_recipe


def main() -> None:
    torch.set_num_threads(1)
    table, cfg = load_lm_recipe(sys.argv[2] if len(sys.argv) > 2 else "recipes/lm_discrete_small.toml")
    cfg.out_dir = "runs/lm_text_gain"
    trainer = LMTrainer(table, cfg, progress=False)
    model = SpeechLM.from_pretrained(sys.argv[1]).eval()
    heldout = trainer.heldout[:40]
    ce: dict[str, list[list[float]]] = {"right": [], "other": []}
    with torch.no_grad():
        for i, u in enumerate(heldout):
            other = heldout[(i + 7) % len(heldout)]
            aligned = model.config.aligned
            for kind, phones, states in (("right", u.phones, trainer.states(u) if aligned else None),
                                         ("other", other.phones,
                                          trainer.states(u, len(other.alignment[1])) if aligned else None)):
                _, figures = model.loss(collate([trainer.example(u, np.random.default_rng(i), phones, states)]))
                ce[kind].append([figures[f"ce_{k}"] for k in range(model.config.num_codebooks)])
    right, other = np.mean(ce["right"], 0), np.mean(ce["other"], 0)
    print("CE, right phonemes:", np.round(right, 3))
    print("text gain per codebook:", np.round(other - right, 3), "mean", round(float((other - right).mean()), 4))


if __name__ == "__main__":
    main()
