"""Reports of an evaluation run: the full JSON (every file, every value) and a Markdown summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from voxtok.audio import atomic_write

# column -> (header, format, scale); rates are shown in percent.
COLUMNS: dict[str, tuple[str, str, float]] = {
    "pesq": ("PESQ-WB ↑", "{:.2f}", 1.0),
    "stoi": ("STOI ↑", "{:.3f}", 1.0),
    "estoi": ("ESTOI ↑", "{:.3f}", 1.0),
    "si_sdr": ("SI-SDR dB ↑", "{:.1f}", 1.0),
    "mel_l1": ("log-mel L1 ↓", "{:.3f}", 1.0),
    "mrstft": ("MR-STFT ↓", "{:.3f}", 1.0),
    "f0_rmse_cents": ("F0 RMSE ¢ ↓", "{:.0f}", 1.0),
    "gpe": ("GPE % ↓", "{:.1f}", 100.0),
    "vde": ("VDE % ↓", "{:.1f}", 100.0),
    "spk_sim": ("spk sim ↑", "{:.3f}", 1.0),
    "dnsmos_sig": ("SIG ↑", "{:.2f}", 1.0),
    "dnsmos_bak": ("BAK ↑", "{:.2f}", 1.0),
    "dnsmos_ovrl": ("OVRL ↑", "{:.2f}", 1.0),
    "wer": ("WER % ↓", "{:.1f}", 100.0),
    "cer": ("CER % ↓", "{:.1f}", 100.0),
    "dwer": ("dWER % ↓", "{:.1f}", 100.0),
    "per": ("PER % ↓", "{:.1f}", 100.0),
    "dper": ("dPER % ↓", "{:.1f}", 100.0),
}
# Metrics that describe the original audio on its own: the floor of each judge.
REFERENCE_COLUMNS = {"wer", "cer", "per", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
MAX_LISTED_FAILURES = 20


def write_json(path: str | Path, result: dict) -> None:
    text = json.dumps(result, indent=1, ensure_ascii=False, default=_plain)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _plain(value):
    # numpy scalars from the metric libraries
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _cell(value, column: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    _, fmt, scale = COLUMNS[column]
    return fmt.format(value * scale)


def _number(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def markdown_table(result: dict) -> str:
    """The summary as a Markdown table: one row for the original audio (the judges' floor), one per system."""
    summary = result["summary"]
    columns = [c for c in result["metrics"] if c in COLUMNS]
    header = ["system", "files ok", "kbps"] + [COLUMNS[c][0] for c in columns] + ["enc RTF", "dec RTF"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    ref = summary["reference"]["metrics"]
    good = summary["files"] - summary["reference_failures"]
    lines.append(
        "| " + " | ".join(
            ["original", f"{good}/{summary['files']}", "–"]
            + [_cell(ref.get(c), c) if c in REFERENCE_COLUMNS else "–" for c in columns]
            + ["–", "–"]
        ) + " |"
    )
    for system in summary["systems"]:
        lines.append(
            "| " + " | ".join(
                [system["name"], f"{system['ok']}/{summary['files']}", _number(system["kbps"], "{:.2f}")]
                + [_cell(system["metrics"].get(c), c) for c in columns]
                + [_number(system["encode_rtf"], "{:.4f}"), _number(system["decode_rtf"], "{:.4f}")]
            ) + " |"
        )
    return "\n".join(lines) + "\n"


def markdown_report(result: dict, title: str = "voxtok eval") -> str:
    """Table plus the notes a reader needs: what was averaged, where metrics were undefined, what failed."""
    summary = result["summary"]
    out = [f"# {title}", ""]
    if result.get("command"):
        out += ["```", result["command"], "```", ""]
    out += [
        f"Reference set: `{result['ref_dir']}`, {summary['files']} files, "
        f"{summary['reference']['duration_s'] / 60:.1f} min evaluated; run took {result['elapsed_s'] / 60:.1f} min.",
        "",
        markdown_table(result),
        _notes(result),
    ]
    failures = failure_lines(result)
    if failures:
        out += [f"Failures ({len(failures)}):", ""]
        out += [f"- {line}" for line in failures[:MAX_LISTED_FAILURES]]
        if len(failures) > MAX_LISTED_FAILURES:
            out.append(f"- … and {len(failures) - MAX_LISTED_FAILURES} more (see the JSON report)")
        out.append("")
    return "\n".join(out)


def _notes(result: dict) -> str:
    summary = result["summary"]
    notes = [
        "- kbps is the true bitrate, 8 × encoded bytes / duration, containers and headers included. "
        "RTF is wall time / audio duration (tool start-up included).",
        "- Decoded audio is aligned to the reference before the signal metrics (a constant delay, found from the "
        "level envelopes and refined on the waveform where the waveforms match). PESQ is P.862.2 wideband; "
        "DNSMOS is P.835 (needs no reference).",
        "- WER/CER (pocketsphinx en-us) and PER (hama phone recogniser vs hama G2P of the transcript) are "
        "corpus rates over files with a transcript; the `original` row is each recogniser's own error on the "
        "unprocessed audio, the floor for every system. dWER/dPER score the decoded audio's recognition against "
        "the original's (dWER on files with a transcript, dPER on every file).",
    ]
    undefined = []
    for column in (c for c in result["metrics"] if c in COLUMNS):
        short = [(s["counts"].get(column, 0), s["ok"]) for s in summary["systems"]
                 if s["counts"].get(column, 0) < s["ok"]]
        if short:
            low, high = min(c for c, _ in short), max(c for c, _ in short)
            counts = f"{low}" if low == high else f"{low}–{high}"
            undefined.append(f"{COLUMNS[column][0].split(' ')[0]} on {counts} of {max(ok for _, ok in short)}")
    if undefined:
        notes.append("- Defined on fewer files (no transcript, or too short/quiet for the metric): "
                     + ", ".join(undefined) + ".")
    if summary["warnings"]:
        notes.append(f"- {summary['warnings']} warning(s); see the JSON report.")
    return "\n".join(notes) + "\n"


def failure_lines(result: dict) -> list[str]:
    lines = []
    for record in result["files"]:
        if record["error"]:
            lines.append(f"{record['path']}: {record['error']}")
            continue
        for name, outcome in record["systems"].items():
            if outcome.get("error"):
                lines.append(f"{record['path']}: {name}: {outcome['error']}")
    return lines


def summary_line(result: dict) -> str:
    """One line for the terminal: what ran, what failed and why."""
    summary = result["summary"]
    done = sum(s["ok"] for s in summary["systems"])
    failed = sum(s["failed"] for s in summary["systems"])
    return (
        f"{summary['files']} files × {len(summary['systems'])} systems: {done} evaluations done, "
        f"{failed} failed; {summary['reference_failures']} of {summary['files']} reference files unusable; "
        f"{summary['warnings']} warning(s)"
    )
