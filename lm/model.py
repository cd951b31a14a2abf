"""The speech LM, in one file after nanoGPT: a config dataclass and a causal transformer over speech tokens, with a
discrete head (the tokenizer's FSQ codes in the MusicGen delay pattern, voxtok.lm.delay) or a continuous one (the
tokenizer's normalised latents, predicted by a small flow-matching MLP as VibeVoice / MAR / Pocket TTS do).

One sequence (voxtok.lm.sequence builds it):

    [voice prompt: speech frames] <prompt-end> [phonemes] <sep> [target speech frames ...] (end of speech)

The prompt is a few seconds of another recording of the target voice (VALL-E style: the voice is in context, so
no speaker table is learned); the loss covers the target frames and the end of speech only. Positions are
rotary, so a KV cache extends any prefix.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("discrete", "continuous")
# Token kinds in a sequence (voxtok.lm.sequence): what each position's embedding is made of.
SPEECH, TEXT, MARKER = 0, 1, 2
PROMPT_END, SEPARATOR = 0, 1
# Segments: the voice prompt, the text, the target speech.
SEGMENTS = 3
# Aligned LMs: the phonemes an aligned position sees, as offsets from the one its alignment state names (the one
# before, it, and two ahead: at 12.5 Hz a frame spans 80 ms, and a short phoneme can fall between two frames).
ALIGN_WINDOW = (-1, 0, 1, 2)


@dataclass
class SpeechLMConfig:
    name: str = "voxtok-lm"
    kind: str = "discrete"
    tokenizer: str = "voxtok-16k-12hz"  # the model id whose tokens this LM reads
    tokenizer_config_hash: str = ""
    # Its weights (VoxtokCodec.weights_hash; "" in LMs made before it was recorded) and the folder it was loaded
    # from when not a shipped name: a fine-tuned tokenizer has the shipped one's name and config.
    tokenizer_weights_hash: str = ""
    # The weights that define its tokens (VoxtokCodec.tokens_hash: encoder and quantizer; "" in LMs made before
    # it was recorded): where set, it is what a tokenizer must match, so a decoder fine-tune still serves the LM.
    tokenizer_tokens_hash: str = ""
    tokenizer_source: str = ""
    frame_rate: float = 12.5
    num_codebooks: int = 8
    codebook_size: int = 625
    latent_dim: int = 32
    phone_symbols: list[str] = field(default_factory=list)  # the symbol table, saved with the model
    dim: int = 256
    layers: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    max_positions: int = 4096
    # Continuous LM: the flow head, and the noise added to input latents in training (robustness to its own
    # imperfect samples, as VibeVoice / Pocket TTS train).
    flow_dim: int = 256
    flow_layers: int = 3
    flow_steps: int = 8
    input_noise: float = 0.1
    # Phoneme-synchronous input (voxtok.lm.align, voxtok.lm.sequence): each target frame is told which phonemes it
    # is speaking, from an alignment in training and from the advance head's own walk over the text in generation.
    # Without it the text is only in the prefix, and a small LM on hours of speech learns to all but ignore it.
    aligned: bool = False
    advance_classes: int = 8  # how far the alignment state may move in one frame: 0 .. advance_classes - 1
    # Speaker conditioning: a fixed speaker embedding of the voice prompt (Resemblyzer's, 256 dims; 0 = none),
    # projected and added at every position. The in-context prompt carries the voice's detail; the embedding
    # says who it is in a form trained on thousands of speakers, which a few hundred voices of data cannot teach.
    speaker_dim: int = 0
    # The sampling temperature its card measured: what `voxtok tts`, `voxtok lm eval`, the demo and voxtok.tts
    # use unless told otherwise (for a continuous LM it scales the flow head's starting noise).
    temperature: float = 0.8

    @property
    def pad_token(self) -> int:
        return self.codebook_size

    @property
    def eos_token(self) -> int:
        return self.codebook_size + 1

    @property
    def vocab(self) -> int:
        return self.codebook_size + 2

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name, (low, high) in {"num_codebooks": (1, 64), "codebook_size": (2, 65536), "latent_dim": (1, 1024),
                                  "dim": (8, 4096), "layers": (1, 64), "heads": (1, 64),
                                  "max_positions": (16, 1 << 20), "flow_dim": (8, 4096), "flow_layers": (1, 32),
                                  "flow_steps": (1, 256), "advance_classes": (2, 64),
                                  "speaker_dim": (0, 4096)}.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError("dim must be a multiple of heads, with an even head size (rotary positions)")
        if not self.phone_symbols or len(set(self.phone_symbols)) != len(self.phone_symbols):
            raise ValueError("phone_symbols must be a non-empty list of distinct symbols")
        if not isinstance(self.aligned, bool):
            raise ValueError(f"aligned must be true or false, got {self.aligned!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpeechLMConfig:
        if not isinstance(data, dict):
            raise ValueError("the LM config must be a JSON object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown LM config keys: {sorted(unknown)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg


# ---- the backbone ---------------------------------------------------------------------------------------------
def rotary_tables(head_dim: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, head_dim / 2] for integer positions [L]."""
    freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[:, None] * freqs[None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] rotated pairwise by the position's angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: SpeechLMConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        # Training with guided attention asks this layer for its attention probabilities (explicit softmax instead
        # of the fused kernel); they are left in self.weights [B, H, L, L] for the loss to read.
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple]:
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        past = k.shape[2] - length
        if self.keep_weights and past == 0:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            self.weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            y = self.weights @ v
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # new queries see every cached key and the new keys up to their own position
            mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, length, -1)), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: SpeechLMConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))
        # Residual dropout (nanoGPT's place for it). Its rate is a training choice, not part of the model: p stays 0
        # until a trainer calls SpeechLM.set_dropout, and eval() turns it off as usual.
        self.dropout = nn.Dropout(0.0)

    def forward(self, x, cos, sin, cache):
        h, cache = self.attn(self.norm1(x), cos, sin, cache)
        x = x + self.dropout(h)
        return x + self.dropout(self.mlp(self.norm2(x))), cache


