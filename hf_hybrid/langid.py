"""Which adapter's language a text is in, for routing texts whose language the data does not give.

A multinomial naive Bayes over character 1- to 4-grams (hashed into a fixed number of buckets), one
profile per language, fitted on that language's DAPT text and saved beside its adapter. Every profile
also keeps a floor: the 5th percentile of the per-character log-likelihood of sentence-sized pieces
of its held-out text. A text goes to its most likely language only if it clears that language's
floor; otherwise it belongs to none of them (and is encoded without an adapter).
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hf_hybrid.errors import AdapterError

BUCKETS = 2**16
ORDERS = (1, 2, 3, 4)
PROFILE_FILE = "langid.safetensors"
PIECE_CHARS = 120  # about a sentence: the floor is calibrated on pieces of this size


def _features(text: str) -> list[int]:
    # diacritics are dropped: the same language is written with and without them (FLORES Yoruba has none)
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch))
    padded = " " + re.sub(r"\s+", " ", plain).strip() + " "
    return [zlib.crc32(padded[i : i + n].encode()) % BUCKETS
            for n in ORDERS for i in range(len(padded) - n + 1)]


def _counts(texts: list[str]) -> torch.Tensor:
    counts = torch.zeros(BUCKETS, dtype=torch.float64)
    for text in texts:
        counts += torch.bincount(torch.tensor(_features(text), dtype=torch.long), minlength=BUCKETS).double()
    return counts


def _pieces(texts: list[str]) -> list[str]:
    return [t[i : i + PIECE_CHARS] for t in texts for i in range(0, max(1, len(t) - PIECE_CHARS // 2), PIECE_CHARS)]


def _per_char(log_probs: torch.Tensor, text: str) -> float:
    features = _features(text)
    return log_probs[torch.tensor(features, dtype=torch.long)].sum().item() / max(1, len(features))


def fit_profile(train: list[str], heldout: list[str]) -> dict[str, torch.Tensor]:
    """One language's profile: add-one smoothed log-probabilities of the buckets, and its floor."""
    counts = _counts(train)
    log_probs = torch.log((counts + 1) / (counts.sum() + BUCKETS)).float()
    scores = sorted(_per_char(log_probs, p) for p in _pieces(heldout) if p.strip())
    floor = scores[int(0.05 * (len(scores) - 1))] if scores else -math.inf
    return {"log_probs": log_probs, "floor": torch.tensor([floor])}


def save_profile(profile: dict[str, torch.Tensor], folder: Path) -> None:
    save_file(profile, str(folder / PROFILE_FILE))


class LanguageIdentifier:
    def __init__(self, profiles: dict[str, dict[str, torch.Tensor]]):
        if not profiles:
            raise AdapterError("language detection needs at least one language profile")
        self.languages = list(profiles)
        self.log_probs = torch.stack([profiles[lang]["log_probs"] for lang in self.languages])
        self.floors = torch.tensor([float(profiles[lang]["floor"]) for lang in self.languages])

    @classmethod
    def from_adapters(cls, folders: dict[str, Path]) -> "LanguageIdentifier":
        missing = [lang for lang, f in folders.items() if not (f / PROFILE_FILE).is_file()]
        if missing:
            raise AdapterError(f"no language profile ({PROFILE_FILE}) beside the adapter(s) of {', '.join(missing)}: "
                             "retrain them with this version of `hf-hybrid dapt`, or give each text's language")
        return cls({lang: load_file(str(f / PROFILE_FILE)) for lang, f in folders.items()})

    def detect(self, texts: list[str]) -> list[str | None]:
        """Each text's language among the profiles, or None where it clears no language's floor."""
        out = []
        for text in texts:
            features = torch.tensor(_features(text), dtype=torch.long)
            per_char = self.log_probs[:, features].sum(1) / max(1, len(features))
            best = int(per_char.argmax())
            out.append(self.languages[best] if per_char[best] >= self.floors[best] else None)
        return out
