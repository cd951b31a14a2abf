"""Quality metrics on 16 kHz mono float32 signals, and `MetricSuite`, which runs the chosen set per file.

Signal metrics are plain functions of (reference, degraded). Model-based metrics use the pretrained judges in
voxtok.eval.models, which `MetricSuite` loads once per run. A metric that is undefined for an input (PESQ finds
no speech, STOI has too few voiced frames, no transcript) raises `MetricUndefined`; the suite records None and
the reason instead of failing the file.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from voxtok.errors import VoxtokError
from voxtok.eval.catalog import GROUPS
from voxtok.eval.models import SAMPLE_RATE, Judges, require


class MetricUndefined(Exception):
    """The metric has no meaningful value for this input; the message says why."""


# Python modules each group needs (all in the eval extra).
GROUP_MODULES: dict[str, tuple[str, ...]] = {
    "pesq": ("pesq",),
    "stoi": ("pystoi",),
    "estoi": ("pystoi",),
    "sim": ("resemblyzer", "webrtcvad", "librosa"),
    "dnsmos": ("onnxruntime", "speechmos"),
    "pitch": ("pyworld",),
    "wer": ("pocketsphinx", "jiwer"),
    "per": ("hama", "jiwer"),
}
# Error rates are averaged over a set as corpus rates: each file weighted by its reference length.
RATE_WEIGHTS = {"wer": "n_words", "cer": "n_chars", "dwer": "n_asr_words", "per": "n_phones", "dper": "n_asr_phones"}


# ---------------------------------------------------------------- alignment


# The coarse lag comes from the signals' level envelopes: 10 ms power every 1 ms, in dB over a 60 dB range.
_ENVELOPE_HOP = 16
_ENVELOPE_WINDOW = 160
_ENVELOPE_RANGE_DB = 60.0
# Waveforms that correlate at least this well (normalised) within ±5 ms of the coarse lag refine it to the sample
# (on noisy meeting speech the envelope's peak can sit 2-3 ms off a waveform codec's true delay).
_WAVEFORM_MATCH = 0.5
_WAVEFORM_SEARCH = 80


def _cross_correlation(ref: np.ndarray, deg: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """(lags, correlation of deg against ref at each lag) for lags within ±max_lag; positive when deg is late."""
    n = len(ref) + len(deg) - 1
    size = 1 << max(1, (n - 1).bit_length())
    corr = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([np.arange(0, min(max_lag, len(deg) - 1) + 1), np.arange(-min(max_lag, len(ref) - 1), 0)])
    return lags, corr[lags % size]


def _level_envelope(x: np.ndarray) -> np.ndarray:
    power = np.convolve(x.astype(np.float64) ** 2, np.ones(_ENVELOPE_WINDOW) / _ENVELOPE_WINDOW, mode="same")
    level = 10.0 * np.log10(power[::_ENVELOPE_HOP] + 1e-12)
    level = np.maximum(level, level.max() - _ENVELOPE_RANGE_DB)
    return level - level.mean()


def align(ref: np.ndarray, deg: np.ndarray, max_lag_s: float = 0.25) -> tuple[np.ndarray, int]:
    """Undo a constant delay: return `deg` shifted to best match `ref` (same length as ref) and the lag.

    Codecs and their containers add different fixed delays; without this, sample-wise metrics (SI-SDR,
    mel, STFT) would punish a delay the listener never hears. The lag (in samples, positive when deg is late,
    within ±max_lag_s) is found in two steps. First the level envelopes are cross-correlated (1 ms steps):
    that holds for any decoder, including those whose waveform does not follow the original's phase
    (vocoders, voxtok's harmonic synthesiser), where the waveforms' own cross-correlation peaks at a chance
    lag (measured on codec v2: lags of -129 to +65 ms where the true delay is 0, which cost it 0.1 STOI).
    Then, where the waveforms do match (normalised correlation >= 0.5 within ±5 ms of that lag), the waveform
    peak there gives the lag to the sample.
    """
    max_lag = int(max_lag_s * SAMPLE_RATE)
    env_ref, env_deg = _level_envelope(ref), _level_envelope(deg)
    coarse_lags, coarse = _cross_correlation(env_ref, env_deg, max_lag // _ENVELOPE_HOP)
    lag = int(coarse_lags[int(np.argmax(coarse))]) * _ENVELOPE_HOP if np.max(coarse) > 0 else 0
    lags, corr = _cross_correlation(ref.astype(np.float64), deg.astype(np.float64), max_lag)
    near = np.abs(lags - lag) <= _WAVEFORM_SEARCH
    norm = float(np.linalg.norm(ref) * np.linalg.norm(deg))
    if norm > 0 and near.any():
        best = int(np.argmax(np.where(near, corr, -np.inf)))
        if corr[best] / norm >= _WAVEFORM_MATCH:
            lag = int(lags[best])
    shifted = deg[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, dtype=deg.dtype), deg])
    return fit_length(shifted, len(ref)), lag


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad `x` to exactly n samples."""
    if len(x) >= n:
        return np.ascontiguousarray(x[:n], dtype=np.float32)
    return np.concatenate([x, np.zeros(n - len(x), dtype=np.float32)]).astype(np.float32)


# ---------------------------------------------------------------- signal metrics


# P.862.2 maps raw PESQ (lowest -0.5) to MOS-LQO = 0.999 + 4 / (1 + exp(-1.3669 x + 3.8224)).
PESQ_WB_MIN = 0.999 + 4.0 / (1.0 + math.exp(1.3669 * 0.5 + 3.8224))


def pesq_wb(ref: np.ndarray, deg: np.ndarray) -> float:
    """ITU-T P.862.2 wideband PESQ (MOS-LQO, 1.04 to 4.64)."""
    from pesq import NoUtterancesError, PesqError, pesq

    if not np.any(ref):
        raise MetricUndefined("PESQ found no utterance in the reference: it is digital silence")
    if not np.any(deg):
        return PESQ_WB_MIN  # silence in place of speech is the bottom of the scale, not "undefined"
    try:
        return float(pesq(SAMPLE_RATE, ref, deg, "wb", on_error=PesqError.RAISE_EXCEPTION))
    except NoUtterancesError:
        raise MetricUndefined("PESQ found no utterance in the reference") from None
    except PesqError as exc:
        raise MetricUndefined(f"PESQ failed: {type(exc).__name__}") from None


def stoi(ref: np.ndarray, deg: np.ndarray, extended: bool = False) -> float:
    """STOI (or ESTOI with extended=True), 0 to 1."""
    from pystoi import stoi as _stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(ref, deg, SAMPLE_RATE, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        # pystoi returns a placeholder 1e-5 here; reporting it would drag averages down for no reason.
        raise MetricUndefined("too little voiced audio for STOI (needs ~384 ms after silence removal)")
    return value


def estoi(ref: np.ndarray, deg: np.ndarray) -> float:
    return stoi(ref, deg, extended=True)


def si_sdr(ref: np.ndarray, deg: np.ndarray) -> float:
    """Scale-invariant SDR in dB (zero-mean signals; capped near 100 dB for identical signals)."""
    r = np.asarray(ref, dtype=np.float64) - np.mean(ref)
    d = np.asarray(deg, dtype=np.float64) - np.mean(deg)
    energy = float(np.dot(r, r))
    if energy == 0.0:
        raise MetricUndefined("reference is silent")
    target = (np.dot(d, r) / energy) * r
    noise = d - target
    eps = 1e-10 * energy
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def _stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| with a periodic Hann window, centred frames (reflect padding); shape (frames, n_fft//2+1)."""
    x = np.asarray(x, dtype=np.float64)
    pad = n_fft // 2
    x = np.pad(x, pad, mode="reflect" if len(x) > pad else "constant")
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * window, axis=1))


def _mel_filterbank(n_fft: int, n_mels: int) -> np.ndarray:
    """HTK-scale triangular filters from 0 Hz to Nyquist, shape (n_mels, n_fft//2+1)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    bins = np.linspace(0.0, SAMPLE_RATE / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_l1(ref: np.ndarray, deg: np.ndarray, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> float:
    """Mean |log10 mel power(ref) − log10 mel power(deg)| (80 HTK bands, 1024/256 STFT, floor 1e-5)."""
    fb = _mel_filterbank(n_fft, n_mels)
    mel_r = np.log10(np.maximum(_stft_magnitude(ref, n_fft, hop) ** 2 @ fb.T, 1e-5))
    mel_d = np.log10(np.maximum(_stft_magnitude(deg, n_fft, hop) ** 2 @ fb.T, 1e-5))
    n = min(len(mel_r), len(mel_d))
    return float(np.mean(np.abs(mel_r[:n] - mel_d[:n])))


MRSTFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


def mrstft_distance(ref: np.ndarray, deg: np.ndarray) -> float:
    """Multi-resolution STFT distance: spectral convergence + mean |log magnitude difference|, averaged over
    FFT sizes 512/1024/2048 (hop = size/4). 0 for identical signals; lower is better."""
    total = 0.0
    for n_fft, hop in MRSTFT_RESOLUTIONS:
        mag_r = _stft_magnitude(ref, n_fft, hop)
        mag_d = _stft_magnitude(deg, n_fft, hop)
        n = min(len(mag_r), len(mag_d))
        mag_r, mag_d = mag_r[:n], mag_d[:n]
        convergence = np.linalg.norm(mag_r - mag_d) / max(np.linalg.norm(mag_r), 1e-7)
        log_distance = np.mean(np.abs(np.log(mag_r + 1e-7) - np.log(mag_d + 1e-7)))
        total += convergence + log_distance
    return float(total / len(MRSTFT_RESOLUTIONS))


# ---------------------------------------------------------------- pitch metrics

# A pitch error above 20% (about 3 semitones) is "gross": an octave jump, or F0 lost in noise.
GROSS_PITCH_RATIO = 0.2


def f0_track(samples: np.ndarray) -> np.ndarray:
    """F0 in Hz every 10 ms (0 where unvoiced): WORLD's DIO with StoneMask refinement, 50-600 Hz. DIO rather than
    Harvest because it runs at ~200x real time and the same tracker judges the original and every system."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyworld 0.3 imports the deprecated pkg_resources
        import pyworld

    x = np.ascontiguousarray(samples, dtype=np.float64)
    f0, times = pyworld.dio(x, SAMPLE_RATE, f0_floor=50.0, f0_ceil=600.0, frame_period=10.0)
    return pyworld.stonemask(x, f0, times, SAMPLE_RATE)


def pitch_errors(ref_f0: np.ndarray, deg_f0: np.ndarray) -> dict[str, float]:
    """F0 RMSE in cents and gross pitch error (GPE) over frames voiced in both, voicing decision error (VDE) over
    all frames. A decoder that loses the harmonics is called unvoiced where the original is voiced: VDE shows it."""
    n = min(len(ref_f0), len(deg_f0))
    ref_f0, deg_f0 = ref_f0[:n], deg_f0[:n]
    ref_voiced, deg_voiced = ref_f0 > 0, deg_f0 > 0
    if not ref_voiced.any():
        raise MetricUndefined("the original has no voiced frames")
    out = {"vde": float(np.mean(ref_voiced != deg_voiced))}
    both = ref_voiced & deg_voiced
    if both.any():
        cents = 1200.0 * np.log2(deg_f0[both] / ref_f0[both])
        out["f0_rmse_cents"] = float(np.sqrt(np.mean(cents**2)))
        out["gpe"] = float(np.mean(np.abs(deg_f0[both] / ref_f0[both] - 1.0) > GROSS_PITCH_RATIO))
    else:  # not one voiced frame survived: every pitch is lost
        out["f0_rmse_cents"], out["gpe"] = None, 1.0
    return out


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        raise MetricUndefined("zero embedding")
    return float(np.dot(a, b) / denom)


# ---------------------------------------------------------------- text metrics


def normalise_words(text: str) -> str:
    """Lower case, letters/digits/apostrophes only, single spaces: how transcripts and ASR output compare."""
    return " ".join(re.sub(r"[^a-z0-9']+", " ", text.lower()).split())


def error_rate(reference: str, hypothesis: str, unit: str = "word") -> float:
    """WER (unit='word') or CER (unit='char') of hypothesis against a non-empty, normalised reference."""
    import jiwer

    if not reference:
        raise MetricUndefined("empty reference transcript")
    if unit == "char":
        return float(jiwer.cer(reference, hypothesis))
    return float(jiwer.wer(reference, hypothesis))


def phone_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Levenshtein distance between phone sequences divided by the reference length."""
    if not reference:
        raise MetricUndefined("no reference phones")
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(reference)


# ---------------------------------------------------------------- the suite


@dataclass
class Reference:
    """One reference file and what the judges said about it; computed once and shared by all systems."""

    samples: np.ndarray
    text: str | None
    values: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    asr_words: str | None = None
    phones: list[str] | None = None
    text_phones: list[str] | None = None
    embedding: np.ndarray | None = None
    dnsmos: dict[str, float] | None = None
    f0: np.ndarray | None = None


def parse_metric_list(spec: str | None) -> list[str]:
    """'pesq,stoi' -> ['pesq', 'stoi'] in canonical order; None or 'all' -> every group."""
    if spec is None or spec.strip() == "all":
        return list(GROUPS)
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise VoxtokError(f"unknown metric {', '.join(unknown) or spec!r}; choose from {', '.join(GROUPS)} or all")
    return [g for g in GROUPS if g in names]


class MetricSuite:
    """Runs the chosen metric groups. `analyse` a reference once, then `compare` each decoded version to it."""

    def __init__(self, groups: list[str]):
        for group in groups:
            for module in GROUP_MODULES.get(group, ()):
                require(module, f"metric '{group}'")
        self.groups = groups
        self.columns = [c for g in groups for c in GROUPS[g]]

    @cached_property
    def judges(self) -> Judges:
        return Judges()

    def analyse(self, samples: np.ndarray, text: str | None) -> Reference:
        """Reference-side values: the ASR/phone/DNSMOS floors of the original, and cached model outputs."""
        ref = Reference(samples=samples, text=normalise_words(text) if text else None)
        if "wer" in self.groups:
            # Word ASR is the slowest judge (up to ~1x real time on conversational audio), so it runs only
            # where a transcript makes WER defined; dPER covers the files without one.
            if ref.text:
                ref.asr_words = normalise_words(self.judges.asr.transcribe(samples))
            self._text_rates(ref, ref.asr_words, ref.values, ref.notes)
        if "per" in self.groups:
            ref.phones = self.judges.phones.recognise(samples)
            if ref.text:
                ref.text_phones = self.judges.phones.text_phones(ref.text)
            self._phone_rates(ref, ref.phones, ref.values, ref.notes)
        if "dnsmos" in self.groups:
            ref.dnsmos = self.judges.dnsmos.score(samples)
            ref.values.update({f"dnsmos_{k}": v for k, v in ref.dnsmos.items()})
        if "sim" in self.groups:
            ref.embedding = self.judges.speaker.embed(samples)
        if "pitch" in self.groups:
            ref.f0 = f0_track(samples)
        return ref

    def compare(self, ref: Reference, deg: np.ndarray) -> tuple[dict[str, float | None], dict[str, str]]:
        """Every chosen metric of `deg` (aligned, same length as the reference) against `ref`."""
        values: dict[str, float | None] = {}
        notes: dict[str, str] = {}
        # Bit-identical output (the identity system) has exactly the reference's model outputs.
        same = deg.shape == ref.samples.shape and np.array_equal(deg, ref.samples)
        signal = {
            "pesq": ("pesq", pesq_wb),
            "stoi": ("stoi", stoi),
            "estoi": ("estoi", estoi),
            "sisdr": ("si_sdr", si_sdr),
            "mel": ("mel_l1", log_mel_l1),
            "mrstft": ("mrstft", mrstft_distance),
        }
        for group, (column, fn) in signal.items():
            if group in self.groups:
                self._measure(column, lambda fn=fn: fn(ref.samples, deg), values, notes)
        if "pitch" in self.groups:
            errors = self._measure("pitch", lambda: pitch_errors(ref.f0, ref.f0 if same else f0_track(deg)), {},
                                   notes)
            for column in GROUPS["pitch"]:
                values[column] = errors.get(column) if errors else None
                if errors is None:
                    notes[column] = notes["pitch"]
                elif values[column] is None:
                    notes[column] = "no frame is voiced in both the original and the decoded audio"
        if "sim" in self.groups and not np.any(deg):
            values["spk_sim"] = 0.0  # digital silence has no voice to resemble the speaker
        elif "sim" in self.groups:
            self._measure(
                "spk_sim",
                lambda: cosine_similarity(ref.embedding, ref.embedding if same else self.judges.speaker.embed(deg)),
                values, notes,
            )
        if "dnsmos" in self.groups:
            scores = self._measure("dnsmos", lambda: ref.dnsmos if same else self.judges.dnsmos.score(deg), {}, notes)
            for key in ("sig", "bak", "ovrl"):
                values[f"dnsmos_{key}"] = scores[key] if scores else None
        if "wer" in self.groups:
            words = None
            if ref.asr_words is not None:
                words = self._measure(
                    "asr", lambda: ref.asr_words if same else normalise_words(self.judges.asr.transcribe(deg)),
                    {}, notes,
                )
            self._text_rates(ref, words, values, notes)
            if words is None:
                values["dwer"] = None
                notes["dwer"] = notes["wer"]
            else:
                values["n_asr_words"] = len(ref.asr_words.split())
                self._measure("dwer", lambda: _rate_vs_asr(ref.asr_words, words), values, notes)
        if "per" in self.groups:
            phones = self._measure("phones", lambda: ref.phones if same else self.judges.phones.recognise(deg),
                                   {}, notes)
            if phones is None:
                values["per"] = values["dper"] = None
            else:
                self._phone_rates(ref, phones, values, notes)
                values["n_asr_phones"] = len(ref.phones)
                self._measure("dper", lambda: phone_error_rate(ref.phones, phones), values, notes)
        return values, notes

    def _text_rates(self, ref: Reference, words: str | None, values: dict, notes: dict) -> None:
        if ref.text is None or words is None:
            values["wer"] = values["cer"] = None
            notes["wer"] = notes["cer"] = "no transcript" if ref.text is None else notes.get("asr", "no ASR")
            return
        values["n_words"] = len(ref.text.split())
        values["n_chars"] = len(ref.text)
        self._measure("wer", lambda: error_rate(ref.text, words, "word"), values, notes)
        self._measure("cer", lambda: error_rate(ref.text, words, "char"), values, notes)

    def _phone_rates(self, ref: Reference, phones: list[str], values: dict, notes: dict) -> None:
        if ref.text_phones is None:
            values["per"] = None
            notes["per"] = "no transcript"
            return
        values["n_phones"] = len(ref.text_phones)
        self._measure("per", lambda: phone_error_rate(ref.text_phones, phones), values, notes)

    @staticmethod
    def _measure(column: str, fn, values: dict, notes: dict):
        """values[column] = fn(), or None with the reason in notes; returns the value.

        Any exception counts as "undefined for this file": the metric libraries are third-party code, and
        one of them choking on one decoded file must not discard that file's other metrics.
        """
        try:
            value = fn()
        except MetricUndefined as exc:
            value, notes[column] = None, str(exc)
        except Exception as exc:
            value, notes[column] = None, f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        if isinstance(value, float) and not math.isfinite(value):
            value, notes[column] = None, "not a finite number"
        values[column] = value
        return value


def _rate_vs_asr(reference_words: str, words: str) -> float:
    if not reference_words:
        raise MetricUndefined("the ASR heard no words in the original")
    return error_rate(reference_words, words, "word")