# ---- the continuous head --------------------------------------------------------------------------------------
class FlowHead(nn.Module):
    """Velocity of the straight path from noise to the next latent, given the backbone's state: a residual MLP
    whose LayerNorms are modulated by the state and the flow time (AdaLN). Trained by conditional flow matching;
    sampled with `steps` Euler steps from temperature-scaled noise."""

    def __init__(self, latent_dim: int, cond_dim: int, width: int, layers: int):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(latent_dim, width)
        self.cond = nn.Linear(cond_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=False) for _ in range(layers))
        self.modulations = nn.ModuleList(nn.Linear(width, 3 * width) for _ in range(layers))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
                                  for _ in range(layers))
        for mod in self.modulations:
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)
        self.out = nn.Linear(width, latent_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=x.dtype) / half)
        angles = 1000.0 * t[..., None] * freqs
        c = self.cond(cond) + self.time(torch.cat([angles.sin(), angles.cos()], dim=-1))
        h = self.inp(x)
        for norm, mod, mlp in zip(self.norms, self.modulations, self.mlps):
            scale, shift, gate = mod(F.silu(c)).chunk(3, dim=-1)
            h = h + (1 + gate) * mlp(norm(h) * (1 + scale) + shift)
        return self.out(h)

    def loss(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row CFM loss for cond [N, C] and target latents [N, D] -> [N]."""
        t = torch.rand(target.shape[0], device=target.device, dtype=target.dtype)
        noise = torch.randn_like(target)
        xt = (1 - t[:, None]) * noise + t[:, None] * target
        return ((self(xt, t, cond) - (target - noise)) ** 2).mean(dim=-1)

    def sample(self, cond: torch.Tensor, steps: int, temperature: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
        x = temperature * torch.randn(cond.shape[0], self.out.out_features, generator=generator,
                                      device=cond.device, dtype=cond.dtype)
        for k in range(steps):
            t = torch.full((cond.shape[0],), k / steps, device=cond.device, dtype=cond.dtype)
            x = x + self(x, t, cond) / steps
        return x


# ---- guided attention -----------------------------------------------------------------------------------------
def guided_attention_loss(attention: torch.Tensor, kinds: torch.Tensor, segments: torch.Tensor,
                          sigma: float = 0.2) -> torch.Tensor:
    """Tacotron's guided attention (Tachibana et al. 2017), for a decoder-only LM: the attention [B, H, L, L] of
    the target frames (segment 2) should sit on the phonemes, near the diagonal n/N ≈ t/T. Mass on phoneme n costs
    1 - exp(-(n/N - t/T)² / 2σ²); mass anywhere else (prompt, markers, earlier frames) costs 1. Without such a
    prior a small LM on hours of speech learns to continue the voice and all but ignores the text (measured:
    teacher-forced CE with another sentence's phonemes within 0.6% of the right ones after 3,000 steps)."""
    batch, _, length, _ = attention.shape
    total, count = attention.new_zeros(()), 0
    for b in range(batch):
        text = (kinds[b] == TEXT).nonzero()[:, 0]
        query = ((segments[b] == 2) & (kinds[b] == SPEECH)).nonzero()[:, 0]
        if not len(text) or not len(query):
            continue
        n = (torch.arange(len(text), device=attention.device) + 0.5) / len(text)
        t = (torch.arange(len(query), device=attention.device) + 0.5) / len(query)
        cost = attention.new_ones(len(query), length)
        cost[:, text] = 1 - torch.exp(-((n[None] - t[:, None]) ** 2) / (2 * sigma**2))
        probs = attention[b][:, query]  # [H, Q, L]
        total = total + (probs * cost[None]).sum(-1).mean()
        count += 1
    return total / max(1, count)


# ---- the model ------------------------------------------------------------------------------------------------
class SpeechLM(nn.Module):
    def __init__(self, cfg: SpeechLMConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.text_embedding = nn.Embedding(len(cfg.phone_symbols), cfg.dim)
        self.marker_embedding = nn.Embedding(2, cfg.dim)
        self.segment_embedding = nn.Embedding(SEGMENTS, cfg.dim)
        if cfg.kind == "discrete":
            self.code_embeddings = nn.ModuleList(nn.Embedding(cfg.vocab, cfg.dim) for _ in range(cfg.num_codebooks))
            self.code_heads = nn.ModuleList(nn.Linear(cfg.dim, cfg.vocab) for _ in range(cfg.num_codebooks))
        else:
            self.latent_in = nn.Linear(cfg.latent_dim, cfg.dim)
            self.flow_head = FlowHead(cfg.latent_dim, cfg.dim, cfg.flow_dim, cfg.flow_layers)
            self.eos_head = nn.Linear(cfg.dim, 1)
        if cfg.aligned:  # one table per window offset; the extra row is "no phoneme there"
            self.window_embeddings = nn.ModuleList(nn.Embedding(len(cfg.phone_symbols) + 1, cfg.dim)
                                                   for _ in ALIGN_WINDOW)
            self.place_embedding = nn.Embedding(4, cfg.dim)  # voxtok.lm.sequence: not aligned, pause, inside, ended
            self.advance_head = nn.Linear(cfg.dim, cfg.advance_classes)
        if cfg.speaker_dim:
            self.speaker_in = nn.Linear(cfg.speaker_dim, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)

    def set_dropout(self, p: float) -> None:
        """The residual dropout rate of every block while training (0 = none)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p!r}")
        for block in self.blocks:
            block.dropout.p = p

    # ---- embedding ---------------------------------------------------------------------------------------
    def embed(self, batch: dict) -> torch.Tensor:
        """A built sequence (voxtok.lm.sequence.Sequence.as_batch) -> input embeddings [B, L, dim]. batch["speaker"]
        [B, speaker_dim] (LMs with speaker_dim; zeros: no voice) is added at every position."""
        kinds = batch["kinds"]
        x = self.segment_embedding(batch["segments"])
        x = x + self.text_embedding(batch["text"]) * (kinds == TEXT)[..., None]
        x = x + self.marker_embedding(batch["markers"]) * (kinds == MARKER)[..., None]
        speech = (kinds == SPEECH)[..., None]
        if self.config.kind == "discrete":
            codes = batch["codes"]  # [B, K, L]
            x = x + sum(emb(codes[:, i]) for i, emb in enumerate(self.code_embeddings)) * speech
        else:
            x = x + self.latent_in(batch["latents"].transpose(1, 2)) * speech
        if self.config.aligned:
            aligned = (batch["place"] > 0)[..., None]
            window = sum(emb(batch["window"][:, i]) for i, emb in enumerate(self.window_embeddings))
            x = x + (window + self.place_embedding(batch["place"])) * aligned
        if self.config.speaker_dim:
            speaker = batch.get("speaker")
            if speaker is None:
                speaker = x.new_zeros(x.shape[0], self.config.speaker_dim)
            x = x + self.speaker_in(speaker.to(x.dtype))[:, None]
        return x

    def backbone(self, x: torch.Tensor, start: int = 0, cache: list | None = None) -> tuple[torch.Tensor, list]:
        """[B, L, dim] at positions start.. -> hidden states [B, L, dim] and the new KV cache."""
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        cos, sin = rotary_tables(self.config.dim // self.config.heads, positions)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cos, sin, None if cache is None else cache[i])
            new_cache.append(layer_cache)
        return self.norm(x), new_cache

    # ---- training ------------------------------------------------------------------------------------------
    def loss(self, batch: dict, guided: tuple[float, float] | None = None) -> tuple[torch.Tensor, dict]:
        """Teacher-forced loss on a built batch; figures per codebook (discrete) or flow / EOS (continuous).
        guided = (weight, sigma) adds guided_attention_loss (a training aid for text alignment)."""
        cfg = self.config
        if cfg.kind == "continuous" and self.training and cfg.input_noise:
            batch = dict(batch)
            batch["latents"] = batch["latents"] + cfg.input_noise * torch.randn_like(batch["latents"])
        guide = guided is not None and guided[0] > 0
        guide_layer = self.blocks[len(self.blocks) // 2].attn
        guide_layer.keep_weights = guide
        try:
            hidden, _ = self.backbone(self.embed(batch))
        finally:
            guide_layer.keep_weights = False
        main, figures = self._prediction_loss(hidden, batch)
        if cfg.aligned:
            advance = F.cross_entropy(self.advance_head(hidden).reshape(-1, cfg.advance_classes),
                                      batch["advance"].reshape(-1), ignore_index=-1)
            figures["advance_ce"] = advance.item()
            main = main + advance
        if guide:
            attention, guide_layer.weights = guide_layer.weights, None
            heads = max(1, cfg.heads // 2)
            penalty = guided_attention_loss(attention[:, :heads], batch["kinds"], batch["segments"], guided[1])
            figures["guided"] = penalty.item()
            main = main + guided[0] * penalty
        return main, figures

    def _prediction_loss(self, hidden: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.config
        if cfg.kind == "discrete":
            targets = batch["targets"]  # [B, K, L], -1 = no loss
            total, figures = hidden.new_zeros(()), {}
            for i, head in enumerate(self.code_heads):
                logits = head(hidden)
                ce = F.cross_entropy(logits.reshape(-1, cfg.vocab), targets[:, i].reshape(-1), ignore_index=-1)
                figures[f"ce_{i}"] = ce.item()
                total = total + ce
            return total / cfg.num_codebooks, figures
        mask = batch["target_mask"]  # [B, L]: a latent to predict from this position
        flow = self.flow_head.loss(hidden[mask], batch["target_latents"].transpose(1, 2)[mask]).mean()
        eos_mask = batch["eos_mask"]  # [B, L]: positions with an end-of-speech decision
        eos = F.binary_cross_entropy_with_logits(self.eos_head(hidden)[..., 0][eos_mask], batch["eos"][eos_mask])
        return flow + eos, {"flow": flow.item(), "eos_bce": eos.item()}

    # ---- weights ----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, half: bool = False) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                 for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> SpeechLM:
        """A model folder (config.json + model.safetensors); every failure one VoxtokError."""
        from safetensors.torch import load_file
        from voxtok.errors import VoxtokError

        directory = Path(directory)
        weights, config_path = directory / "model.safetensors", directory / "config.json"
        if not weights.is_file() or not config_path.is_file():
            raise VoxtokError(f"{directory}: not a voxtok LM (needs config.json and model.safetensors)")
        try:
            cfg = SpeechLMConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise VoxtokError(f"{config_path}: not a valid LM config ({exc})") from None
        model = cls(cfg)
        try:
            state = load_file(str(weights), device=device)
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except Exception as exc:  # safetensors' own errors and RuntimeError for shapes
            raise VoxtokError(f"{weights}: does not load into this config ({str(exc).splitlines()[0]})") from None
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise VoxtokError(f"{weights}: holds NaN or infinite values")
        return model.to(device).eval()
