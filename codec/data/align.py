"""Phone and word labels for speech whose text is known: forced alignment with pocketsphinx (its bundled en-us
acoustic model and dictionary), ARPAbet phones and words at 10 ms, cached per file as small arrays.

The labels feed semantic distillation (a phone head on the first codebook) and contextual distillation (word
spans for a text LM's states), and the speech LM's duration checks. pocketsphinx aligns in two passes
(`set_align_text`, decode, `set_alignment`, decode) at about 0.15x real time on one core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from voxtok.errors import VoxtokError

FRAME_MS = 10
# The en-us model's 39 ARPAbet phones (stress dropped) and silence; index 0 is silence, the class a frame gets
# when no phone covers it (pauses, noise, before the first word).
PHONES = ("SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
          "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W",
          "Y", "Z", "ZH")
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
SILENCE_WORDS = {"<sil>", "<s>", "</s>", "[NOISE]", "(NULL)"}


@dataclass
class Alignment:
    phones: np.ndarray  # [frames] int8 index into PHONES, one per 10 ms
    words: list[tuple[str, int, int]]  # (word, first frame, end frame exclusive), silences left out

    @property
    def frames(self) -> int:
        return len(self.phones)


def frame_centres(frames: int, frame_ms: float) -> np.ndarray:
    """Where each code frame's centre falls, in alignment frames (10 ms): the one rule for labelling a code frame
    from an alignment (its phone, or the word it is inside)."""
    return (np.arange(frames) + 0.5) * frame_ms / FRAME_MS


def code_frame_labels(phones_10ms: np.ndarray, frames: int, frame_ms: float) -> np.ndarray:
    """10 ms phone labels -> one per code frame, the label at the frame's centre (-1 past the alignment's end)."""
    centres = frame_centres(frames, frame_ms).astype(int)
    out = np.full(frames, -1, dtype=np.int64)
    inside = centres < len(phones_10ms)
    out[inside] = phones_10ms[centres[inside]]
    return out


def normalise_text(text: str) -> str:
    """Lower-case words of letters and apostrophes: what the pocketsphinx dictionary spells."""
    return " ".join(re.findall(r"[a-z']+", text.lower().replace("-", " ")))


def align(samples: np.ndarray, text: str, sample_rate: int = 16000) -> Alignment:
    """Force-align 16 kHz mono audio to its text. Raises VoxtokError when the text has words the dictionary
    lacks or the decoder finds no path through them."""
    from pocketsphinx import Decoder

    if sample_rate != 16000:
        raise VoxtokError(f"forced alignment takes 16 kHz audio, not {sample_rate} Hz")
    words = normalise_text(text)
    if not words:
        raise VoxtokError("nothing to align: the text has no words")
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    missing = [w for w in words.split() if decoder.lookup_word(w) is None]
    if missing:
        raise VoxtokError(f"words not in the pocketsphinx dictionary: {' '.join(sorted(set(missing))[:8])}")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    try:
        decoder.set_align_text(words)
        for _ in range(2):  # the first pass finds the words, the second their phones and states
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            if _ == 0:
                decoder.set_alignment()
        alignment = decoder.get_alignment()
    except RuntimeError as exc:
        raise VoxtokError(f"forced alignment failed: {exc}") from None
    if alignment is None:
        raise VoxtokError("forced alignment found no path through the text")
    frames = int(np.ceil(len(samples) / (16000 * FRAME_MS / 1000)))
    phones = np.zeros(frames, dtype=np.int8)
    spans = []
    # One pass over the alignment (its entries are views into the decoder's memory: read them as they come).
    for word in alignment:
        name, start, duration = word.name, word.start, word.duration
        if name not in SILENCE_WORDS:
            spans.append((re.sub(r"\(\d+\)$", "", name), start, min(frames, start + duration)))
        for phone in word:
            label = PHONE_INDEX.get(phone.name.rstrip("012"), 0)
            phones[phone.start:min(frames, phone.start + phone.duration)] = label
    if not spans:
        raise VoxtokError("forced alignment placed no words")
    return Alignment(phones, spans)


# ---- the cache ---------------------------------------------------------------------------------------------
CACHE_VERSION = 1


def cache_file(cache_dir, rel_path: str) -> Path:
    return Path(cache_dir) / f"v{CACHE_VERSION}-pocketsphinx-{FRAME_MS}ms" / (rel_path + ".npz")


def cached_alignment(audio_path, rel_path: str, text: str, cache_dir, samples: np.ndarray | None = None
                     ) -> Alignment:
    """align() for one file, read from the cache when present (and made for the same text), else computed and
    stored atomically. A failure is cached too (its error, for the same text), so a corpus with files that do not
    align costs their decoding once, not at every training start."""
    import json

    from voxtok.audio import atomic_savez, atomic_write, load_audio

    path = cache_file(cache_dir, rel_path)
    failed = path.with_name(path.name[: -len(".npz")] + ".failed.json")
    key = normalise_text(text)
    if path.is_file():
        with np.load(path) as data:
            if str(data["text"]) == key:
                words = [(str(w), int(s), int(e)) for w, s, e in zip(data["words"], data["starts"], data["ends"])]
                return Alignment(data["phones"], words)
    if failed.is_file():
        record = json.loads(failed.read_text(encoding="utf-8"))
        if record.get("text") == key:
            raise VoxtokError(record["error"])
    if samples is None:
        samples = load_audio(audio_path, 16000)
    try:
        result = align(samples, text)
    except VoxtokError as exc:
        line = json.dumps({"text": key, "error": str(exc)}, ensure_ascii=False)
        atomic_write(failed, lambda tmp: Path(tmp).write_text(line, encoding="utf-8"))
        raise
    atomic_savez(path, phones=result.phones, words=np.array([w for w, _, _ in result.words]),
                 starts=np.array([s for _, s, _ in result.words], dtype=np.int32),
                 ends=np.array([e for _, _, e in result.words], dtype=np.int32), text=np.array(key))
    return result


def main(argv: list[str] | None = None) -> None:
    """python -m voxtok.data.align ROOT --split train --cache data/cache/align: align every file with text
    (`--synth`: every file of a synthetic folder, as a recipe's synth_dirs reads it)."""
    import argparse
    import time

    from tqdm import tqdm
    from voxtok.data import SYNTH_HELP, cache_entries

    parser = argparse.ArgumentParser(prog="python -m voxtok.data.align")
    parser.add_argument("root")
    parser.add_argument("--split", default="train")
    parser.add_argument("--cache", default="data/cache/align")
    parser.add_argument("--synth", action="store_true", help=SYNTH_HELP)
    args = parser.parse_args(argv)
    root = Path(args.root)
    prefix, entries = cache_entries(root, args.split, args.synth)
    entries = [e for e in entries if e.text]
    started, failed, seconds = time.time(), [], 0.0
    for entry in tqdm(entries, unit="file"):
        try:
            result = cached_alignment(root / entry.path, prefix + entry.path, entry.text, args.cache)
            seconds += result.frames * FRAME_MS / 1000
        except VoxtokError as exc:
            failed.append(f"{entry.path}: {exc}")
    print(f"{len(entries) - len(failed)} of {len(entries)} files with text aligned ({seconds / 60:.1f} min of "
          f"speech) in {time.time() - started:.0f} s -> {args.cache}")
    for line in failed[:20]:
        print("  failed:", line)


if __name__ == "__main__":
    main()
