"""What the first codebook knows: probes on frozen RVQ-1 of a codec, over speech with forced-aligned phones.

- PNMI (phone-normalised mutual information, as HuBERT reports it): I(phone; RVQ-1 code) / H(phone) over speech
  frames (silence left out): 1 when the code determines the phone, 0 when it says nothing about it.
- A linear phone probe: softmax regression from the RVQ-1 code vector (standardised) to the phone, trained on one
  set of files and scored on another (held-out speakers): frame accuracy, beside the majority-class rate.
- Sentence retrieval: RVQ-1 vectors mean-pooled over an utterance's speech frames, mapped by a ridge regression
  (fitted on the training files) to MiniLM's sentence embedding; for each held-out utterance, is its own
  sentence the nearest of the held-out sentences (top-1; chance is 1 / their number)?
- A speaker probe: the same pooled vectors, softmax regression to the speaker over training files, scored on one
  held-out file of each speaker with 3 or more (distillation is expected to lower it).

    python -m voxtok.eval.probes ../shared/data/real --train-split train --test-split dev [--model NAME]

Labels come from voxtok.data.align (pocketsphinx, cached); a code frame k (20 ms) takes the phone at its centre.
The 12.5 Hz tokenizer is probed per 20 ms too, each 80 ms token at 4 positions (token_frames), on its continuous
tokens (add --quantized for the FSQ twin's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from voxtok.data.align import PHONES, code_frame_labels
from voxtok.errors import VoxtokError


@dataclass
class FrameSet:
    codes: np.ndarray  # [frames] RVQ-1 index
    vectors: np.ndarray  # [frames, dim] RVQ-1 code vectors
    phones: np.ndarray  # [frames] index into PHONES (silence excluded)
    files: int
    pooled: np.ndarray | None = None  # [files, dim] mean speech-frame vector per file


@torch.no_grad()
def first_codebook_frames(model, items: list[tuple[np.ndarray, np.ndarray]], quantized: bool = False) -> FrameSet:
    """items: (16 kHz audio, 10 ms phone labels) -> the speech frames' RVQ-1 codes, code vectors and phones;
    FrameSet.pooled holds each item's mean speech-frame vector. The 12.5 Hz tokenizer goes to token_frames."""
    if hasattr(model, "encode_latents"):
        return token_frames(model, items, quantized=quantized)
    codes, vectors, phones, pooled = [], [], [], []
    dtype = model.encoder_dtype
    frame_ms = 1000.0 / model.config.frame_rate
    for samples, labels in items:
        wav = torch.from_numpy(np.asarray(samples, dtype=np.float64)).to(dtype)[None, None]
        first = model.encode(wav, 1)  # [1, 1, T]
        vec = model.quantizer.decode(first)[0].T.double().numpy()  # [T, dim]
        lab = code_frame_labels(labels, first.shape[-1], frame_ms)
        keep = lab > 0  # speech frames only (0 is silence, -1 past the alignment)
        codes.append(first[0, 0].numpy()[keep])
        vectors.append(vec[keep])
        phones.append(lab[keep])
        pooled.append(vec[keep].mean(0) if keep.any() else vec.mean(0))
    return FrameSet(np.concatenate(codes), np.concatenate(vectors), np.concatenate(phones), len(items),
                    np.stack(pooled))


@torch.no_grad()
def token_frames(model, items: list[tuple[np.ndarray, np.ndarray]], positions: int = 4,
                 quantized: bool = False) -> FrameSet:
    """The 12.5 Hz tokenizer's probe frames: one per 20 ms, so its figures sit beside codec v2's 20 ms frames.
    An 80 ms token is probed at `positions` equal steps: the phone at each step's centre, from the token's
    normalised latent (the continuous LM's input; with `quantized`, its FSQ twin, the discrete LM's) laid out as
    kron(one-hot(position), latent), so the linear probe is one linear map per position, as the phone term's head
    is. Codes (for PNMI) are the FSQ code of the first group of dimensions, 625 entries, about RVQ-1's size."""
    codes, vectors, phones, pooled = [], [], [], []
    frame_ms = 1000.0 / model.config.frame_rate
    eye = np.eye(positions)
    for samples, labels in items:
        wav = torch.from_numpy(np.asarray(samples, dtype=np.float32)).to(model.encoder_dtype)[None, None]
        z = model.encode_latents(wav)
        token_codes = model.quantizer.codes_of_normalised(z)[0, 0].numpy()  # [T]
        if quantized:
            z = model.quantizer.decode(model.quantizer.codes_of_normalised(z))
        vec = z[0].T.double().numpy()  # [T, dim]
        t = vec.shape[0]
        lab = code_frame_labels(labels, t * positions, frame_ms / positions)  # [T * positions]
        keep = lab > 0
        features = np.einsum("pq,td->tpqd", eye, vec).reshape(t * positions, positions * vec.shape[1])
        codes.append(np.repeat(token_codes, positions)[keep])
        vectors.append(features[keep])
        phones.append(lab[keep])
        speech = np.repeat(vec, positions, axis=0)[keep]
        pooled.append(speech.mean(0) if keep.any() else vec.mean(0))
    return FrameSet(np.concatenate(codes), np.concatenate(vectors), np.concatenate(phones), len(items),
                    np.stack(pooled))


