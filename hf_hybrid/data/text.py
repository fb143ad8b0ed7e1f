"""Raw text per language for domain-adaptive pretraining (DAPT), kept apart from evaluation text.

Sources, each given once for all languages:
- a MasakhaNEWS folder (`<lang>/{train,dev,test}.tsv`: category, headline, text, url): headline + text;
- a SIB-200 / FLORES folder (`<lang_Script>/<split>.tsv`: index_id, category, text), the `train` split;
- a text file per language, named with `{lang}` (`corpus/{lang}.txt`: one document per line);
- a `.jsonl/.json/.csv/.parquet` file, a `save_to_disk` folder or a Hub dataset id with a `text`
  column and a `lang` column (or one language's file, named with `{lang}`).

Documents that share a word 8-gram with the sentences of an evaluation benchmark (or equal one of
its shorter sentences) are dropped, so DAPT never sees evaluation text.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

from datasets import load_dataset

from hf_hybrid.data.files import FILE_BUILDERS, describe, read_file, read_saved
from hf_hybrid.data.parallel_qa import flores_folders, folder_kind, load_parallel_qa
from hf_hybrid.errors import DataError
from hf_hybrid.languages import known_code, normalize_lang, three_letter_code

NGRAM = 8
EXPECTED = "a 'text' column, and a 'lang' column unless the file holds one language (named with {lang})"
_WORD = re.compile(r"\w+", re.UNICODE)


def _tsv_column_texts(path: Path, columns: tuple[str, ...]) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if not set(columns) & set(header):
        raise DataError(f"{path}: expected a column {' or '.join(columns)} (found {', '.join(header) or 'nothing'})")
    idx = [header.index(c) for c in columns if c in header]
    texts = []
    for line in lines[1:]:
        cells = line.split("\t")
        text = " ".join(cells[i].strip() for i in idx if i < len(cells) and cells[i].strip())
        if text:
            texts.append(text)
    return texts


def _masakhanews_folders(root: Path) -> dict[str, Path]:
    folders = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and list(p.glob("*.tsv"))):
        header = (sub / next(p.name for p in sub.glob("*.tsv"))).open(encoding="utf-8").readline()
        if "headline" in header.split("\t") and known_code(sub.name):
            folders[known_code(sub.name)] = sub
    return folders


def _from_dataset(source: str, lang: str) -> list[str]:
    """Texts of one language from a file, a saved dataset or a Hub dataset with `text` (+ `lang`) columns."""
    path = Path(source)
    if path.is_dir():
        ds = read_saved(path, EXPECTED)
    elif path.is_file():
        ds = read_file(path, EXPECTED)
    else:
        try:
            ds = load_dataset(source, split="train")
        except Exception as err:  # noqa: BLE001 (the Hub raises many types; one line is what the user needs)
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"cannot load text from {source!r}: {reason}") from None
    if "text" not in ds.column_names:
        raise DataError(f"{source}: expected a 'text' column (found {', '.join(ds.column_names)})")
    texts = ds["text"]
    wrong = next((n for n, t in enumerate(texts, 1) if t is not None and not isinstance(t, str)), None)
    if wrong is not None:
        raise DataError(f"{source}: row {wrong}: 'text' is {describe(texts[wrong - 1])}; expected text")
    if "lang" in ds.column_names:
        return [t for t, code in zip(texts, ds["lang"], strict=True)
                if t and t.strip() and known_code(str(code)) == lang]
    return [t for t in texts if t and t.strip()]


def load_texts(source: str, lang: str) -> list[str]:
    """The documents of one language in one source (see the module docstring); [] if it has none."""
    lang = normalize_lang(lang)
    if "{lang}" in source:
        candidates = [source.replace("{lang}", code) for code in dict.fromkeys([lang, three_letter_code(lang)])]
        found = next((c for c in candidates if Path(c).is_file()), None)
        if found is None:
            return []
        if found.endswith(".txt"):
            return [line.strip() for line in Path(found).read_text(encoding="utf-8").splitlines() if line.strip()]
        return _from_dataset(found, lang)
    path = Path(source)
    if path.is_dir():
        news = _masakhanews_folders(path)
        if news:
            folder = news.get(lang)
            if not folder:
                return []
            return [t for f in sorted(folder.glob("*.tsv")) for t in _tsv_column_texts(f, ("headline", "text"))]
        flores = flores_folders(path)
        if flores:
            matches = [f for code, f in flores.items() if known_code(code) == lang]
            # only the train split: dev and test stay evaluation text
            return [t for f in matches if (f / "train.tsv").is_file()
                    for t in _tsv_column_texts(f / "train.tsv", ("text",))]
        if folder_kind(path) != "saved":
            raise DataError(f"{path}: not a MasakhaNEWS folder (<lang>/*.tsv with a headline column), a SIB-200 "
                            "folder (<lang_Script>/*.tsv) nor a save_to_disk folder")
    if path.suffix == ".txt":
        if not path.is_file():
            raise DataError(f"file not found: {path}")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix in FILE_BUILDERS and not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.exists() or source.count("/") == 1:
        return _from_dataset(source, lang)
    raise DataError(f"text source not found: {source!r} (expected a MasakhaNEWS or SIB-200 folder, a file, "
                    "a saved dataset or a Hub dataset id)")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class Decontaminator:
    """Drops documents that contain an evaluation sentence: one word 8-gram in common, or (for
    sentences shorter than 8 words) the whole sentence as a run of words."""

    def __init__(self, sentences: list[str]):
        self.ngrams: set[tuple[str, ...]] = set()
        self.short: set[tuple[str, ...]] = set()
        for sentence in sentences:
            words = _words(sentence)
            if len(words) >= NGRAM:
                self.ngrams |= _ngrams(words)
            elif len(words) >= 3:
                self.short.add(tuple(words))
        self.short_lengths = sorted({len(s) for s in self.short})

    def contains_eval_text(self, text: str) -> bool:
        words = _words(text)
        if any(g in self.ngrams for g in _ngrams(words)):
            return True
        return any(g in self.short for n in self.short_lengths for g in _ngrams(words, n))


def evaluation_sentences(sources: list[str], lang: str) -> list[str]:
    """Every query and passage of `lang` in the evaluation benchmarks `sources` (any --data source)."""
    sentences = []
    for source in sources:
        try:
            rows = load_parallel_qa(source, [lang])
        except DataError as err:
            if any(why in str(err) for why in ("no FLORES/SIB-200 folder", "no rows in language",
                                                "file for language")):
                continue  # the benchmark does not have this language: nothing to keep apart
            raise
        sentences += list(dict.fromkeys([*rows["query"], *rows["passage"]]))
    return sentences


def _is_heldout(text: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def clean_documents(sources: list[str], lang: str, exclude: list[str] | None = None) -> tuple[list[str], Counter, int]:
    """One language's documents in `sources`, deduplicated, those overlapping the `exclude` benchmarks dropped;
    with the documents each source gave and how many were dropped."""
    per_source = Counter()
    docs: list[str] = []
    for source in sources:
        texts = load_texts(source, lang)
        per_source[source] = len(texts)
        docs += texts
    docs = list(dict.fromkeys(docs))
    if not docs or not exclude:
        return docs, per_source, 0
    guard = Decontaminator(evaluation_sentences(exclude, lang))
    kept = [d for d in docs if not guard.contains_eval_text(d)]
    return kept, per_source, len(docs) - len(kept)


def load_corpus(sources: list[str], lang: str, exclude: list[str] | None = None, heldout_fraction: float = 0.05,
                min_heldout: int = 8, seed: int = 0) -> dict:
    """One language's DAPT text: {"train": [...], "heldout": [...], "stats": {...}}.

    Documents are deduplicated, those overlapping `exclude` benchmarks dropped, and a fixed share
    (by a hash of the text, so adding sources does not reshuffle) held out for MLM loss."""
    lang = normalize_lang(lang)
    docs, per_source, dropped = clean_documents(sources, lang, exclude)
    if not docs and not dropped:
        raise DataError(f"no DAPT text for language {lang!r} in {', '.join(sources)}")
    heldout = [d for d in docs if _is_heldout(d, heldout_fraction, seed)]
    train = [d for d in docs if not _is_heldout(d, heldout_fraction, seed)]
    if len(heldout) < min_heldout or not train:
        raise DataError(f"too little DAPT text for language {lang!r}: {len(docs)} documents leave {len(heldout)} "
                        f"held out (need {min_heldout}) and {len(train)} for training")
    return {"train": train, "heldout": heldout, "stats": {
        "sources": dict(per_source), "documents": len(docs), "dropped_overlapping_eval": dropped,
        "train_documents": len(train), "heldout_documents": len(heldout),
        "train_characters": sum(map(len, train))}}
