"""The codec's one config dataclass, saved beside the weights as config.json."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# The shipped model `voxtok` uses when no --model is given, in PyTorch and on the ONNX path (`export onnx`,
# `stream`, `serve`) alike (the one place this is decided; torch-free, so the ONNX runtime's commands find it).
DEFAULT_MODEL = "voxtok-16k-v2"


@dataclass
class CodecConfig:
    name: str = "voxtok-16k"
    sample_rate: int = 16000
    # One code frame = hop_length samples (320 at 16 kHz = 20 ms = 50 Hz). Streaming latency is
    # hop_length + (window - subframe) samples, so 20 ms frames keep the whole path under 40 ms.
    hop_length: int = 320
    # The encoder front-end and the iSTFT head both work on sub-frames of `subframe` samples with
    # `window`-sample windows (75% overlap).
    subframe: int = 80
    window: int = 320
    enc_sub_dim: int = 96
    enc_sub_layers: int = 2
    enc_dim: int = 256
    enc_layers: int = 4
    latent_dim: int = 64
    dec_dim: int = 320
    dec_layers: int = 8
    mlp_ratio: float = 3.0
    kernel_size: int = 7
    num_quantizers: int = 12
    codebook_size: int = 1024
    codebook_decay: float = 0.99
    dead_code_threshold: float = 2.0
    kmeans_iters: int = 10
    # Fingerprint of the codebooks a model folder was exported with (VoxtokCodec.save_pretrained writes it; empty
    # in training checkpoints and in folders exported before it was recorded). A fine-tune keeps the name and the
    # architecture but moves the codebooks, so codes of the old weights decode to noise with the new ones: with
    # this in config_hash, such token files are refused instead.
    codebooks_hash: str = ""
    # Which codebooks (0-based) were trained to carry phones or meaning (semantic / contextual / teacher
    # distillation terms; the exporter records them): what an LM or a probe should read first. It does not change
    # what the codes mean, so it is not part of config_hash.
    semantic_codebooks: list[int] = field(default_factory=list)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def subframes_per_frame(self) -> int:
        return self.hop_length // self.subframe

    @property
    def bits_per_code(self) -> int:
        return (self.codebook_size - 1).bit_length()

    @property
    def kbps_per_codebook(self) -> float:
        return self.frame_rate * self.bits_per_code / 1000

    @property
    def decoder_delay(self) -> int:
        """Samples the decoder's overlap-add output runs behind its input: the offset offline decoding trims and
        streaming drops at the start (the one place this rule lives)."""
        return self.window - self.subframe

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: a whole frame must arrive, then the overlap-add must be complete."""
        return self.hop_length + self.decoder_delay

    def num_quantizers_for(self, bitrate_kbps: float | None) -> int:
        """The most codebooks whose bitrate fits in bitrate_kbps (all of them when None): the one bitrate rule,
        used by the torch model, the ONNX runtime's commands and the benchmarks alike."""
        from voxtok.errors import VoxtokError

        if bitrate_kbps is None:
            return self.num_quantizers
        count = int(bitrate_kbps / self.kbps_per_codebook + 1e-6)
        if count < 1:
            raise VoxtokError(f"bitrate {bitrate_kbps} kbps is below one codebook ({self.kbps_per_codebook:g} kbps)")
        return min(count, self.num_quantizers)

    def validate(self) -> None:
        """Types and sane bounds for every field, checked before a model is built from them: a config.json from
        elsewhere must not be able to make voxtok allocate gigabytes or divide by zero."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _FIELD_TYPES[f.type]
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise ValueError(f"{f.name} must be {kind.__name__}, got {value!r}")
            if f.name in _BOUNDS:
                low, high = _BOUNDS[f.name]
                if not low <= value <= high:
                    raise ValueError(f"{f.name} must be in [{low}, {high}], got {value!r}")
        if not self.name or len(self.name) > 128:
            raise ValueError("name must be 1 to 128 characters")
        if self.hop_length % self.subframe or self.window % self.subframe:
            raise ValueError("hop_length and window must be multiples of subframe")
        if self.window < self.subframe:
            raise ValueError("window must be at least one subframe")
        if self.codebooks_hash and not re.fullmatch(r"[0-9a-f]{12}", self.codebooks_hash):
            raise ValueError(f"codebooks_hash must be empty or 12 hex digits, got {self.codebooks_hash!r}")
        if not isinstance(self.semantic_codebooks, list) or any(
                not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < self.num_quantizers
                for k in self.semantic_codebooks):
            raise ValueError(f"semantic_codebooks must list codebook indices in [0, {self.num_quantizers}), "
                             f"got {self.semantic_codebooks!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CodecConfig:
        if not isinstance(data, dict):
            raise ValueError("the codec config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown codec config keys: {sorted(unknown)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CodecConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def config_hash(self) -> str:
        """Short hash of everything that changes which codes mean what (not the name)."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("name", "semantic_codebooks")}
        if not data["codebooks_hash"]:
            del data["codebooks_hash"]  # folders from before it was recorded keep their hash
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class HarmonicCodecConfig(CodecConfig):
    name: str = "voxtok-16k-v2"
    architecture: str = "harmonic"
    window: int = 320
    bands: int = 64
    pitch_window: int = 640
    pitch_lags: int = 64
    ap_bands: int = 0
    # 0: F0 regressed as log2(F0 / 150 Hz). N > 0: F0 classified into N log-spaced bins from 50 to 600 Hz (as CREPE
    # does), which learns the pitch period's position from the autocorrelation far faster than a regression.
    f0_bins: int = 0
    enc_sub_dim: int = 128
    enc_sub_layers: int = 2
    enc_dim: int = 256
    enc_layers: int = 4
    dec_dim: int = 256
    dec_layers: int = 6
    num_quantizers: int = 12

    @property
    def params_per_subframe(self) -> int:
        # log-mel, F0 (log2 F0, or one logit per bin), voicing logit, aperiodicity logits
        return self.bands + max(1, self.f0_bins) + 1 + self.ap_bands

    # The value `architecture` must hold (a subclass describes another model on the same synthesiser).
    ARCHITECTURE = "harmonic"

    def validate(self) -> None:
        super().validate()
        if self.architecture != self.ARCHITECTURE:
            raise ValueError(f"architecture must be {self.ARCHITECTURE!r}, got {self.architecture!r}")
        for name, (low, high) in _HARMONIC_BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.pitch_window < self.subframe or self.pitch_window % self.subframe:
            raise ValueError("pitch_window must be a multiple of subframe")


