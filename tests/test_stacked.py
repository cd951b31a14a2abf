"""The 12.5 Hz tokenizer stacked on codec v2 (voxtok.stacked): it holds only its own stage and pins the base's
token-defining weights; streaming = offline for both decoders; the latent cache; training on cached latents and
resuming; export and load from a folder. Tiny random-weight models (a tiny v2 as the base); no shared data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from test_harmonic_codec import tiny_config, voiced_signal
from voxtok.compress import load_codec
from voxtok.config import StackedConfig
from voxtok.errors import VoxtokError
from voxtok.harmonic_codec import HarmonicCodec
from voxtok.stacked import StackedCodec

SR = 16000
HOP = 1280


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny codec v2 saved as a model folder (what a stacked tokenizer names as its base_model)."""
    torch.manual_seed(0)
    base = HarmonicCodec(tiny_config())
    batch = torch.from_numpy(np.stack([voiced_signal(1.0, f, s) for s, f in enumerate((110, 180, 240))]))[:, None]
    base.quantizer.initialize(base.encoder(batch))
    torch.nn.init.normal_(base.decoder.parameters_head.out.weight, std=0.05)
    folder = tmp_path_factory.mktemp("base") / "tiny-v2"
    base.save_pretrained(folder, inference_only=True)
    return folder


def tiny_stacked_config(base_folder, **kw) -> StackedConfig:
    fields = dict(name="tiny-stacked", base_model=str(base_folder), base_latent_dim=8, latent_dim=8,
                  num_quantizers=2, codebook_size=625, enc_dim=24, enc_layers=1, enc_low_layers=1, dec_dim=24,
                  dec_low_layers=1, dec_layers=1, flow_dim=24, flow_layers=2, flow_cond_layers=1)
    fields.update(kw)
    return StackedConfig(**fields)


@pytest.fixture(scope="module")
def tiny_stacked(tiny_base) -> StackedCodec:
    torch.manual_seed(1)
    base = load_codec(tiny_base)
    model = StackedCodec(tiny_stacked_config(tiny_base, base_tokens_hash=base.tokens_hash()))
    model.attach_base(base)
    model.quantizer.initialize(torch.randn(4, 8, 20))
    # Zero-initialised output layers would decode the mean: give them some weights.
    torch.nn.init.normal_(model.flow.velocity.out.weight, std=0.05)
    model.eval()
    model.use_exact_encoder()
    return model


def test_the_model_holds_its_stage_only_and_pins_the_base_tokens(tiny_base, tiny_stacked, tmp_path):
    """The folder has no base weights; loading it attaches the named base; a base whose encoder changed is refused
    (its latents mean something else), one whose decoder changed is taken, and the tokens hash follows the base."""
    tiny_stacked.save_pretrained(tmp_path / "stacked", inference_only=True)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "stacked" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not any(".base." in n or n.startswith("base.") for n in names)
    loaded = load_codec(tmp_path / "stacked")
    assert isinstance(loaded, StackedCodec) and loaded.continuous
    x = torch.from_numpy(voiced_signal(1.0, 150, 2))[None, None].double()
    assert torch.equal(loaded.encode(x), tiny_stacked.encode(x))
    assert loaded.tokens_hash() == tiny_stacked.tokens_hash()
    base = load_codec(tiny_base)
    with torch.no_grad():
        next(base.decoder.parameters()).add_(0.01)
    assert StackedCodec(loaded.config).attach_base(base)  # a better base decoder serves the same tokens
    with torch.no_grad():
        next(base.encoder.parameters()).add_(0.01)
    with pytest.raises(VoxtokError, match="its encoder changed"):
        StackedCodec(loaded.config).attach_base(base)


