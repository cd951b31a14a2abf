"""Codec v2: the harmonic-plus-noise synthesiser and HarmonicCodec. Unit tests on tiny random-weight models (no
shared data), plus the synthesiser's copy-synthesis quality on real speech and its training step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from voxtok.compress import decode_codes, encode_samples, load_codec, make_header
from voxtok.errors import VoxtokError
from voxtok.harmonic_codec import HarmonicCodec, HarmonicCodecConfig
from voxtok.modules.harmonic import HarmonicSynth, SynthAnalysis

SR = 16000


def tiny_config(**kw) -> HarmonicCodecConfig:
    fields = dict(name="tiny-v2", bands=32, pitch_lags=16, enc_sub_dim=16, enc_sub_layers=1, enc_dim=24,
                  enc_layers=1, latent_dim=8, dec_dim=24, dec_layers=1, num_quantizers=3, codebook_size=32)
    fields.update(kw)
    return HarmonicCodecConfig(**fields)


def voiced_signal(seconds: float = 1.0, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like test signal: harmonics of a gliding F0 under a formant-ish envelope, plus a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    x = sum(np.sin(k * phase) / k * (1.5 if 3 <= k <= 5 else 1.0) for k in range(1, 40))
    x = x + 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model() -> HarmonicCodec:
    torch.manual_seed(0)
    model = HarmonicCodec(tiny_config())
    batch = torch.from_numpy(np.stack([voiced_signal(1.0, f, s) for s, f in enumerate((110, 180, 240))]))[:, None]
    model.quantizer.initialize(model.encoder(batch))
    # Random weights with a zero-initialised head would decode a constant: give the head some weights.
    torch.nn.init.normal_(model.decoder.parameters_head.out.weight, std=0.05)
    model.eval()
    model.use_exact_encoder()
    return model


# ---- the synthesiser ---------------------------------------------------------------------------------------

def _params(frames: int, voiced: float, seed: int = 0, bands: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    log_mel = torch.randn(1, bands, frames, generator=g) * 0.5 - 4
    f0 = 100 + 80 * torch.rand(1, 1, frames, generator=g)
    v = (torch.rand(1, 1, frames, generator=g) < voiced).float()
    return torch.cat([log_mel, f0, v], dim=1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 40])
def test_synth_streaming_equals_offline(chunk):
    synth = HarmonicSynth(SR, 320, 80, 32)
    params = _params(120, 0.7)
    offline = synth(params)
    state, parts = synth.init_state(1), []
    for start in range(0, params.shape[-1], chunk):
        out, state = synth.step(params[..., start:start + chunk], state)
        parts.append(out)
    parts.append(state[-1].reshape(1, 1, -1))
    streamed = torch.cat(parts, dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-4


def test_encoder_pitch_features_equal_their_zero_padded_dft_definition():
    """The factored 2W-point power spectrum and its autocorrelation map give the features the shipped encoders
    were trained on: the cosine sum over a zero-padded 2048-point DFT's power, at fractional lags."""
    import math

    from voxtok.harmonic_codec import EncoderFeatures, FactoredPowerSpectrum
    from voxtok.modules.harmonic import F0_MAX_HZ, F0_MIN_HZ

    cfg = HarmonicCodecConfig()
    frames = torch.tensor(voiced_signal(0.2), dtype=torch.float64)[:1280].reshape(2, 640)
    power = FactoredPowerSpectrum(640).double()
    expected_power = torch.fft.fft(frames, n=1280).abs() ** 2
    # (the tables are stored in float32, so agreement is to float32 rounding of the largest bins)
    assert (power(frames) - expected_power[:, power.bin_order]).abs().max() < 1e-5 * expected_power.max()

    features = EncoderFeatures(cfg).double()
    wav = torch.tensor(voiced_signal(0.5, f0=180.0), dtype=torch.float64)[None, None, :8000]
    got = features(wav)[:, cfg.bands:]
    # The definition, written out: Hann frames of pitch_window ending at each 5 ms, a 2048-point DFT's power,
    # the cosine sum at lags 0 and the log-spaced pitch lags, normalised by lag 0.
    x = torch.cat([wav.new_zeros(cfg.pitch_window - cfg.subframe), wav.reshape(-1)])
    windows = x.unfold(0, cfg.pitch_window, cfg.subframe) * torch.hann_window(cfg.pitch_window, periodic=True,
                                                                            dtype=torch.float64)
    spectrum = torch.fft.rfft(windows, n=2048).abs() ** 2
    lags = torch.cat([torch.zeros(1, dtype=torch.float64),
                      torch.logspace(math.log10(SR / F0_MAX_HZ), math.log10(SR / F0_MIN_HZ), cfg.pitch_lags,
                                     dtype=torch.float64)])
    k = torch.arange(1025, dtype=torch.float64)[:, None]
    weight = torch.full((1025, 1), 2.0, dtype=torch.float64)
    weight[0] = weight[-1] = 1.0
    acf = spectrum @ (weight * torch.cos(2 * math.pi * k * lags / 2048) / 2048)
    expected = (acf[:, 1:] / (acf[:, :1] + 1e-6)).T[None]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 5e-7, (got - expected).abs().max()  # a 1280-point definition: 5e-6
    # the period of a 180 Hz tone is where the autocorrelation peaks
    best_lag = lags[1:][expected[0, :, 40:].mean(-1).argmax()]
    assert abs(SR / best_lag - 180.0) < 12.0


