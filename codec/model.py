"""VoxtokCodec: causal encoder -> residual VQ -> causal decoder with an iSTFT head, offline and streaming.

Time alignment: code frame t summarises input samples [t * hop, (t + 1) * hop) and nothing later. The
decoder's overlap-add output runs (window - subframe) samples behind its input, which is the only
latency beyond the frame itself; `decode` removes that offset so the output lines up with the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from voxtok.config import CodecConfig
from voxtok.modules.conv import CausalConv1d
from voxtok.modules.convnext import ChannelLayerNorm, ConvNeXtBlock
from voxtok.modules.istft_head import ISTFTHead
from voxtok.modules.streaming import State, StreamingSequential
from voxtok.quantization import ResidualQuantizer

# Codebook EMA statistics: needed to keep training, not to encode or decode.
TRAINING_ONLY_BUFFERS = ("._codebook.embed_avg", "._codebook.cluster_size")


def half_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 for every floating tensor but the quantizer's: codebooks and their EMA statistics stay fp32, because
    nearest-neighbour choices (and k-means/EMA updates) are sensitive to rounding."""
    return {k: v.half() if v.is_floating_point() and "quantizer" not in k else v for k, v in state.items()}


def _blocks(dim: int, count: int, cfg: CodecConfig) -> list[nn.Module]:
    return [ConvNeXtBlock(dim, int(dim * cfg.mlp_ratio), cfg.kernel_size) for _ in range(count)]


class Encoder(StreamingSequential):
    """[B, 1, N] waveform (N a multiple of hop) -> [B, latent_dim, N / hop]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__(
            CausalConv1d(1, cfg.enc_sub_dim, cfg.window, cfg.subframe),
            *_blocks(cfg.enc_sub_dim, cfg.enc_sub_layers, cfg),
            ChannelLayerNorm(cfg.enc_sub_dim),
            CausalConv1d(cfg.enc_sub_dim, cfg.enc_dim, cfg.subframes_per_frame, cfg.subframes_per_frame),
            *_blocks(cfg.enc_dim, cfg.enc_layers, cfg),
            ChannelLayerNorm(cfg.enc_dim),
            nn.Conv1d(cfg.enc_dim, cfg.latent_dim, 1),
        )


class Decoder(StreamingSequential):
    """[B, latent_dim, T] -> overlap-add blocks [B, 1, (T * subframes + R - 1) * subframe]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__(
            CausalConv1d(cfg.latent_dim, cfg.dec_dim, 3),
            ChannelLayerNorm(cfg.dec_dim),
            *_blocks(cfg.dec_dim, cfg.dec_layers, cfg),
            ChannelLayerNorm(cfg.dec_dim),
            ISTFTHead(cfg.dec_dim, cfg.subframes_per_frame, cfg.window, cfg.subframe),
        )


@dataclass
class _StreamState:
    num_quantizers: int
    encoder_state: State
    decoder_state: State
    pending_input: torch.Tensor  # samples not yet making a whole frame
    decoder_skip: int  # output samples still to drop (the iSTFT offset at stream start)


