"""The speed report as Markdown: offline table, streaming table, algorithmic latency, the 20× bar, notes."""

from __future__ import annotations

import json
from pathlib import Path

from voxtok.audio import atomic_write

# The codec's bar (issue tracker): offline encode + decode at >= 20x real time on 1 thread.
BAR_RTF = 20.0
RANDOM_WEIGHTS_NOTE = ("Peers are built with random weights (nothing downloaded): compute cost depends on the "
                       "architecture and the input length, not on the weight values.")


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def to_markdown(report: dict) -> str:
    m, inp, s = report["machine"], report["input"], report["settings"]
    load = " → ".join(", ".join(f"{v:g}" for v in avg) for avg in (m.get("loadavg_start"), m.get("loadavg_end"))
                      if avg)
    versions = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
    repeated = f" (the {inp['file_seconds']:g} s file repeated)" if inp["repeated"] else ""
    lines = [
        "# voxtok speed benchmark",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs; {m['platform']}, Python {m['python']}",
        f"- Versions: {versions}",
        f"- Load average (1, 5, 15 min) at start → end: {load or 'n/a'}",
        f"- Input: {inp['path']}, {inp['seconds']:g} s{repeated}, resampled with soxr to each system's rate; "
        f"streaming over the first {s['stream_seconds']:g} s",
        f"- Method: 1 warm-up pass, then {s['repeats']} timed {_plural(s['repeats'], 'repeat')}; figures are "
        "medians (latency percentiles pool every chunk of every repeat). Each system × thread count runs in a "
        "fresh process (torch.set_num_threads / onnxruntime intra-op threads). Memory is that process's peak "
        "RSS (VmHWM), Python and runtime included; 'loaded' is after building the model.",
        "- × RT = audio seconds / compute seconds (higher is faster).",
        "",
        "## Offline (whole input → codes → waveform)",
        "",
        "| system | runtime | kbps | params M | threads | encode × RT | decode × RT | enc+dec × RT "
        "| RSS loaded MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        sysinfo, off, mem = r["system"], r["offline"], r["memory"]
        params = "–" if sysinfo["params_m"] is None else f"{sysinfo['params_m']:.1f}"
        lines.append(f"| {sysinfo['name']} | {sysinfo['implementation']} | {sysinfo['kbps']:g} | {params} "
                     f"| {r['threads']} | {_x(off['encode_rtf'])} | {_x(off['decode_rtf'])} "
                     f"| {_x(off['roundtrip_rtf'])} | {_mb(mem.get('loaded_mb'))} "
                     f"| {_mb(mem.get('offline_peak_mb'))} |")
    streamed = [r for r in report["results"] if r["streaming"]]
    if streamed:
        lines += [
            "",
            "## Streaming (per chunk: encode_chunk + decode_chunk)",
            "",
            "First audio = arrival of the chunk that first yields output ((k + 1) × chunk) + its compute time. "
            "A chunk keeps up with real time when its compute stays under the chunk length.",
            "",
            "| system | threads | chunk ms | p50 ms | p95 ms | max ms | encode / decode p50 ms | first audio ms "
            "| × RT | p95 < chunk | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in streamed:
            for st in r["streaming"]:
                keeps_up = "yes" if st["p95_ms"] < st["chunk_ms"] else "no"
                lines.append(f"| {r['system']['name']} | {r['threads']} | {st['chunk_ms']:g} | {_ms(st['p50_ms'])} "
                             f"| {_ms(st['p95_ms'])} | {_ms(st['max_ms'])} "
                             f"| {_ms(st['encode_p50_ms'])} / {_ms(st['decode_p50_ms'])} | {_ms(st['first_audio_ms'])} "
                             f"| {_x(st['stream_rtf'])} | {keeps_up} | {_mb(r['memory'].get('stream_peak_mb'))} |")
    lines += ["", "## Algorithmic latency (frame + look-ahead, before any compute)", "",
              "| system | frame ms | algorithmic latency ms | how |", "|---|---|---|---|"]
    seen = set()
    for r in report["results"]:
        sysinfo = r["system"]
        if sysinfo["name"] in seen:
            continue
        seen.add(sysinfo["name"])
        lines.append(f"| {sysinfo['name']} | {sysinfo['frame_ms']:.1f} | {_ms(sysinfo['algorithmic_latency_ms'])} "
                     f"| {sysinfo['latency_note']} |")
    lines += ["", "## Bar", ""]
    lines += bar_lines(report) or ["- no 1-thread run of voxtok in this report"]
    notes = list(report.get("notes", []))
    if any(r["system"].get("random_weights") for r in report["results"]) or report["settings"].get("peers"):
        notes.insert(0, RANDOM_WEIGHTS_NOTE)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def bar_lines(report: dict) -> list[str]:
    out = []
    for r in report["results"]:
        if r["threads"] == 1 and r["backend"] in ("voxtok", "onnx"):
            rtf = r["offline"]["roundtrip_rtf"]
            verdict = "met" if rtf >= BAR_RTF else "not met"
            out.append(f"- {r['system']['name']}: offline encode + decode {rtf:.1f}× real time on 1 thread "
                       f"(bar ≥ {BAR_RTF:g}×: {verdict})")
    return out


def write_json(path: str | Path, report: dict) -> None:
    text = json.dumps(report, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_markdown(path: str | Path, report: dict) -> None:
    text = to_markdown(report)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
