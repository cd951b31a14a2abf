"""The 12.5 Hz tokenizer (voxtok.lowrate): FSQ twin, streaming = offline for both decoders, causality of the
look-ahead, the .vlat container, training and the CLI. Tiny random-weight models; no shared data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from test_harmonic_codec import _tiny_recipe, voiced_signal
from voxtok.cli import main
from voxtok.config import LowRateConfig
from voxtok.errors import VoxtokError
from voxtok.latents import LatentHeader, decode_vlat, encode_vlat
from voxtok.lowrate import FSQuantizer, LowRateCodec

SR = 16000
HOP = 1280


def tiny_lowrate_config(**kw) -> LowRateConfig:
    fields = dict(name="tiny-12hz", bands=32, pitch_lags=16, enc_sub_dim=16, enc_sub_layers=1, enc_dim=24,
                  enc_layers=1, enc_low_dim=24, enc_low_layers=1, latent_dim=8, num_quantizers=2,
                  codebook_size=625, dec_dim=24, dec_layers=1, flow_dim=24, flow_layers=2, flow_cond_layers=1)
    fields.update(kw)
    return LowRateConfig(**fields)


@pytest.fixture(scope="module")
def tiny_lowrate() -> LowRateCodec:
    torch.manual_seed(0)
    model = LowRateCodec(tiny_lowrate_config())
    batch = torch.from_numpy(np.stack([voiced_signal(1.28, f, s) for s, f in enumerate((110, 180, 240))]))[:, None]
    model.quantizer.initialize(model.encoder(batch))
    # Zero-initialised output layers would decode a constant: give them some weights.
    torch.nn.init.normal_(model.decoder.parameters_head.out.weight, std=0.05)
    torch.nn.init.normal_(model.flow.velocity.out.weight, std=0.05)
    with torch.no_grad():
        targets = torch.cat([torch.randn(2, 32, 64) - 4, torch.full((2, 1, 64), 7.2), torch.ones(2, 1, 64)], 1)
        model.flow.set_statistics(targets, torch.ones(2, 64))
    model.eval()
    model.use_exact_encoder()
    return model


def test_fsq_levels_decode_to_the_gaussian_mean_of_their_interval():
    """Each level's value is E[z | level] for z ~ N(0, 1), so quantized tokens keep the continuous scale; codes
    pack 4 levels of 5 into one of 625 and unpack exactly."""
    q = FSQuantizer(tiny_lowrate_config())
    z = torch.randn(1, 8, 200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    levels = q.levels_of(z)
    for k in range(5):
        assert abs(float(z[levels == k].mean()) - float(q.centroids[k])) < 0.01
    assert 0.9 < float(q.centroids[levels].std()) < 0.97  # conditional means keep ~88% of the variance
    q.stats_ready.fill_(1)
    codes = q.encode(z[..., :1000].float())
    assert codes.shape == (1, 2, 1000) and int(codes.min()) >= 0 and int(codes.max()) < 625
    assert torch.equal(q.decode(codes), q.centroids[q.levels_of(z[..., :1000].float())])
    with pytest.raises(ValueError, match="all needed"):
        q.encode(z[..., :10].float(), num_quantizers=1)


@pytest.mark.parametrize("kind", ["flow", "shortcut", "regression"])
def test_chunked_streaming_equals_the_full_pass(tiny_lowrate, kind):
    """Any chunking of the audio gives the same codes and latents, and any chunking of the tokens the same audio
    (within 1e-4), the flow decoder's noise included: it is read from a fixed table by frame position. "shortcut":
    the step-size input in use (a shortcut-trained decoder)."""
    model = tiny_lowrate
    model.set_decoding("regression" if kind == "regression" else "flow", steps=3)
    if kind == "shortcut":
        model.flow.shortcut.fill_(1)
        torch.nn.init.normal_(model.flow.velocity.step_size.weight, std=0.1)
    x = torch.from_numpy(voiced_signal(2.0, 150, 3))[None, None].double()
    z_full = model.encode_latents(x)
    codes_full = model.encode(x)
    full = model.decode_latents(z_full)[0, 0]
    rng = np.random.default_rng(1)
    with model.streaming(1):
        parts, start = [], 0
        while start < x.shape[-1]:
            size = int(rng.integers(1, 5000))
            parts.append(model.encode_latents_chunk(x[..., start:start + size]))
            start += size
        parts.append(model.flush_latents())
    z_stream = torch.cat(parts, dim=-1)
    assert torch.allclose(z_stream, z_full, atol=1e-9)
    with model.streaming(1):
        codes_stream = torch.cat([model.encode_chunk(x[..., :7000]), model.encode_chunk(x[..., 7000:]),
                                  model.flush_encoder()], dim=-1)
    assert torch.equal(codes_stream, codes_full)
    with model.streaming(1):
        out, t = [], 0
        for size in (1, 3, 2, 100):
            out.append(model.decode_latents_chunk(z_full[..., t:t + size]))
            t += size
        out.append(model.flush_decoder())
    stream = torch.cat(out, dim=-1)[0, 0]
    assert stream.shape[-1] >= full.shape[-1] == z_full.shape[-1] * HOP
    assert float((stream[: full.shape[-1]] - full).abs().max().detach()) < 1e-4
    if kind == "shortcut":
        model.flow.shortcut.fill_(0)
        torch.nn.init.zeros_(model.flow.velocity.step_size.weight)
    model.set_decoding("flow", steps=8)


@pytest.mark.parametrize("kind", ["flow", "regression"])
def test_the_decoder_looks_exactly_lookahead_tokens_ahead(tiny_lowrate, kind):
    """Tokens from index k on change nothing before (k - lookahead) * hop - the synthesiser's overlap: the stated
    latency (a token, the look-ahead and 15 ms) is the whole of it."""
    model = tiny_lowrate.set_decoding(kind, steps=2)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 8, 12, generator=g, dtype=torch.float64)
    changed = z.clone()
    k = 7
    changed[..., k:] = torch.randn(1, 8, 12 - k, generator=g, dtype=torch.float64)
    a, b = model.decode_latents(z)[0, 0], model.decode_latents(changed)[0, 0]
    lookahead = model.config.lookahead_tokens
    safe = (k - lookahead) * HOP - (model.config.window - model.config.subframe)
    assert torch.equal(a[:safe], b[:safe])
    assert not torch.equal(a[safe:], b[safe:])
    assert model.config.latency_samples == HOP + lookahead * HOP + 240  # 175 ms at 16 kHz
    model.set_decoding("flow", steps=8)


def test_bitrate_and_config_rules(tiny_lowrate):
    cfg = LowRateConfig()
    assert cfg.frame_rate == 12.5 and cfg.kbps_per_codebook == 1.25 / 10 and cfg.codebook_size == 5 ** 4
    assert LowRateCodec(cfg).operating_points == [(8, 1.0)]
    assert tiny_lowrate.num_quantizers_for(None) == 2
    with pytest.raises(VoxtokError, match="below it"):
        LowRateCodec(cfg).num_quantizers_for(0.5)
    with pytest.raises(ValueError, match="codebook_size must be"):
        LowRateConfig.from_dict({**cfg.to_dict(), "codebook_size": 1024})
    with pytest.raises(ValueError, match="multiple of num_quantizers"):
        LowRateConfig.from_dict({**cfg.to_dict(), "num_quantizers": 3})


def test_vlat_container_refuses_damage():
    latents = np.random.default_rng(0).standard_normal((13, 8)).astype(np.float32)
    header = LatentHeader("m", "abc", SR, 12.5, 8, 16000, 13)
    data = encode_vlat(header, latents)
    got_header, got = decode_vlat(data)
    assert got_header == header and np.allclose(got, latents, atol=2e-3)  # float16 payload
    flipped = bytearray(data)
    flipped[-1] ^= 1
    for bad, match in ((data[:-3], "truncated"), (bytes(flipped), "CRC"), (b"RIFF" + data[4:], "not a .vlat")):
        with pytest.raises(VoxtokError, match=match):
            decode_vlat(bad)
    with pytest.raises(VoxtokError, match="disagree"):
        encode_vlat(LatentHeader("m", "abc", SR, 12.5, 8, 16000, 12), latents[:12])
    with pytest.raises(VoxtokError, match="NaN"):
        encode_vlat(header, np.full((13, 8), np.nan, dtype=np.float32))


def test_training_lowers_both_losses_and_resumes(tmp_path):
    """LowRateTrainer on three voiced clips: the regression and the flow losses fall, the statistics are set,
    and the checkpoint loads as a LowRateCodec that decodes."""
    from voxtok.compress import load_codec
    from voxtok.train_lowrate import LowRateTrainer
    from voxtok.trainers import load_recipe, trainer_class_for

    recipe = _tiny_recipe(tmp_path, 40, config=tiny_lowrate_config(),
                          extra="eval_flow_steps = 2\nshortcut_weight = 1.0")
    model_cfg, train_cfg = load_recipe(recipe)
    assert trainer_class_for(model_cfg) is LowRateTrainer
    trainer = LowRateTrainer(model_cfg, train_cfg, progress=False)
    trainer.train(40)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert steps[-1]["mel"] < steps[0]["mel"] and steps[-1]["flow"] < steps[0]["flow"]
    assert all(r["shortcut"] > 0 for r in steps)
    assert any("dev/mel_fsq_flow" in r for r in log)
    model = load_codec(tmp_path / "run" / "checkpoint")
    assert isinstance(model, LowRateCodec) and model.flow.stats_ready.item() == 1
    assert model.flow.shortcut.item() == 1 and model.flow.velocity.step_size.weight.abs().sum() > 0
    mean, std = model.latent_statistics()
    assert mean.shape == (8,) and bool((std > 0).all())
    y = model.decode(model.encode(torch.from_numpy(voiced_signal(1.0))[None, None]))
    assert y.shape[-1] == 13 * HOP and torch.isfinite(y).all()
    resumed = LowRateTrainer(model_cfg, train_cfg, progress=False)
    assert resumed.load_checkpoint() and resumed.step == 40


def test_cli_encodes_latents_and_decodes_them_and_tokens(tmp_path, capsys, tiny_lowrate):
    model_dir = tmp_path / "model"
    tiny_lowrate.save_pretrained(model_dir)
    wav = tmp_path / "a.wav"
    sf.write(wav, voiced_signal(1.5, 140), SR)
    vlat, vtok = tmp_path / "a.vlat", tmp_path / "a.vtok"
    assert main(["encode", str(wav), "-o", str(vlat), "--model", str(model_dir), "--format", "latents"]) == 0
    assert main(["encode", str(wav), "-o", str(vtok), "--model", str(model_dir)]) == 0
    header, latents = decode_vlat(vlat.read_bytes())
    assert latents.shape == (-(-len(voiced_signal(1.5)) // HOP), 8) and header.num_samples == 24000
    out = tmp_path / "a_flow.wav"
    assert main(["decode", str(vlat), "-o", str(out), "--model", str(model_dir), "--steps", "2"]) == 0
    decoded, sr = sf.read(out)
    assert sr == SR and len(decoded) == 24000 and np.abs(decoded).max() > 0
    assert main(["decode", str(vtok), "-o", str(tmp_path / "b.wav"), "--model", str(model_dir),
                 "--decoder", "regression"]) == 0
    capsys.readouterr()
    # Bad use: one error line, non-zero, nothing written.
    assert main(["encode", str(wav), "-o", str(tmp_path / "c.vtok"), "--model", str(model_dir),
                 "--bitrate", "0.1"]) != 0
    assert main(["decode", str(vlat), "-o", str(tmp_path / "d.wav"), "--model", str(model_dir),
                 "--steps", "0"]) != 0
    broken = tmp_path / "broken.vlat"
    broken.write_bytes(vlat.read_bytes()[:-5])
    assert main(["decode", str(broken), "-o", str(tmp_path / "e.wav"), "--model", str(model_dir)]) != 0
    err = capsys.readouterr().err
    assert "below it" in err and "flow steps" in err and "truncated" in err
    assert all(line.startswith("voxtok: error:") for line in err.strip().splitlines())
    assert not any((tmp_path / n).exists() for n in ("c.vtok", "d.wav", "e.wav"))


def test_eval_system_options_reach_the_tokenizer(tmp_path, tiny_lowrate):
    """`voxtok eval` specs: +latents sends the continuous tokens (float16: 2 bytes per dimension and frame),
    +regression / +steps=N pick the decoder; an unknown option is refused."""
    from voxtok.eval.systems import parse_system

    tiny_lowrate.save_pretrained(tmp_path / "m")
    samples = voiced_signal(1.0, 150)
    latents = parse_system(f"voxtok:{tmp_path / 'm'}+latents+steps=2")
    assert latents.latents and latents.decoding == {"steps": 2}
    out = latents.process(samples, tmp_path, "a")
    assert len(out.samples) == len(samples) and out.encoded_bytes > 13 * 8 * 2
    control = parse_system(f"voxtok:{tmp_path / 'm'}+regression")
    assert len(control.process(samples, tmp_path, "a").samples) == len(samples)
    with pytest.raises(VoxtokError, match="unknown option"):
        parse_system("voxtok+fast")


def test_onnx_export_streams_like_pytorch(tmp_path, tiny_lowrate):
    """The exported encoder gives PyTorch's latents and codes, and the runtime's streamed flow decoding (numpy
    Euler loop over the one-step graph) matches PyTorch's offline decoding."""
    pytest.importorskip("onnxruntime")
    from voxtok.compress import load_codec
    from voxtok.export.lowrate_onnx import export_lowrate_onnx, verify_lowrate_export
    from voxtok.export.lowrate_runtime import LowRateRuntime

    tiny_lowrate.save_pretrained(tmp_path / "m")
    model = load_codec(tmp_path / "m")
    manifest = export_lowrate_onnx(model, tmp_path / "onnx")
    assert manifest["latency"]["algorithmic_ms"] == 175.0
    audio = voiced_signal(1.5, 130)
    figures = verify_lowrate_export(model, tmp_path / "onnx", audio)
    assert figures["latent_max_abs_error"] < 1e-3 and figures["stream_snr_db"] > 40
    runtime = LowRateRuntime(tmp_path / "onnx")
    codes = runtime.fsq_codes(runtime.encode_latents(audio))
    assert np.array_equal(codes, model.encode(torch.from_numpy(audio)[None, None])[0].numpy())


