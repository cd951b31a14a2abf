"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class VoxtokError(Exception):
    """A user-facing failure: bad input, wrong file, missing tool. The message is the whole story."""
