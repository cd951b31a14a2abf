"""voxtok's Gradio demo (`voxtok demo`): hear the codec against Opus, and stream through the ONNX runtime.

The tabs' work lives in plain functions (demo.codec_tab, demo.streaming_tab) that the tests call directly; demo.app
only lays them out in Gradio. The package registers its own subcommand through the `voxtok.commands` entry point.
"""