@pytest.mark.parametrize("kind", ["regression", "flow"])
def test_chunked_streaming_equals_the_full_pass(tiny_stacked, kind):
    """Any chunking of the audio gives the same latents and codes, and any chunking of the tokens the same audio
    (within 1e-4), the flow's noise included."""
    model = tiny_stacked.set_decoding(kind, steps=3)
    x = torch.from_numpy(voiced_signal(2.0, 150, 3))[None, None].double()
    z_full = model.encode_latents(x)
    assert z_full.shape == (1, 8, 25)
    full = model.decode_latents(z_full)[0, 0]
    assert full.shape[-1] == 25 * HOP
    rng = np.random.default_rng(1)
    with model.streaming(1):
        parts, start = [], 0
        while start < x.shape[-1]:
            size = int(rng.integers(1, 5000))
            parts.append(model.encode_latents_chunk(x[..., start:start + size]))
            start += size
        parts.append(model.flush_latents())
    assert torch.allclose(torch.cat(parts, dim=-1), z_full, atol=1e-9)
    with model.streaming(1):
        codes = torch.cat([model.encode_chunk(x[..., :7000]), model.encode_chunk(x[..., 7000:]),
                           model.flush_encoder()], dim=-1)
    assert torch.equal(codes, model.encode(x))
    with model.streaming(1):
        out, t = [], 0
        for size in (1, 3, 2, 100):
            out.append(model.decode_latents_chunk(z_full[..., t:t + size]))
            t += size
        out.append(model.flush_decoder())
    stream = torch.cat(out, dim=-1)[0, 0]
    assert stream.shape[-1] >= full.shape[-1]
    assert float((stream[: full.shape[-1]] - full).abs().max()) < 1e-4
    assert float(full.abs().max()) > 1e-4  # it says something
    model.set_decoding("regression", steps=8)


def test_the_decoder_looks_exactly_one_token_ahead(tiny_stacked):
    """Tokens from index k on change nothing before (k - lookahead) * hop - the base's overlap."""
    model = tiny_stacked.set_decoding("regression")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 8, 12, generator=g, dtype=torch.float64)
    changed = z.clone()
    changed[..., 7:] = torch.randn(1, 8, 5, generator=g, dtype=torch.float64)
    a, b = model.decode_latents(z)[0, 0], model.decode_latents(changed)[0, 0]
    safe = (7 - model.config.lookahead_tokens) * HOP - model.config.base_decoder_delay
    assert torch.equal(a[:safe], b[:safe]) and not torch.equal(a, b)
    assert model.config.decoder_delay == HOP + 240  # the stated latency: 80 ms token + 80 ms + 15 ms