def test_synth_voiced_frames_have_harmonics_at_f0():
    """Constant 200 Hz, fully voiced, flat bands: the output's spectrum peaks at the harmonics of 200 Hz."""
    frames = 200
    params = torch.cat([torch.full((1, 32, frames), -3.0), torch.full((1, 1, frames), 200.0),
                        torch.ones(1, 1, frames)], dim=1)
    audio = HarmonicSynth(SR, 320, 80, 32)(params)[0, 0, 4000:12000].numpy()
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    bin_hz = SR / len(audio)
    on = np.mean([spectrum[int(k * 200 / bin_hz)] for k in range(1, 10)])
    off = np.mean([spectrum[int((k + 0.5) * 200 / bin_hz)] for k in range(1, 10)])
    assert on > 10 * off
    # Unvoiced: no comb; the spectrum between "harmonics" is as strong as on them.
    params[:, -1] = 0.0
    noise = HarmonicSynth(SR, 320, 80, 32)(params)[0, 0, 4000:12000].numpy()
    spectrum = np.abs(np.fft.rfft(noise * np.hanning(len(noise))))
    on = np.mean([spectrum[int(k * 200 / bin_hz)] for k in range(1, 10)])
    off = np.mean([spectrum[int((k + 0.5) * 200 / bin_hz)] for k in range(1, 10)])
    assert 0.3 < on / off < 3


def test_synth_reproduces_the_bands_it_is_given():
    """Self-calibration: the analysis of the output has the log-mel bands the synthesiser was asked for."""
    frames = 150
    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.avg_pool1d(torch.randn(1, 32, frames, generator=g), 9, 1, 4) - 3
    params = torch.cat([smooth, torch.full((1, 1, frames), 150.0), torch.zeros(1, 1, frames)], dim=1)
    audio = HarmonicSynth(SR, 320, 80, 32)(params)[..., 240:240 + frames * 80]
    measured = SynthAnalysis(SR, 320, 80, 32)(audio)
    error = (measured - smooth)[..., 10:-10].abs().mean()
    assert error < 0.35, error


def test_copy_synthesis_of_real_speech_keeps_quality(real_root):
    """WORLD's F0 and voicing plus the measured bands, resynthesised: PESQ-WB well above v1's 1.1 and clear
    harmonics (the copy-synthesis ceiling of the decoder, ~2.4 on dev speech)."""
    from voxtok.audio import load_audio
    from voxtok.data.pitch import world_features
    from voxtok.eval.metrics import pesq_wb, stoi

    ref = load_audio(real_root / "librispeech/1089-134686-0000.flac", SR)
    ref = ref[: len(ref) - len(ref) % 80]
    log_mel = SynthAnalysis(SR, 320, 80, 64)(torch.from_numpy(ref)[None, None])[0]
    feats = world_features(ref, SR, 80, 0, method="dio")
    frames = log_mel.shape[-1]
    params = torch.cat([log_mel, torch.from_numpy(feats.f0[:frames])[None],
                        torch.from_numpy(feats.voiced[:frames])[None]])[None]
    with torch.no_grad():
        out = HarmonicSynth(SR, 320, 80, 64)(params)[0, 0, 240:240 + len(ref)].numpy()
    quality = pesq_wb(ref, out), stoi(ref, out)
    print(f"copy synthesis: PESQ-WB {quality[0]:.2f}, STOI {quality[1]:.3f}")
    assert quality[0] > 2.0 and quality[1] > 0.9


