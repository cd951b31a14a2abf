"""What the first codebook knows: probes on frozen RVQ-1 of a codec, over speech with forced-aligned phones.

- PNMI (phone-normalised mutual information, as HuBERT reports it): I(phone; RVQ-1 code) / H(phone) over speech
  frames (silence left out): 1 when the code determines the phone, 0 when it says nothing about it.
- A linear phone probe: softmax regression from the RVQ-1 code vector (standardised) to the phone, trained on one
  set of files and scored on another (held-out speakers): frame accuracy, beside the majority-class rate.

    python -m codec.eval.probes ../shared/data/real --train-split train --test-split dev [--model NAME]

Labels come from codec.data.align (pocketsphinx, cached); a code frame k (20 ms) takes the phone at its centre.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codec.data.align import FRAME_MS, PHONES


@dataclass
class FrameSet:
    codes: np.ndarray  # [frames] RVQ-1 index
    vectors: np.ndarray  # [frames, dim] RVQ-1 code vectors
    phones: np.ndarray  # [frames] index into PHONES (silence excluded)
    files: int


def code_frame_labels(phones_10ms: np.ndarray, frames: int, frame_ms: float) -> np.ndarray:
    """10 ms phone labels -> one per code frame, the label at the frame's centre (-1 past the alignment's end)."""
    centres = ((np.arange(frames) + 0.5) * frame_ms / FRAME_MS).astype(int)
    out = np.full(frames, -1, dtype=np.int64)
    inside = centres < len(phones_10ms)
    out[inside] = phones_10ms[centres[inside]]
    return out


@torch.no_grad()
def first_codebook_frames(model, items: list[tuple[np.ndarray, np.ndarray]]) -> FrameSet:
    """items: (16 kHz audio, 10 ms phone labels) -> the speech frames' RVQ-1 codes, code vectors and phones."""
    codes, vectors, phones = [], [], []
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
    return FrameSet(np.concatenate(codes), np.concatenate(vectors), np.concatenate(phones), len(items))


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


def linear_probe(train: FrameSet, test: FrameSet, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Softmax regression on standardised code vectors (Adam, full batch, a little weight decay)."""
    torch.manual_seed(seed)
    mean, std = train.vectors.mean(0), train.vectors.std(0) + 1e-6
    x_train = torch.from_numpy((train.vectors - mean) / std).float()
    x_test = torch.from_numpy((test.vectors - mean) / std).float()
    y_train, y_test = torch.from_numpy(train.phones), torch.from_numpy(test.phones)
    probe = torch.nn.Linear(x_train.shape[1], len(PHONES))
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


def labelled_items(root: Path, split: str, cache: str, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(audio, 10 ms phones) for every file of the split that has text and aligns."""
    from codec.audio import load_audio
    from codec.data.align import cached_alignment
    from codec.errors import VoxtokError
    from codec.eval.runner import read_manifest, read_split, select

    items = []
    for entry in [e for e in select(read_manifest(root), read_split(split)) if e.text][:limit]:
        samples = load_audio(root / entry.path, 16000)
        try:
            alignment = cached_alignment(root / entry.path, entry.path, entry.text, cache, samples=samples)
        except VoxtokError:
            continue
        items.append((samples, alignment.phones))
    return items


def probe_report(model, train_items, test_items) -> dict:
    train, test = first_codebook_frames(model, train_items), first_codebook_frames(model, test_items)
    return {"pnmi_train": pnmi(train.codes, train.phones), "pnmi_test": pnmi(test.codes, test.phones),
            **{f"probe_{k}": v for k, v in linear_probe(train, test).items()},
            "train_frames": len(train.phones), "test_frames": len(test.phones),
            "train_files": train.files, "test_files": test.files}


def main(argv: list[str] | None = None) -> None:
    import argparse

    from codec.compress import load_codec

    parser = argparse.ArgumentParser(prog="python -m codec.eval.probes")
    parser.add_argument("root")
    parser.add_argument("--model", default=None)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="dev")
    parser.add_argument("--cache", default="data/cache/align")
    parser.add_argument("--limit", type=int, default=None, help="at most this many files per split")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_codec(args.model)
    root = Path(args.root)
    report = probe_report(model, labelled_items(root, args.train_split, args.cache, args.limit),
                          labelled_items(root, args.test_split, args.cache, args.limit))
    report["model"] = model.model_id
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
