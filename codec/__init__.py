"""voxtok: a streaming speech codec and token pipeline.

    import voxtok
    codec = voxtok.load()                          # codec v2 (voxtok-16k-v2)
    codes = voxtok.encode(codec, samples, 1.5)     # [codebooks, frames] int64 at 1.5 kbps
    audio = voxtok.decode(codec, codes)
    tok = voxtok.load("voxtok-16k-12hz")           # 12.5 Hz tokens for speech LMs
    z = voxtok.tokenize(tok, samples)              # [frames, 32] float32
    audio = voxtok.tts("Hello there.", voice=prompt_samples)

The names are imported on first use, so `import voxtok` (and `voxtok --help`) does not load torch."""

__version__ = "0.1.0"

# Public name -> the module (under voxtok) that defines it.
_PUBLIC = {name: "api" for name in ("load", "encode", "decode", "tokenize", "detokenize", "tts")}
_PUBLIC["VoxtokError"] = "errors"
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(f"voxtok.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'voxtok' has no attribute {name!r}")