# ---- the codec ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_samples", [1, 137, 320, 2000])
def test_streaming_codes_equal_offline_and_audio_matches(tiny_model, chunk_samples):
    x = torch.from_numpy(voiced_signal(0.6, 160))[None, None]
    with torch.inference_mode():
        codes = tiny_model.encode(x)
        audio = tiny_model.decode(codes)
        codes_parts, audio_parts = [], []
        with tiny_model.streaming(1):
            for start in range(0, x.shape[-1], chunk_samples):
                c = tiny_model.encode_chunk(x[..., start:start + chunk_samples])
                codes_parts.append(c)
                audio_parts.append(tiny_model.decode_chunk(c))
            c = tiny_model.flush_encoder()
            codes_parts.append(c)
            audio_parts.append(tiny_model.decode_chunk(c))
            audio_parts.append(tiny_model.flush_decoder())
    assert torch.equal(torch.cat(codes_parts, -1), codes)
    streamed = torch.cat(audio_parts, -1)[..., : audio.shape[-1]]
    assert streamed.shape == audio.shape and audio.abs().max() > 1e-3
    assert (streamed - audio).abs().max() < 1e-4


def test_save_load_and_token_files_of_the_other_version_are_refused(tiny_model, tmp_path):
    from voxtok.compress import compress, decompress

    codec_model = load_codec("voxtok-16k")  # codec v1
    tiny_model.save_pretrained(tmp_path / "v2")
    config = json.loads((tmp_path / "v2" / "config.json").read_text())
    assert config["architecture"] == "harmonic"
    loaded = load_codec(tmp_path / "v2")
    assert isinstance(loaded, HarmonicCodec)
    samples = voiced_signal(0.5)
    np.testing.assert_array_equal(encode_samples(loaded, samples), encode_samples(tiny_model, samples))
    v2_file = compress(loaded, samples, SR)
    v1_file = compress(codec_model, samples, SR)
    with pytest.raises(VoxtokError, match="made by model voxtok-16k .* this is model tiny-v2"):
        decompress(loaded, v1_file)
    with pytest.raises(VoxtokError, match="made by model tiny-v2"):
        decompress(codec_model, v2_file)
    audio, sr = decompress(loaded, v2_file)
    assert sr == SR and len(audio) == len(samples)
    header = make_header(loaded, encode_samples(loaded, samples), len(samples))
    assert header.model_id == "tiny-v2" and header.frame_rate == 50


