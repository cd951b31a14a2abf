"""Text -> phoneme symbols with espeak-ng (en-us), the LM's text input.

espeak-ng's IPA with `--sep=_` separates phonemes; stress marks become their own symbols (so "ˈoʊ" is "ˈ", "oʊ"
and the table stays small), a word boundary is " " and a clause boundary "|". The symbol table a model was trained
with is saved in its config (SpeechLMConfig.phone_symbols); text with a symbol outside it is refused.
"""

from __future__ import annotations

import shutil
import subprocess

from voxtok.errors import VoxtokError

WORD, CLAUSE = " ", "|"
STRESS = ("ˈ", "ˌ")
# espeak-ng writes a zero-width joiner inside some diphthongs in plain --ipa output; it carries no sound.
_IGNORED = {"\u200d"}
MAX_TEXT_CHARS = 2000
# Symbols that mark structure, not a sound: they take no time in speech (a phone recogniser has no class for them,
# and an alignment places only the others).
SILENT = frozenset({WORD, CLAUSE, *STRESS})


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """Phoneme symbols for `text` (words separated by WORD, clauses by CLAUSE)."""
    if not isinstance(text, str) or not text.strip():
        raise VoxtokError("text is empty: there is nothing to say")
    if len(text) > MAX_TEXT_CHARS:
        raise VoxtokError(f"text is {len(text)} characters; at most {MAX_TEXT_CHARS} per call")
    if shutil.which("espeak-ng") is None:
        raise VoxtokError("espeak-ng is not installed (apt install espeak-ng; .ci/install does it)")
    try:
        result = subprocess.run(["espeak-ng", "-q", "--ipa", "--sep=_", "-v", voice, "--stdin"],
                                input=text, capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise VoxtokError(f"espeak-ng failed on the text ({type(exc).__name__})") from None
    symbols: list[str] = []
    for line in result.stdout.splitlines():
        words = [w for w in line.strip().split(" ") if w]
        if not words:
            continue
        if symbols:
            symbols.append(CLAUSE)
        for i, word in enumerate(words):
            if i:
                symbols.append(WORD)
            for phone in word.split("_"):
                phone = "".join(c for c in phone if c not in _IGNORED)
                while phone[:1] in STRESS and phone:
                    symbols.append(phone[0])
                    phone = phone[1:]
                if phone:
                    symbols.append(phone)
    if not symbols:
        raise VoxtokError(f"text {text[:40]!r} has nothing espeak-ng can pronounce")
    return symbols


def symbols_to_ids(symbols: list[str], table: list[str]) -> list[int]:
    """Indices into a model's symbol table; a symbol it does not know is refused, naming it."""
    index = {s: i for i, s in enumerate(table)}
    unknown = sorted({s for s in symbols if s not in index})
    if unknown:
        raise VoxtokError(f"phoneme(s) {' '.join(unknown)} are not in this model's symbol table "
                          f"({len(table)} symbols); the text needs sounds it was not trained on")
    return [index[s] for s in symbols]


def sounding(symbols: list[str]) -> list[int]:
    """Positions of the symbols that are sounds (not a boundary or a stress mark), in order."""
    return [i for i, s in enumerate(symbols) if s not in SILENT]