def test_phone_term_on_the_latent_mean(tmp_path, real_root):
    """[terms.phone] in a 12.5 Hz recipe: a linear head on the normalised latent mean learns the phones of each
    80 ms token, one per 20 ms (positions = 4, forced-aligned on three real transcribed clips): its cross-entropy
    falls, and the batches carry 4 labels per token."""
    from voxtok.audio import load_audio
    from voxtok.eval.runner import read_manifest
    from voxtok.train_lowrate import LowRateTrainer
    from voxtok.trainers import load_recipe

    pytest.importorskip("pocketsphinx")
    rows = [e for e in read_manifest(real_root) if e.text and e.path.startswith("speechocean762/")][:3]
    clips = [(load_audio(real_root / e.path, SR), e.text) for e in rows]
    recipe = _tiny_recipe(tmp_path, 120, clips, "[terms.phone]\nweight = 1.0\npositions = 4\nlr = 3e-3",
                          config=tiny_lowrate_config())
    # 80 ms tokens carry 4x fewer labels than v2's frames: bigger batches of longer crops.
    recipe.write_text(recipe.read_text().replace("batch_size = 4", "batch_size = 16")
                      .replace("crop_seconds = 0.5", "crop_seconds = 1.0"))
    model_cfg, train_cfg = load_recipe(recipe)
    trainer = LowRateTrainer(model_cfg, train_cfg, progress=False)
    trainer.build_data()
    phones = trainer.next_batch()[4]
    assert phones.shape[-1] == 4 and (phones >= 0).any()
    # Within a token the 4 labels are not all copies of one: the positions see the phone changes.
    assert (phones[..., 0] != phones[..., 3]).any()
    trainer.train(120)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    ce = [r["phone_ce"] for r in log if "phone_ce" in r]
    accuracy = [r["phone_accuracy"] for r in log if "phone_accuracy" in r]
    print("phone ce", [round(c, 2) for c in ce], "accuracy", [round(a, 2) for a in accuracy])
    assert len(ce) >= 20 and np.mean(ce[-5:]) < np.mean(ce[:5]) - 0.3
    assert np.mean(accuracy[-5:]) > np.mean(accuracy[:5])
    assert (tmp_path / "run" / "checkpoint" / "terms.safetensors").is_file()
    # The head ran at its own learning rate, not the codec's schedule.
    assert trainer.opt_terms.param_groups[0]["lr"] == 3e-3 != trainer.opt_g.param_groups[0]["lr"]


