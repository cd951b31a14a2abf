"""The speech LM against issue #11's bars, on the held-out sentences of an LM corpus (`voxtok lm eval`).

For each held-out utterance (a sentence never trained on, spoken by a voice seen in training) the LM speaks its
phonemes with a prompt cut from another, training, utterance of the same voice, through the same streaming path
as `voxtok tts`. The generated speech is judged beside the ground truth re-synthesised through the tokenizer:

- end of speech reached, duration against the ground truth;
- hama PER (against hama's G2P of the text) and pocketsphinx WER, both for the generation and for the ground truth,
  and their ratio (the bar: generation ≤ 1.5× ground truth);
- Resemblyzer similarity to the prompt (as decoded by the tokenizer) of the generation and of the ground truth;
- speed: real-time factor and time to first audio of the streamed generation (1 thread unless told).

With `unseen=` a manifest folder (DIR or DIR:SPLIT_FILE) of recordings by voices the LM never heard (e.g. the real
dev speakers: ../shared/data/real:codec/splits/real_dev.txt), the same sentences are also spoken in those voices:
PER, WER and similarity to the prompt are reported there without a bar.

    from lm.evaluate import evaluate_lm
    report = evaluate_lm(lm, "data/lm_corpus", num=100)
    report["summary"]["per_ratio"], report["bars"]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from codec.errors import VoxtokError
from lm.corpus import Source, Utterance, load_corpus
from lm.generate import Sampling
from lm.phonemes import symbols_to_ids
from lm.tts import prompt_tokens, speak

PROMPT_FRAMES = 38  # ~3 s at 12.5 Hz: the prompt length the trainer draws at most
MIN_JUDGED_SAMPLES = 8000  # half a second: shorter outputs are counted as failures, not recognised
BARS = {"per_ratio": 1.5, "wer_ratio": 1.5, "sim_gap": 0.1, "ended": 0.95, "duration_within_30pct": 0.95}


def heldout_with_prompts(utterances: list[Utterance], num: int) -> list[tuple[Utterance, Utterance]]:
    """Up to `num` (held-out utterance, prompt utterance) pairs: the prompt another training utterance of the same
    speaker, chosen by index so that a run is reproducible."""
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utterances:
        if u.split == "train":
            by_speaker.setdefault(u.speaker, []).append(u)
    heldout = [u for u in utterances if u.split == "heldout" and u.phones and u.text and by_speaker.get(u.speaker)]
    return [(u, by_speaker[u.speaker][(7 * i) % len(by_speaker[u.speaker])]) for i, u in enumerate(heldout[:num])]


def evaluate_lm(lm, corpus: str | Path, num: int = 100, tokenizer=None, sampling: Sampling | None = None,
                unseen: str | None = None, unseen_num: int = 20, judges=None,
                progress: bool = True) -> dict:
    """Rows per generation, their summary and the bars (see the module docstring)."""
    from codec.eval.models import Judges
    from lm.tts import tokenizer_for

    meta, utterances = load_corpus(corpus)
    if meta.get("tokenizer_config_hash") != lm.config.tokenizer_config_hash:
        raise VoxtokError(f"{corpus}: tokenised with {meta.get('tokenizer')} config "
                          f"{meta.get('tokenizer_config_hash')}, but the LM reads {lm.config.tokenizer} config "
                          f"{lm.config.tokenizer_config_hash}")
    corpus_weights = meta.get("tokenizer_weights_hash", "")
    if corpus_weights and lm.config.tokenizer_weights_hash and corpus_weights != lm.config.tokenizer_weights_hash:
        raise VoxtokError(f"{corpus}: tokenised with other weights of {meta.get('tokenizer')} "
                          f"({corpus_weights}) than the LM read ({lm.config.tokenizer_weights_hash})")
    # Checked before minutes of generation, not after.
    unseen_source = Source.parse(unseen, "heldout") if unseen is not None else None
    pairs = heldout_with_prompts(utterances, num)
    if not pairs:
        raise VoxtokError(f"{corpus}: no held-out utterances with a transcript and a voice seen in training")
    codec = tokenizer or tokenizer_for(lm)
    judges = judges or Judges()
    base = sampling or Sampling(temperature=0.8, top_k=50)
    discrete = lm.config.kind == "discrete"
    rows = []
    for i, (u, prompt_u) in enumerate(pairs):
        tokens = (prompt_u.codes if discrete else prompt_u.latents)[:, :PROMPT_FRAMES]
        truth_tokens = u.codes if discrete else u.latents
        row = _generate_and_judge(lm, codec, judges, u.text, u.phones, torch.from_numpy(tokens), base, i,
                                  max_frames=2 * truth_tokens.shape[1] + 10)
        row.update(id=u.id, speaker=u.speaker, truth_frames=int(truth_tokens.shape[1]))
        row["duration_ratio"] = row["frames"] / truth_tokens.shape[1]
        truth = _decode(codec, torch.from_numpy(truth_tokens), discrete)
        row.update(_judge(judges, truth, u.text, row.pop("_prompt_embedding"), "truth"))
        rows.append(row)
        if progress:
            print(f"\r{i + 1}/{len(pairs)} generated", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    report = {"model": lm.config.name, "kind": lm.config.kind, "corpus": str(corpus),
              "sampling": {"temperature": base.temperature, "top_k": base.top_k, "top_p": base.top_p,
                           "flow_steps": base.flow_steps},
              "summary": summarise(rows), "rows": rows}
    report["bars"] = bars(report["summary"])
    if unseen is not None:
        report["unseen"] = _unseen_voices(lm, codec, judges, pairs, unseen_source, unseen_num, base)
    return report


def _generate_and_judge(lm, codec, judges, text: str, phones: list[str], prompt: torch.Tensor, base: Sampling,
                        seed: int, max_frames: int) -> dict:
    discrete = lm.config.kind == "discrete"
    sampling = Sampling(temperature=base.temperature, top_k=base.top_k, top_p=base.top_p, seed=seed,
                        max_frames=max_frames, flow_steps=base.flow_steps)
    ids = symbols_to_ids(phones, lm.config.phone_symbols)
    audio, stats = speak(lm, ids, prompt, sampling, codec)
    prompt_audio = _decode(codec, prompt, discrete)
    prompt_embedding = judges.speaker.embed(prompt_audio) if len(prompt_audio) >= MIN_JUDGED_SAMPLES else None
    row = {"frames": stats["frames"], "ended": bool(stats["ended"]), "x_realtime": stats["x_realtime"],
           "first_audio_ms": stats["first_audio_ms"], "_prompt_embedding": prompt_embedding}
    row.update(_judge(judges, audio, text, prompt_embedding, "gen"))
    return row


def _judge(judges, audio: np.ndarray, text: str, prompt_embedding, name: str) -> dict:
    """PER, WER and similarity to the prompt of one output; a too-short output scores as all errors."""
    from codec.eval.metrics import error_rate, normalise_words, phone_error_rate

    reference_phones = judges.phones.text_phones(text)
    if len(audio) < MIN_JUDGED_SAMPLES:
        return {f"per_{name}": 1.0, f"wer_{name}": 1.0, f"sim_{name}": 0.0}
    row = {f"per_{name}": phone_error_rate(reference_phones, judges.phones.recognise(audio)),
           f"wer_{name}": error_rate(normalise_words(text), normalise_words(judges.asr.transcribe(audio)))}
    if prompt_embedding is not None:
        row[f"sim_{name}"] = float(np.dot(prompt_embedding, judges.speaker.embed(audio)))
    return row


@torch.inference_mode()
def _decode(codec, tokens: torch.Tensor, discrete: bool) -> np.ndarray:
    if tokens.shape[-1] == 0:
        return np.zeros(0, dtype=np.float32)
    audio = codec.decode(tokens[None]) if discrete else codec.decode_latents(tokens[None].double())
    return audio[0, 0].float().numpy()


def summarise(rows: list[dict]) -> dict:
    """Means over the generations (ratios of means for PER and WER, as corpus error rates are)."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(float(np.mean(values)), 4) if values else None

    summary = {"generations": len(rows), "ended": mean("ended"),
               "duration_ratio": mean("duration_ratio"),
               "duration_within_30pct": round(float(np.mean([abs(r["duration_ratio"] - 1) <= 0.3 for r in rows])), 4)}
    for key in ("per_gen", "per_truth", "wer_gen", "wer_truth", "sim_gen", "sim_truth"):
        summary[key] = mean(key)
    for metric in ("per", "wer"):
        gen, truth = summary[f"{metric}_gen"], summary[f"{metric}_truth"]
        summary[f"{metric}_ratio"] = round(gen / truth, 3) if gen is not None and truth else None
    if summary["sim_gen"] is not None and summary["sim_truth"] is not None:
        summary["sim_gap"] = round(summary["sim_truth"] - summary["sim_gen"], 4)
    by_engine: dict[str, list[dict]] = {}
    for r in rows:
        by_engine.setdefault(r.get("speaker", "").partition(":")[0] or "other", []).append(r)
    summary["wer_by_engine"] = {engine: {"generations": len(rs),
                                         "wer_gen": round(float(np.mean([r["wer_gen"] for r in rs])), 4),
                                         "wer_truth": round(float(np.mean([r["wer_truth"] for r in rs])), 4)}
                                for engine, rs in sorted(by_engine.items())}
    speeds = [r["x_realtime"] for r in rows if r.get("x_realtime")]
    firsts = [r["first_audio_ms"] for r in rows if r.get("first_audio_ms") is not None]
    summary["x_realtime_median"] = round(float(np.median(speeds)), 2) if speeds else None
    summary["first_audio_ms_median"] = round(float(np.median(firsts)), 1) if firsts else None
    return summary


