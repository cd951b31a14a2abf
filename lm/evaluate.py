"""The speech LM judged by what a listener hears, in absolute terms (`voxtok lm eval`).

Held-out sentences: each held-out utterance of the corpus (a sentence never trained on, spoken by a voice seen in
training) is spoken by the LM with a prompt cut from the start of another, training, recording of the same voice,
through the same streaming path as `voxtok tts`. Unseen voices: the same sentences spoken in voices never heard in
training (e.g. the real dev speakers, ../shared/data/real:codec/splits/real_dev.txt), a prompt from the first 3 s
of one long recording per speaker.

Every generation is judged beside two other readings of the same text:
- the reference: the sentence's own recording (the synthetic engine's or the real speaker's reading that the
  corpus holds) - what the bars are measured against;
- the ground truth re-synthesised through the tokenizer (held-out only) - what the tokenizer alone loses.

Figures: pocketsphinx WER and hama PER (against hama's G2P of the text), Resemblyzer similarity to the prompt
recording beside the speaker's own (held-out: the reference recording's similarity to the prompt; unseen: the
rest of the prompt's recording), end of speech, duration within 30% of the reference, real-time factor and time
to first audio of the streamed generation (1 thread unless told).

Bars (issue #28): WER <= 1.5 x the reference's WER + 5 points; similarity >= the speaker's own - 0.15; end of
speech >= 95%; duration within +-30% >= 95%; >= 1x real time; first audio <= 300 ms.

    from voxtok.lm.evaluate import evaluate_lm
    report = evaluate_lm(lm, "data/lm_corpus", num=100, unseen="../shared/data/real:codec/splits/real_dev.txt")
    report["summary"], report["bars"], report["unseen"]["bars"]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from voxtok.errors import VoxtokError
from voxtok.lm.corpus import Source, Utterance, load_corpus
from voxtok.lm.generate import Sampling
from voxtok.lm.phonemes import symbols_to_ids
from voxtok.lm.tts import prompt_tokens, speak, voice_embedding

PROMPT_SECONDS = 3.0  # the prompt: the first 3 s of a recording (what the trainer draws at most)
MIN_JUDGED_SAMPLES = 8000  # half a second: shorter outputs are counted as failures, not recognised
UNSEEN_MIN_SECONDS = 6.0  # an unseen voice needs a recording long enough for a prompt and the speaker's own rest
BARS = {"wer_slope": 1.5, "wer_margin": 0.05, "sim_margin": 0.15, "ended": 0.95, "duration_within_30pct": 0.95,
        "x_realtime": 1.0, "first_audio_ms": 300.0}


def heldout_with_prompts(utterances: list[Utterance], num: int) -> list[tuple[Utterance, Utterance]]:
    """Up to `num` (held-out utterance, prompt utterance) pairs: the prompt another training utterance of the same
    speaker, chosen by index so that a run is reproducible."""
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utterances:
        if u.split == "train":
            by_speaker.setdefault(u.speaker, []).append(u)
    heldout = [u for u in utterances if u.split == "heldout" and u.phones and u.text and by_speaker.get(u.speaker)]
    return [(u, by_speaker[u.speaker][(7 * i) % len(by_speaker[u.speaker])]) for i, u in enumerate(heldout[:num])]


class _Judge:
    """The judges of one run and the per-sentence figures that do not depend on the LM (references, kept once)."""

    def __init__(self, judges, codec):
        self.judges, self.codec = judges, codec
        self.references: dict[str, dict] = {}

    @property
    def rate(self) -> int:
        return self.codec.config.sample_rate

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        return self.judges.speaker.embed(audio) if len(audio) >= MIN_JUDGED_SAMPLES else None

    def score(self, audio: np.ndarray, text: str, prompt_embedding: np.ndarray | None, name: str) -> dict:
        """PER, WER and similarity to the prompt of one reading; a too-short one scores as all errors."""
        from voxtok.eval.metrics import error_rate, normalise_words, phone_error_rate

        if len(audio) < MIN_JUDGED_SAMPLES:
            return {f"per_{name}": 1.0, f"wer_{name}": 1.0, f"sim_{name}": 0.0}
        reference_phones = self.judges.phones.text_phones(text)
        row = {f"per_{name}": phone_error_rate(reference_phones, self.judges.phones.recognise(audio)),
               f"wer_{name}": error_rate(normalise_words(text), normalise_words(self.judges.asr.transcribe(audio)))}
        if prompt_embedding is not None:
            row[f"sim_{name}"] = float(np.dot(prompt_embedding, self.judges.speaker.embed(audio)))
        return row

    def reference(self, u: Utterance) -> tuple[np.ndarray | None, dict]:
        """The sentence's own recording and its PER / WER (None, {} when the corpus does not name its audio)."""
        from voxtok.audio import load_audio

        if not u.audio or not Path(u.audio).is_file():
            return None, {}
        audio = load_audio(u.audio, self.rate)
        if u.id not in self.references:
            self.references[u.id] = self.score(audio, u.text, None, "ref")
        return audio, self.references[u.id]


