"""One language-code convention everywhere: ISO 639-1 where the language has one, else ISO 639-3.

Accepted on input: ISO 639-1 (`sw`), ISO 639-3 (`swa`, `hau`) and FLORES-200 codes (`swh_Latn`),
whose script part is dropped and whose individual-language codes map to their macrolanguage
where a FLORES language is the usual member of it (`arb` -> `ar`, `swh` -> `sw`).
"""

from __future__ import annotations

from functools import lru_cache

import pycountry

from hf_hybrid.errors import UnknownLanguageError

# FLORES-200 individual languages that stand for their macrolanguage elsewhere (XQuAD, MasakhaNEWS).
_FLORES_MACRO = {
    "arb": "ara", "swh": "swa", "zsm": "msa", "pes": "fas", "plt": "mlg", "khk": "mon", "lvs": "lav",
    "ekk": "est", "npi": "nep", "ory": "ori", "pbt": "pus", "uzn": "uzb", "azj": "aze", "gaz": "orm",
    "als": "sqi", "ydd": "yid", "quy": "que", "cmn": "zho", "kmr": "kur", "twi": "aka",
}


def _entry(code: str):
    """pycountry's record for a two- or three-letter code, or None."""
    if len(code) == 2:
        return pycountry.languages.get(alpha_2=code)
    if len(code) == 3:
        return pycountry.languages.get(alpha_3=code)
    return None


@lru_cache(maxsize=None)
def normalize_lang(code: str) -> str:
    """Return the canonical code for `code`, or raise UnknownLanguageError."""
    raw = str(code).strip()
    base = raw.split("_")[0].split("-")[0].lower()
    base = _FLORES_MACRO.get(base, base)
    entry = _entry(base)
    if entry is None:
        raise UnknownLanguageError(
            f"unknown language code {raw!r} (expected ISO 639-1 like 'sw', ISO 639-3 like 'hau', "
            "or a FLORES-200 code like 'swh_Latn')"
        )
    return getattr(entry, "alpha_2", None) or entry.alpha_3


def known_code(code: str) -> str | None:
    """normalize_lang's code, or None for a code it does not know (retired or absent from ISO 639-3)."""
    try:
        return normalize_lang(code)
    except UnknownLanguageError:
        return None


def three_letter_code(code: str) -> str:
    """The ISO 639-3 code of one of our codes (`sw` -> `swa`)."""
    return _entry(normalize_lang(code)).alpha_3


# The usual script of languages not written in Latin script (for MTEB's `eng-Latn` style codes).
_SCRIPTS = {
    "ar": "Arab", "fa": "Arab", "ur": "Arab", "ps": "Arab", "ckb": "Arab", "ug": "Arab", "sd": "Arab",
    "zh": "Hans", "ja": "Jpan", "ko": "Kore", "th": "Thai", "lo": "Laoo", "km": "Khmr", "my": "Mymr",
    "hi": "Deva", "mr": "Deva", "ne": "Deva", "sa": "Deva", "mai": "Deva", "bho": "Deva",
    "bn": "Beng", "as": "Beng", "pa": "Guru", "gu": "Gujr", "or": "Orya", "ta": "Taml", "te": "Telu",
    "kn": "Knda", "ml": "Mlym", "si": "Sinh", "el": "Grek", "he": "Hebr", "yi": "Hebr", "hy": "Armn",
    "ka": "Geor", "am": "Ethi", "ti": "Ethi", "bo": "Tibt", "dv": "Thaa",
    "ru": "Cyrl", "uk": "Cyrl", "be": "Cyrl", "bg": "Cyrl", "mk": "Cyrl", "sr": "Cyrl", "kk": "Cyrl",
    "ky": "Cyrl", "tg": "Cyrl", "mn": "Cyrl", "tt": "Cyrl", "ba": "Cyrl",
}


def mteb_language_code(lang: str, script: str | None = None) -> str:
    """MTEB's language code (ISO 639-3 plus ISO 15924 script, e.g. `eng-Latn`) for a code of ours."""
    return f"{three_letter_code(lang)}-{script or _SCRIPTS.get(normalize_lang(lang), 'Latn')}"


def language_name(code: str) -> str | None:
    """The English name of a two- or three-letter code (`sw` -> Swahili), or None if pycountry lacks it."""
    entry = _entry(code)
    return entry.name.replace(" (macrolanguage)", "") if entry else None
