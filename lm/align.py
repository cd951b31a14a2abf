"""Where each phoneme of an LM corpus sits in its speech, for the phoneme-synchronous LM (SpeechLMConfig.aligned).

    voxtok lm align data/lm_corpus [--recogniser DIR]

voxtok's phone recogniser (codec/pretrained/voxtok-phone-ctc) force-aligns the sounding phonemes of each utterance
with text (CTC Viterbi at 20 ms; voxtok.lm.phonemes.sounding: boundaries and stress marks take no time) and the spans go
to OUT/alignments.jsonl, one line per aligned utterance: id, the positions of the sounding phonemes in its phoneme
list, and (start, end) in seconds for each. The file is written through a temporary name; rerunning replaces it.

The LM reads an alignment as one *state* per speech frame (frame_states), a monotonic walk over the utterance:

    state 2k      before sounding phoneme k (a pause or the silence ahead of it)
    state 2k + 1  inside sounding phoneme k
    state 2M      after the last of the M sounding phonemes

so a frame is told which phoneme it is speaking and where in the text it is, and generation moves the state on
with the LM's own advance head (voxtok.lm.model.SpeechLM.advance_head) instead of asking attention to find its place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm
from voxtok.errors import VoxtokError

ALIGNMENTS = "alignments.jsonl"


def frame_states(spans: list[tuple[float, float]], frames: int, frame_rate: float) -> np.ndarray:
    """The state (module docstring) of each of `frames` speech frames, judged at the frame's centre."""
    centres = (np.arange(frames) + 0.5) / frame_rate
    starts = np.asarray([s for s, _ in spans], dtype=np.float64)
    ends = np.asarray([e for _, e in spans], dtype=np.float64)
    finished = np.searchsorted(ends, centres, side="right")  # phonemes whose end is at or before the centre
    inside = (finished < len(spans)) & (starts[np.minimum(finished, len(spans) - 1)] <= centres)
    return (2 * finished + inside).astype(np.int64)


def align_corpus(folder: str | Path, recogniser: str | Path | None = None, progress: bool = True) -> dict:
    """Align every utterance with text in a finished LM corpus; returns counts for the summary line."""
    from voxtok.audio import atomic_write, load_audio
    from voxtok.lm.phonemes import sounding
    from voxtok.phone_teacher import PhoneRecogniser

    folder = Path(folder)
    if not (folder / "corpus.json").is_file():
        raise VoxtokError(f"{folder}: not a finished LM corpus (no corpus.json; run `voxtok lm corpus`)")
    if recogniser is None:
        from voxtok.phone_teacher import DEFAULT_FOLDER as recogniser
    model = PhoneRecogniser.from_pretrained(recogniser)
    meta = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
    roots = {Path(s["root"]).name: Path(s["root"]) for s in meta["sources"]}
    rows = [json.loads(line) for line in (folder / "utterances.jsonl").read_text(encoding="utf-8").splitlines()]
    lines, failed, seconds = [], 0, 0.0
    for u in tqdm(rows, desc=f"aligning {folder}", disable=not progress, unit="utt"):
        if not u.get("phones"):
            continue
        root_name, _, rel = u["id"].partition("/")
        if root_name not in roots:
            raise VoxtokError(f"{u['id']}: its source folder is not among the corpus's sources")
        positions = sounding(u["phones"])
        try:
            samples = load_audio(roots[root_name] / rel, 16000)
            spans = model.align(samples, [u["phones"][i] for i in positions])
        except VoxtokError as exc:  # an unknown phone, a clip too short to spell its text, an unreadable file
            tqdm.write(f"not aligned: {u['id']}: {exc}")
            failed += 1
            continue
        seconds += len(samples) / 16000
        lines.append(json.dumps({"id": u["id"], "sounding": positions,
                                 "spans": [[round(a, 3), round(b, 3)] for _, a, b in spans]}) + "\n")
    if not lines:
        raise VoxtokError(f"{folder}: no utterance could be aligned")
    text = "".join(lines)
    atomic_write(folder / ALIGNMENTS, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return {"aligned": len(lines), "failed": failed, "hours": round(seconds / 3600, 3)}


def read_alignments(folder: str | Path) -> dict[str, tuple[list[int], list[tuple[float, float]]]]:
    """id -> (sounding positions, spans in seconds); empty when the corpus was never aligned."""
    path = Path(folder) / ALIGNMENTS
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out[row["id"]] = (row["sounding"], [tuple(s) for s in row["spans"]])
    return out
