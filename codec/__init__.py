"""voxtok: a streaming speech codec and token pipeline."""

__version__ = "0.1.0"
