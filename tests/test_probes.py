"""The RVQ-1 probes (voxtok.eval.probes): each measure on data whose answer is known, then a real report."""

from __future__ import annotations

import numpy as np
import pytest
from voxtok.eval.probes import code_frame_labels, linear_probe, pnmi, sentence_retrieval, speaker_probe


def test_pnmi_is_one_when_codes_name_the_phone_and_near_zero_when_unrelated():
    rng = np.random.default_rng(0)
    phones = rng.integers(1, 40, 20000)
    assert pnmi(phones * 7 + 3, phones) == pytest.approx(1.0)
    assert pnmi(rng.integers(0, 16, 20000), phones) < 0.02
    # Two phones per code: half the information (log 2 of ~log 39 bits lost).
    assert 0.5 < pnmi(phones // 2, phones) < 0.9


def test_linear_probe_finds_separable_classes_and_reports_the_majority_rate():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 8)) * 4
    labels = rng.integers(0, 5, 2000)
    vectors = centres[labels] + rng.normal(size=(2000, 8))
    result = linear_probe(vectors[:1500], labels[:1500], vectors[1500:], labels[1500:], classes=5)
    assert result["accuracy"] > 0.95 and result["majority"] < 0.35


def test_code_frames_take_the_phone_at_their_centre():
    phones_10ms = np.array([0, 0, 5, 5, 7, 7, 7, 9])
    assert code_frame_labels(phones_10ms, 5, 20.0).tolist() == [0, 5, 7, 9, -1]


def test_sentence_retrieval_is_perfect_for_a_linear_relation_and_chance_for_noise():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16))
    mapping = rng.normal(size=(16, 24))
    y = x @ mapping
    assert sentence_retrieval(x[:200], y[:200], x[200:], y[200:]) == 1.0
    assert sentence_retrieval(rng.normal(size=(200, 16)), y[:200], rng.normal(size=(100, 16)), y[200:]) < 0.1


def test_speaker_probe_holds_out_one_file_per_speaker():
    rng = np.random.default_rng(3)
    speakers = [f"s{k}" for k in range(6) for _ in range(4)] + ["lonely"]
    centres = {s: rng.normal(size=8) * 5 for s in set(speakers)}
    pooled = np.stack([centres[s] + rng.normal(size=8) for s in speakers])
    result = speaker_probe(pooled, speakers)
    assert result["speakers"] == 6 and result["speaker_accuracy"] == 1.0


def test_report_on_real_transcribed_speech(real_root, tmp_path, codec_model):
    pytest.importorskip("pocketsphinx")
    from voxtok.eval.probes import labelled_items, probe_report

    train = labelled_items(real_root, "train", str(tmp_path), limit=8)
    test = labelled_items(real_root, "dev", str(tmp_path), limit=12)
    report = probe_report(codec_model, train, test, sentences=4)
    assert report["train_files"] >= 6 and report["test_frames"] > 100
    assert 0.0 < report["pnmi_train"] <= 1.0
    # Eight files are too few for the held-out figure to mean much; the probe must at least fit its own data.
    assert 0.0 <= report["probe_accuracy"] <= 1.0 and report["probe_train_accuracy"] > report["probe_majority"]
    assert "sentence_retrieval" in report  # None here: the first dev files are one-word digit recordings


def test_token_frames_probe_the_12hz_tokens_per_20ms():
    """The 12.5 Hz tokenizer is probed at 4 positions per 80 ms token: one frame per 20 ms with the phone at its
    centre, the token's latent in the block of its position (zeros elsewhere), silence left out; with quantized,
    the FSQ twin's level centroids."""
    import torch
    from test_harmonic_codec import voiced_signal
    from test_lowrate import tiny_lowrate_config
    from voxtok.eval.probes import token_frames
    from voxtok.lowrate import LowRateCodec

    torch.manual_seed(0)
    model = LowRateCodec(tiny_lowrate_config()).eval()
    audio = voiced_signal(0.96, 150).astype(np.float32)  # 12 tokens, 48 positions
    model.quantizer.initialize(model.encoder(torch.from_numpy(audio)[None, None]))
    labels = np.repeat(np.arange(96) % 5, 1)  # 10 ms labels, phone 0 (silence) every fifth
    frames = token_frames(model, [(audio, labels)])
    expected = code_frame_labels(labels, 48, 20.0)
    assert np.array_equal(frames.phones, expected[expected > 0]) and frames.files == 1
    dim = model.config.latent_dim
    assert frames.vectors.shape == (int((expected > 0).sum()), 4 * dim)
    with torch.no_grad():
        z = model.encode_latents(torch.from_numpy(audio)[None, None])[0].T.double().numpy()
    kept = np.flatnonzero(expected > 0)
    for row, k in zip(frames.vectors, kept):
        token, position = divmod(int(k), 4)
        block = row.reshape(4, dim)
        assert np.allclose(block[position], z[token]) and not np.delete(block, position, 0).any()
    fsq = token_frames(model, [(audio, labels)], quantized=True)
    with torch.no_grad():
        centroids = model.quantizer.decode(model.quantizer.codes_of_normalised(torch.from_numpy(z.T)[None].float()))
    assert np.allclose(fsq.vectors[0].reshape(4, dim)[kept[0] % 4], centroids[0, :, kept[0] // 4].numpy(),
                       atol=1e-5)
    assert not np.allclose(fsq.vectors, frames.vectors)