@dataclass
class LowRateConfig(HarmonicCodecConfig):
    """The 12.5 Hz tokenizer (voxtok.lowrate): one token frame per hop_length = 1280 samples (80 ms). Its latent is
    continuous (a sigma-VAE mean, normalised by statistics shipped in the weights) and has a discrete twin: FSQ with
    fsq_levels levels per dimension, the dimensions in num_quantizers groups, each group one code of
    fsq_levels ** (latent_dim / num_quantizers) entries (5 ** 4 = 625: 10 bits, 8 groups = 1.0 kbps). Decoders run
    at feature_hop (50 Hz) and predict the v2 synthesiser's parameters: a regression decoder and a conditional
    flow-matching decoder, both reading the same latents."""

    ARCHITECTURE = "lowrate"
    name: str = "voxtok-16k-12hz"
    architecture: str = "lowrate"
    hop_length: int = 1280
    latent_dim: int = 32
    num_quantizers: int = 8
    codebook_size: int = 625
    fsq_levels: int = 5
    feature_hop: int = 320
    enc_low_dim: int = 256
    enc_low_layers: int = 2
    # Decoders see this many tokens ahead (80 ms each): the decoder output runs this far behind its input.
    lookahead_tokens: int = 1
    flow_dim: int = 192
    flow_layers: int = 6
    flow_cond_layers: int = 2
    flow_steps: int = 8

    @property
    def feature_frames_per_token(self) -> int:
        return self.hop_length // self.feature_hop

    @property
    def subframes_per_feature_frame(self) -> int:
        return self.feature_hop // self.subframe

    @property
    def fsq_group(self) -> int:
        return self.latent_dim // self.num_quantizers

    @property
    def decoder_delay(self) -> int:
        return self.lookahead_tokens * self.hop_length + self.window - self.subframe

    def validate(self) -> None:
        super().validate()
        for name, (low, high) in _LOW_RATE_BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.hop_length % self.feature_hop or self.feature_hop % self.subframe:
            raise ValueError("hop_length must be a multiple of feature_hop, and feature_hop of subframe")
        if self.latent_dim % self.num_quantizers:
            raise ValueError("latent_dim must be a multiple of num_quantizers (the FSQ groups)")
        if self.codebook_size != self.fsq_levels ** self.fsq_group:
            raise ValueError(f"codebook_size must be fsq_levels ** (latent_dim / num_quantizers) = "
                             f"{self.fsq_levels ** self.fsq_group}, got {self.codebook_size}")
        if self.f0_bins or self.ap_bands:
            raise ValueError("the low-rate tokenizer predicts F0 by regression and no aperiodicity bands "
                             "(f0_bins and ap_bands must be 0)")


