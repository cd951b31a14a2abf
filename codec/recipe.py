"""Reading a TOML training recipe (codec and speech LM alike): the one place `base = "..."` is resolved."""

from __future__ import annotations

import tomllib
from pathlib import Path

from voxtok.errors import VoxtokError


def read_recipe_tables(path: str | Path, _seen: tuple = ()) -> dict:
    """A TOML recipe's tables, with `base = "other.toml"` (a path beside this recipe) read first and this
    recipe's keys laid over it table by table: a continuation or a variant states only what it changes."""
    path = Path(path)
    if path.resolve() in _seen:
        raise VoxtokError(f"{path}: recipe bases form a loop")
    try:
        recipe = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise VoxtokError(f"recipe not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise VoxtokError(f"{path}: not valid TOML ({exc})") from None
    base = recipe.pop("base", None)
    if base is None:
        return recipe
    if not isinstance(base, str):
        raise VoxtokError(f"{path}: base must be a recipe path")
    return _overlay(read_recipe_tables(path.parent / base, _seen + (path.resolve(),)), recipe)


def _overlay(below: dict, above: dict) -> dict:
    """above's keys over below's, tables merged key by key at every depth."""
    out = dict(below)
    for key, value in above.items():
        out[key] = _overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
