"""The passage collections the Space searches: the bundled demo sample, XQuAD-R, and uploaded files
(.txt one passage per line, .jsonl/.csv with a `text` field and an optional `lang`), with their limits."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from hf_hybrid.errors import SpaceError, UnknownLanguageError
from hf_hybrid.languages import normalize_lang

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # per file; Gradio refuses larger uploads before they reach the disk
MAX_UPLOAD_FILES = 10
MAX_UPLOAD_REQUEST_BYTES = MAX_UPLOAD_FILES * MAX_UPLOAD_BYTES + (1 << 16)  # one request: the files + form
MAX_UPLOAD_PASSAGES = 10_000  # what a visitor's upload may make the Space encode
MAX_PASSAGES = 100_000  # the owner's own collection (--collection FILE ...)
UPLOAD_TYPES = (".txt", ".jsonl", ".csv")
UNKNOWN_LANG = "und"  # BCP-47 "undetermined"


@dataclass
class Collection:
    name: str
    texts: list[str]
    langs: list[str]
    key: str = field(default="", init=False)  # the content hash: same passages, same key, same cached index

    def __post_init__(self):
        if len(self.texts) != len(self.langs):
            raise ValueError("texts and langs differ in length")
        h = hashlib.sha256()
        for lang, text in zip(self.langs, self.texts, strict=True):
            h.update(f"{lang}\t{text}\n".encode())
        self.key = h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self) -> str:
        counts = Counter(self.langs)
        langs = ", ".join(f"{lang} {n}" for lang, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
        return f"**{self.name}**: {len(self)} passages ({langs})" if len(self) else f"**{self.name}**: no passages"


def _dedupe(pairs: list[tuple[str, str]], name: str, limit: int = MAX_PASSAGES) -> Collection:
    seen, texts, langs = set(), [], []
    for lang, text in pairs:
        text = " ".join(str(text).split())
        if text and (lang, text) not in seen:
            seen.add((lang, text))
            texts.append(text)
            langs.append(lang)
    if not texts:
        raise SpaceError(f"{name}: the collection has no passages")
    if len(texts) > limit:
        raise SpaceError(f"{name}: {len(texts)} passages, more than this demo indexes ({limit})")
    return Collection(name, texts, langs)


@lru_cache(maxsize=4)
def demo_collection(languages: tuple[str, ...] | None = None) -> Collection:
    """The distinct passages of the bundled demo sample, with their language (read once)."""
    from hf_hybrid.data.parallel_qa import load_demo  # imports datasets

    rows = load_demo(list(languages) if languages else None)
    return _dedupe(list(zip(rows["lang"], rows["passage"], strict=True)), "demo sample")


@lru_cache(maxsize=4)
def xquad_r_collection(directory: str | Path, languages: tuple[str, ...] | None = None) -> Collection:
    """Every XQuAD-R sentence of every language (about 1.2k per language), read once per folder."""
    from hf_hybrid.data.parallel_qa import xquad_r_candidates  # imports datasets

    if not directory:
        raise SpaceError("the XQuAD-R collection needs its folder (--xquad-r DIR)")
    pool = xquad_r_candidates(directory, list(languages) if languages else None)
    return _dedupe([(lang, s) for lang, sentences in pool.items() for s in sentences], "XQuAD-R")


def _lang(value, default: str) -> str:
    if value is None or not str(value).strip():
        return default
    try:
        return normalize_lang(str(value))
    except UnknownLanguageError:
        return str(value).strip()[:16]


def _lang_from_name(path: Path) -> str:
    """`passages.de.txt` or `sw.txt` -> that language; otherwise undetermined."""
    for part in reversed(Path(path.name).stem.split(".")):
        if 2 <= len(part) <= 8 and part.replace("_", "").isalpha():
            try:
                return normalize_lang(part)
            except UnknownLanguageError:
                pass
    return UNKNOWN_LANG


def _read_text(path: Path, max_bytes: int | None) -> str:
    if not path.is_file():
        raise SpaceError(f"{path.name}: file not found")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise SpaceError(f"{path.name}: larger than {max_bytes // (1024 * 1024)} MB")
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise SpaceError(f"{path.name} is not a text file (it looks binary); upload UTF-8 .txt, .jsonl or .csv")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpaceError(f"{path.name} is not UTF-8 text; upload UTF-8 .txt, .jsonl or .csv") from None


def _check_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in UPLOAD_TYPES:
        raise SpaceError(f"{path.name}: unsupported file type {suffix or '(none)'}; use {', '.join(UPLOAD_TYPES)}")
    return suffix


def _jsonl_rows(path: Path, text: str) -> list[dict]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SpaceError(f"{path.name}:{n}: not a JSON line ({err.msg})") from None
        if not isinstance(row, dict):
            raise SpaceError(f"{path.name}:{n}: expected a JSON object with a \"text\" field")
        rows.append(row)
    return rows


def read_passage_file(path: str | Path, max_bytes: int | None = MAX_UPLOAD_BYTES) -> list[tuple[str, str]]:
    """(lang, text) pairs of one passage file: .txt one passage per line (language from the file
    name, e.g. `news.sw.txt`), .jsonl/.csv a `text` (or `passage`) field and an optional `lang`."""
    path = Path(path)
    suffix = _check_type(path)
    text = _read_text(path, max_bytes)
    default = _lang_from_name(path)
    if suffix == ".txt":
        return [(default, line) for line in text.splitlines() if line.strip()]
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, text)
    else:
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as err:
            raise SpaceError(f"{path.name}: not a readable CSV file ({err})") from None
    column = next((c for c in ("text", "passage") if any(c in r for r in rows)), None)
    if rows and column is None:
        raise SpaceError(f"{path.name}: no \"text\" column (found: {', '.join(map(str, rows[0])) or 'none'})")
    return [(_lang(r.get("lang"), default), str(r.get(column) or "")) for r in rows]


def upload_collection(paths: list[str | Path], limit: int = MAX_UPLOAD_PASSAGES) -> Collection:
    """The collection of a visitor's files: at most MAX_UPLOAD_FILES files of UPLOAD_TYPES, `limit` passages."""
    paths = [Path(p) for p in (paths or [])]
    if not paths:
        raise SpaceError("no file uploaded")
    if len(paths) > MAX_UPLOAD_FILES:
        raise SpaceError(f"{len(paths)} files uploaded; at most {MAX_UPLOAD_FILES} at a time")
    for p in paths:  # every type before reading any file
        _check_type(p)
    pairs = [pair for p in paths for pair in read_passage_file(p)]
    name = paths[0].name if len(paths) == 1 else f"{len(paths)} uploaded files"
    return _dedupe(pairs, name, limit)


def load_collection(source: str | list[str] | None, xquad_r_dir: str | Path | None = None) -> Collection:
    """The owner's collection: `demo` (default), `xquad-r` (needs the folder), or passage files."""
    if source in (None, "demo", []):
        return demo_collection()
    if source == "xquad-r":
        return xquad_r_collection(xquad_r_dir)
    paths = [source] if isinstance(source, (str, Path)) else list(source)
    pairs = [pair for p in paths for pair in read_passage_file(p, max_bytes=None)]
    return _dedupe(pairs, Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} files")
