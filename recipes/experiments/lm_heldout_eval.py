"""The speech LM on held-out sentences (issue #11's generation bars, a first look): for N held-out utterances of
the corpus, generate from their phonemes with a prompt from another utterance of the same voice, and report how
often end of speech is reached, the duration against the ground truth, hama PER of the generated speech against
that of the ground truth re-synthesised through the tokenizer, and Resemblyzer similarity to the prompt.

    python recipes/experiments/lm_heldout_eval.py runs/lm_discrete_small/checkpoint data/lm_corpus [N]
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from lm.corpus import load_corpus
from lm.generate import Sampling, generate_frames
from lm.phonemes import symbols_to_ids
from lm.tts import load_lm, tokenizer_for


def main() -> None:
    torch.set_num_threads(1)
    lm = load_lm(sys.argv[1])
    meta, utterances = load_corpus(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    codec = tokenizer_for(lm)
    from codec.eval.models import Judges

    judges = Judges()
    by_speaker: dict[str, list] = {}
    for u in utterances:
        if u.split == "train":
            by_speaker.setdefault(u.speaker, []).append(u)
    heldout = [u for u in utterances if u.split == "heldout" and u.phones and by_speaker.get(u.speaker)][:count]
    rows = []
    discrete = lm.config.kind == "discrete"
    for i, u in enumerate(heldout):
        prompt_u = by_speaker[u.speaker][i % len(by_speaker[u.speaker])]
        prompt = torch.from_numpy(prompt_u.codes if discrete else prompt_u.latents)[:, :38]
        ids = symbols_to_ids(u.phones, lm.config.phone_symbols)
        sampling = Sampling(temperature=0.8, top_k=50, seed=i, max_frames=int(2 * u.codes.shape[1]) + 10)
        frames = list(generate_frames(lm, prompt, ids, sampling))
        with torch.inference_mode():
            if discrete:
                gen = codec.decode(torch.stack(frames, 1)[None]) if frames else torch.zeros(1, 1, 0)
                truth = codec.decode(torch.from_numpy(u.codes)[None])
                prompt_audio = codec.decode(torch.from_numpy(prompt_u.codes[:, :38])[None])
            else:
                gen = codec.decode_latents(torch.stack(frames, 1)[None]) if frames else torch.zeros(1, 1, 0)
                truth = codec.decode_latents(torch.from_numpy(u.latents)[None])
                prompt_audio = codec.decode_latents(torch.from_numpy(prompt_u.latents[:, :38])[None])
        gen, truth = gen[0, 0].float().numpy(), truth[0, 0].float().numpy()
        row = {"id": u.id, "ended": len(frames) < sampling.max_frames,
               "duration_ratio": len(frames) / u.codes.shape[1]}
        if len(gen) > 8000:
            reference = judges.phones.text_phones(u.text)
            for name, audio in (("gen", gen), ("truth", truth)):
                hyp = judges.phones.recognise(audio)
                row[f"per_{name}"] = _edit(reference, hyp) / max(1, len(reference))
            p = judges.speaker.embed(prompt_audio[0, 0].float().numpy())
            row["sim_gen"] = float(np.dot(p, judges.speaker.embed(gen)))
            row["sim_truth"] = float(np.dot(p, judges.speaker.embed(truth)))
        rows.append(row)
    summary = {"utterances": len(rows), "ended": float(np.mean([r["ended"] for r in rows])),
               "duration_within_30pct": float(np.mean([abs(r["duration_ratio"] - 1) <= 0.3 for r in rows]))}
    for key in ("per_gen", "per_truth", "sim_gen", "sim_truth", "duration_ratio"):
        values = [r[key] for r in rows if key in r]
        if values:
            summary[key] = round(float(np.mean(values)), 3)
    print(json.dumps(summary))


def _edit(a: list, b: list) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


if __name__ == "__main__":
    main()
