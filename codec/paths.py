"""Where voxtok finds the shared data: the one rule, used by the CLI, the benchmarks, the tests and the recipes.

Real speech lives in ``$VOXTOK_DATA`` when it is set, else in ``shared/data/real`` beside the checkout
(the layout of this workplace); text for synthetic readings in ``shared/data/text``. An installed wheel has no
checkout beside it, so the environment variable is how its users point at their data.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

# codec/paths.py in a checkout, voxtok/paths.py in an install: the folder above the package either way.
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_root() -> Path:
    """The shared data folder: the parent of ``$VOXTOK_DATA`` when set, else ``../shared/data`` of the checkout."""
    if os.environ.get("VOXTOK_DATA"):
        return Path(os.environ["VOXTOK_DATA"]).parent
    return CHECKOUT_ROOT.parent / "shared" / "data"


def real_speech_root() -> Path:
    """The real speech folder (with ``manifest.jsonl``): ``$VOXTOK_DATA``, else ``../shared/data/real``."""
    if os.environ.get("VOXTOK_DATA"):
        return Path(os.environ["VOXTOK_DATA"])
    return CHECKOUT_ROOT.parent / "shared" / "data" / "real"


def text_root() -> Path:
    """The sentence lists for synthetic readings."""
    return shared_data_root() / "text"


def split_file(name: str) -> str:
    """The text of a split list shipped inside the package (``splits/<name>``)."""
    return resources.files("voxtok").joinpath("splits", name).read_text(encoding="utf-8")
