"""Torch side of the ONNX export: wrap the codec's functional streaming steps and offline passes as
graphs with the quantizer inside, write them with a manifest.json the torch-free runtime reads.

Four float32 graphs come out (batch and length dynamic in all of them):
  encoder_step:  audio [B, 1, 320 k] + encoder states -> codes [B, n_q, k] + new states
  decoder_step:  codes [B, q, k] + decoder states -> overlap-add blocks [B, 1, 320 k] + new states
  encoder:       audio [B, 1, N] (any N) -> codes [B, n_q, ceil(N / 320)]
  decoder:       codes [B, q, T] -> audio [B, 1, 320 T], aligned with the encoder's input
The encoders always emit every codebook; the residual search is greedy, so the first q rows are exactly
the codes a q-codebook search gives, and a caller wanting fewer bits slices. The decoders take any
1 <= q <= n_q codebooks. The iSTFT head is matmuls and overlap-add in the model already, so it exports
as plain ops.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from voxtok.audio import atomic_write
from voxtok.errors import VoxtokError
from voxtok.model import VoxtokCodec

OPSET = 20  # first opset with a native Gelu, which onnxruntime runs as one kernel
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
GRAPH_FILES = {
    "encoder_step": "encoder_step.onnx",
    "decoder_step": "decoder_step.onnx",
    "encoder": "encoder.onnx",
    "decoder": "decoder.onnx",
}


def lookup_codes(codes: torch.Tensor, flat_codebooks: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """codes [B, q, T] -> summed code vectors [B, dim, T] for any q: one gather into the stacked
    codebooks (row i * size + code), so q can be a dynamic dimension of the graph."""
    offsets = torch.arange(codes.shape[1], dtype=codes.dtype, device=codes.device) * codebook_size
    vectors = F.embedding(codes + offsets[None, :, None], flat_codebooks)  # [B, q, T, dim]
    return vectors.sum(dim=1).transpose(1, 2)


class _QuantizerTables(nn.Module):
    """The codebooks as constant tables of the graphs: stacked for the decoder's one gather, and one set per
    level for the encoder's search (separate initialisers, so no per-call slicing of the stack)."""

    def __init__(self, model: VoxtokCodec):
        super().__init__()
        books = model.quantizer.codebooks.detach().float().clone()
        self.codebook_size, self.levels = books.shape[1], books.shape[0]
        self.register_buffer("flat_codebooks", books.reshape(-1, books.shape[-1]))
        for level, book in enumerate(books):
            self.register_buffer(f"book_{level}", book.clone())
            self.register_buffer(f"scaled_books_t_{level}", (-2.0 * book).t().contiguous())
            self.register_buffer(f"norms_{level}", (book * book).sum(-1))


def nearest_codes(latents: torch.Tensor, tables: _QuantizerTables) -> torch.Tensor:
    """[B, dim, T] -> codes [B, n_q, T]: the greedy residual search of ResidualQuantizer.encode, written
    with ops every exporter knows: argmin over ||c||^2 - 2 r.c, with -2 c^T stored per level as a plain
    [dim, K] matrix, so onnxruntime pre-packs it (a transposed operand per call cost about 10% of the step)."""
    residual = latents.transpose(1, 2)
    codes = []
    for level in range(tables.levels):
        book = getattr(tables, f"book_{level}")
        scores = residual @ getattr(tables, f"scaled_books_t_{level}") + getattr(tables, f"norms_{level}")
        index = scores.argmin(-1)
        codes.append(index)
        residual = residual - F.embedding(index, book)
    return torch.stack(codes, dim=1)


class EncoderStep(nn.Module):
    def __init__(self, model: VoxtokCodec):
        super().__init__()
        self.encoder = model.encoder
        self.tables = _QuantizerTables(model)

    def forward(self, audio: torch.Tensor, states: tuple[torch.Tensor, ...]):
        latents, new_states = self.encoder.step(audio, list(states))
        return nearest_codes(latents, self.tables), tuple(new_states)