def bars(summary: dict) -> dict:
    """Issue #11's bars on this summary: each with its threshold, the measured value and whether it is met."""
    checks = {
        "per_ratio": (summary.get("per_ratio"), lambda v: v <= BARS["per_ratio"]),
        "wer_ratio": (summary.get("wer_ratio"), lambda v: v <= BARS["wer_ratio"]),
        "sim_gap": (summary.get("sim_gap"), lambda v: v <= BARS["sim_gap"]),
        "ended": (summary.get("ended"), lambda v: v >= BARS["ended"]),
        "duration_within_30pct": (summary.get("duration_within_30pct"),
                                  lambda v: v >= BARS["duration_within_30pct"]),
        "x_realtime_median": (summary.get("x_realtime_median"), lambda v: v >= 1.0),
    }
    return {name: {"value": value, "met": None if value is None else bool(test(value))}
            for name, (value, test) in checks.items()}


def _unseen_voices(lm, codec, judges, pairs, source: Source, num: int, base: Sampling) -> dict:
    """The held-out sentences spoken in voices never heard in training (no ground truth there): one prompt (its
    first 3 s) per speaker of the manifest folder `source`."""
    from codec.audio import load_audio
    from codec.dataset import read_manifest

    speakers: set[str] = set()
    entries = []
    for entry in read_manifest(source.root, source.split_file):
        if entry.get("duration", 0) >= 3.0 and entry.get("speaker") not in speakers:
            speakers.add(entry.get("speaker"))
            entries.append(entry)
    entries = entries[:num]
    if not entries:
        raise VoxtokError(f"{source.root}: no recordings of at least 3 s for unseen-voice prompts")
    rows = []
    for i, entry in enumerate(entries):
        u = pairs[i % len(pairs)][0]
        voice = load_audio(source.root / entry["path"], codec.config.sample_rate)[: 3 * codec.config.sample_rate]
        prompt = prompt_tokens(lm, codec, voice)
        row = _generate_and_judge(lm, codec, judges, u.text, u.phones, prompt, base, 10_000 + i,
                                  max_frames=2 * u.codes.shape[1] + 10)
        row.pop("_prompt_embedding")
        row.update(id=u.id, prompt=entry["path"], prompt_speaker=entry.get("speaker"))
        rows.append(row)
    summary = {"generations": len(rows)}
    for key in ("ended", "per_gen", "wer_gen", "sim_gen"):
        values = [r[key] for r in rows if r.get(key) is not None]
        summary[key] = round(float(np.mean(values)), 4) if values else None
    return {"prompts": f"{source.root}" + (f":{source.split_file}" if source.split_file else ""),
            "summary": summary, "rows": rows}