def evaluate_lm(lm, corpus: str | Path, num: int = 100, tokenizer=None, sampling: Sampling | None = None,
                unseen: str | None = None, unseen_voices: int = 5, unseen_sentences: int = 20, judges=None,
                progress: bool = True) -> dict:
    """Rows per generation, their summary and the bars, for the held-out sentences and (with `unseen`) for
    unseen voices (see the module docstring)."""
    from voxtok.eval.models import Judges
    from voxtok.lm.tts import tokenizer_for

    meta, utterances = load_corpus(corpus)
    if meta.get("tokenizer_config_hash") != lm.config.tokenizer_config_hash:
        raise VoxtokError(f"{corpus}: tokenised with {meta.get('tokenizer')} config "
                          f"{meta.get('tokenizer_config_hash')}, but the LM reads {lm.config.tokenizer} config "
                          f"{lm.config.tokenizer_config_hash}")
    corpus_tokens = meta.get("tokenizer_tokens_hash", "")
    if corpus_tokens and lm.config.tokenizer_tokens_hash and corpus_tokens != lm.config.tokenizer_tokens_hash:
        raise VoxtokError(f"{corpus}: tokenised with other weights of {meta.get('tokenizer')} "
                          f"({corpus_tokens}) than the LM read ({lm.config.tokenizer_tokens_hash})")
    # Checked before minutes of generation, not after.
    unseen_source = Source.parse(unseen, "heldout") if unseen is not None else None
    pairs = heldout_with_prompts(utterances, num)
    if not pairs:
        raise VoxtokError(f"{corpus}: no held-out utterances with a transcript and a voice seen in training")
    voices = _unseen_voices(unseen_source, unseen_voices) if unseen_source is not None else []
    codec = tokenizer or tokenizer_for(lm)
    judge = _Judge(judges or Judges(), codec)
    base = sampling or Sampling(temperature=lm.config.temperature, top_k=50)
    discrete = lm.config.kind == "discrete"
    rows = []
    for i, (u, prompt_u) in enumerate(pairs):
        voice = _prompt_audio(judge, prompt_u)
        row = _generate_and_judge(lm, codec, judge, u, voice, base, i)
        truth = _decode(codec, torch.from_numpy(u.codes if discrete else u.latents), discrete)
        row.update(judge.score(truth, u.text, row["_prompt_embedding"], "truth"))
        reference, ref_scores = judge.reference(u)
        row.update(ref_scores)
        if reference is not None:
            row["sim_ref"] = _similarity(judge, reference, row["_prompt_embedding"])
        row.pop("_prompt_embedding")
        row.update(id=u.id, speaker=u.speaker, truth_frames=int(u.codes.shape[1]))
        rows.append(row)
        if progress:
            print(f"\r{i + 1}/{len(pairs)} held-out sentences", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    summary = summarise(rows)
    report = {"model": lm.config.name, "kind": lm.config.kind, "corpus": str(corpus),
              "sampling": {"temperature": base.temperature, "top_k": base.top_k, "top_p": base.top_p,
                           "flow_steps": base.flow_steps},
              "summary": summary, "bars": bars(summary), "rows": rows}
    if voices:
        report["unseen"] = _speak_in_unseen_voices(lm, codec, judge, pairs, voices, unseen_sentences, base,
                                                   unseen_source, progress)
    return report


def _prompt_audio(judge: _Judge, prompt_u: Utterance) -> np.ndarray:
    """The prompt as a user gives it: the first PROMPT_SECONDS of the recording (its decoded tokens when the
    corpus does not name its audio)."""
    from voxtok.audio import load_audio

    samples = int(PROMPT_SECONDS * judge.rate)
    if prompt_u.audio and Path(prompt_u.audio).is_file():
        return load_audio(prompt_u.audio, judge.rate)[:samples]
    frames = int(PROMPT_SECONDS * judge.codec.config.frame_rate)
    return _decode(judge.codec, torch.from_numpy(prompt_u.codes[:, :frames]), True)


def _generate_and_judge(lm, codec, judge: _Judge, u: Utterance, voice: np.ndarray, base: Sampling, seed: int
                        ) -> dict:
    """Speak u's phonemes in the voice of `voice` (prompt audio) and score it against u's text."""
    sampling = Sampling(temperature=base.temperature, top_k=base.top_k, top_p=base.top_p, seed=seed,
                        max_frames=2 * u.codes.shape[1] + 10, flow_steps=base.flow_steps)
    ids = symbols_to_ids(u.phones, lm.config.phone_symbols)
    audio, stats = speak(lm, ids, prompt_tokens(lm, codec, voice), sampling, codec,
                         speaker=voice_embedding(lm, voice))
    prompt_embedding = judge.embed(voice)
    row = {"frames": stats["frames"], "ended": bool(stats["ended"]), "x_realtime": stats["x_realtime"],
           "first_audio_ms": stats["first_audio_ms"], "duration_ratio": stats["frames"] / u.codes.shape[1],
           "_prompt_embedding": prompt_embedding}
    row.update(judge.score(audio, u.text, prompt_embedding, "gen"))
    return row


def _similarity(judge: _Judge, audio: np.ndarray, prompt_embedding: np.ndarray | None) -> float | None:
    embedding = judge.embed(audio)
    if embedding is None or prompt_embedding is None:
        return None
    return float(np.dot(prompt_embedding, embedding))


@torch.inference_mode()
def _decode(codec, tokens: torch.Tensor, discrete: bool) -> np.ndarray:
    if tokens.shape[-1] == 0:
        return np.zeros(0, dtype=np.float32)
    audio = codec.decode(tokens[None]) if discrete else codec.decode_latents(tokens[None].double())
    return audio[0, 0].float().numpy()


def _unseen_voices(source: Source, count: int) -> list:
    """`count` speakers of the manifest folder, each with one single-speaker recording of at least
    UNSEEN_MIN_SECONDS (a prompt from its start, the speaker's own similarity from the rest), spread over the
    folder's order."""
    from voxtok.dataset import read_manifest

    seen, entries = set(), []
    for entry in read_manifest(source.root, source.split_file):
        tags = entry.get("tags") or []
        if entry.get("duration", 0) >= UNSEEN_MIN_SECONDS and entry.get("speaker") not in seen \
                and "multi-speaker" not in tags and "orig-8kHz" not in tags:
            seen.add(entry.get("speaker"))
            entries.append(entry)
    if not entries:
        raise VoxtokError(f"{source.root}: no single-speaker recordings of at least {UNSEEN_MIN_SECONDS:g} s for "
                          "unseen-voice prompts")
    return entries[:: max(1, len(entries) // count)][:count]


def _speak_in_unseen_voices(lm, codec, judge: _Judge, pairs, voices: list, sentences: int, base: Sampling,
                            source: Source, progress: bool) -> dict:
    from voxtok.audio import load_audio

    rows = []
    total = len(voices) * min(sentences, len(pairs))
    for v, entry in enumerate(voices):
        recording = load_audio(source.root / entry["path"], judge.rate)
        cut = int(PROMPT_SECONDS * judge.rate)
        voice, own = recording[:cut], recording[cut:]
        for j in range(min(sentences, len(pairs))):
            u = pairs[(v * sentences + j) % len(pairs)][0]
            row = _generate_and_judge(lm, codec, judge, u, voice, base, 10_000 + v * sentences + j)
            row["sim_ref"] = _similarity(judge, own, row.pop("_prompt_embedding"))
            row.update(judge.reference(u)[1])
            row.update(id=u.id, prompt=entry["path"], prompt_speaker=entry.get("speaker"))
            rows.append(row)
            if progress:
                print(f"\r{len(rows)}/{total} in unseen voices", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    summary = summarise(rows)
    prompts = f"{source.root}" + (f":{source.split_file}" if source.split_file else "")
    return {"prompts": prompts, "summary": summary, "bars": bars(summary), "rows": rows}


def summarise(rows: list[dict]) -> dict:
    """Means over the generations (error rates as means of per-sentence rates)."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(float(np.mean(values)), 4) if values else None

    summary = {"generations": len(rows), "ended": mean("ended"), "duration_ratio": mean("duration_ratio"),
               "duration_within_30pct": round(float(np.mean([abs(r["duration_ratio"] - 1) <= 0.3 for r in rows])), 4)}
    for key in ("wer_gen", "wer_ref", "wer_truth", "per_gen", "per_ref", "per_truth", "sim_gen", "sim_ref",
                "sim_truth"):
        summary[key] = mean(key)
    if summary["wer_ref"] is not None:
        summary["wer_bar"] = round(BARS["wer_slope"] * summary["wer_ref"] + BARS["wer_margin"], 4)
    if summary["sim_ref"] is not None:
        summary["sim_bar"] = round(summary["sim_ref"] - BARS["sim_margin"], 4)
    by_engine: dict[str, list[dict]] = {}
    for r in rows:
        by_engine.setdefault(r.get("speaker", r.get("id", "")).partition(":")[0] or "other", []).append(r)
    summary["wer_by_engine"] = {
        engine: {"generations": len(rs), "wer_gen": round(float(np.mean([r["wer_gen"] for r in rs])), 4),
                 "wer_ref": round(float(np.mean([r["wer_ref"] for r in rs])), 4) if all("wer_ref" in r for r in rs)
                 else None}
        for engine, rs in sorted(by_engine.items())}
    speeds = [r["x_realtime"] for r in rows if r.get("x_realtime")]
    firsts = [r["first_audio_ms"] for r in rows if r.get("first_audio_ms") is not None]
    summary["x_realtime_median"] = round(float(np.median(speeds)), 2) if speeds else None
    summary["first_audio_ms_median"] = round(float(np.median(firsts)), 1) if firsts else None
    return summary


def bars(summary: dict) -> dict:
    """The issue's absolute bars on a summary: each with its threshold, the measured value and whether it is met
    (None where the threshold cannot be formed, e.g. no reference recordings)."""
    def check(value, threshold, better_low: bool) -> dict:
        met = None if value is None or threshold is None else bool(value <= threshold if better_low
                                                                   else value >= threshold)
        return {"value": value, "threshold": threshold, "met": met}

    return {"wer": check(summary.get("wer_gen"), summary.get("wer_bar"), True),
            "similarity": check(summary.get("sim_gen"), summary.get("sim_bar"), False),
            "ended": check(summary.get("ended"), BARS["ended"], False),
            "duration_within_30pct": check(summary.get("duration_within_30pct"), BARS["duration_within_30pct"], False),
            "x_realtime_median": check(summary.get("x_realtime_median"), BARS["x_realtime"], False),
            "first_audio_ms_median": check(summary.get("first_audio_ms_median"), BARS["first_audio_ms"], True)}


def report_markdown(reports: list[dict]) -> str:
    """Side-by-side Markdown tables of one or more reports (e.g. the discrete and the continuous LM)."""
    cols = [f"{r['model']} ({r['kind']})" for r in reports]
    rows = [("generations", "generations"), ("WER generated", "wer_gen"), ("WER reference reading", "wer_ref"),
            ("WER bar (1.5 x reference + 5 points)", "wer_bar"), ("WER re-synthesised ground truth", "wer_truth"),
            ("PER generated", "per_gen"), ("PER reference reading", "per_ref"),
            ("PER re-synthesised ground truth", "per_truth"), ("similarity to prompt, generated", "sim_gen"),
            ("similarity to prompt, speaker's own recording", "sim_ref"), ("similarity bar (own - 0.15)", "sim_bar"),
            ("end of speech reached (bar 0.95)", "ended"), ("duration / reference", "duration_ratio"),
            ("duration within ±30% (bar 0.95)", "duration_within_30pct"),
            ("× real time, median (bar ≥ 1)", "x_realtime_median"),
            ("first audio ms, median (bar ≤ 300)", "first_audio_ms_median")]

    def table(summaries: list[dict]) -> list[str]:
        lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for label, key in rows:
            if all(s.get(key) is None for s in summaries):
                continue
            lines.append(f"| {label} | " + " | ".join(_cell(s.get(key)) for s in summaries) + " |")
        return lines

    lines = ["Held-out sentences, voices seen in training:", ""] + table([r["summary"] for r in reports])
    engines = sorted({e for r in reports for e in r["summary"].get("wer_by_engine", {})})
    if engines:
        lines += ["", "WER by engine of the voice (generated / reference reading):", "",
                  "| engine | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for engine in engines:
            cells = []
            for r in reports:
                e = r["summary"].get("wer_by_engine", {}).get(engine)
                cells.append(f"{e['wer_gen']:.3f} / {_cell(e['wer_ref'])} ({e['generations']})" if e else "–")
            lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    if any("unseen" in r for r in reports):
        lines += ["", "Unseen voices (the same sentences; reference: the sentence's own recording):", ""]
        lines += table([r.get("unseen", {}).get("summary", {}) for r in reports])
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(report: dict, path: str | Path) -> None:
    from voxtok.audio import atomic_write

    text = json.dumps(report, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