class VoxtokCodec(nn.Module):
    """Codec v1: learned filterbank encoder -> RVQ -> ConvNeXt decoder with an iSTFT head. Subclasses (the v2
    HarmonicCodec) swap the encoder and decoder through make_encoder / make_decoder and keep everything else:
    bitrates, offline and streaming encode/decode, weights."""

    config_class = CodecConfig
    # Whether the model also has continuous tokens (encode_latents / decode_latents) and a choice of decoders
    # (set_decoding): the 12.5 Hz tokenizers. What callers ask instead of testing for a class.
    continuous = False
    # Whether INT8 weights in the exported graphs leave the codes as they are: the exporter asks this, not a class.
    int8_export = True

    def __init__(self, config: CodecConfig | None = None):
        super().__init__()
        self.config = config or self.config_class()
        self.config.validate()
        cfg = self.config
        self.encoder = self.make_encoder(cfg)
        self.quantizer = self.make_quantizer(cfg)
        self.decoder = self.make_decoder(cfg)
        self._stream: _StreamState | None = None

    def make_quantizer(self, cfg: CodecConfig) -> nn.Module:
        return ResidualQuantizer(cfg.latent_dim, cfg.num_quantizers, cfg.codebook_size, cfg.codebook_decay,
                                 cfg.dead_code_threshold, cfg.kmeans_iters)

    def make_encoder(self, cfg: CodecConfig) -> StreamingSequential:
        return Encoder(cfg)

    def make_decoder(self, cfg: CodecConfig) -> StreamingSequential:
        return Decoder(cfg)

    # ---- the tokenizer interface (voxtok.tokenizer.Tokenizer) ------------------------------------------
    @property
    def model_id(self) -> str:
        return self.config.name

    def weights_hash(self) -> str:
        """Short hash of the weights as fp16 (so a fp16 export and its fp32 checkpoint agree): what config_hash
        cannot tell apart, a fine-tune of the same architecture, whose codes mean something else."""
        return self._hash_weights(())

    # The modules whose weights say what a token means; the decoders only render tokens.
    TOKEN_MODULES = ("encoder.", "quantizer.")

    def tokens_hash(self) -> str:
        """weights_hash over the encoder and quantizer alone: a fine-tune of the decoders keeps it (the same
        audio gives the same tokens), so an LM trained on the tokens keeps working with the better decoder."""
        return self._hash_weights(self.TOKEN_MODULES)

    def _hash_weights(self, prefixes: tuple[str, ...]) -> str:
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            if name.endswith(TRAINING_ONLY_BUFFERS) or not tensor.is_floating_point():
                continue
            if prefixes and not name.startswith(prefixes):
                continue
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.config.num_quantizers

    @property
    def cardinality(self) -> int:
        return self.config.codebook_size

    @property
    def semantic_codebooks(self) -> tuple[int, ...]:
        return tuple(self.config.semantic_codebooks)

    @property
    def decoder_delay(self) -> int:
        return self.config.decoder_delay

    @property
    def operating_points(self) -> list[tuple[int, float]]:
        """(codebooks, kbps) pairs this model is trained for, via quantizer dropout."""
        n = self.config.num_quantizers
        counts = sorted({c for c in (1, 2, 3, 6, n) if c <= n})
        return [(c, round(c * self.config.kbps_per_codebook, 3)) for c in counts]

    def num_quantizers_for(self, bitrate_kbps: float | None) -> int:
        """The most codebooks whose bitrate fits in bitrate_kbps (all of them when None)."""
        return self.config.num_quantizers_for(bitrate_kbps)

    # ---- offline --------------------------------------------------------------------------------
    def _pad_to_frames(self, wav: torch.Tensor) -> torch.Tensor:
        hop = self.config.hop_length
        return F.pad(wav, (0, (-wav.shape[-1]) % hop))

    def _trim_decoder_output(self, blocks: torch.Tensor, num_frames: int) -> torch.Tensor:
        offset = self.config.decoder_delay
        return blocks[..., offset:offset + num_frames * self.config.hop_length]

    @property
    def encoder_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def use_exact_encoder(self) -> VoxtokCodec:
        """Run encoder and code search in float64 (for inference).

        In float32 the encoder's output moves by ~1e-7 with how the input was chunked (different conv
        kernels for different lengths), enough to flip a near-tie between two code vectors. In float64
        that noise is ~1e-16, so streaming, batched and one-shot encoding give the same codes.
        """
        self.encoder.double()
        return self

    def use_fast_encoder(self) -> VoxtokCodec:
        """Run the encoder in float32: 2-3x faster than the exact mode, for one-pass encoding of whole files
        (a corpus, a cache), where chunking noise does not arise."""
        self.encoder.float()
        return self

    def encode(self, wav: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """[B, 1, N] float waveform at config.sample_rate -> codes [B, n_q, ceil(N / hop)]."""
        latents = self.encoder(self._pad_to_frames(wav.to(self.encoder_dtype)))
        return self.quantizer.encode(latents, num_quantizers)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n_q, T] -> [B, 1, T * hop] waveform aligned with the encoder's input."""
        blocks = self.decoder(self.quantizer.decode(codes).to(self.decoder_dtype))
        return self._trim_decoder_output(blocks, codes.shape[-1])

    @property
    def decoder_dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction [B, 1, N'], codes with -1 for dropped layers, commitment loss)."""
        latents = self.encoder(self._pad_to_frames(wav))
        quantized, codes, commit = self.quantizer(latents)
        blocks = self.decoder(quantized)
        return self._trim_decoder_output(blocks, latents.shape[-1]), codes, commit

    # ---- streaming ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def streaming(self, batch_size: int = 1, num_quantizers: int | None = None) -> Iterator[None]:
        """Inside this context, encode_chunk/decode_chunk carry state from call to call."""
        device = next(self.parameters()).device
        self._stream = _StreamState(
            num_quantizers=num_quantizers or self.config.num_quantizers,
            encoder_state=self.encoder.init_state(batch_size, device, self.encoder_dtype),
            decoder_state=self.decoder.init_state(batch_size, device, self.decoder_dtype),
            pending_input=torch.zeros(batch_size, 1, 0, device=device, dtype=self.encoder_dtype),
            decoder_skip=self.config.decoder_delay,
        )
        try:
            yield
        finally:
            self._stream = None

    def _require_stream(self) -> _StreamState:
        if self._stream is None:
            raise RuntimeError("call encode_chunk/decode_chunk inside `with codec.streaming():`")
        return self._stream

    def encoder_chunk(self, wav: torch.Tensor) -> torch.Tensor | None:
        """Streaming encoder: buffer samples [B, 1, n] to whole frames and run them -> latents [B, dim, t] of the
        frames completed so far, or None when none completed (shared by codes and continuous latents)."""
        stream = self._require_stream()
        hop = self.config.hop_length
        joined = torch.cat([stream.pending_input, wav.to(stream.pending_input.dtype)], dim=-1)
        whole = joined.shape[-1] - joined.shape[-1] % hop
        stream.pending_input = joined[..., whole:]
        if whole == 0:
            return None
        latents, stream.encoder_state = self.encoder.step(joined[..., :whole], stream.encoder_state)
        return latents

    def final_padding(self) -> torch.Tensor | None:
        """The zeros that complete the last partial frame as offline `encode` pads it (None when nothing waits)."""
        pending = self._require_stream().pending_input
        if pending.shape[-1] == 0:
            return None
        return pending.new_zeros(pending.shape[0], 1, self.config.hop_length - pending.shape[-1])

    def encode_chunk(self, wav: torch.Tensor) -> torch.Tensor:
        """Any number of samples [B, 1, n] -> codes [B, n_q, t] for the frames completed so far."""
        stream = self._require_stream()
        latents = self.encoder_chunk(wav)
        if latents is None:
            return torch.zeros(wav.shape[0], stream.num_quantizers, 0, dtype=torch.long, device=wav.device)
        return self.quantizer.encode(latents, stream.num_quantizers)

    def flush_encoder(self) -> torch.Tensor:
        """Codes for the last partial frame, zero-padded exactly as offline `encode` pads."""
        stream = self._require_stream()
        padding = self.final_padding()
        if padding is None:
            pending = stream.pending_input
            return torch.zeros(pending.shape[0], stream.num_quantizers, 0, dtype=torch.long, device=pending.device)
        return self.encode_chunk(padding)

    def decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n_q, t] -> the waveform samples that are final after these frames."""
        stream = self._require_stream()
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0, device=codes.device, dtype=self.decoder_dtype)
        latents = self.quantizer.decode(codes).to(self.decoder_dtype)
        out, stream.decoder_state = self.decoder.step(latents, stream.decoder_state)
        if stream.decoder_skip:
            skip = min(stream.decoder_skip, out.shape[-1])
            out = out[..., skip:]
            stream.decoder_skip -= skip
        return out

    def flush_decoder(self) -> torch.Tensor:
        """The overlap-add tail still held in the decoder state (what offline decode ends with)."""
        stream = self._require_stream()
        tail = stream.decoder_state[-1].reshape(stream.decoder_state[-1].shape[0], 1, -1)
        return tail[..., stream.decoder_skip:]

    # ---- weights --------------------------------------------------------------------------------
    def finish_loading(self, directory: Path, load) -> None:
        """Hook: what a model needs beyond its own folder's weights (the 12.5 Hz tokenizer attaches its base, which
        it loads through `load`, voxtok.loading.load_codec: the loader is passed in so no model imports it)."""

    def save_pretrained(self, directory: str | Path, half: bool = False, inference_only: bool = False) -> None:
        """config.json + model.safetensors. `inference_only` drops the codebooks' EMA training statistics
        (a third of the file); `half` stores the non-codebook weights in fp16."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.float() if v.dtype == torch.float64 else v).detach().contiguous()
                 for k, v in self.state_dict().items()}
        if inference_only:
            state = {k: v for k, v in state.items() if not k.endswith(TRAINING_ONLY_BUFFERS)}
        if half:
            state = half_weights(state)
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        # An exported folder names its codebooks (so its token files are refused by other weights of the same
        # name); a training checkpoint does not, since its codebooks keep moving.
        fingerprint = codebooks_fingerprint(state) if inference_only else ""
        replace(self.config, codebooks_hash=fingerprint).save(directory / "config.json")


def codebooks_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """12 hex digits of sha256 over the codebooks (fp32, in name order): what tells two trainings of one
    architecture apart for token files. "" for a model without learned codebooks."""
    import hashlib

    names = sorted(k for k in state if k.endswith("._codebook.embed"))
    if not names:
        return ""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update(state[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]
