"""Forced alignment (voxtok.data.align): words in the order of the text, phones where the speech is, silence
where it is not, one clear error for text it cannot align, and a cache that follows the text."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from voxtok.data.align import PHONES, align, cache_file, cached_alignment  # noqa: E402
from voxtok.errors import VoxtokError  # noqa: E402

TEXT = ("HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT MUTTON PIECES "
        "TO BE LADLED OUT IN THICK PEPPERED FLOUR FATTENED SAUCE")


def test_real_speech_aligns_word_by_word(dev_speech):
    samples, _path = dev_speech
    result = align(samples, TEXT)
    assert [w for w, _, _ in result.words] == TEXT.lower().split()
    starts = [s for _, s, _ in result.words]
    assert starts == sorted(starts) and all(s < e for _, s, e in result.words)
    assert result.frames == int(np.ceil(len(samples) / 160))
    voiced = {PHONES[i] for i in result.phones}
    assert {"HH", "OW", "P", "T", "S"} <= voiced  # "he hoped ... sauce"


def test_leading_silence_is_labelled_silence(dev_speech):
    samples, _path = dev_speech
    padded = np.concatenate([np.zeros(16000, dtype=np.float32), samples[: 16000 * 4]])
    plain, shifted = align(samples[: 16000 * 4], "HE HOPED THERE WOULD BE STEW FOR DINNER"), \
        align(padded, "HE HOPED THERE WOULD BE STEW FOR DINNER")
    assert (shifted.phones[:100] == 0).all()
    # The same words, one second (100 frames) later.
    for (w1, s1, _), (w2, s2, _) in zip(plain.words, shifted.words):
        assert w1 == w2 and abs((s2 - s1) - 100) <= 3


def test_unknown_words_and_empty_text_are_one_error(dev_speech):
    samples, _path = dev_speech
    with pytest.raises(VoxtokError, match="not in the pocketsphinx dictionary: zxqvw"):
        align(samples, "he hoped zxqvw")
    with pytest.raises(VoxtokError, match="no words"):
        align(samples, " 123 ,.")


def test_cache_is_reused_for_the_same_text_only(dev_speech, tmp_path):
    samples, path = dev_speech
    short = samples[: 16000 * 3]
    first = cached_alignment(path, "a/clip.flac", "HE HOPED THERE WOULD", tmp_path, samples=short)
    assert cache_file(tmp_path, "a/clip.flac").is_file()
    again = cached_alignment(path, "a/clip.flac", "he hoped there would", tmp_path, samples=short)
    assert np.array_equal(first.phones, again.phones) and first.words == again.words
    other = cached_alignment(path, "a/clip.flac", "HE HOPED", tmp_path, samples=short)
    assert [w for w, _, _ in other.words] == ["he", "hoped"]


def test_a_failed_alignment_is_cached_for_its_text(dev_speech, tmp_path, monkeypatch):
    """A file that does not align is decoded once: the next call for the same text raises the cached error
    without running pocketsphinx; other text is tried afresh."""
    import voxtok.data.align as align_module

    samples, path = dev_speech
    short = samples[: 16000 * 3]
    with pytest.raises(VoxtokError, match="zxqvw"):
        cached_alignment(path, "a/clip.flac", "he hoped zxqvw", tmp_path, samples=short)
    assert not cache_file(tmp_path, "a/clip.flac").is_file()
    calls = []
    real_align = align_module.align
    monkeypatch.setattr(align_module, "align", lambda *a, **k: calls.append(a) or real_align(*a, **k))
    with pytest.raises(VoxtokError, match="zxqvw"):
        cached_alignment(path, "a/clip.flac", "HE HOPED ZXQVW", tmp_path, samples=short)
    assert calls == []
    assert [w for w, _, _ in cached_alignment(path, "a/clip.flac", "he hoped", tmp_path, samples=short).words] == [
        "he", "hoped"]
    assert len(calls) == 1