def _tiny_data(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = []
    for i, f0 in enumerate((110, 170, 230)):
        sf.write(corpus / f"c{i}.wav", voiced_signal(3.0, f0, i), SR)
        rows.append(json.dumps({"path": f"c{i}.wav", "text": None}))
    (corpus / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    (corpus / "split.txt").write_text("c0.wav\nc1.wav\nc2.wav\n")
    return corpus


def test_latent_cache_holds_the_base_encoder_output(tiny_base, tmp_path):
    """One file per (weights, source): each file's latents are what the base encoder makes of it, whole."""
    from voxtok.data.latent_cache import build_latent_cache, load_latent_cache

    corpus = _tiny_data(tmp_path)
    base = load_codec(tiny_base)
    path = build_latent_cache(base, corpus, str(corpus / "split.txt"), cache_dir=tmp_path / "cache", progress=False)
    assert base.tokens_hash() in str(path)
    cached = load_latent_cache(path)
    assert cached.paths == ["c0.wav", "c1.wav", "c2.wav"] and list(cached.frames) == [150, 150, 150]
    from voxtok.audio import load_audio

    with torch.no_grad():
        h = base.encoder(torch.from_numpy(load_audio(corpus / "c1.wav", SR))[None, None].double())
    assert np.allclose(cached.file(1), h[0].T.numpy(), atol=1e-5)
    # A second build reads the file that is there.
    assert build_latent_cache(base, corpus, str(corpus / "split.txt"), cache_dir=tmp_path / "cache") == path


def test_training_on_cached_latents_lowers_the_loss_resumes_and_exports(tiny_base, tmp_path, capsys):
    """`voxtok train` with a stacked recipe: the cache is filled, the latent loss falls, a resume continues from
    the checkpoint, and --export writes a folder that loads with its base and decodes real-length audio."""
    from voxtok.cli import main

    corpus = _tiny_data(tmp_path)
    cfg = tiny_stacked_config(tiny_base)
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in cfg.to_dict().items())
    recipe = tmp_path / "stacked.toml"
    recipe.write_text(f"""[model]
{table}
[data]
sources = ["{corpus}:{corpus / 'split.txt'}"]
latent_cache = "{tmp_path / 'cache'}"
real_root = "{corpus}"
dev_split = "{corpus / 'split.txt'}"
[optim]
lr = 3e-3
warmup_steps = 2
steps = 40
[loss]
shortcut_weight = 0.5
[train]
out_dir = "{tmp_path / 'run'}"
batch_size = 4
crop_tokens = 8
eval_every = 1000
checkpoint_every = 20
log_every = 10
eval_files = 1
""")
    assert main(["train", str(recipe), "--no-progress"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    latent = [r["latent_l1"] for r in log if "latent_l1" in r]
    assert latent[-1] < latent[0]
    assert any("dev/pesq_cont_regression" in r or "dev/mel_cont_regression" in r for r in log)
    recipe.write_text(recipe.read_text().replace("steps = 40", "steps = 50"))
    assert main(["train", str(recipe), "--no-progress"]) == 0
    assert "resumed at step 40" in capsys.readouterr().out
    assert main(["train", str(recipe), "--export", str(tmp_path / "exported")]) == 0
    model = load_codec(tmp_path / "exported")
    assert model.config.base_tokens_hash == load_codec(tiny_base).tokens_hash()
    x = torch.from_numpy(voiced_signal(1.0, 140, 5))[None, None].double()
    assert model.decode(model.encode(x)).shape[-1] == 13 * HOP
    assert int(model.flow.shortcut) == 1  # the few-step flow learnt its step-size input


def test_onnx_export_streams_like_pytorch(tiny_stacked, tmp_path):
    """The encoder graph holds the base encoder, the synth graph the base decoder: the torch-free runtime gives
    PyTorch's latents and, streaming odd chunks through one flow step at a time, PyTorch's flow decoding."""
    pytest.importorskip("onnxruntime")
    from voxtok.export.lowrate_onnx import export_lowrate_onnx, verify_lowrate_export
    from voxtok.export.lowrate_runtime import LowRateRuntime

    manifest = export_lowrate_onnx(tiny_stacked, tmp_path / "onnx")
    assert manifest["decoder_skip_samples"] == HOP + 240 and manifest["latency"]["algorithmic_ms"] == 175.0
    report = verify_lowrate_export(tiny_stacked, tmp_path / "onnx", voiced_signal(1.5, 160, 4), steps=2)
    assert report["latent_max_abs_error"] < 1e-3 and report["stream_snr_db"] > 30
    x = torch.from_numpy(voiced_signal(1.0, 150, 1))[None, None].double()
    with torch.no_grad():
        latents, tokens = tiny_stacked.encode_latents(x)[0].float().numpy(), tiny_stacked.encode(x)[0].numpy()
    assert np.array_equal(LowRateRuntime(tmp_path / "onnx").fsq_codes(latents), tokens)
    tiny_stacked.set_decoding("regression", steps=8)


def test_the_continuous_half_of_the_tokenizer_interface(tiny_stacked, tiny_base):
    """The LM consumes the tokenizer through ContinuousTokenizer: the 12.5 Hz tokenizers implement it, codec v2
    (discrete only) does not; the discrete twin's codes of encode_latents are encode's codes, frame for frame."""
    from voxtok.tokenizer import ContinuousTokenizer, Tokenizer

    assert isinstance(tiny_stacked, ContinuousTokenizer) and tiny_stacked.continuous
    assert isinstance(load_codec("voxtok-16k-12hz"), ContinuousTokenizer)
    base = load_codec(tiny_base)
    assert isinstance(base, Tokenizer) and not isinstance(base, ContinuousTokenizer) and not base.continuous
    wav = torch.from_numpy(voiced_signal(1.0, 150, 0))[None, None]
    with torch.inference_mode():
        latents = tiny_stacked.encode_latents(wav)
        codes = tiny_stacked.codes_of_latents(latents)
        assert latents.shape[1] == tiny_stacked.latent_dim == 8
        assert torch.equal(codes, tiny_stacked.encode(wav))
        assert codes.shape == (1, tiny_stacked.num_codebooks, latents.shape[-1])


def test_the_lm_reaches_the_tokenizer_only_through_its_interface():
    """No module of the LM package reads a tokenizer's parts (.quantizer, .encoder, .decoder): a new bottleneck
    is a new tokenizer class, not an edit of the LM."""
    import ast
    from pathlib import Path

    parts = {"quantizer", "encoder", "decoder"}
    reaches = []
    for path in sorted((Path(__file__).resolve().parent.parent / "lm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in parts and isinstance(node.value, ast.Name) \
                    and node.value.id in {"codec", "model", "tokenizer"}:
                reaches.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not reaches
