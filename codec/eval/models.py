"""Pretrained judges used by the metrics: an ASR, a phone recogniser with G2P, a speaker encoder and DNSMOS.

Every model ships inside its pip wheel (the `voxtok[eval]` extra), so nothing is downloaded at run time.
Each wrapper loads its model on first use; `Judges` holds them so one evaluation run loads each once.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
from voxtok.errors import VoxtokError

SAMPLE_RATE = 16000


def require(module: str, purpose: str) -> None:
    """Import `module` or fail with one line that names the extra to install."""
    try:
        with warnings.catch_warnings():
            # resemblyzer 0.1.4 imports a SciPy namespace deprecated since 1.8, pyworld 0.3 the deprecated
            # pkg_resources; nothing for a user to act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            importlib.import_module(module)
    except ImportError as exc:
        how = "pip install 'voxtok[eval]'"
        if module == "resemblyzer":
            how += " && pip install --no-deps resemblyzer==0.1.4"
        raise VoxtokError(f"{purpose} needs the Python package '{module}' ({exc.name} is missing): {how}") from None


def to_int16_bytes(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class PocketsphinxAsr:
    """Word recogniser: pocketsphinx 5 with its bundled en-us acoustic model, language model and dictionary."""

    @cached_property
    def _decoder(self):
        from pocketsphinx import Decoder

        return Decoder(loglevel="FATAL")

    def transcribe(self, samples: np.ndarray) -> str:
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(to_int16_bytes(samples), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class PhoneRecognizer:
    """hama: a CTC phone recogniser on the waveform and a G2P for the transcript, sharing one IPA phone set."""

    @cached_property
    def _asr(self):
        import hama

        return hama.ASRModel()

    @cached_property
    def _g2p(self):
        import hama

        return hama.G2PModel()

    def recognise(self, samples: np.ndarray) -> list[str]:
        return list(self._asr.transcribe_waveform(samples, SAMPLE_RATE).phonemes)

    def text_phones(self, text: str) -> list[str]:
        # G2P works word by word; lower case and no punctuation match what it was trained on.
        words = re.sub(r"[^a-z' ]+", " ", text.lower()).split()
        if not words:
            return []
        return [a.phoneme for a in self._g2p(" ".join(words)).alignments if a.phoneme.strip()]


class SpeakerEncoder:
    """Resemblyzer's GE2E speaker encoder (weights inside the wheel); returns unit-norm 256-d embeddings."""

    @cached_property
    def _resemblyzer(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see require()
            import resemblyzer
        return resemblyzer

    @cached_property
    def _encoder(self):
        return self._resemblyzer.VoiceEncoder("cpu", verbose=False)

    def embed(self, samples: np.ndarray) -> np.ndarray:
        wav = self._resemblyzer.preprocess_wav(np.asarray(samples, dtype=np.float32))
        # Trimming silence can leave nothing of a short or noisy clip; embed the clip as it is then.
        if wav.size < SAMPLE_RATE // 10:
            wav = np.asarray(samples, dtype=np.float32)
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)


class Dnsmos:
    """DNSMOS P.835 (SIG, BAK, OVRL) with the ONNX model that the `speechmos` wheel ships.

    Follows Microsoft's reference script: 9.01 s windows hopped by 1 s, short clips repeated up to one window,
    raw scores mapped through the published polynomials, window scores averaged.
    """

    WINDOW_S = 9.01

    @cached_property
    def _session(self):
        import onnxruntime as ort
        import speechmos

        model = Path(speechmos.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"
        if not model.is_file():
            raise VoxtokError(f"DNSMOS model not found at {model}: reinstall the 'speechmos' package")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def score(self, samples: np.ndarray) -> dict[str, float]:
        audio = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        window = int(self.WINDOW_S * SAMPLE_RATE)
        if audio.size == 0:
            raise ValueError("empty audio")
        while audio.size < window:
            audio = np.concatenate([audio, audio])
        hops = int(np.floor(audio.size / SAMPLE_RATE) - self.WINDOW_S) + 1
        starts = [i * SAMPLE_RATE for i in range(hops) if i * SAMPLE_RATE + window <= audio.size]
        # Unlike the reference script, no window is dropped by float rounding of its end index.
        # One window per call: batching windows measured ~2x slower per window on one thread.
        raw = [self._session.run(None, {"input_1": audio[None, s : s + window]})[0][0] for s in starts]
        sig_raw, bak_raw, ovr_raw = np.asarray(raw).T
        sig = np.poly1d([-0.08397278, 1.22083953, 0.0052439])(sig_raw)
        bak = np.poly1d([-0.13166888, 1.60915514, -0.39604546])(bak_raw)
        ovr = np.poly1d([-0.06766283, 1.11546468, 0.04602535])(ovr_raw)
        return {"sig": float(sig.mean()), "bak": float(bak.mean()), "ovrl": float(ovr.mean())}


class Judges:
    """The pretrained models of one evaluation run, each built on first use and then reused."""

    @cached_property
    def asr(self) -> PocketsphinxAsr:
        return PocketsphinxAsr()

    @cached_property
    def phones(self) -> PhoneRecognizer:
        return PhoneRecognizer()

    @cached_property
    def speaker(self) -> SpeakerEncoder:
        return SpeakerEncoder()

    @cached_property
    def dnsmos(self) -> Dnsmos:
        return Dnsmos()
