"""`voxtok demo`: the tabs' functions on the bundled clips and on bad input, then the real page in headless
Chromium (Debian's chromium + chromedriver through selenium; nothing is downloaded): upload, run, listen to what
came back, see the spectrograms, stream, and get a readable message for bad input. Screenshots are kept under
$VOXTOK_TEST_ARTIFACTS (default runs/test-artifacts/demo)."""

from __future__ import annotations

import io
import os
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio")

from voxtok.demo import codec_tab, streaming_tab  # noqa: E402
from voxtok.demo.app import EXAMPLES_DIR, DemoConfig, examples, launch  # noqa: E402
from voxtok.demo.codec_tab import DemoInputError  # noqa: E402

SR = 16000
CLIP = EXAMPLES_DIR / "librispeech-1089-134686-0000.flac"
ARTIFACTS = Path(os.environ.get("VOXTOK_TEST_ARTIFACTS", Path(__file__).parents[1] / "runs" / "test-artifacts"))


def _envelope_correlation(a: np.ndarray, b: np.ndarray, frame: int = 320) -> float:
    n = min(len(a), len(b)) // frame * frame
    ea = np.log(np.square(a[:n]).reshape(-1, frame).mean(1) + 1e-8)
    eb = np.log(np.square(b[:n]).reshape(-1, frame).mean(1) + 1e-8)
    return float(np.corrcoef(ea, eb)[0, 1])


def test_bundled_examples_are_small_speech_clips():
    clips = examples()
    assert len(clips) >= 2
    for clip in clips:
        info = sf.info(str(clip))
        assert info.samplerate == SR and 2.0 < info.duration < 10.0 and clip.stat().st_size < 200_000
    assert (EXAMPLES_DIR / "README.md").read_text().count("licence") >= 1


def test_codec_ab_decodes_speech_beside_opus():
    result = codec_tab.compare(CLIP, 1.5, "voxtok-16k-v2", with_metrics=False)
    assert len(result.decoded) == len(result.original) and result.opus is not None
    assert _envelope_correlation(result.original, result.decoded) > 0.8
    assert _envelope_correlation(result.original, result.opus) > 0.8
    # The true bitrate includes the container: a little above 1.5 kbps of codes, far below Opus.
    assert 1.5 < result.voxtok_kbps < 2.5 and result.opus_kbps > 5.0
    assert set(result.images) == {"original", "voxtok", "opus"}
    assert all(img.shape[0] == 256 and img.shape[2] == 3 and img.std() > 10 for img in result.images.values())
    assert "kbps" in result.markdown() and "Opus cannot go below 6 kbps" in result.markdown()


def test_codec_ab_metrics_rank_opus_6_above_voxtok_at_half_a_kbps():
    pytest.importorskip("pesq")
    result = codec_tab.compare(CLIP, 0.5, "voxtok-16k-v2")
    rows = result.metrics
    vox, opus = rows["voxtok-16k-v2 @ 0.5 kbps"], rows["Opus @ 6 kbps"]
    assert 1.0 <= vox["PESQ-WB"] < opus["PESQ-WB"] <= 4.7
    assert 0.0 < vox["STOI"] <= 1.0 and "speaker sim" in vox
    assert "| voxtok-16k-v2 @ 0.5 kbps |" in result.markdown()


@pytest.mark.parametrize("case, message", [
    ("text", "not an audio file"),
    ("long", "this demo takes up to 3 s"),
    ("silent", "silent"),
    ("missing", "upload or record some audio first"),
])
def test_bad_input_gets_a_message_for_the_page(tmp_path, case, message):
    path = {"text": tmp_path / "notes.wav", "long": CLIP, "silent": tmp_path / "silence.flac", "missing": None}[case]
    if case == "text":
        path.write_text("this is not audio\n")
    if case == "silent":
        sf.write(path, np.zeros(SR * 2, dtype=np.float32), SR)
    with pytest.raises(DemoInputError, match=message):
        codec_tab.compare(path, 1.5, max_seconds=3.0, with_metrics=False)


def test_unknown_model_and_bitrate_are_refused():
    with pytest.raises(DemoInputError, match="unknown model"):
        codec_tab.compare(CLIP, 1.5, "voxtok-99k", with_metrics=False)
    with pytest.raises(DemoInputError, match="not an operating point"):
        codec_tab.compare(CLIP, 2.0, with_metrics=False)


