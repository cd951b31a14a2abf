"""The LM's corpus: speech tokenised once into shards, with phonemes for the utterances that have text.

    voxtok lm corpus data/lm_corpus --source data/synth_train --source ../shared/data/real:codec/splits/real_train.txt
        --heldout data/synth_heldout

Layout of OUT:
    corpus.json            tokenizer id and config hash, frame rate, the phoneme symbol table, the shard list
    utterances.jsonl       one line per utterance: id, split (train | heldout), speaker, text, phones, frames,
                           shard and offset, and the audio file it was read from (the reference reading that
                           `voxtok lm eval` scores beside the generated speech)
    shard_00000.npz        codes [frames, K] int16 (the FSQ twin) and latents [frames, D] float16 (normalised)
    speakers.npy           [utterances, 256] float16: each utterance's Resemblyzer speaker embedding (the LM's
                           speaker conditioning, SpeechLMConfig.speaker_dim), in utterances.jsonl's order
    alignments.jsonl       where each phoneme sits in time (`voxtok lm align`, voxtok.lm.align), for aligned LMs

Deterministic: sources in the order given, rows in manifest order, one encoder pass per file (codes are the FSQ
of the same latents). Utterances without text stay in the corpus: they serve as voice prompts (and unconditional
speech). Every file is written through a temporary name, corpus.json last: its presence marks a finished corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from voxtok.errors import VoxtokError
from voxtok.lm.align import read_alignments

SHARD_FRAMES = 200_000  # ~4.4 h at 12.5 Hz per shard


@dataclass
class Source:
    root: Path
    split_file: Path | None
    split: str  # "train" or "heldout"
    text_only: bool = False  # leave out the utterances without a transcript

    @classmethod
    def parse(cls, spec: str, split: str, text_only: bool = False) -> Source:
        root, _, split_file = spec.partition(":")
        source = cls(Path(root), Path(split_file) if split_file else None, split, text_only)
        if not (source.root / "manifest.jsonl").is_file():
            raise VoxtokError(f"{source.root}: no manifest.jsonl (a voxtok synth folder or the real speech root)")
        if source.split_file is not None and not source.split_file.is_file():
            raise VoxtokError(f"{source.split_file}: no such split file")
        return source


def build_corpus(out_dir: str | Path, sources: list[Source], tokenizer: str | None = None,
                 progress: bool = True) -> dict:
    from voxtok.audio import atomic_write, load_audio
    from voxtok.compress import check_encodable, load_codec
    from voxtok.dataset import read_manifest
    from voxtok.eval.models import SpeakerEncoder, require
    from voxtok.lm.phonemes import phonemize

    require("resemblyzer", "the LM corpus's speaker embeddings")
    speaker_encoder = SpeakerEncoder()

    model = load_codec(tokenizer or "voxtok-16k-12hz")
    if not model.continuous:
        raise VoxtokError(f"model {model.model_id} is not a 12.5 Hz tokenizer; the LM reads voxtok-16k-12hz tokens")
    model.use_fast_encoder()  # one pass per file: load_codec's exact float64 mode buys nothing here
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.json").unlink(missing_ok=True)
    cfg = model.config
    utterances, symbols, speakers = [], set(), []
    codes_buf, latents_buf, shard_names = [], [], []
    buffered = 0

    def flush_shard() -> None:
        nonlocal buffered
        if not buffered:
            return
        name = f"shard_{len(shard_names):05d}.npz"
        codes, latents = np.concatenate(codes_buf), np.concatenate(latents_buf)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, codes=codes, latents=latents)

        atomic_write(out / name, write)
        shard_names.append(name)
        codes_buf.clear()
        latents_buf.clear()
        buffered = 0

    for source in sources:
        rows = read_manifest(source.root, source.split_file)
        if source.text_only:
            rows = [r for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
        for row in tqdm(rows, desc=f"tokenising {source.root}", disable=not progress, unit="file"):
            path = source.root / row["path"]
            try:
                samples = load_audio(path, cfg.sample_rate)
                check_encodable(samples, str(path))
            except VoxtokError as exc:
                tqdm.write(f"skipped: {exc}")
                continue
            text = row.get("text") if isinstance(row.get("text"), str) and row.get("text").strip() else None
            phones = phonemize(text) if text else None
            if phones:
                symbols.update(phones)
            with torch.inference_mode():
                z = model.encode_latents(torch.from_numpy(samples)[None, None])
                codes = model.codes_of_latents(z)
            if buffered + z.shape[-1] > SHARD_FRAMES:
                flush_shard()
            utterances.append({"id": f"{source.root.name}/{row['path']}", "split": source.split,
                               "speaker": row.get("speaker") or f"{source.root.name}/{row['path']}",
                               "text": text, "phones": phones, "frames": int(z.shape[-1]),
                               "shard": len(shard_names), "offset": buffered, "audio": str(path)})
            speakers.append(speaker_encoder.embed(samples).astype(np.float16))
            codes_buf.append(codes[0].T.numpy().astype(np.int16))
            latents_buf.append(z[0].T.float().numpy().astype(np.float16))
            buffered += z.shape[-1]
    flush_shard()
    if not utterances:
        raise VoxtokError("no utterance could be tokenised: the corpus would be empty")
    embeddings = np.stack(speakers)

    def write_speakers(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, embeddings)

    atomic_write(out / "speakers.npy", write_speakers)
    lines = "".join(json.dumps(u, ensure_ascii=False) + "\n" for u in utterances)
    atomic_write(out / "utterances.jsonl", lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    meta = {"tokenizer": model.model_id, "tokenizer_config_hash": cfg.config_hash(),
            "tokenizer_weights_hash": model.weights_hash(), "tokenizer_tokens_hash": model.tokens_hash(),
            "tokenizer_source": str(tokenizer) if tokenizer and Path(tokenizer).is_dir() else "",
            "frame_rate": cfg.frame_rate,
            "num_codebooks": cfg.num_quantizers, "codebook_size": cfg.codebook_size, "latent_dim": cfg.latent_dim,
            "symbols": sorted(symbols), "shards": shard_names, "speaker_dim": int(embeddings.shape[1]),
            "utterances": len(utterances),
            "hours": round(sum(u["frames"] for u in utterances) / cfg.frame_rate / 3600, 3),
            "sources": [{"root": str(s.root), "split_file": str(s.split_file or ""), "split": s.split}
                        for s in sources]}
    text = json.dumps(meta, indent=1, ensure_ascii=False) + "\n"
    atomic_write(out / "corpus.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return meta


@dataclass
class Utterance:
    id: str
    split: str
    speaker: str
    text: str | None
    phones: list[str] | None
    codes: np.ndarray  # [K, T] int64
    latents: np.ndarray  # [D, T] float32
    # (positions of the sounding phonemes, their spans in seconds) when the corpus is aligned (voxtok.lm.align)
    alignment: tuple[list[int], list[tuple[float, float]]] | None = None
    speaker_embedding: np.ndarray | None = None  # [256] float32 (corpora made before speakers.npy: None)
    audio: str | None = None  # the recording it was tokenised from


def load_corpus(folder: str | Path) -> tuple[dict, list[Utterance]]:
    folder = Path(folder)
    if not (folder / "corpus.json").is_file():
        raise VoxtokError(f"{folder}: not a finished LM corpus (no corpus.json; run `voxtok lm corpus`)")
    meta = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
    shards = []
    for name in meta["shards"]:
        with np.load(folder / name) as data:
            shards.append((data["codes"], data["latents"]))
    alignments = read_alignments(folder)
    embeddings = np.load(folder / "speakers.npy").astype(np.float32) if (folder / "speakers.npy").is_file() \
        else None
    utterances = []
    for i, line in enumerate((folder / "utterances.jsonl").read_text(encoding="utf-8").splitlines()):
        u = json.loads(line)
        codes, latents = shards[u["shard"]]
        span = slice(u["offset"], u["offset"] + u["frames"])
        utterances.append(Utterance(u["id"], u["split"], u["speaker"], u["text"], u["phones"],
                                    codes[span].T.astype(np.int64), latents[span].T.astype(np.float32),
                                    alignments.get(u["id"]), None if embeddings is None else embeddings[i],
                                    u.get("audio")))
    return meta, utterances