class DecoderStep(nn.Module):
    def __init__(self, model: VoxtokCodec):
        super().__init__()
        self.decoder = model.decoder
        self.tables = _QuantizerTables(model)

    def forward(self, codes: torch.Tensor, states: tuple[torch.Tensor, ...]):
        latents = lookup_codes(codes, self.tables.flat_codebooks, self.tables.codebook_size)
        audio, new_states = self.decoder.step(latents, list(states))
        return audio, tuple(new_states)


class OfflineEncoder(nn.Module):
    def __init__(self, model: VoxtokCodec):
        super().__init__()
        self.encoder = model.encoder
        self.hop = model.config.hop_length
        self.tables = _QuantizerTables(model)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # Zero-pad to whole frames as VoxtokCodec.encode does; pad-then-slice keeps the length expression
        # one torch.export can reason about.
        whole = (audio.shape[-1] + self.hop - 1) // self.hop * self.hop
        padded = F.pad(audio, (0, self.hop - 1))[..., :whole]
        return nearest_codes(self.encoder(padded), self.tables)


class OfflineDecoder(nn.Module):
    def __init__(self, model: VoxtokCodec):
        super().__init__()
        self.decoder = model.decoder
        self.offset = model.config.decoder_delay
        self.hop = model.config.hop_length
        self.tables = _QuantizerTables(model)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        latents = lookup_codes(codes, self.tables.flat_codebooks, self.tables.codebook_size)
        blocks = self.decoder(latents)
        return blocks[..., self.offset:self.offset + codes.shape[-1] * self.hop]


class Conv1dAs2d(nn.Module):
    """An nn.Conv1d computed as a 2-D conv over a height-1 image. Same weights and numbers (to float
    rounding); onnxruntime has fast kernels for 2-D depthwise convs and none for the 1-D grouped case,
    which it runs as one tiny GEMM per channel (3-4x slower for the ConvNeXt blocks' 7-tap convs)."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.padding != (0,) or conv.dilation != (1,):
            raise ValueError("only unpadded, undilated convs are rewritten")
        self.weight = nn.Parameter(conv.weight.detach()[:, :, None, :].clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride = conv.stride[0]
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.unsqueeze(2), self.weight, self.bias, stride=(1, self.stride), groups=self.groups)
        return y.squeeze(2)


def _rewrite_convs(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Conv1d):
            setattr(module, name, Conv1dAs2d(child))
        else:
            _rewrite_convs(child)


def _describe_states(prefix: str, states: list[torch.Tensor]) -> list[dict]:
    return [{"name": f"{prefix}_state_{i}", "output": f"new_{prefix}_state_{i}",
             "shape": ["batch", *s.shape[1:]], "dtype": str(s.dtype).removeprefix("torch.")}
            for i, s in enumerate(states)]


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes) -> None:
    """Dynamo exporter (torch.export); written through a temporary file so no half graph is left."""
    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            # The exporter warns about things that do not apply here (torchvision ops, deprecations).
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, external_data=False,
                                        input_names=input_names, output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
        program.save(tmp, external_data=False)

    atomic_write(path, write)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _quiet_exporter() -> None:
    # The exporter prints progress lines and per-op warnings through logging; a CLI user needs none.
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx.experimental"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quantize_int8(src: Path, dest: Path) -> list[str]:
    """Dynamic INT8 weights for the backbone MatMuls. The codebook search and every fixed DSP matrix stay float:
    an int8 codebook distance flips nearest-neighbour choices, the DFT bases are the waveform, and the harmonic
    synthesiser's band filters divide by magnitudes that int8 rounding can zero. Returns the excluded nodes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    keep_float = set()
    for init in model.graph.initializer:
        dsp = ("codebooks", "norms", "basis", "filters", "spread", "inverse", "acf_basis", "ap_spread")
        if init.name.endswith(dsp) or "tables" in init.name:
            keep_float.add(init.name)
    # Constants folded from the codebooks (transposed copies) lose their names; catch them by use. And only the
    # MatMuls of learned nn.Linear layers are quantized: the exporter records each node's module classes, and a
    # plain matmul is a fixed DSP matrix (a band filter's folded transpose has no telling name of its own).
    def learned(node) -> bool:
        hierarchy = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.class_hierarchy")
        return hierarchy is None or "torch.nn.modules.linear.Linear" in hierarchy

    excluded = [n.name for n in model.graph.node
                if n.op_type == "MatMul" and (not learned(n) or any(_traces_to(model, i, keep_float) for i in n.input))]

    def write(tmp: str) -> None:
        # quantize_dynamic logs advice about calibration pre-processing on the root logger; it does not
        # apply to weight-only dynamic quantization.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(src), tmp, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                             nodes_to_exclude=excluded)
        finally:
            root.setLevel(level)

    atomic_write(dest, write)
    return excluded


