"""lm/: the delay pattern, the phonemizer, sequences, the KV cache and generation, on tiny random-weight models
(the overfitting tests check that a model that has learnt one utterance says it back and stops)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_harmonic_codec import voiced_signal
from voxtok.errors import VoxtokError
from voxtok.lm.delay import apply_delay, undo_delay
from voxtok.lm.generate import Sampling, filtered_logits, generate_frames
from voxtok.lm.model import SpeechLM, SpeechLMConfig
from voxtok.lm.phonemes import CLAUSE, WORD, phonemize, symbols_to_ids
from voxtok.lm.sequence import collate, prefix, training_item

SYMBOLS = ["a", "b", "c", "d", WORD]


def tiny(kind: str = "discrete", **kw) -> SpeechLMConfig:
    fields = dict(kind=kind, num_codebooks=3, codebook_size=16, latent_dim=4, phone_symbols=SYMBOLS, dim=32,
                  layers=2, heads=2, flow_dim=32, flow_layers=2, input_noise=0.0)
    fields.update(kw)
    return SpeechLMConfig(**fields)


def test_delay_pattern_round_trip():
    codes = torch.arange(12).reshape(3, 4)
    delayed = apply_delay(codes, pad=-7)
    assert delayed.shape == (3, 6)
    assert delayed[1, 0] == -7 and delayed[1, 1] == codes[1, 0] and delayed[2, 5] == codes[2, 3]
    assert torch.equal(undo_delay(delayed), codes)


def test_phonemizer_symbols_and_errors():
    symbols = phonemize("Hello world. Second one!")
    assert WORD in symbols and CLAUSE in symbols and "ˈ" in symbols and "oʊ" in symbols
    assert phonemize("hello") == phonemize("  hello  ")
    for bad in ("", "   "):
        with pytest.raises(VoxtokError, match="empty"):
            phonemize(bad)
    with pytest.raises(VoxtokError, match="not in this model's symbol table"):
        symbols_to_ids(["a", "zz"], SYMBOLS)


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = filtered_logits(logits, 2, 1.0)
    assert torch.isinf(kept[2:]).all() and torch.isfinite(kept[:2]).all()
    nucleus = filtered_logits(logits, 0, 0.7)  # 0.5 + 0.3 reach 0.7: two tokens stay
    assert torch.isfinite(nucleus[:2]).all() and torch.isinf(nucleus[2:]).all()


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_kv_cache_gives_the_full_pass_states(kind):
    torch.manual_seed(0)
    model = SpeechLM(tiny(kind)).eval()
    target = torch.randint(0, 16, (3, 5)) if kind == "discrete" else torch.randn(4, 5)
    batch = collate([training_item(model.config, target[:, :2], [0, 1, 4, 2], target)])
    x = model.embed(batch)
    full, _ = model.backbone(x)
    part, cache = model.backbone(x[:, :6])
    rest = []
    for i in range(6, x.shape[1]):
        h, cache = model.backbone(x[:, i:i + 1], i, cache)
        rest.append(h)
    assert torch.allclose(torch.cat([part, *rest], dim=1), full, atol=1e-5)


def test_dropout_is_a_training_setting_off_in_eval():
    torch.manual_seed(0)
    model = SpeechLM(tiny())
    codes = torch.randint(0, 16, (3, 5))
    batch = collate([training_item(model.config, codes[:, :2], [0, 1, 4], codes)])
    x = model.embed(batch)
    model.train()
    assert torch.equal(model.backbone(x)[0], model.backbone(x)[0])  # p = 0 until a trainer sets it
    model.set_dropout(0.3)
    assert not torch.equal(model.backbone(x)[0], model.backbone(x)[0])
    model.eval()
    assert torch.equal(model.backbone(x)[0], model.backbone(x)[0])
    with pytest.raises(ValueError, match="dropout"):
        model.set_dropout(1.0)


def _overfit(model: SpeechLM, item: dict, steps: int) -> list[float]:
    batch = collate([item])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_discrete_lm_says_back_the_utterance_it_learnt_and_stops():
    """Overfit one sequence; greedy generation from its prefix must return its codes frame by frame (delay
    pattern, KV cache and end of speech all have to line up for that) and end there."""
    torch.manual_seed(0)
    model = SpeechLM(tiny())
    target = torch.randint(0, 16, (3, 7), generator=torch.Generator().manual_seed(1))
    prompt = torch.randint(0, 16, (3, 3), generator=torch.Generator().manual_seed(2))
    phones = [0, 1, 4, 2, 3]
    losses = _overfit(model, training_item(model.config, prompt, phones, target), 150)
    assert losses[-1] < 0.05 * losses[0]
    model.eval()
    frames = list(generate_frames(model, prompt, phones, Sampling(temperature=0.0)))
    assert torch.equal(torch.stack(frames, dim=1), target)
    # Seeded sampling repeats; max_frames caps a run that never ends.
    a = list(generate_frames(model, prompt, phones, Sampling(temperature=1.5, seed=3)))
    b = list(generate_frames(model, prompt, phones, Sampling(temperature=1.5, seed=3)))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert len(list(generate_frames(model, prompt, phones, Sampling(temperature=0.0, max_frames=4)))) == 4


def test_continuous_lm_says_back_the_latents_it_learnt_and_stops():
    torch.manual_seed(0)
    model = SpeechLM(tiny("continuous"))
    target = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    phones = [0, 2, 4, 1]
    losses = _overfit(model, training_item(model.config, torch.zeros(4, 0), phones, target), 400)
    # One random flow time per row makes a single step's loss noisy: compare means.
    assert sum(losses[-20:]) < 0.25 * sum(losses[:20])
    model.eval()
    frames = list(generate_frames(model, torch.zeros(4, 0), phones, Sampling(temperature=0.0, flow_steps=8)))
    assert len(frames) == 6
    error = (torch.stack(frames, dim=1) - target).abs().mean() / target.abs().mean()
    print("continuous overfit: relative error", float(error))
    assert error < 0.2


def test_prefix_layout_and_weights_round_trip(tmp_path):
    cfg = tiny()
    head = prefix(cfg, torch.zeros(3, 2, dtype=torch.long), [0, 1])
    # 2 prompt frames + 2 delay steps, <prompt-end>, 2 phonemes, <sep>
    assert head["kinds"].tolist() == [0, 0, 0, 0, 2, 1, 1, 2]
    model = SpeechLM(cfg)
    model.save_pretrained(tmp_path / "lm")
    again = SpeechLM.from_pretrained(tmp_path / "lm")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    config["phone_symbols"] = []
    (tmp_path / "lm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(VoxtokError, match="phone_symbols"):
        SpeechLM.from_pretrained(tmp_path / "lm")


def _espeak_corpus(folder, texts, voice="en-us"):
    """A manifest folder of espeak-ng utterances (exact text), one speaker."""
    import subprocess

    folder.mkdir()
    rows = []
    for i, text in enumerate(texts):
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(folder / f"u{i}.wav"), text], check=True)
        rows.append(json.dumps({"path": f"u{i}.wav", "text": text, "speaker": f"espeak:{voice}"}))
    (folder / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """A tiny tokenizer folder, espeak-ng speech with text (3 train utterances, 1 held out) and `voxtok lm corpus`
    over it, as a user runs it."""
    from test_lowrate import tiny_lowrate_config
    from voxtok.cli import main
    from voxtok.lowrate import LowRateCodec

    root = tmp_path_factory.mktemp("lm_corpus")
    torch.manual_seed(0)
    tokenizer = LowRateCodec(tiny_lowrate_config())
    tokenizer.quantizer.initialize(tokenizer.encoder(torch.randn(2, 1, 12800) * 0.1))
    tokenizer.save_pretrained(root / "tok")
    train = _espeak_corpus(root / "train", ["The cat sat on the mat.", "A dog ran home.", "It is raining."])
    held = _espeak_corpus(root / "held", ["The sun is out."])
    assert main(["lm", "corpus", str(root / "corpus"), "--source", str(train), "--heldout", str(held),
                 "--tokenizer", str(root / "tok"), "--quiet"]) == 0
    return root


def _lm_recipe(tmp_path, corpus, steps: int = 12, sample_every: int = 6):
    recipe = tmp_path / "lm.toml"
    recipe.write_text(f"""[model]
