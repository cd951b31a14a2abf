"""Run systems over a reference set: per-file metrics, per-file failures that do not stop the run, averages."""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from voxtok.audio import load_audio
from voxtok.errors import VoxtokError
from voxtok.eval.metrics import RATE_WEIGHTS, MetricSuite, align, fit_length
from voxtok.eval.systems import SAMPLE_RATE, System, SystemFailure
from voxtok.manifest import Entry, read_manifest  # noqa: F401  (callers import them from here too)
from voxtok.paths import split_file

SPLITS = {"dev": "real_dev.txt", "train": "real_train.txt"}


def read_split(spec: str) -> list[str]:
    """'dev' / 'train' (the splits shipped with voxtok) or a file of relative paths, one per line."""
    if spec in SPLITS:
        text = split_file(SPLITS[spec])
    else:
        path = Path(spec)
        if not path.is_file():
            raise VoxtokError(f"split {spec!r}: neither dev, train nor a file of paths")
        text = path.read_text(encoding="utf-8")
    paths = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not paths:
        raise VoxtokError(f"split {spec!r} lists no files")
    return paths


def select(
    entries: list[Entry],
    split: list[str] | None = None,
    tags: list[str] | None = None,
    exclude_tags: list[str] | None = None,
    limit: int | None = None,
) -> list[Entry]:
    """Entries in split order (or manifest order), having every tag in `tags` and none in `exclude_tags`."""
    if split is not None:
        by_path = {e.path: e for e in entries}
        missing = [p for p in split if p not in by_path]
        if missing:
            raise VoxtokError(
                f"{len(missing)} of {len(split)} split paths are not in the manifest (first: {missing[0]}); "
                "is the split meant for another reference set?"
            )
        entries = [by_path[p] for p in split]
    chosen = [
        e
        for e in entries
        if all(t in e.tags for t in tags or []) and not any(t in e.tags for t in exclude_tags or [])
    ]
    if limit is not None:
        chosen = chosen[:limit]
    if not chosen:
        raise VoxtokError("no reference files left after --split/--tag/--limit")
    return chosen