def test_streamed_file_equals_the_offline_runtime_decode():
    from voxtok.export.runtime import OfflineCodec

    pieces = list(streaming_tab.stream_file(CLIP, paced=False))
    assert len(pieces) >= 3  # handed back piece by piece, not at the end
    streamed = np.concatenate([audio for audio, _ in pieces])
    samples = codec_tab.load_upload(CLIP)
    assert len(streamed) == len(samples)
    offline = OfflineCodec(streaming_tab.exported_codec("voxtok-16k-v2"))
    reference = offline.decode(offline.encode(samples), len(samples))
    assert np.abs(streamed - reference).max() < 1e-4
    figures = pieces[-1][1]
    assert "chunks of 20 ms" in figures and "p95" in figures and "first audio" in figures


def test_microphone_blocks_of_any_rate_and_size_stream_through():
    samples = codec_tab.load_upload(CLIP)
    stream = streaming_tab.MicrophoneStream()
    out = []
    # What a browser sends: 48 kHz int16 blocks of a size that is no multiple of a frame.
    import soxr

    at48k = (np.clip(soxr.resample(samples, SR, 48000), -1, 1) * 32767).astype(np.int16)
    for start in range(0, len(at48k), 4410):
        out.append(stream.push(streaming_tab.browser_block((48000, at48k[start:start + 4410]))))
    out.append(stream.finish())
    decoded = np.concatenate(out)
    assert abs(len(decoded) - len(samples)) < 2 * 320 + 560
    assert _envelope_correlation(samples, decoded) > 0.8
    assert stream.figures.first_audio_ms is not None and len(stream.figures.latencies_ms) > 100


# ---- the page in a real browser ---------------------------------------------------------------------