kind = "discrete"
dim = 32
layers = 1
heads = 2
[train]
corpus = "{corpus}"
out_dir = "{tmp_path / 'run'}"
steps = {steps}
batch_size = 2
log_every = 4
checkpoint_every = 6
eval_every = 6
sample_every = {sample_every}
sample_tokenizer = "{corpus.parent / 'tok'}"
""")
    return recipe


def test_corpus_training_and_tts_end_to_end(tmp_path, capsys, tiny_corpus, monkeypatch):
    """Speech with text -> `voxtok lm corpus` (tiny tokenizer) -> `voxtok lm train` -> `voxtok tts`: every stage
    runs as a user runs it and writes what it promises; bad text or a missing model is one error line."""
    import soundfile as sf
    from voxtok.cli import main
    from voxtok.lm.corpus import load_corpus

    train = tiny_corpus / "train"
    meta, utterances = load_corpus(tiny_corpus / "corpus")
    assert meta["utterances"] == 4 and [u.split for u in utterances].count("heldout") == 1
    assert all(u.codes.shape[0] == 2 and u.latents.shape[0] == 8 and u.phones for u in utterances)
    recipe = _lm_recipe(tmp_path, tiny_corpus / "corpus")
    assert main(["lm", "train", str(recipe), "--no-progress"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("heldout/loss" in r for r in log) and any("heldout/bigram_ce_0" in r for r in log)
    # Periodic samples: the held-out sentence spoken at steps 6 and 12, as 16 kHz audio.
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.wav"))
    assert samples == ["step_000006.wav", "step_000012.wav"]
    assert sf.info(tmp_path / "run" / "samples" / samples[0]).samplerate == 16000
    # A committed checkpoint without the optimizer resumes with fresh moments.
    (tmp_path / "run" / "checkpoint" / "optimizer.safetensors").unlink()
    recipe.write_text(recipe.read_text().replace("steps = 12", "steps = 14"))
    assert main(["lm", "train", str(recipe), "--no-progress"]) == 0
    assert "fresh Adam moments" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["step"] == 14
    out = tmp_path / "said.wav"
    code = main(["tts", "The cat ran.", "--voice", str(train / "u1.wav"), "-o", str(out), "--model",
                 str(tmp_path / "run" / "checkpoint"), "--tokenizer", str(tiny_corpus / "tok"), "--max-seconds", "2",
                 "--json"])
    assert code == 0
    audio, sr = sf.read(out)
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sr == 16000 and len(audio) == stats["frames"] * 1280 and stats["first_audio_ms"] is not None
    # The LM pins its tokenizer's weights, not only its config: without --tokenizer it decodes with the folder its
    # corpus was made with; a fine-tune of that tokenizer (same name and config, other weights) is refused.
    from voxtok.compress import load_codec
    from voxtok.lm.model import SpeechLMConfig

    lm_cfg = SpeechLMConfig.from_dict(json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text()))
    tok = load_codec(tiny_corpus / "tok")
    assert lm_cfg.tokenizer_weights_hash == tok.weights_hash() == meta["tokenizer_weights_hash"]
    assert lm_cfg.tokenizer_source == str(tiny_corpus / "tok")
    assert main(["tts", "The cat ran.", "-o", str(tmp_path / "own.wav"), "--model",
                 str(tmp_path / "run" / "checkpoint"), "--max-seconds", "1"]) == 0
    # Without --temperature, tts samples at the temperature the model's config names (its card's); with it, at
    # the one given. (This tiny LM's distributions are too peaked for the audio to tell: the sampling is read.)
    config_path = tmp_path / "run" / "checkpoint" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "temperature": 1.3}))
    import voxtok.lm.tts as tts_module

    used, real_synthesize = [], tts_module.synthesize

    def recording(lm, text, voice, sampling, **kw):
        used.append(sampling.temperature)
        return real_synthesize(lm, text, voice, sampling, **kw)

    monkeypatch.setattr(tts_module, "synthesize", recording)
    for extra in ([], ["--temperature", "0.25"]):
        assert main(["tts", "The cat ran.", "-o", str(tmp_path / "t.wav"), "--model",
                     str(tmp_path / "run" / "checkpoint"), "--max-seconds", "1", *extra]) == 0
    assert used == [1.3, 0.25]
    with torch.no_grad():
        next(tok.parameters()).add_(0.01)
    tok.save_pretrained(tmp_path / "tuned_tok")
    capsys.readouterr()
    assert main(["tts", "The cat ran.", "-o", str(tmp_path / "z.wav"), "--model",
                 str(tmp_path / "run" / "checkpoint"), "--tokenizer", str(tmp_path / "tuned_tok")]) == 1
    assert "other weights of tokenizer" in capsys.readouterr().err and not (tmp_path / "z.wav").exists()
    # A fine-tune of the decoder alone keeps the tokens (tokens_hash: encoder and quantizer): the LM takes it.
    tok = load_codec(tiny_corpus / "tok")
    assert lm_cfg.tokenizer_tokens_hash == tok.tokens_hash() == meta["tokenizer_tokens_hash"]
    with torch.no_grad():
        next(tok.decoder.parameters()).add_(0.01)
    assert tok.tokens_hash() == lm_cfg.tokenizer_tokens_hash and tok.weights_hash() != lm_cfg.tokenizer_weights_hash
    tok.save_pretrained(tmp_path / "tuned_decoder")
    assert main(["tts", "The cat ran.", "-o", str(tmp_path / "d.wav"), "--model", str(tmp_path / "run" / "checkpoint"),
                 "--tokenizer", str(tmp_path / "tuned_decoder"), "--max-seconds", "1"]) == 0
    assert main(["tts", "  ", "-o", str(tmp_path / "x.wav"), "--model", str(tmp_path / "run" / "checkpoint")]) == 1
    assert main(["tts", "hi", "-o", str(tmp_path / "y.wav"), "--model", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "text is empty" in err and "unknown LM" in err
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "y.wav").exists()
    # Bad input (issue #28): each one error line naming the problem, exit 1, no output file.
    import soundfile as sf

    rng = np.random.default_rng(0)
    speechy = voiced_signal(2.0, 140, 3)
    sf.write(tmp_path / "silent.wav", np.zeros(32000, dtype=np.float32), 16000)
    sf.write(tmp_path / "short.wav", speechy[:1600], 16000)
    sf.write(tmp_path / "long.wav", np.tile(speechy, 300) + 1e-3 * rng.standard_normal(600 * 16000), 16000)
    (tmp_path / "notes.wav").write_text("not audio at all")
    checkpoint = ["--model", str(tmp_path / "run" / "checkpoint")]
    cases = [(["x" * 100_000], "characters; at most"), (["∰∯ ∰"], "nothing espeak-ng can pronounce"),
             (["hi", "--voice", str(tmp_path / "silent.wav")], "silent"),
             (["hi", "--voice", str(tmp_path / "short.wav")], "too short for a voice prompt"),
             (["hi", "--voice", str(tmp_path / "long.wav")], "too long for a voice prompt"),
             (["hi", "--voice", str(tmp_path / "notes.wav")], "notes.wav")]
    for args, message in cases:
        assert main(["tts", *args, "-o", str(tmp_path / "bad.wav"), *checkpoint]) == 1, args[0][:20]
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not (tmp_path / "bad.wav").exists()
    # `voxtok lm eval`: the held-out sentence spoken and judged (hama, pocketsphinx, Resemblyzer) beside its
    # re-synthesised ground truth; a report that is not .json is refused before any generation.
    report = tmp_path / "eval.json"
    base = ["lm", "eval", "--model", str(tmp_path / "run" / "checkpoint"), "--corpus", str(tiny_corpus / "corpus"),
            "--tokenizer", str(tiny_corpus / "tok"), "--num", "3"]
    assert main([*base, "-o", str(tmp_path / "eval.txt")]) == 1
    assert "written as a .json file" in capsys.readouterr().err
    assert main([*base, "-o", str(report)]) == 0
    result = json.loads(report.read_text())
    (row,) = result["rows"]  # the tiny corpus holds one held-out utterance
    assert row["truth_frames"] > 0 and 0 <= row["per_truth"] and 0 <= row["wer_gen"]
    assert row["duration_ratio"] == row["frames"] / row["truth_frames"]
    # Absolute bars: the generated speech beside the same sentence read by the reference (its recording).
    assert set(result["bars"]) >= {"wer", "similarity", "ended", "duration_within_30pct", "x_realtime_median"}
    assert result["summary"]["wer_ref"] is not None and row["wer_ref"] >= 0
    wer_bar = result["bars"]["wer"]
    assert wer_bar["threshold"] == round(1.5 * result["summary"]["wer_ref"] + 0.05, 4)
    assert wer_bar["met"] == (wer_bar["value"] <= wer_bar["threshold"])
    assert result["summary"]["generations"] == 1 and "similarity" in capsys.readouterr().out
    # Reports side by side, as the model cards show them; a file that is not a report is one error line.
    assert main(["lm", "eval", "--compare", str(report), str(report)]) == 0
    table = capsys.readouterr().out
    assert table.count("WER reference reading") == 1 and "| generations | 1 | 1 |" in table
    assert main(["lm", "eval", "--compare", str(tmp_path / "said.wav")]) == 1
    assert "not a readable lm eval report" in capsys.readouterr().err
    # A corpus re-made with other token-defining tokenizer weights is refused before any generation.
    import shutil

    shutil.copytree(tiny_corpus / "corpus", tmp_path / "other_corpus")
    other = json.loads((tmp_path / "other_corpus" / "corpus.json").read_text())
    (tmp_path / "other_corpus" / "corpus.json").write_text(json.dumps({**other, "tokenizer_tokens_hash": "0" * 12}))
    assert main([*base[:4], "--corpus", str(tmp_path / "other_corpus"), *base[6:], "-o", str(report)]) == 1
    assert "other weights" in capsys.readouterr().err


def test_lm_bench_reports_speed_for_a_recipe(tmp_path, capsys):
    from voxtok.cli import main

    recipe = tmp_path / "lm.toml"
    recipe.write_text('[model]\nkind = "continuous"\ndim = 32\nlayers = 1\nheads = 2\nflow_dim = 32\n'
                      'latent_dim = 32\n')
    assert main(["lm", "bench", "--recipe", str(recipe), "--frames", "5", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["frames"] == 5 and report["x_realtime"] > 0 and report["random_weights"]
    assert report["command"].startswith("voxtok lm bench --recipe")


_RANK_SCRIPT = """
import hashlib, os, sys
from voxtok.lm.train import LMTrainer, load_lm_recipe
table, cfg = load_lm_recipe(sys.argv[1])
trainer = LMTrainer(table, cfg, progress=False)
trainer.train(4)
digest = hashlib.sha256()
for name, tensor in sorted(trainer.model.state_dict().items()):
    digest.update(tensor.detach().float().numpy().tobytes())