def spread_evenly(entries: list[Entry], count: int) -> list[Entry]:
    """`count` entries spread over the whole list: the train split is ordered by corpus, so its first N files are
    one corpus's."""
    return entries[:: max(1, len(entries) // count)][:count]


class Runner:
    """Evaluates each system on each entry. Nothing a single file does stops the run: a reference that cannot
    be read, or a system that fails on it, is recorded with its message and counted."""

    def __init__(self, ref_dir: Path, systems: list[System], suite: MetricSuite, do_align: bool = True,
                 progress: bool = True):
        names = [s.name for s in systems]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise VoxtokError(f"two systems are named {duplicates[0]!r}; rename one with NAME=SPEC")
        self.ref_dir = ref_dir
        self.systems = systems
        self.suite = suite
        self.do_align = do_align
        self.progress = progress

    def run(self, entries: list[Entry]) -> dict:
        from tqdm import tqdm

        start = time.perf_counter()
        files = []
        bar = tqdm(total=len(entries) * len(self.systems), unit="run", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True)
        with bar, tempfile.TemporaryDirectory(prefix="voxtok-eval-") as tmp:
            for index, entry in enumerate(entries):
                record = self._evaluate_file(entry, Path(tmp) / str(index), bar)
                files.append(record)
        return {
            "elapsed_s": round(time.perf_counter() - start, 2),
            "files": files,
            "summary": summarise(files, [s.name for s in self.systems], self.suite.columns),
        }

    def _say(self, bar, message: str) -> None:
        bar.write(message, file=sys.stderr)

    def _evaluate_file(self, entry: Entry, tmpdir: Path, bar) -> dict:
        record: dict = {"path": entry.path, "speaker": entry.speaker, "tags": entry.tags,
                        "has_text": entry.text is not None, "error": None, "warnings": [], "systems": {}}
        bar.set_postfix_str(entry.path, refresh=False)
        try:
            ref = self._load_reference(entry, record)
            record["duration"] = round(len(ref) / SAMPLE_RATE, 4)
            analysis = self.suite.analyse(ref, entry.text)
            record["reference"] = {"values": analysis.values, "notes": analysis.notes}
        except Exception as exc:  # one bad reference must not end an hour-long run
            record["error"] = _describe(exc)
            self._say(bar, f"voxtok eval: {entry.path}: {record['error']}")
            bar.update(len(self.systems))
            return record
        for warning in record["warnings"]:
            self._say(bar, f"voxtok eval: {entry.path}: {warning}")
        for system in self.systems:
            workdir = tmpdir / f"s{len(record['systems'])}"
            workdir.mkdir(parents=True)
            record["systems"][system.name] = self._evaluate_system(system, entry, ref, analysis, workdir, bar)
            bar.update(1)
        return record

    def _load_reference(self, entry: Entry, record: dict) -> np.ndarray:
        path = self.ref_dir / entry.path
        if not path.is_file():
            raise VoxtokError(f"listed in the manifest but missing: {path}")
        try:
            rate = sf.info(str(path)).samplerate
        except Exception:
            rate = SAMPLE_RATE  # load_audio below gives the precise error for unreadable files
        samples = load_audio(path, SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            record["warnings"].append(f"sample rate is {rate} Hz, not {SAMPLE_RATE}: resampled to {SAMPLE_RATE}")
        if np.max(np.abs(samples)) == 0.0:
            raise VoxtokError("reference is digital silence")
        return samples

    def _evaluate_system(self, system: System, entry: Entry, ref: np.ndarray, analysis, workdir: Path,
                         bar) -> dict:
        bar.set_postfix_str(f"{entry.path} {system.name}", refresh=False)
        try:
            decoded = system.process(ref, workdir, entry.path)
            samples = np.asarray(decoded.samples, dtype=np.float32).reshape(-1)
            if samples.size == 0:
                raise VoxtokError("decoded audio is empty")
            if not np.isfinite(samples).all():
                raise VoxtokError("decoded audio contains NaN or infinite samples")
            if self.do_align:
                aligned, lag = align(ref, samples)
            else:
                aligned, lag = fit_length(samples, len(ref)), 0
            values, notes = self.suite.compare(analysis, aligned)
        except Exception as exc:  # a system crashing on one file is a result, not the end of the run
            message = _describe(exc)
            self._say(bar, f"voxtok eval: {entry.path}: {system.name}: {message}")
            return {"error": message}
        duration = len(ref) / SAMPLE_RATE
        result = {
            "error": None,
            "encoded_bytes": decoded.encoded_bytes,
            "kbps": None if decoded.encoded_bytes is None else round(8 * decoded.encoded_bytes / duration / 1000, 4),
            "encode_s": _round(decoded.encode_s),
            "decode_s": _round(decoded.decode_s),
            "delay_ms": round(1000 * lag / SAMPLE_RATE, 3),
            "decoded_samples": int(samples.size),
        }
        result.update(values)
        if notes:
            result["notes"] = notes
        return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (VoxtokError, SystemFailure)):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


def _mean(pairs: list[tuple[float, float]]) -> float | None:
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    return sum(v * w for v, w in pairs) / total


def summarise(files: list[dict], system_names: list[str], columns: list[str]) -> dict:
    """Averages per system and for the original audio. Error rates are corpus rates (weighted by reference
    length); every other metric is the plain mean over the files where it is defined."""

    def averages(rows: list[dict]) -> tuple[dict, dict]:
        means, counts = {}, {}
        for column in columns:
            weight_key = RATE_WEIGHTS.get(column)
            pairs = [
                (row[column], float(row.get(weight_key, 0)) if weight_key else 1.0)
                for row in rows
                if isinstance(row.get(column), (int, float)) and math.isfinite(row[column])
            ]
            counts[column] = len(pairs)
            means[column] = _mean(pairs)
        return means, counts

    good = [f for f in files if f["error"] is None]
    ref_rows = [f["reference"]["values"] for f in good]
    ref_means, ref_counts = averages(ref_rows)
    summary = {
        "files": len(files),
        "reference_failures": len(files) - len(good),
        "warnings": sum(len(f.get("warnings", [])) for f in files),
        "reference": {"metrics": ref_means, "counts": ref_counts,
                      "duration_s": round(sum(f["duration"] for f in good), 3)},
        "systems": [],
    }
    for name in system_names:
        results = [(f, f["systems"][name]) for f in good if name in f["systems"]]
        ok = [(f, r) for f, r in results if r["error"] is None]
        means, counts = averages([r for _, r in ok])
        duration = sum(f["duration"] for f, _ in ok)
        coded = [(f, r) for f, r in ok if r.get("encoded_bytes") is not None]
        coded_duration = sum(f["duration"] for f, _ in coded)
        timed = [(f, r) for f, r in ok if r.get("encode_s") is not None]
        timed_duration = sum(f["duration"] for f, _ in timed)
        encode_s = sum(r["encode_s"] for _, r in timed)
        decode_s = sum(r["decode_s"] for _, r in timed)
        summary["systems"].append({
            "name": name,
            "ok": len(ok),
            "failed": len(results) - len(ok),
            "duration_s": round(duration, 3),
            "kbps": round(8 * sum(r["encoded_bytes"] for _, r in coded) / coded_duration / 1000, 4)
            if coded_duration else None,
            "encode_s": round(encode_s, 3) if timed else None,
            "decode_s": round(decode_s, 3) if timed else None,
            "encode_rtf": round(encode_s / timed_duration, 5) if timed_duration else None,
            "decode_rtf": round(decode_s / timed_duration, 5) if timed_duration else None,
            "mean_delay_ms": round(float(np.mean([r["delay_ms"] for _, r in ok])), 3) if ok else None,
            "metrics": means,
            "counts": counts,
        })
    return summary