@dataclass
class StackedConfig(CodecConfig):
    """The 12.5 Hz tokenizer stacked on codec v2 (voxtok.stacked): one token per hop_length = 1280 samples (80 ms)
    from base_hop_frames = 4 of the base codec's 50 Hz latents, and back to them. The base (`base_model`, a shipped
    name or a folder) encodes audio and decodes latents; this model holds only its own 12.5 Hz stage, and pins the
    base's token-defining weights (`base_tokens_hash`), so a base whose encoder changed is refused while a better
    base decoder is used as it is. Tokens: a D = latent_dim sigma-VAE latent, normalised by shipped statistics (the
    continuous tokens), and its FSQ twin (fsq_levels per dimension, num_quantizers groups of latent_dim /
    num_quantizers dimensions, each group one code of codebook_size = fsq_levels ** group entries)."""

    ARCHITECTURE = "stacked"
    name: str = "voxtok-16k-12hz"
    architecture: str = "stacked"
    hop_length: int = 1280
    base_model: str = "voxtok-16k-v2"
    base_tokens_hash: str = ""
    base_hop: int = 320
    base_latent_dim: int = 64
    # The base decoder's own delay (its synthesiser's overlap), recorded so torch-free code knows the whole delay.
    base_decoder_delay: int = 240
    latent_dim: int = 32
    num_quantizers: int = 8
    codebook_size: int = 625
    fsq_levels: int = 5
    enc_dim: int = 256
    enc_layers: int = 2  # at the base rate (50 Hz)
    enc_low_layers: int = 3  # at the token rate (12.5 Hz)
    dec_dim: int = 256
    dec_low_layers: int = 2  # at the token rate, before the tokens are spread over the base frames
    dec_layers: int = 4  # at the base rate
    # Decoders see this many tokens ahead (80 ms each): their output runs this far behind their input.
    lookahead_tokens: int = 1
    flow_dim: int = 192
    flow_layers: int = 4
    flow_cond_layers: int = 2
    flow_steps: int = 8

    @property
    def feature_frames_per_token(self) -> int:
        return self.hop_length // self.base_hop

    @property
    def fsq_group(self) -> int:
        return self.latent_dim // self.num_quantizers

    @property
    def decoder_delay(self) -> int:
        return self.lookahead_tokens * self.hop_length + self.base_decoder_delay

    def validate(self) -> None:
        super().validate()
        if self.architecture != self.ARCHITECTURE:
            raise ValueError(f"architecture must be {self.ARCHITECTURE!r}, got {self.architecture!r}")
        for name, (low, high) in _STACKED_BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if not isinstance(self.base_model, str) or not self.base_model or len(self.base_model) > 512:
            raise ValueError("base_model must name the base codec (1 to 512 characters)")
        if not isinstance(self.base_tokens_hash, str) or (
                self.base_tokens_hash and not re.fullmatch(r"[0-9a-f]{12}", self.base_tokens_hash)):
            raise ValueError(f"base_tokens_hash must be empty or 12 hex digits, got {self.base_tokens_hash!r}")
        if self.hop_length % self.base_hop:
            raise ValueError("hop_length must be a multiple of base_hop")
        if self.latent_dim % self.num_quantizers:
            raise ValueError("latent_dim must be a multiple of num_quantizers (the FSQ groups)")
        if self.codebook_size != self.fsq_levels ** self.fsq_group:
            raise ValueError(f"codebook_size must be fsq_levels ** (latent_dim / num_quantizers) = "
                             f"{self.fsq_levels ** self.fsq_group}, got {self.codebook_size}")