open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.txt"), "w").write(digest.hexdigest())
"""


def test_lm_data_parallel_training_keeps_ranks_in_step(tmp_path, tiny_corpus):
    """torchrun, 2 gloo ranks on the CPU: each draws its own examples, gradients are averaged, both end with the
    same weights, and rank 0 alone writes the checkpoint."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    recipe = _lm_recipe(tmp_path, tiny_corpus / "corpus", steps=4)
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(recipe),
                             str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "rank0.txt").read_text() == (tmp_path / "rank1.txt").read_text()
    assert "on 2 ranks" in result.stdout
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["step"] == 4


def test_bigram_baseline_is_lower_on_predictable_codes():
    """The baseline's cross-entropy is near log(V) on random codes and far below it on codes that follow a
    rule (each code the previous plus one)."""
    import math

    import numpy as np
    from voxtok.lm.train import bigram_cross_entropy

    rng = np.random.default_rng(0)
    random = [rng.integers(0, 16, (2, 200)) for _ in range(4)]
    ruled = [np.stack([(np.arange(200) + s) % 16] * 2) for s in range(4)]
    assert abs(bigram_cross_entropy(random[:3], random[3:], 16)[0] - math.log(16)) < 0.2
    assert bigram_cross_entropy(ruled[:3], ruled[3:], 16)[0] < 0.5