def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/install installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _wait(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _tiny_voice_model(folder: Path) -> dict[str, str]:
    """A tiny random-weight LM over a tiny 12.5 Hz tokenizer, saved under folder; the demo's environment that
    names them (VOXTOK_DEMO_LMS, VOXTOK_DEMO_TOKENIZER)."""
    import torch
    from test_lm import SYMBOLS, tiny
    from test_lowrate import tiny_lowrate_config
    from voxtok.lm.model import SpeechLM
    from voxtok.lowrate import LowRateCodec

    torch.manual_seed(0)
    tokenizer = LowRateCodec(tiny_lowrate_config())
    tokenizer.quantizer.initialize(tokenizer.encoder(torch.randn(2, 1, 12800) * 0.1))
    tokenizer.save_pretrained(folder / "tok")
    symbols = [*SYMBOLS, "ð", "ə", "k", "æ", "t", "ˈ", "ɹ", "n"]
    for kind, name in (("discrete", "lm"), ("continuous", "lm-flow")):
        lm = SpeechLM(tiny(kind, num_codebooks=2, codebook_size=625, latent_dim=8, phone_symbols=symbols,
                           tokenizer="tiny-12hz", tokenizer_config_hash=tokenizer.config.config_hash()))
        lm.save_pretrained(folder / name)
    return {"VOXTOK_DEMO_LMS": f"tiny={folder / 'lm'},tiny-flow={folder / 'lm-flow'}",
            "VOXTOK_DEMO_TOKENIZER": str(folder / "tok")}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    # The voices tab lists the shipped LM first (the page speaks with it) and the tiny LMs named through the
    # environment after it; no port given: Gradio takes the first free one.
    env = _tiny_voice_model(tmp_path_factory.mktemp("voice-model"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    app, url = launch(block=False, config=DemoConfig(max_seconds=30.0))
    driver = _browser()
    try:
        yield driver, url
    finally:
        driver.quit()
        app.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fetch_wav(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        data, _rate = sf.read(io.BytesIO(response.read()), dtype="float32")
    return data.reshape(len(data), -1).mean(axis=1)


def _upload(driver, container: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    field = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, f"#{container} input[type=file]"), 60,
                  f"the file input of #{container}")
    field[0].send_keys(str(path.resolve()))


def test_page_codec_tab_streaming_tab_and_bad_input(page, tmp_path):
    from selenium.webdriver.common.by import By

    driver, url = page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.get(url)
    _upload(driver, "ab-input", CLIP)
    time.sleep(1.0)
    driver.find_element(By.CSS_SELECTOR, "#ab-run").click()
    link = _wait(lambda: [a.get_attribute("href") for a in
                          driver.find_elements(By.CSS_SELECTOR, "#ab-voxtok a[download]") if a.get_attribute("href")],
                 180, "the decoded audio")[0]
    decoded = _fetch_wav(link)
    assert len(decoded) > SR * 3 and np.sqrt(np.mean(decoded**2)) > 0.005  # non-silent audio came back
    for spec in ("ab-spec-original", "ab-spec-voxtok", "ab-spec-opus"):
        _wait(lambda spec=spec: driver.execute_script(
            f"const i = document.querySelector('#{spec} img'); return i && i.complete && i.naturalWidth > 100;"),
            60, f"the {spec} image")
    summary = driver.find_element(By.CSS_SELECTOR, "#ab-summary").text
    assert "kbps" in summary and "PESQ-WB" in summary
    driver.save_screenshot(str(ARTIFACTS / "demo_codec_ab.png"))

    # A file that is not audio: a message on the page, and the app still serves.
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all\n")
    driver.get(url)
    _upload(driver, "ab-input", bad)
    time.sleep(1.0)
    driver.find_element(By.CSS_SELECTOR, "#ab-run").click()
    _wait(lambda: "audio" in " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body")).lower(),
          60, "an error message about the upload")
    driver.save_screenshot(str(ARTIFACTS / "demo_bad_input.png"))

    # The streaming tab, fed a bundled clip as fast as the CPU goes.
    driver.get(url)
    tab = _wait(lambda: [b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Streaming"],
                30, "the streaming tab")
    tab[0].click()
    _upload(driver, "st-input", EXAMPLES_DIR / "flite-slt-codec.flac")
    time.sleep(1.0)
    driver.find_element(By.CSS_SELECTOR, "#st-run").click()
    figures = _wait(lambda: (t := driver.find_element(By.CSS_SELECTOR, "#st-figures").text) and "first audio" in t
                    and t, 120, "streaming figures")
    assert "chunks of 20 ms" in figures and "p95" in figures
    driver.save_screenshot(str(ARTIFACTS / "demo_streaming.png"))

    # The voices tab: text in, speech streamed out with its phonemes and figures (the shipped LM, the default).
    driver.get(url)
    tab = _wait(lambda: [b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Voices"],
                30, "the voices tab")
    tab[0].click()
    text = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#vo-text textarea"), 30, "the text box")[0]
    text.clear()
    text.send_keys("the cat ran")
    driver.find_element(By.CSS_SELECTOR, "#vo-run").click()
    summary = _wait(lambda: (t := driver.find_element(By.CSS_SELECTOR, "#vo-summary").text) and "first audio" in t
                    and t, 120, "the voices tab's figures")
    assert "phonemes:" in summary and "ðə" in summary and "real time" in summary and "voxtok-lm-continuous" in summary
    driver.save_screenshot(str(ARTIFACTS / "demo_voices.png"))


def test_voices_tab_speaks_with_a_trained_lm_and_explains_bad_requests(tmp_path, monkeypatch):
    """The voices tab's handler with a tiny random-weight LM over a tiny tokenizer (named through the demo's
    environment variables): speech comes back with its figures; empty text, an unknown model and an unknown
    phoneme get a message for the page."""
    from voxtok.demo import voices_tab
    from voxtok.demo.codec_tab import DemoInputError

    for key, value in _tiny_voice_model(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert "tiny" in voices_tab.available_lms()
    audio, summary = voices_tab.speak("the cat ran", None, "tiny", temperature=1.0, seed=1, max_seconds=1.0)
    assert len(audio) % 1280 == 0 and len(audio) > 0 and "first audio after" in summary
    # Streamed, the same speech arrives frame by frame, the phonemes shown from the first piece on.
    pieces = list(voices_tab.speak_stream("the cat ran", None, "tiny", temperature=1.0, seed=1, max_seconds=1.0))
    assert len(pieces) > 2 and np.array_equal(np.concatenate([p for p, _ in pieces]), audio)
    assert all("phonemes: `ðə" in summary for _, summary in pieces)
    # The shipped LMs come first, the default first, and decode with their own tokenizer, whatever
    # VOXTOK_DEMO_TOKENIZER names; each says a short sentence and ends by itself.
    lms = list(voices_tab.available_lms())
    assert lms[:2] == ["voxtok-lm-continuous", "voxtok-lm-discrete"] and "voxtok-lm-discrete-v1" in lms
    for shipped in ("voxtok-lm-continuous", "voxtok-lm-discrete", "voxtok-lm-discrete-v1"):
        audio, summary = voices_tab.speak("the cat ran", None, shipped, seed=1, max_seconds=5.0)
        assert 0 < len(audio) < 5 * 16000 and "ended by itself" in summary
    # The continuous LM takes the flow steps.
    audio, summary = voices_tab.speak("the cat ran", None, "tiny-flow", seed=1, max_seconds=1.0, steps=2)
    assert len(audio) > 0 and "(continuous, 2 flow steps)" in summary
    with pytest.raises(DemoInputError, match="flow steps"):
        voices_tab.speak("the cat ran", None, "tiny-flow", steps=0)
    for text, model, message in (("  ", "tiny", "type something"), ("hi", "nope", "unknown voice model"),
                                 ("zebra quiz", "tiny", "not in this model's symbol table")):
        with pytest.raises(DemoInputError, match=message):
            voices_tab.speak(text, None, model, max_seconds=1.0)