def test_a_fine_tune_under_the_same_name_refuses_the_old_weights_token_files(tiny_model, tmp_path):
    """An export names its codebooks in config.json (and so in config_hash): other weights of the same model
    refuse its token files, which they would decode to noise; a training checkpoint names none."""
    import copy

    from voxtok.compress import compress, decompress
    from voxtok.model import codebooks_fingerprint

    tiny_model.save_pretrained(tmp_path / "old", half=True, inference_only=True)
    tuned = copy.deepcopy(tiny_model)
    with torch.no_grad():
        tuned.quantizer.rvq.layers[0]._codebook.embed.add_(0.01)
    tuned.save_pretrained(tmp_path / "new", half=True, inference_only=True)
    old, new = load_codec(tmp_path / "old"), load_codec(tmp_path / "new")
    names = [json.loads((tmp_path / d / "config.json").read_text())["codebooks_hash"] for d in ("old", "new")]
    assert names[0] == codebooks_fingerprint(tiny_model.state_dict()) and names[0] != names[1]
    assert old.model_id == new.model_id and old.config.config_hash() != new.config.config_hash()
    samples = voiced_signal(0.5)
    data = compress(old, samples, SR)
    with pytest.raises(VoxtokError, match="made by model tiny-v2 .* decode with the model folder that encoded it"):
        decompress(new, data)
    assert len(decompress(old, data)[0]) == len(samples)
    # A checkpoint's codebooks keep moving: it records none, and keeps the hash its config always had.
    tiny_model.save_pretrained(tmp_path / "checkpoint")
    assert load_codec(tmp_path / "checkpoint").config.codebooks_hash == ""
    assert load_codec(tmp_path / "checkpoint").config.config_hash() == tiny_model.config.config_hash()
    # config.json of one export beside the weights of another: refused, not silently mismatched.
    (tmp_path / "new" / "config.json").write_text((tmp_path / "old" / "config.json").read_text())
    with pytest.raises(VoxtokError, match="files from two different exports"):
        load_codec(tmp_path / "new")


def test_v2_config_is_validated(tmp_path):
    for bad in ({"architecture": "harmonic", "bands": 2}, {"architecture": "harmonic", "pitch_window": 100},
                {"architecture": "harmonic", "pitch_lags": "many"},
                {"architecture": "harmonic", "codebooks_hash": "x"}):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**tiny_config().to_dict(), **bad}))
        (folder / "model.safetensors").write_bytes(b"")
        with pytest.raises(VoxtokError, match="not a valid codec config"):
            load_codec(folder)


def test_decode_of_few_frames_and_batch(tiny_model):
    samples = voiced_signal(0.3)
    codes = encode_samples(tiny_model, samples, 2)
    assert codes.shape == (2, 15)
    audio = decode_codes(tiny_model, codes[:, :1])
    assert audio.shape == (320,) and np.isfinite(audio).all()