def pnmi(codes: np.ndarray, phones: np.ndarray) -> float:
    """I(phone; code) / H(phone) from the joint counts."""
    joint: dict[tuple[int, int], int] = {}
    for c, p in zip(codes.tolist(), phones.tolist()):
        joint[(c, p)] = joint.get((c, p), 0) + 1
    n = len(codes)
    p_phone = np.bincount(phones, minlength=len(PHONES)) / n
    code_ids, code_counts = np.unique(codes, return_counts=True)
    p_code = dict(zip(code_ids.tolist(), (code_counts / n).tolist()))
    mi = sum((k / n) * np.log((k / n) / (p_code[c] * p_phone[p])) for (c, p), k in joint.items())
    h_phone = -sum(q * np.log(q) for q in p_phone if q > 0)
    return float(mi / h_phone) if h_phone > 0 else 0.0


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 steps: int = 300, seed: int = 0, classes: int = len(PHONES)) -> dict[str, float]:
    """Softmax regression on standardised vectors (Adam, full batch, a little weight decay)."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x_train = torch.from_numpy((train_x - mean) / std).float()
    x_test = torch.from_numpy((test_x - mean) / std).float()
    y_train, y_test = torch.from_numpy(train_y).long(), torch.from_numpy(test_y).long()
    probe = torch.nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(probe(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((probe(x_test).argmax(1) == y_test).float().mean())
        train_accuracy = float((probe(x_train).argmax(1) == y_train).float().mean())
    majority = float((y_test == torch.bincount(y_train).argmax()).float().mean())
    return {"accuracy": accuracy, "train_accuracy": train_accuracy, "majority": majority}


@dataclass
class Labelled:
    samples: np.ndarray
    phones: np.ndarray  # 10 ms
    words: list[str]
    speaker: str | None


def labelled_items(root: Path, split: str | None, cache: str, limit: int | None = None) -> list[Labelled]:
    """Every file of the split (None: the whole manifest) that has text and aligns: audio, 10 ms phones, words
    and speaker."""
    from voxtok.audio import load_audio
    from voxtok.data.align import cached_alignment
    from voxtok.eval.runner import read_manifest, read_split, select

    items = []
    rows = read_manifest(root)
    if split is not None:
        rows = select(rows, read_split(split))
    for entry in [e for e in rows if e.text][:limit]:
        samples = load_audio(root / entry.path, 16000)
        try:
            alignment = cached_alignment(root / entry.path, entry.path, entry.text, cache, samples=samples)
        except VoxtokError:
            continue
        items.append(Labelled(samples, alignment.phones, [w for w, _, _ in alignment.words], entry.speaker))
    return items


def sentence_retrieval(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                       ridge: float = 1.0) -> float:
    """Top-1 retrieval of each held-out utterance's sentence embedding from its pooled vector, through a ridge
    map fitted on the training pairs (standardised inputs; cosine similarity)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    a = np.hstack([a, np.ones((len(a), 1))])
    b = np.hstack([b, np.ones((len(b), 1))])
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ train_y)
    predicted = b @ weights
    predicted /= np.linalg.norm(predicted, axis=1, keepdims=True) + 1e-8
    targets = test_y / (np.linalg.norm(test_y, axis=1, keepdims=True) + 1e-8)
    return float((np.argmax(predicted @ targets.T, axis=1) == np.arange(len(test_y))).mean())