def _traces_to(model, tensor: str, names: set[str], depth: int = 4) -> bool:
    """Whether `tensor` is one of `names` or computed from one within `depth` nodes."""
    if tensor in names:
        return True
    if depth == 0:
        return False
    for node in model.graph.node:
        if tensor in node.output:
            return any(_traces_to(model, i, names, depth - 1) for i in node.input)
    return False


def export_onnx(model: VoxtokCodec, out_dir: str | Path, weights_sha256: str | None = None,
                int8: bool = False) -> dict:
    """Write the four graphs (plus INT8 copies when asked) and manifest.json into out_dir; return the manifest.

    The model is copied and cast to float32 first: `from_pretrained` leaves the encoder in float64 for exact
    PyTorch inference, but the graphs are float32 for onnxruntime's fast kernels.
    """
    if int8 and not model.int8_export:
        raise VoxtokError(f"{model.model_id}: INT8 graphs are not supported for the harmonic codec (int8 weights "
                          "change most of its codes); export fp32")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise VoxtokError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    # A manifest left from an earlier export would describe a mix of old and new graphs if this one fails.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    _quiet_exporter()
    model = copy.deepcopy(model).float().eval()
    _rewrite_convs(model)
    cfg = model.config
    hop, n_q = cfg.hop_length, cfg.num_quantizers
    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=1, max=10_000_000)
    samples = torch.export.Dim("samples", min=1, max=3_200_000_000)
    codebooks = torch.export.Dim("codebooks", min=1, max=n_q)
    # Batch 2 and several frames in the examples, so the exporter cannot specialise those sizes to 1.
    enc_states = model.encoder.init_state(2)
    dec_states = model.decoder.init_state(2)
    enc_desc = _describe_states("enc", enc_states)
    dec_desc = _describe_states("dec", dec_states)
    audio = torch.randn(2, 1, 3 * hop) * 0.1
    codes = torch.randint(0, cfg.codebook_size, (2, n_q, 3))
    with torch.no_grad():
        _export(EncoderStep(model), (audio, tuple(enc_states)), out_dir / GRAPH_FILES["encoder_step"],
                ["audio", *[s["name"] for s in enc_desc]], ["codes", *[s["output"] for s in enc_desc]],
                {"audio": {0: batch, 2: hop * frames}, "states": tuple({0: batch} for _ in enc_states)})
        _export(DecoderStep(model), (codes, tuple(dec_states)), out_dir / GRAPH_FILES["decoder_step"],
                ["codes", *[s["name"] for s in dec_desc]], ["audio", *[s["output"] for s in dec_desc]],
                {"codes": {0: batch, 1: codebooks, 2: frames}, "states": tuple({0: batch} for _ in dec_states)})
        _export(OfflineEncoder(model), (audio[..., :3 * hop - 77],), out_dir / GRAPH_FILES["encoder"],
                ["audio"], ["codes"], {"audio": {0: batch, 2: samples}})
        _export(OfflineDecoder(model), (codes,), out_dir / GRAPH_FILES["decoder"],
                ["codes"], ["audio"], {"codes": {0: batch, 1: codebooks, 2: frames}})
    variants = {"fp32": dict(GRAPH_FILES)}
    excluded: dict[str, list[str]] = {}
    if int8:
        variants["int8"] = {}
        for key, name in GRAPH_FILES.items():
            int8_name = name.replace(".onnx", ".int8.onnx")
            excluded[key] = quantize_int8(out_dir / name, out_dir / int8_name)
            variants["int8"][key] = int8_name
    manifest = build_manifest(model, variants, enc_desc, dec_desc, weights_sha256)
    manifest["files_sha256"] = {name: _sha256(out_dir / name) for files in variants.values()
                                for name in files.values()}
    if int8:
        manifest["int8_float_nodes"] = {k: len(v) for k, v in excluded.items()}
    text = json.dumps(manifest, indent=2) + "\n"
    # The manifest goes last: its presence marks a complete export.
    atomic_write(out_dir / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    return manifest


def build_manifest(model: VoxtokCodec, variants: dict, enc_desc: list[dict], dec_desc: list[dict],
                   weights_sha256: str | None) -> dict:
    import onnx

    cfg = model.config
    skip = cfg.decoder_delay
    return {
        "format": "voxtok-onnx",
        "format_version": FORMAT_VERSION,
        "model_id": model.model_id,
        "config_hash": cfg.config_hash(),
        "weights_sha256": weights_sha256,
        "config": cfg.to_dict(),
        "opset": OPSET,
        "dtype": "float32",
        "sample_rate": cfg.sample_rate,
        "frame_size": cfg.hop_length,
        "frame_rate": cfg.frame_rate,
        "num_quantizers": cfg.num_quantizers,
        "codebook_size": cfg.codebook_size,
        "graphs": variants,
        "inputs": {
            "encoder_step": {"audio": ["batch", 1, f"{cfg.hop_length} * frames"]},
            "decoder_step": {"codes": ["batch", "codebooks", "frames"]},
            "encoder": {"audio": ["batch", 1, "samples"]},
            "decoder": {"codes": ["batch", "codebooks", "frames"]},
        },
        "outputs": {
            "encoder_step": {"codes": ["batch", cfg.num_quantizers, "frames"]},
            "decoder_step": {"audio": ["batch", 1, f"{cfg.hop_length} * frames"]},
            "encoder": {"codes": ["batch", cfg.num_quantizers, "ceil(samples / frame_size)"]},
            "decoder": {"audio": ["batch", 1, f"{cfg.hop_length} * frames"]},
        },
        "states": {"encoder_step": enc_desc, "decoder_step": dec_desc},
        # decoder_step output runs `decoder_skip_samples` behind the input: drop that many at stream start;
        # the last decoder state holds the overlap-add tail that flush returns.
        "decoder_skip_samples": skip,
        "decoder_tail_state": dec_desc[-1]["name"],
        "latency": {
            "frame_samples": cfg.hop_length,
            "istft_overlap_samples": skip,
            "algorithmic_samples": cfg.latency_samples,
            "algorithmic_ms": 1000 * cfg.latency_samples / cfg.sample_rate,
            "note": "one whole frame must arrive, then the iSTFT overlap-add must complete; "
                    "chunks longer than a frame add their own buffering",
        },
        "exporter": {"torch": torch.__version__, "onnx": onnx.__version__, "dynamo": True},
    }


def model_weights_sha256(model_dir: str | Path) -> str | None:
    path = Path(model_dir) / "model.safetensors"
    return _sha256(path) if path.is_file() else None


def resolve_model_dir(name_or_path: str | None) -> Path:
    """The folder load_codec would read, so the manifest can record a hash of its weights."""
    from voxtok.config import DEFAULT_MODEL
    from voxtok.loading import PRETRAINED_ROOT

    target = name_or_path or DEFAULT_MODEL
    path = Path(target)
    return path if path.is_dir() else PRETRAINED_ROOT / str(target)


def export_pretrained(name_or_path: str | None, out_dir: str | Path, int8: bool = False) -> dict:
    """Load a shipped model (or model folder) and export it."""
    from voxtok.compress import load_codec
    from voxtok.config import DEFAULT_MODEL

    model = load_codec(name_or_path or DEFAULT_MODEL)
    return export_onnx(model, out_dir, model_weights_sha256(resolve_model_dir(name_or_path)), int8=int8)


def probe_signal(sample_rate: int, seconds: float = 3.0) -> np.ndarray:
    """A fixed speech-like test signal (gliding harmonics in 4 Hz syllables, plus breath noise) for checking
    an export where no recorded speech is at hand."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25) if k * f0.max() < sample_rate / 2)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    signal = 0.25 * voiced * envelope + 0.01 * rng.standard_normal(len(t)) * (1 - envelope)
    return (signal / np.abs(signal).max() * 0.5).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    err = ref - np.asarray(estimate, dtype=np.float64).reshape(-1)[: len(ref)]
    return float(10 * np.log10(max(np.sum(ref**2), 1e-20) / max(np.sum(err**2), 1e-20)))


def verify_export(name_or_path: str | None, out_dir: str | Path, audio: np.ndarray | None = None,
                  min_code_agreement: float = 0.995, min_snr_db: float = 40.0) -> dict:
    """PyTorch vs ONNX on `audio` (default: probe_signal), per graph precision: share of frames whose codes
    all agree, SNR of the ONNX decoder against PyTorch's on the same codes, whether streaming ONNX codes equal
    offline ONNX codes, and the SNR of streamed against offline ONNX audio. fp32 also gets `ok` (the bars)."""
    from voxtok.compress import decode_codes, encode_samples, load_codec
    from voxtok.config import DEFAULT_MODEL
    from voxtok.export.runtime import ExportedCodec, OfflineCodec, StreamingDecoder, StreamingEncoder, load_manifest

    model = load_codec(name_or_path or DEFAULT_MODEL)
    audio = probe_signal(model.config.sample_rate) if audio is None else audio
    ref_codes = encode_samples(model, audio)
    ref_audio = decode_codes(model, ref_codes)
    results = {}
    for precision in load_manifest(out_dir)["graphs"]:
        codec = ExportedCodec(out_dir, precision=precision)
        offline = OfflineCodec(codec)
        codes = offline.encode(audio)
        decoded = offline.decode(ref_codes)
        encoder, decoder = StreamingEncoder(codec), StreamingDecoder(codec)
        # An odd chunk size, so frames straddle pushes.
        streamed = np.concatenate([*(encoder.push(audio[i:i + 333]) for i in range(0, len(audio), 333)),
                                   encoder.flush()], axis=-1)
        stream_audio = np.concatenate([decoder.push(ref_codes[:, i:i + 2]) for i in range(0, ref_codes.shape[1], 2)]
                                      + [decoder.flush()])
        figures = {
            "code_frames_equal": round(float((codes == ref_codes).all(axis=0).mean()), 4),
            "decode_snr_db": round(snr_db(ref_audio, decoded), 1),
            "stream_codes_equal_offline": bool(np.array_equal(streamed, codes)),
            "stream_audio_snr_db": round(snr_db(decoded, stream_audio), 1),
        }
        if precision == "fp32":
            # The bars hold for fp32 only. INT8 trades accuracy for speed, and its activation scales are
            # computed per call, so its streaming output is not bit-identical to its offline output either.
            figures["ok"] = (figures["code_frames_equal"] >= min_code_agreement
                             and figures["decode_snr_db"] >= min_snr_db and figures["stream_codes_equal_offline"])
        results[precision] = figures
    return results