def test_onnx_export_of_v2_matches_pytorch(tiny_model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from voxtok.export.onnx_export import export_onnx, verify_export

    tiny_model.save_pretrained(tmp_path / "model")
    export_onnx(load_codec(tmp_path / "model"), tmp_path / "onnx")
    figures = verify_export(str(tmp_path / "model"), tmp_path / "onnx", audio=voiced_signal(1.0))["fp32"]
    print("v2 ONNX parity:", figures)
    assert figures["decode_snr_db"] > 40 and figures["stream_codes_equal_offline"]
    assert figures["stream_audio_snr_db"] > 60


# ---- training ---------------------------------------------------------------------------------------------------

def _tiny_recipe(tmp_path: Path, steps: int = 30, clips: list[tuple[np.ndarray, str | None]] | None = None,
                 extra: str = "", config: HarmonicCodecConfig | None = None, pitch_method: str = "dio") -> Path:
    """Three clips as a corpus (voiced test signals unless given, with their text when known) and a tiny v2
    recipe over it (WORLD targets and alignments go to caches in tmp_path); `extra` is appended to the recipe,
    `config` replaces the tiny v2 model."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    clips = clips or [(voiced_signal(2.0, f0, i), None) for i, f0 in enumerate((110, 170, 230))]
    rows = []
    for i, (samples, text) in enumerate(clips):
        sf.write(corpus / f"c{i}.wav", samples, SR)
        rows.append(json.dumps({"path": f"c{i}.wav", "text": text}))
    (corpus / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    (corpus / "split.txt").write_text("".join(f"c{i}.wav\n" for i in range(len(clips))))
    model_table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (config or tiny_config()).to_dict().items())
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f"""[model]
{model_table}
[data]
real_root = "{corpus}"
real_split = "{corpus / 'split.txt'}"
dev_split = "{corpus / 'split.txt'}"
pitch_cache = "{tmp_path / 'cache'}"
align_cache = "{tmp_path / 'align'}"
pitch_method = "{pitch_method}"
[optim]
lr = 3e-3
warmup_steps = 2
steps = {steps}
[train]
out_dir = "{tmp_path / 'run'}"
batch_size = 4
crop_seconds = 0.5
eval_every = 1000
checkpoint_every = 10
log_every = 5
eval_files = 1
{extra}
""")
    return recipe


def test_training_steps_lower_the_loss_and_resume(tmp_path):
    """A few regression steps on three voiced clips, a checkpoint, and a resume that continues from it."""
    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    recipe = _tiny_recipe(tmp_path)
    model_cfg, train_cfg = load_recipe(recipe)
    trainer = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    trainer.train(20)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.json").is_file()
    assert list((tmp_path / "cache").rglob("*.npz"))
    resumed = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    assert resumed.load_checkpoint() and resumed.step == 20
    model = load_codec(tmp_path / "run" / "checkpoint")
    assert isinstance(model, HarmonicCodec)
    assert Path(tmp_path / "run" / "samples").is_dir()


def test_voicing_target_of_both_trackers_is_voiced_only_where_they_agree(tmp_path):
    """voicing_target = "both_trackers": the voicing labels are Harvest's AND DIO's decisions (each cached), so a
    frame only one tracker calls voiced trains as unvoiced; an unknown target is refused in one line."""
    from voxtok.data.pitch import cached_world_features
    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    # voiced test signals with a breathy, noisy stretch where the trackers disagree
    clips = []
    for i, f0 in enumerate((110, 170, 230)):
        x = voiced_signal(2.0, f0, i)
        x[12000:20000] = 0.6 * x[12000:20000] + 0.2 * np.random.default_rng(i).standard_normal(8000)
        clips.append((x.astype(np.float32), None))
    recipe = _tiny_recipe(tmp_path, clips=clips, extra='voicing_target = "both_trackers"', pitch_method="harvest")
    model_cfg, train_cfg = load_recipe(recipe)
    trainer = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    trainer.build_data()
    corpus = tmp_path / "corpus"
    agreed = harvest_only = 0
    for i, clip in enumerate(trainer.sampler.clips):
        samples = sf.read(corpus / f"c{i}.wav", dtype="float32")[0]
        harvest, dio = (cached_world_features(corpus / f"c{i}.wav", f"c{i}.wav", train_cfg.pitch_cache, SR,
                                              model_cfg.subframe, train_cfg.pitch_ap_bands, method,
                                              samples=samples).voiced for method in ("harvest", "dio"))
        assert np.array_equal(clip.voiced, harvest * dio)
        agreed += int((clip.voiced > 0).sum())
        harvest_only += int(((harvest > 0) & (dio == 0)).sum())
    # some frames are voiced by both; some by Harvest (the recipe's pitch_method) alone, which train as unvoiced
    assert agreed > 0 and harvest_only > 0

    (tmp_path / "bad").mkdir()
    bad = _tiny_recipe(tmp_path / "bad", extra='voicing_target = "loudest"')
    model_cfg, train_cfg = load_recipe(bad)
    with pytest.raises(VoxtokError, match="voicing_target must be one of tracker, both_trackers"):
        HarmonicTrainer(model_cfg, train_cfg, progress=False).build_data()


def test_loss_through_the_synthesiser_trains_the_bands_not_the_phase(tmp_path):
    """The synth term compares the analysis of the synthesised crop with the input's: it goes down in training,
    and its gradient reaches the band and voicing channels but not F0 (detached: phase is not a magnitude's
    business)."""
    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    model_cfg, train_cfg = load_recipe(_tiny_recipe(tmp_path))
    train_cfg.synth_mel_weight = 1.0
    trainer = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    trainer.build_data()
    audio, _f0, _voiced, mask, *_labels = trainer.next_batch()
    target = trainer.analysis(audio)
    raw = trainer.model.decoder.raw_parameters(trainer.model.quantizer(trainer.model.encoder(audio))[0])
    raw = raw.detach().requires_grad_(True)
    trainer.synth_mel_loss(raw, audio.shape[-1], target, mask[:, None]).backward()
    b = model_cfg.bands
    assert raw.grad[:, :b].abs().sum() > 0 and raw.grad[:, b + 1].abs().sum() > 0
    assert raw.grad[:, b].abs().sum() == 0
    trainer.train(20)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    synth = [r["synth_mel"] for r in log if "synth_mel" in r]
    assert len(synth) >= 3 and synth[-1] < synth[0]


def test_recognised_phones_term_trains_codec_v2_through_its_decoded_crop(tmp_path):
    """[terms.recognised_phones] in a v2 recipe: the trainer hands the term the crop synthesised from the decoder's
    parameters, and the recogniser's KL is logged (the term is not the 12.5 Hz trainer's alone)."""
    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    model_cfg, train_cfg = load_recipe(_tiny_recipe(tmp_path, 6, extra="[terms.recognised_phones]\nweight = 1.0"))
    trainer = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    trainer.train(6)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    kl = [r["recognised_kl"] for r in log if "recognised_kl" in r]
    assert kl and all(k > 0 for k in kl)


def test_synthetic_folders_join_the_real_split_with_their_weight_and_labels(tmp_path):
    """synth_dirs in a v2 recipe: each folder's files are read with WORLD targets and (for a phone term) aligned
    phones, cached under the folder's name, and drawn for synth_weight of the crops; a folder without a manifest
    is one clear error."""
    import subprocess

    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    pytest.importorskip("pocketsphinx")
    synth = tmp_path / "synth_corpus"
    synth.mkdir()
    texts = ["Please call the doctor in the morning.", "We walked along the river after lunch."]  # these align
    for i, text in enumerate(texts):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(synth / f"s{i}.wav"), text], check=True)
    (synth / "manifest.jsonl").write_text("".join(json.dumps({"path": f"s{i}.wav", "text": t}) + "\n"
                                                  for i, t in enumerate(texts)))
    extra = f'synth_dirs = ["{synth}"]\nsynth_weight = 3.0\n[terms.phone]\nweight = 1.0'
    model_cfg, train_cfg = load_recipe(_tiny_recipe(tmp_path, 10, extra=extra))
    # The caches filled beforehand by the two CLIs (`--synth`) are the ones the trainer reads.
    from voxtok.data import align, pitch

    align.main([str(synth), "--synth", "--cache", train_cfg.align_cache])
    pitch.main([str(synth), "--synth", "--cache", train_cfg.pitch_cache, "--method", train_cfg.pitch_method])
    cached = [*(tmp_path / "align").rglob("*.npz"), *(tmp_path / "cache").rglob("*.npz")]
    made = {f: f.stat().st_mtime_ns for f in cached}
    assert len(made) == 4
    trainer = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    trainer.build_data()
    assert all(f.stat().st_mtime_ns == t for f, t in made.items())
    sampler = trainer.sampler
    sources = np.array([c.source for c in sampler.clips])
    assert list(sources) == [0, 0, 0, 1, 1]
    assert sampler.p[sources == 1].sum() == pytest.approx(0.75)  # real_weight 1 : synth_weight 3
    # The voiced test signals have no text; the espeak-ng files are aligned, under the folder's own cache key.
    assert [c.phones is not None for c in sampler.clips] == [False, False, False, True, True]
    assert (sampler.clips[3].phones >= 0).any()
    assert len(list((tmp_path / "align").glob("*/synth/synth_corpus/*.npz"))) == 2
    assert len(list((tmp_path / "cache").glob("*/synth/synth_corpus/*.npz"))) == 2
    trainer.train(4)  # and it trains on the mixture
    (synth / "manifest.jsonl").unlink()
    with pytest.raises(VoxtokError, match="no manifest.jsonl"):
        HarmonicTrainer(model_cfg, train_cfg, progress=False).build_data()


def test_phone_term_teaches_the_first_codebook_phones_and_resumes(tmp_path, real_root):
    """[terms.phone] on three real transcribed clips: the phone head's cross-entropy falls, its accuracy rises, and
    a resumed run reads the head back from the checkpoint; a recipe naming an unknown term is refused."""
    from voxtok.audio import load_audio
    from voxtok.distill import build_terms
    from voxtok.eval.runner import read_manifest
    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    pytest.importorskip("pocketsphinx")
    rows = [e for e in read_manifest(real_root) if e.text and e.path.startswith("speechocean762/")][:3]
    clips = [(load_audio(real_root / e.path, SR), e.text) for e in rows]
    model_cfg, train_cfg = load_recipe(_tiny_recipe(tmp_path, 100, clips, "[terms.phone]\nweight = 1.0"))
    trainer = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    trainer.train(100)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    ce = [r["phone_ce"] for r in log if "phone_ce" in r]
    accuracy = [r["phone_accuracy"] for r in log if "phone_accuracy" in r]
    # Logged every 5 steps on random crops: compare the first and the last quarter.
    assert len(ce) >= 16 and np.mean(ce[-4:]) < np.mean(ce[:4]) - 0.3
    assert np.mean(accuracy[-4:]) > np.mean(accuracy[:4])
    assert (tmp_path / "run" / "checkpoint" / "terms.safetensors").is_file()
    resumed = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    assert resumed.load_checkpoint()
    for name, tensor in trainer.terms.state_dict().items():
        assert torch.equal(resumed.terms.state_dict()[name], tensor)
    # A packed checkpoint (recipes/pack_checkpoint.py) keeps the heads but not their Adam moments: heads resumed.
    for name in ("terms_optimizer.json", "terms_optimizer.safetensors"):
        (tmp_path / "run" / "checkpoint" / name).unlink(missing_ok=True)
    packed = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    assert packed.load_checkpoint()
    for name, tensor in trainer.terms.state_dict().items():
        assert torch.equal(packed.terms.state_dict()[name], tensor)
    assert packed.opt_terms.param_groups[0]["term_lr"] == packed.terms["phone"].lr
    with pytest.raises(VoxtokError, match="unknown training term"):
        build_terms({"telepathy": {}}, 8)


_RANK_SCRIPT = """
import hashlib, os, sys
import torch
from voxtok.trainers import load_recipe
from voxtok.train_harmonic import HarmonicTrainer
model_cfg, cfg = load_recipe(sys.argv[1])
trainer = HarmonicTrainer(model_cfg, cfg, progress=False)
trainer.train(6)
digest = hashlib.sha256()
for name, tensor in sorted(trainer.model.state_dict().items()):
    digest.update(tensor.detach().float().numpy().tobytes())