def speaker_probe(pooled: np.ndarray, speakers: list[str | None], steps: int = 300, seed: int = 0) -> dict:
    """Softmax regression from pooled vectors to speakers with >= 3 files; one file of each held out."""
    by_speaker: dict[str, list[int]] = {}
    for i, spk in enumerate(speakers):
        if spk:
            by_speaker.setdefault(spk, []).append(i)
    chosen = {s: rows for s, rows in by_speaker.items() if len(rows) >= 3}
    if len(chosen) < 2:
        return {"speaker_accuracy": None, "speakers": len(chosen)}
    ids = {s: k for k, s in enumerate(sorted(chosen))}
    train_rows = [i for rows in chosen.values() for i in rows[:-1]]
    test_rows = [rows[-1] for rows in chosen.values()]
    train_y = np.array([ids[speakers[i]] for i in train_rows])
    test_y = np.array([ids[speakers[i]] for i in test_rows])
    result = linear_probe(pooled[train_rows], train_y, pooled[test_rows], test_y, steps, seed, classes=len(ids))
    return {"speaker_accuracy": result["accuracy"],
            "speakers": len(ids), "speaker_chance": 1.0 / len(ids)}


def probe_report(model, train_items: list[Labelled], test_items: list[Labelled], sentences: int = 100,
                 quantized: bool = False) -> dict:
    train = first_codebook_frames(model, [(x.samples, x.phones) for x in train_items], quantized)
    test = first_codebook_frames(model, [(x.samples, x.phones) for x in test_items], quantized)
    report = {"pnmi_train": pnmi(train.codes, train.phones), "pnmi_test": pnmi(test.codes, test.phones),
              **{f"probe_{k}": v for k, v in
                 linear_probe(train.vectors, train.phones, test.vectors, test.phones).items()},
              "train_frames": len(train.phones), "test_frames": len(test.phones),
              "train_files": train.files, "test_files": test.files}
    report.update(speaker_probe(train.pooled, [x.speaker for x in train_items]))
    try:
        from voxtok.data.context import TextEncoder

        encoder = TextEncoder()
    except (ImportError, VoxtokError) as exc:  # the distill extra is optional for the other probes
        report["sentence_retrieval"] = None
        report["sentence_retrieval_note"] = f"needs MiniLM: {exc}"
        return report
    # Held-out sentences: distinct texts of three words or more (the digit recordings are one word).
    chosen, seen = [], set()
    for k, item in enumerate(test_items):
        key = " ".join(item.words)
        if len(item.words) >= 3 and key not in seen:
            seen.add(key)
            chosen.append(k)
    chosen = chosen[:sentences]
    if len(chosen) < 2:
        report["sentence_retrieval"] = None
        report["sentence_retrieval_note"] = "fewer than 2 held-out sentences of 3 words or more"
        return report
    train_y = np.stack([encoder.encode(x.words).sentence for x in train_items])
    test_y = np.stack([encoder.encode(test_items[k].words).sentence for k in chosen])
    report["sentence_retrieval"] = sentence_retrieval(train.pooled, train_y, test.pooled[chosen], test_y)
    report["sentence_candidates"] = len(chosen)
    return report


def main(argv: list[str] | None = None) -> None:
    import argparse

    from voxtok.compress import load_codec

    parser = argparse.ArgumentParser(prog="python -m voxtok.eval.probes")
    parser.add_argument("root")
    parser.add_argument("--model", default=None)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="dev")
    parser.add_argument("--cache", default="data/cache/align")
    parser.add_argument("--limit", type=int, default=None, help="at most this many files per split")
    parser.add_argument("--heldout", default=None,
                        help="a corpus of held-out voices and sentences added to the test files (and first among "
                             "the retrieval sentences), e.g. `voxtok synth data/synth_heldout --split dev --num 108`")
    parser.add_argument("--quantized", action="store_true",
                        help="12.5 Hz tokenizer: probe the FSQ twin's latents (the discrete LM's input), not the "
                             "continuous tokens")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_codec(args.model)
    root = Path(args.root)
    test = labelled_items(root, args.test_split, args.cache, args.limit)
    if args.heldout:
        test = labelled_items(Path(args.heldout), None, args.cache + "-heldout") + test
    if args.quantized and not hasattr(model, "encode_latents"):
        raise SystemExit(f"error: --quantized is for the 12.5 Hz tokenizer, not {model.model_id}")
    report = probe_report(model, labelled_items(root, args.train_split, args.cache, args.limit), test,
                          quantized=args.quantized)
    report["model"] = model.model_id + (" (FSQ)" if args.quantized else "")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