_STACKED_BOUNDS = {"base_hop": (1, 8192), "base_latent_dim": (1, 4096), "base_decoder_delay": (0, 1 << 16),
                   "fsq_levels": (2, 16), "enc_low_layers": (0, 64), "dec_low_layers": (0, 64),
                   "lookahead_tokens": (0, 8), "flow_dim": (1, 4096), "flow_layers": (0, 64),
                   "flow_cond_layers": (0, 64), "flow_steps": (1, 256)}

_LOW_RATE_BOUNDS = {"fsq_levels": (2, 16), "feature_hop": (1, 8192), "enc_low_dim": (1, 4096),
                    "enc_low_layers": (0, 64), "lookahead_tokens": (0, 8), "flow_dim": (1, 4096),
                    "flow_layers": (0, 64), "flow_cond_layers": (0, 64), "flow_steps": (1, 256)}

_HARMONIC_BOUNDS = {"bands": (8, 256), "pitch_window": (80, 8192), "pitch_lags": (1, 512), "ap_bands": (0, 64),
                    "f0_bins": (0, 1024)}


def config_from_dict(data: dict) -> CodecConfig:
    """A config.json (or a recipe's [model] table, or an ONNX manifest's config) -> the config of the model it
    describes: `architecture` names the v2 model; v1 configs have no such key (their hash, and so their token
    files, must not change)."""
    if isinstance(data, dict) and data.get("architecture") == "harmonic":
        return HarmonicCodecConfig.from_dict(data)
    if isinstance(data, dict) and data.get("architecture") == "lowrate":
        return LowRateConfig.from_dict(data)
    if isinstance(data, dict) and data.get("architecture") == "stacked":
        return StackedConfig.from_dict(data)
    return CodecConfig.from_dict(data)


_FIELD_TYPES = {"str": str, "int": int, "float": float, "list[int]": list}  # list items: checked in validate
# Inclusive bounds: generous for any speech codec this design can describe, tight enough that no config can ask
# for a model too large to build (the parameter count is checked again before the weights are allocated).
_BOUNDS = {
    "sample_rate": (8000, 96000),
    "hop_length": (8, 8192),
    "subframe": (1, 8192),
    "window": (1, 16384),
    "enc_sub_dim": (1, 2048),
    "enc_sub_layers": (0, 64),
    "enc_dim": (1, 4096),
    "enc_layers": (0, 64),
    "latent_dim": (1, 4096),
    "dec_dim": (1, 4096),
    "dec_layers": (0, 64),
    "mlp_ratio": (0.1, 16.0),
    "kernel_size": (1, 63),
    "num_quantizers": (1, 64),
    "codebook_size": (2, 65536),
    "codebook_decay": (0.0, 1.0),
    "dead_code_threshold": (0.0, 1e6),
    "kmeans_iters": (0, 1000),
}