def test_decoder_only_training_keeps_the_tokens(tmp_path):
    """freeze_encoder: the decoders train on (with [terms.recognised_phones] on the decoded crop) while the encoder's
    weights and the latent statistics, which define the tokens an LM was trained on, stay bit-identical, also
    through the export."""
    from safetensors.torch import load_file
    from voxtok.train_lowrate import LowRateTrainer
    from voxtok.trainers import load_recipe

    recipe = _tiny_recipe(tmp_path, 10, config=tiny_lowrate_config())
    model_cfg, train_cfg = load_recipe(recipe)
    LowRateTrainer(model_cfg, train_cfg, progress=False).train(10)  # sets the latent statistics
    before = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    recipe.write_text(recipe.read_text().replace("steps = 10", "steps = 20")
                      + "freeze_encoder = true\n[terms.recognised_phones]\nweight = 1.0\n")
    model_cfg, train_cfg = load_recipe(recipe)
    trainer = LowRateTrainer(model_cfg, train_cfg, progress=False)
    trainer.train(20)
    after = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    frozen = [k for k in before if k.startswith("encoder.") or k.startswith("quantizer.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("recognised_kl" in r for r in log)
    trainer.prepare_export()
    assert torch.equal(trainer.model.quantizer.latent_std, before["quantizer.latent_std"])


def test_the_trainers_decoded_crop_is_what_the_model_decodes(dev_speech):
    """LowRateTrainer.decoded_audio (what [terms.recognised_phones] hears) lines up with the model's own decode of
    the same tokens: with the shipped tokenizer on real speech, their log-mels match best at zero shift (the
    waveforms differ: the synthesiser's phase starts elsewhere)."""
    from voxtok.compress import load_codec
    from voxtok.features import LogMel
    from voxtok.train_lowrate import LowRateTrainer

    model = load_codec("voxtok-16k-12hz-v1").float().eval()  # the LowRateCodec (retired 12.5 Hz tokenizer)
    model.set_decoding("regression")
    samples, _ = dev_speech
    x = torch.from_numpy(samples[: SR * 2].copy())[None, None]
    with torch.no_grad():
        z = model.encode_latents(x)
        offline = model.decode_latents(z)
        lead = model.config.lookahead_tokens
        raw = model.decoder.raw_parameters(torch.nn.functional.pad(z, (0, lead)))
        trainer = LowRateTrainer.__new__(LowRateTrainer)  # the method needs the model only
        trainer.model = model
        decoded = trainer.decoded_audio(raw[..., lead * model.config.subframes_per_frame:], x.shape[-1])
    assert decoded.shape == x.shape
    mel = LogMel(SR, 640, 160, 64)
    distance = [(mel(offline[:, 0].float()) - mel(shifted[:, 0].float())).abs()[..., 8:-8].mean().item()
                for shifted in (decoded, torch.roll(decoded, 160, -1), torch.roll(decoded, -160, -1))]
    print("log-mel distance at 0 / +10 / -10 ms", distance)
    assert distance[0] < 0.75 * min(distance[1:])