rank = os.environ["RANK"]
open(os.path.join(sys.argv[2], f"rank{rank}.txt"), "w").write(digest.hexdigest())
"""


def test_data_parallel_training_keeps_ranks_in_step(tmp_path):
    """torchrun with 2 gloo processes on the CPU: both ranks end with the same weights and codebooks (gradients
    averaged, EMA buffers broadcast), and rank 0 alone writes the checkpoint."""
    import os
    import subprocess
    import sys

    recipe = _tiny_recipe(tmp_path, steps=6)
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(recipe),
                             str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    digests = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert "on 2 ranks" in result.stdout
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 6


def test_time_limited_run_stops_with_a_checkpoint(tmp_path, capsys):
    """`voxtok train --max-minutes`: the run a lent GPU gets ends at the limit with its checkpoint written."""
    from voxtok.cli import main

    recipe = _tiny_recipe(tmp_path, steps=100000)
    assert main(["train", str(recipe), "--max-minutes", "0.05", "--no-progress"]) == 0
    assert "after the time limit" in capsys.readouterr().out
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert 0 < state["step"] < 100000


def test_gpu_burst_command_resumes_and_brings_the_checkpoint_back(tmp_path):
    """recipes/gpu_burst.sh on the CPU (no GPU here): it resumes a packed checkpoint, trains until its time limit
    and packs the new checkpoint into $OUT, with a later step than it started from."""
    import os
    import subprocess
    import sys

    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    recipe = _tiny_recipe(tmp_path, steps=100000)
    model_cfg, cfg = load_recipe(recipe)
    HarmonicTrainer(model_cfg, cfg, progress=False).train(5)
    repo = Path(__file__).resolve().parents[1]
    packed = tmp_path / "packed"
    subprocess.run([sys.executable, str(repo / "recipes" / "pack_checkpoint.py"), str(tmp_path / "run"), str(packed)],
                   check=True, capture_output=True)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(repo / "recipes" / "gpu_burst.sh"), str(recipe), str(packed), "0.1"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed at step 5" in result.stdout
    state = json.loads((tmp_path / "out" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] > 5
    assert (tmp_path / "out" / "checkpoint" / "model.safetensors").is_file()


def test_both_codecs_implement_the_tokenizer_interface(tiny_model):
    from voxtok.tokenizer import Tokenizer

    for model in (tiny_model, load_codec("voxtok-16k"), load_codec("voxtok-16k-v2")):
        assert isinstance(model, Tokenizer)
        assert model.sample_rate == 16000 and model.frame_rate == 50
        assert model.decoder_delay == model.config.window - model.config.subframe
        assert model.num_quantizers_for(None) == model.num_codebooks
        assert model.cardinality == model.config.codebook_size


def test_classified_f0_reads_the_most_likely_bin_not_the_mean_of_two_octaves():
    from voxtok.harmonic_codec import SynthParameters, f0_bin_centres

    head = SynthParameters(8, tiny_config(f0_bins=32))
    centres = f0_bin_centres(32)
    logits = torch.full((1, 32, 3), -10.0)
    logits[0, 10, 0] = 5.0  # one clear bin
    logits[0, 4, 1], logits[0, 24, 1] = 5.0, 4.0  # two octaves apart: the stronger wins, no average between
    logits[0, 15, 2], logits[0, 16, 2] = 5.0, 5.0  # two neighbours: their mean
    got = head.classified_log2_f0(logits)[0, 0]
    assert abs(got[0] - centres[10]) < 1e-3
    assert abs(got[1] - centres[4]) < 0.05
    assert abs(got[2] - (centres[15] + centres[16]) / 2) < 1e-3


def test_decode_picks_the_shipped_model_a_token_file_names(tmp_path, capsys, codec_model, monkeypatch):
    """Without --model, `voxtok decode` uses the shipped model each .vtok header names; an explicit --model that
    does not match is still refused."""
    import voxtok.loading
    from voxtok.cli import main

    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    (shipped / "voxtok-16k").symlink_to(Path(voxtok.loading.PRETRAINED_ROOT) / "voxtok-16k", target_is_directory=True)
    model = HarmonicCodec(tiny_config(name="voxtok-tiny-v2"))
    model.quantizer.initialize(model.encoder(torch.from_numpy(voiced_signal(1.0))[None, None]))
    model.save_pretrained(shipped / "voxtok-tiny-v2")
    monkeypatch.setattr(voxtok.loading, "PRETRAINED_ROOT", shipped)
    sf.write(tmp_path / "a.wav", voiced_signal(0.5), SR)
    assert main(["encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.vtok"), "--model", "voxtok-tiny-v2"]) == 0
    assert main(["encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "b.vtok"), "--model", "voxtok-16k"]) == 0
    assert main(["decode", str(tmp_path / "a.vtok"), str(tmp_path / "b.vtok"), "-o", str(tmp_path / "out")]) == 0
    assert sf.info(str(tmp_path / "out" / "a.wav")).frames == SR // 2
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "a.vtok"), "-o", str(tmp_path / "x.wav"), "--model", "voxtok-16k"]) == 1
    assert "made by model voxtok-tiny-v2" in capsys.readouterr().err


def test_shipped_v2_exports_to_onnx_with_parity(tmp_path, dev_speech):
    """The shipped harmonic codec through the fp32 ONNX graphs: the same codes as PyTorch on real speech, the
    same audio from the same codes, streaming equal to offline; INT8 is refused with a reason."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from voxtok.export.onnx_export import export_onnx, verify_export

    model = load_codec("voxtok-16k-v2")
    export_onnx(model, tmp_path / "onnx")
    figures = verify_export("voxtok-16k-v2", tmp_path / "onnx", audio=dev_speech[0][: 3 * SR])["fp32"]
    print("voxtok-16k-v2 ONNX parity on 3 s of speech:", figures)
    assert figures["ok"] and figures["code_frames_equal"] >= 0.995 and figures["decode_snr_db"] > 60
    with pytest.raises(VoxtokError, match="INT8 graphs are not supported"):
        export_onnx(model, tmp_path / "int8", int8=True)