def report_markdown(reports: list[dict]) -> str:
    """Side-by-side Markdown tables of one or more reports (e.g. the discrete and the continuous LM)."""
    cols = [f"{r['model']} ({r['kind']})" for r in reports]
    rows = [("generations", "generations"), ("end of speech reached", "ended"),
            ("duration / ground truth", "duration_ratio"), ("duration within ±30%", "duration_within_30pct"),
            ("PER generated", "per_gen"), ("PER ground truth (re-synthesised)", "per_truth"),
            ("PER ratio (bar ≤ 1.5)", "per_ratio"), ("WER generated", "wer_gen"),
            ("WER ground truth", "wer_truth"), ("WER ratio (bar ≤ 1.5)", "wer_ratio"),
            ("similarity to prompt, generated", "sim_gen"), ("similarity, ground truth", "sim_truth"),
            ("similarity gap (bar ≤ 0.1)", "sim_gap"), ("× real time, median (bar ≥ 1)", "x_realtime_median"),
            ("first audio ms, median", "first_audio_ms_median")]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(r["summary"].get(key)) for r in reports) + " |")
    engines = sorted({e for r in reports for e in r["summary"].get("wer_by_engine", {})})
    if engines:
        lines += ["", "WER by engine of the voice (generated / ground truth):", "",
                  "| engine | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for engine in engines:
            cells = []
            for r in reports:
                e = r["summary"].get("wer_by_engine", {}).get(engine)
                cells.append(f"{e['wer_gen']:.3f} / {e['wer_truth']:.3f} ({e['generations']})" if e else "–")
            lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    if any("unseen" in r for r in reports):
        lines += ["", "Unseen voices (no ground truth):", "", "| | " + " | ".join(cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for label, key in (("generations", "generations"), ("end of speech reached", "ended"),
                           ("PER", "per_gen"), ("WER", "wer_gen"), ("similarity to prompt", "sim_gen")):
            lines.append(f"| {label} | " + " | ".join(_cell(r.get("unseen", {}).get("summary", {}).get(key))
                                                      for r in reports) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(report: dict, path: str | Path) -> None:
    from codec.audio import atomic_write

    text = json.dumps(report, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
