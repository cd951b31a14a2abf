"""The Gradio page: a codec A/B tab, a streaming tab and a voices tab, over demo.codec_tab, demo.streaming_tab and
demo.voices_tab.

Every handler turns a DemoInputError (or any other failure) into a gr.Error, which the page shows as a message
beside the component; the queue bounds how many requests run at once and how many may wait."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Gradio must not phone home: set before gradio is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from voxtok.demo import codec_tab, streaming_tab, voices_tab  # noqa: E402
from voxtok.demo.codec_tab import SAMPLE_RATE, DemoInputError  # noqa: E402

EXAMPLES_DIR = Path(__file__).parent / "examples"


@dataclass
class DemoConfig:
    max_seconds: float = codec_tab.DEFAULT_MAX_SECONDS
    concurrency: int = 2  # requests that run at once (the CPU is the limit)
    queue_size: int = 16  # requests that may wait; more get "the queue is full"
    metrics: bool = True


def examples() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.flac"))


def _page_error(exc: Exception) -> gr.Error:
    if isinstance(exc, DemoInputError):
        return gr.Error(str(exc))
    return gr.Error(f"something went wrong on the server: {type(exc).__name__}: {exc}")


def build_app(config: DemoConfig | None = None) -> gr.Blocks:
    config = config or DemoConfig()
    models = list(codec_tab.MODELS)
    points = codec_tab.operating_points(models[0])

    def run_ab(path, bitrate, model_name):
        try:
            result = codec_tab.compare(path, float(bitrate), model_name, config.max_seconds, config.metrics)
        except Exception as exc:  # every failure becomes a message on the page, never a stack trace
            raise _page_error(exc) from None
        opus = None if result.opus is None else (SAMPLE_RATE, result.opus)
        return ((SAMPLE_RATE, result.decoded), opus, result.images["original"], result.images["voxtok"],
                result.images.get("opus"), result.markdown())

    def update_points(model_name):
        values = [f"{p:g}" for p in codec_tab.operating_points(model_name)]
        return gr.Dropdown(choices=values, value=values[min(2, len(values) - 1)])

    def run_stream(path, bitrate, model_name, paced):
        try:
            kbps = None if bitrate == "all" else float(bitrate)
            for audio, figures in streaming_tab.stream_file(path, model_name, kbps, paced, config.max_seconds):
                yield (SAMPLE_RATE, audio), figures
        except Exception as exc:
            raise _page_error(exc) from None

    def mic_start(model_name, bitrate):
        try:
            kbps = None if bitrate == "all" else float(bitrate)
            return streaming_tab.MicrophoneStream(model_name, kbps)
        except Exception as exc:
            raise _page_error(exc) from None

    def mic_block(block, state, model_name, bitrate):
        if state is None:
            state = mic_start(model_name, bitrate)
        audio = state.push(streaming_tab.browser_block(block))
        return (SAMPLE_RATE, audio), state.figures.markdown(state.algorithmic_ms), state

    def run_voice(text, voice_path, model_name, temperature, seed, steps):
        # Streamed: each generated frame's audio goes to the page as soon as the tokenizer has decoded it.
        try:
            for piece, summary in voices_tab.speak_stream(text, voice_path, model_name, temperature, seed,
                                                               steps=steps):
                yield ((SAMPLE_RATE, piece) if piece.size else gr.skip()), summary
        except Exception as exc:
            raise _page_error(exc) from None

    with gr.Blocks(title="voxtok demo") as app:
        gr.Markdown("# voxtok\nA streaming speech codec that runs on a CPU. Upload or record speech, or pick an "
                    f"example; inputs up to {config.max_seconds:.0f} s.")
        with gr.Tab("Codec A/B"):
            with gr.Row():
                with gr.Column():
                    ab_input = gr.Audio(sources=["upload", "microphone"], type="filepath", label="input",
                                        elem_id="ab-input")
                    ab_model = gr.Dropdown(models, value=models[0], label="tokenizer")
                    ab_rate = gr.Dropdown([f"{p:g}" for p in points], value=f"{points[min(2, len(points) - 1)]:g}",
                                          label="bitrate (kbps of codes)")
                    ab_run = gr.Button("Encode and decode", variant="primary", elem_id="ab-run")
                    if examples():
                        gr.Examples([[str(p)] for p in examples()], inputs=[ab_input], label="examples")
                with gr.Column():
                    ab_voxtok = gr.Audio(label="voxtok", elem_id="ab-voxtok", interactive=False)
                    ab_opus = gr.Audio(label="Opus (nearest bitrate)", elem_id="ab-opus", interactive=False)
                    ab_summary = gr.Markdown(elem_id="ab-summary")
            with gr.Row():
                ab_img_orig = gr.Image(label="original", elem_id="ab-spec-original", interactive=False)
                ab_img_vox = gr.Image(label="voxtok", elem_id="ab-spec-voxtok", interactive=False)
                ab_img_opus = gr.Image(label="Opus", elem_id="ab-spec-opus", interactive=False)
            ab_model.change(update_points, ab_model, ab_rate)
            ab_run.click(run_ab, [ab_input, ab_rate, ab_model],
                         [ab_voxtok, ab_opus, ab_img_orig, ab_img_vox, ab_img_opus, ab_summary],
                         concurrency_limit=config.concurrency)
        with gr.Tab("Streaming"):
            gr.Markdown("The ONNX runtime (no torch), 20 ms chunks. A file is played at the audio clock, as a "
                        "microphone would send it; or stream your microphone live.")
            with gr.Row():
                with gr.Column():
                    st_input = gr.Audio(sources=["upload"], type="filepath", label="file to stream",
                                        elem_id="st-input")
                    st_model = gr.Dropdown(codec_tab.STREAMING_MODELS, value=codec_tab.STREAMING_MODELS[0],
                                           label="model")
                    st_rate = gr.Dropdown(["all", *[f"{p:g}" for p in points]], value="all", label="bitrate (kbps)")
                    st_paced = gr.Checkbox(True, label="at the audio clock (off: as fast as the CPU goes)")
                    st_run = gr.Button("Stream the file", variant="primary", elem_id="st-run")
                    if examples():
                        gr.Examples([[str(p)] for p in examples()], inputs=[st_input], label="examples")
                    st_mic = gr.Audio(sources=["microphone"], streaming=True, label="or your microphone, live")
                with gr.Column():
                    st_output = gr.Audio(label="decoded, as it streams", streaming=True, autoplay=True,
                                         elem_id="st-output", interactive=False)
                    st_figures = gr.Markdown("waiting for audio…", elem_id="st-figures")
            st_state = gr.State(None)
            st_run.click(run_stream, [st_input, st_rate, st_model, st_paced], [st_output, st_figures],
                         concurrency_limit=config.concurrency)
            st_mic.stream(mic_block, [st_mic, st_state, st_model, st_rate], [st_output, st_figures, st_state],
                          stream_every=0.1, time_limit=120, concurrency_limit=config.concurrency)
            st_mic.start_recording(lambda: None, None, st_state)
        with gr.Tab("Voices"):
            lm_folders = voices_tab.available_lms()
            lms = list(lm_folders)
            if not lms:
                gr.Markdown("No speech LM found (lm/pretrained/ is empty). Train one (`voxtok lm train "
                            "recipes/lm_continuous_small_aligned.toml`) and start the demo with "
                            "`VOXTOK_DEMO_LMS=mine=runs/lm_continuous_aligned/checkpoint`.")
            else:
                gr.Markdown("Text and a few seconds of a voice in, speech out: the speech LM generates 12.5 Hz "
                            "tokens and the tokenizer decodes them as they come.")
                with gr.Row():
                    with gr.Column():
                        vo_text = gr.Textbox(label="text", value="The quick brown fox jumps over the lazy dog.",
                                             elem_id="vo-text")
                        vo_voice = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                            label="voice prompt (a few seconds)", elem_id="vo-voice")
                        vo_model = gr.Dropdown(lms, value=lms[0], label="speech LM")
                        vo_temperature = gr.Slider(0.0, 1.5, step=0.05, label="temperature",
                                                   value=voices_tab.model_temperature(lm_folders[lms[0]]))
                        vo_seed = gr.Number(0, precision=0, label="seed")
                        vo_steps = gr.Slider(1, 16, value=8, step=1, label="flow steps (continuous LMs)")
                        vo_run = gr.Button("Speak", variant="primary", elem_id="vo-run")
                        if examples():
                            gr.Examples([[str(p)] for p in examples()], inputs=[vo_voice], label="voices")
                    with gr.Column():
                        vo_output = gr.Audio(label="speech, as it is generated", elem_id="vo-output",
                                             streaming=True, autoplay=True, interactive=False)
                        vo_summary = gr.Markdown(elem_id="vo-summary")
                vo_run.click(run_voice, [vo_text, vo_voice, vo_model, vo_temperature, vo_seed, vo_steps],
                             [vo_output, vo_summary], concurrency_limit=config.concurrency)
    app.queue(max_size=config.queue_size, default_concurrency_limit=config.concurrency)
    return app


def launch(host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           config: DemoConfig | None = None, block: bool = True):
    """Build and start the app; returns (app, local url). block=False returns once it serves (for tests)."""
    app = build_app(config)
    _, url, _ = app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                           quiet=not block, footer_links=[])
    return app, url