def test_gpu_burst_command_resumes_an_lm_checkpoint(tmp_path, tiny_corpus):
    """recipes/gpu_burst.sh with an LM recipe (on the CPU here): `python -m voxtok.lm train` resumes the packed
    checkpoint from a checkout that needs no installed entry point, and the packed result, its card kept, comes back
    in $OUT."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from voxtok.lm.train import LMTrainer, load_lm_recipe

    recipe = _lm_recipe(tmp_path, tiny_corpus / "corpus", steps=100000, sample_every=0)
    table, cfg = load_lm_recipe(recipe)
    LMTrainer(table, cfg, progress=False).train(4)
    repo = Path(__file__).resolve().parents[1]
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "MODEL_CARD.md").write_text("# card\n")
    subprocess.run([sys.executable, str(repo / "recipes" / "pack_checkpoint.py"), str(tmp_path / "run"), str(packed)],
                   check=True, capture_output=True)
    assert (packed / "MODEL_CARD.md").read_text() == "# card\n" and not (packed / "optimizer.safetensors").exists()
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(repo / "recipes" / "gpu_burst.sh"), str(recipe), str(packed), "0.05"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed at step 4" in result.stdout and "fresh Adam moments" in result.stdout
    state = json.loads((tmp_path / "out" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] > 4 and (tmp_path / "out" / "checkpoint" / "MODEL_CARD.md").is_file()


def test_guided_attention_rewards_the_diagonal_over_the_prompt():
    from voxtok.lm.model import SPEECH, TEXT, guided_attention_loss

    # 2 prompt frames, 4 phonemes, 4 target frames: segments 0 | 1 | 2.
    kinds = torch.tensor([[SPEECH] * 2 + [TEXT] * 4 + [SPEECH] * 4])
    segments = torch.tensor([[0] * 2 + [1] * 4 + [2] * 4])
    diagonal, prompt, reversed_ = (torch.zeros(1, 1, 10, 10) for _ in range(3))
    for t in range(4):
        diagonal[0, 0, 6 + t, 2 + t] = 1.0  # target frame t looks at phoneme t
        reversed_[0, 0, 6 + t, 5 - t] = 1.0
        prompt[0, 0, 6 + t, 0] = 1.0
    low, mid, high = (guided_attention_loss(a, kinds, segments, 0.2) for a in (diagonal, reversed_, prompt))
    assert low < 0.01 and 0.3 < mid < 1.0 and high == 1.0
    # Through the model: the loss adds the term, its gradient reaches the middle layer, the CE is unchanged.
    torch.manual_seed(0)
    model = SpeechLM(tiny())
    codes = torch.randint(0, 16, (3, 6))
    batch = collate([training_item(model.config, codes[:, :2], [0, 1, 2, 3], codes)])
    plain, figures = model.loss(batch)
    guided, guided_figures = model.loss(batch, guided=(2.0, 0.2))
    assert "guided" in guided_figures and 0 < guided_figures["guided"] <= 1
    assert torch.isclose(guided, plain + 2.0 * guided_figures["guided"], atol=1e-5)
    assert figures["ce_0"] == pytest.approx(guided_figures["ce_0"], abs=1e-5)
    guided.backward()
    assert model.blocks[1].attn.qkv.weight.grad.abs().sum() > 0 and model.blocks[1].attn.weights is None


def test_frame_states_walk_pauses_phonemes_and_the_end():
    from voxtok.lm.align import frame_states

    spans = [(0.1, 0.2), (0.2, 0.35), (0.5, 0.6)]  # frame centres at 12.5 Hz: 0.04, 0.12, 0.20, ...
    assert frame_states(spans, 9, 12.5).tolist() == [0, 1, 3, 3, 4, 4, 5, 6, 6]


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_aligned_lm_walks_its_text_and_says_back_what_it_learnt(kind):
    """An aligned LM's positions carry the phonemes of their frame's alignment state, one step ahead of the
    frame they predict; overfit on one utterance, greedy generation must walk the same states (advance head) and
    say back its frames."""
    from voxtok.lm.sequence import INSIDE, PAUSE, aligned_inputs, sounding_ids

    torch.manual_seed(0)
    model = SpeechLM(tiny(kind, aligned=True))
    phones = [0, 1, 4, 2, 3]  # WORD (4) takes no time: four sounding phonemes, states 0..8
    assert sounding_ids(model.config, phones) == [0, 1, 2, 3]
    states = torch.tensor([0, 1, 1, 3, 4, 5, 7])
    target = (torch.randint(0, 16, (3, 7), generator=torch.Generator().manual_seed(1)) if kind == "discrete"
              else torch.randn(4, 7, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="one alignment state per target frame"):
        training_item(model.config, target[:, :0], phones, target, states[:3])
    item = training_item(model.config, target[:, :0], phones, target, states)
    start = int((item["markers"] == 1).nonzero()[-1])  # <sep> predicts frame 0 and has no state
    assert item["place"][start] == 0 and item["place"][start + 1] == INSIDE and item["place"][start + 4] == PAUSE
    window, _ = aligned_inputs(model.config, [0, 1, 2, 3], states)
    assert torch.equal(item["window"][:, start + 1:start + 7], window[:, 1:])
    assert item["advance"][start:start + 7].tolist() == [1, 0, 2, 1, 1, 2, 1] and item["advance"][start + 7] == -1
    losses = _overfit(model, item, 300 if kind == "discrete" else 500)
    assert sum(losses[-20:]) < 0.25 * sum(losses[:20])
    model.eval()
    walked: list[int] = []
    frames = list(generate_frames(model, target[:, :0], phones, Sampling(temperature=0.0, flow_steps=8), walked))
    assert walked[:6] == states[1:].tolist() and walked[-1] == 8  # past the end of speech: "ended"
    assert len(frames) == 7
    if kind == "discrete":
        assert torch.equal(torch.stack(frames, dim=1), target)
    else:
        assert (torch.stack(frames, dim=1) - target).abs().mean() < 0.2 * target.abs().mean()


def test_aligned_lm_from_align_to_tts(tmp_path, capsys, tiny_corpus):
    """`voxtok lm align` places every phoneme of a corpus with the shipped recogniser; an aligned recipe refuses
    a corpus without alignments in one line, trains on an aligned one, and speaks through `voxtok tts`."""
    import shutil

    import soundfile as sf
    from voxtok.cli import main
    from voxtok.lm.align import frame_states, read_alignments
    from voxtok.lm.corpus import load_corpus
    from voxtok.lm.phonemes import sounding

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus / "corpus", corpus)
    recipe = _lm_recipe(tmp_path, corpus, steps=6, sample_every=0)
    recipe.write_text(recipe.read_text().replace('kind = "discrete"', 'kind = "discrete"\naligned = true'))
    assert main(["lm", "train", str(recipe), "--no-progress"]) == 1
    assert "voxtok lm align" in capsys.readouterr().err
    assert main(["lm", "align", str(corpus), "--quiet"]) == 0
    assert "aligned 4 utterances" in capsys.readouterr().out
    meta, utterances = load_corpus(corpus)
    assert len(read_alignments(corpus)) == 4
    for u in utterances:
        positions, spans = u.alignment
        assert positions == sounding(u.phones) and len(spans) == len(positions)
        seconds = u.codes.shape[1] / meta["frame_rate"]
        assert all(0 <= a < b <= seconds + 0.04 for a, b in spans)
        assert all(spans[k][1] <= spans[k + 1][0] + 1e-6 for k in range(len(spans) - 1))
        states = frame_states(spans, u.codes.shape[1], meta["frame_rate"])
        # espeak-ng starts speaking at once and ends on its last phoneme: the walk reaches every phoneme.
        assert (np.diff(states) >= 0).all() and states.max() >= 2 * len(spans) - 1
    assert main(["lm", "train", str(recipe), "--no-progress"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("advance_ce" in r for r in log) and any("heldout/advance_ce" in r for r in log)
    # The held-out text gain's counterfactual: the same timing walked over another text's phonemes.
    from voxtok.lm.train import LMTrainer, load_lm_recipe

    trainer = LMTrainer(*load_lm_recipe(recipe), progress=False)
    u = trainer.train_set[0]
    own, other = trainer.states(u), trainer.states(u, 3)
    count = len(u.alignment[1])
    assert own.shape == other.shape and (np.diff(other.numpy()) >= 0).all() and other.max() <= 6
    assert torch.equal(other == 6, own == 2 * count)
    out = tmp_path / "said.wav"
    assert main(["tts", "The cat ran.", "-o", str(out), "--model", str(tmp_path / "run" / "checkpoint"),
                 "--tokenizer", str(tiny_corpus / "tok"), "--max-seconds", "2"]) == 0
    assert sf.info(out).frames > 0
    assert main(["lm", "align", str(tmp_path / "nowhere"), "--quiet"]) == 1
    assert "not a finished LM corpus" in capsys.readouterr().err
