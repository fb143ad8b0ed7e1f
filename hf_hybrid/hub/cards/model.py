"""The model card of a folder of `hf-hybrid train`, filled from training_config.yaml, train_summary.json,
train_log.jsonl, the sentence-transformers files and the evaluation folders given (see `evaluations`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open

from hf_hybrid.data.parallel_qa import is_hub_id
from hf_hybrid.hub.cards.common import (
    PLACEHOLDER_USER,
    BaseModel,
    base_model_of,
    language_label,
    public,
    read_json,
    read_yaml,
    render,
)
from hf_hybrid.hub.cards.evaluations import (
    Evaluation,
    data_identity,
    eval_results_of,
    find_evaluations,
    mteb_view,
    toolkit_view,
)
from hf_hybrid.hub.cards.figures import (
    FIGURES,
    cross_lingual_summary,
    draw_evaluation_figures,
    draw_training_figure,
)
from hf_hybrid.tables import markdown_table

MODEL_TEMPLATE = "model_card.md.j2"
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")  # MTEB XQuADRetrieval's
_POOLING = {"cls_token": "CLS token", "mean_tokens": "mean", "max_tokens": "max", "mean_sqrt_len_tokens":
            "mean (sqrt length)", "weightedmean_tokens": "weighted mean", "lasttoken": "last token"}
_ST_CONFIG = "`config_sentence_transformers.json`"
_SUMMARY_KEYS = [("steps done", "steps"), ("processes", "processes"), ("device", "device"),
                 ("wall time of the training loop (s)", "seconds"), ("pairs per second", "pairs_per_s"),
                 ("tokens per second", "tokens_per_s"), ("training rows", "rows"), ("question groups", "groups"),
                 ("languages trained on", "languages"), ("best dev evaluation: step (the weights saved)", "best_step"),
                 ("best dev evaluation: metric", "best_metric"), ("best dev evaluation: score", "best_score")]


def _show(value) -> str:
    """A value as the card prints it: true/false, `not set` for None, 6 significant digits, lists joined."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "not set"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _parameter_count(model_dir: Path) -> int | None:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), "np") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 -- not a dict
    return total


def _model_facts(model_dir: Path) -> tuple[list[list[str]], dict]:
    """Rows (what, value, file) about the saved model, and its sentence-transformers prompts."""
    rows = []
    config = read_json(model_dir / "config.json") or {}
    if config:
        arch = ", ".join(config.get("architectures") or [config.get("model_type", "?")])
        shape = [f"{config[k]} {label}" for k, label in (("num_hidden_layers", "layers"),
                                                            ("hidden_size", "hidden size")) if k in config]
        rows.append(["architecture", arch + (f" ({', '.join(shape)})" if shape else ""), "`config.json`"])
    params = _parameter_count(model_dir)
    if params:
        rows.append(["parameters", f"{params:,}", "`*.safetensors`"])
    modules = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in read_json(model_dir / "modules.json") or []}
    pooling = read_json(model_dir / modules["Pooling"] / "config.json") if "Pooling" in modules else None
    if pooling:
        modes = [_POOLING.get(k[13:], k[13:]) for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
        rows.append(["embedding dimension", str(pooling.get("word_embedding_dimension", "?")),
                     "`modules.json` Pooling"])
        rows.append(["pooling", ", ".join(modes) + (", then L2-normalised" if "Normalize" in modules else ""),
                     "`modules.json`"])
    st = read_json(model_dir / "sentence_bert_config.json") or {}
    if "max_seq_length" in st:
        rows.append(["maximum sequence length", f"{st['max_seq_length']} tokens", "`sentence_bert_config.json`"])
    st_config = read_json(model_dir / "config_sentence_transformers.json") or {}
    if st_config.get("similarity_fn_name"):
        rows.append(["similarity", st_config["similarity_fn_name"], _ST_CONFIG])
    prompts = st_config.get("prompts") or {}
    for name, prompt in prompts.items():
        rows.append([f"prompt `{name}`", f"`{json.dumps(prompt, ensure_ascii=False)}`", _ST_CONFIG])
    return rows, prompts


def _config_keys(cfg: dict) -> list[tuple[str, str]]:
    """(label, key) of the training_config.yaml keys the card shows, those of options not used left out."""
    keys = [("base model", "model"), ("training data", "data"), ("languages asked for", "languages")]
    if cfg.get("n_folds"):
        keys += [("folds by article", "n_folds"), ("test fold left out", "fold")]
    if cfg.get("dev_fraction"):
        keys.append(("dev share of the training articles, left out", "dev_fraction"))
    keys.append(("batch sampler", "sampler"))
    if cfg.get("sampler") == "hybrid":
        keys.append(("alpha (probability of a monolingual batch)", "alpha"))
    keys += [("pairs per process per step", "batch_size"), ("max steps", "max_steps"),
             ("learning rate", "learning_rate"), ("weight decay", "weight_decay"), ("warmup ratio", "warmup_ratio"),
             ("temperature of the contrastive loss", "temperature"), ("max query tokens", "max_query_length"),
             ("max passage tokens", "max_passage_length")]
    if cfg.get("hard_negatives"):
        keys.append(("hard negatives per pair", "hard_negatives"))
    keys += [("mixed precision", "mixed_precision"), ("gradient checkpointing", "gradient_checkpointing"),
             ("LoRA", "lora")]
    if cfg.get("lora"):
        keys += [("LoRA rank", "lora_r"), ("LoRA alpha", "lora_alpha"), ("LoRA dropout", "lora_dropout"),
                 ("LoRA target modules", "lora_target_modules")]
    return keys + [("frozen word embeddings", "freeze_embeddings"), ("seed", "seed")]


def _training_rows(cfg: dict, summary: dict, hardware: str | None) -> list[list[str]]:
    """Rows (what, value, source) of the training facts, each from one key of one file."""
    rows = []
    for label, key in _config_keys(cfg):
        if key in cfg:
            value = public(cfg[key]) if key in ("model", "data") else cfg[key]
            rows.append([label, _show(value), f"`training_config.yaml` `{key}`"])
    for label, key in _SUMMARY_KEYS:
        if summary.get(key) is not None:
            rows.append([label, _show(summary[key]), f"`train_summary.json` `{key}`"])
    if hardware:
        rows.append(["hardware", hardware, "given when the card was written"])
    return rows


def _figures(report_dir: str | Path | None) -> list[dict]:
    """The report's PNG plots in page order, with their captions (alt text in report.md)."""
    if report_dir is None:
        return []
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise FileNotFoundError(f"report folder {report_dir} does not exist")
    page = report_dir / "report.md"
    images = re.findall(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", page.read_text(encoding="utf-8")) if page.is_file() else \
        [(p.stem.replace("_", " "), p.name) for p in sorted(report_dir.glob("*.png"))]
    out, seen = [], set()
    for caption, name in images:
        src = report_dir / name
        if src.is_file() and name not in seen:
            seen.add(name)
            out.append({"caption": caption, "file": f"{FIGURES}/{Path(name).name}", "source": src})
    return out


def card_assets(report_dir: str | Path | None = None, figures_dir: str | Path | None = None) -> dict[str, Path]:
    """The extra files a model card rendered with the same `report_dir` and `figures_dir` links to: {path relative
    to README.md: file to copy there}. Empty without either."""
    assets = {f["file"]: f["source"] for f in _figures(report_dir)}
    if figures_dir is not None:
        assets.update({f"{FIGURES}/{p.relative_to(figures_dir).as_posix()}": p
                       for p in sorted(Path(figures_dir).rglob("*.png"))})
    return assets


def _toolkit_views(toolkit: list[Evaluation], cfg: dict, figures_dir: str | Path | None) -> list[dict]:
    """The card's view of each results.json, with its heatmap and bias profile when `figures_dir` is given to draw
    them in (the heatmap then stands for the cross-lingual table), and the heatmap's summary in words."""
    from hf_hybrid.evaluation.report import METRIC_FORMAT, cross_lingual_matrix  # imports torch

    drawn = draw_evaluation_figures(toolkit, Path(figures_dir)) if figures_dir is not None else \
        [{"heatmap": None, "bias": None}] * len(toolkit)
    views = []
    for ev, figures in zip(toolkit, drawn, strict=True):
        matrix = cross_lingual_matrix(ev.data, "map")
        views.append({**toolkit_view(ev, cfg), "heatmap": figures["heatmap"], "bias_figure": figures["bias"],
                      "cross_summary": cross_lingual_summary(matrix, "mAP", METRIC_FORMAT) if matrix else ""})
    return views


def _citation_keys(base: BaseModel | None, cfg: dict, evaluations: list[Evaluation]) -> list[str]:
    keys = ["hybrid-batch"]
    toolkit = [ev for ev in evaluations if ev.kind == "toolkit"]
    datas = [cfg.get("data")] + [(ev.data.get("config") or {}).get("data") for ev in toolkit]
    kinds = {data_identity(d)[2] for d in datas if d}
    tasks = [ev.data["task_name"] for ev in evaluations if ev.kind == "mteb"]
    if toolkit or any(t.endswith("ParallelRetrieval") for t in tasks):
        keys.append("lareqa")
    if kinds & {"xquad", "xquad-r"} or any("xquad" in t.lower() and not t.endswith("ParallelRetrieval")
                                           for t in tasks):
        keys.append("xquad")
    if base and base.paper:
        keys.append(base.paper)
    return keys


def _card_data(cfg: dict, languages, base: BaseModel | None, license: str | None, model_name: str,
               results: list) -> ModelCardData:
    train_data = cfg.get("data")
    return ModelCardData(
        language=list(languages) if languages else None,
        license=license or (base.license if base else None),
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=["sentence-transformers", "sentence-similarity", "feature-extraction", "hf-hybrid"]
        + (["hybrid-batch"] if cfg.get("sampler") == "hybrid" else [])
        + (["multilingual"] if languages and len(languages) > 1 else []) + ["retrieval"],
        base_model=base.hub_id if base else None,
        datasets=[train_data] if train_data and is_hub_id(str(train_data)) else None,
        model_name=model_name if results else None,
        eval_results=results or None,
    )


def _data_hint(train_data: str | None, evaluations: list[Evaluation]) -> str:
    """The `--data` of the card's evaluation command: the training data, else the first evaluation's, as a Hub id,
    `demo` or `path/to/<name>`."""
    first_data = next(((ev.data.get("config") or {}).get("data") for ev in evaluations if ev.kind == "toolkit"), None)
    hint = train_data or first_data or "demo"
    return hint if hint == "demo" or is_hub_id(str(hint)) else f"path/to/{Path(str(hint)).name}"


def render_model_card(model_dir, eval_dirs=(), hardware=None, *, repo_id: str | None = None,
                      license: str | None = None, report_dir: str | Path | None = None, check_model: bool = True,
                      template_dir: str | Path | None = None, figures_dir: str | Path | None = None) -> str:
    """README.md (YAML metadata + body) for a model folder written by `hf-hybrid train`.

    eval_dirs: evaluation folders or files of this model (results.json, mteb task JSON); every result in
    them goes into the model-index and the results section, and nothing else does. hardware: a line such
    as "1x NVIDIA H100 80GB" (train_summary.json records only the device type). repo_id: the Hub id the
    usage snippets load (default `<user>/<folder name>`). license: default the base model's where known,
    else none. report_dir: a folder of `hf-hybrid report` whose plots the card shows under figures/
    (copy them with `card_assets(report_dir)`). check_model: refuse results recorded for another model.
    figures_dir: a folder to draw each evaluation's cross-lingual heatmap and bias profile in; the card shows them
    under figures/<evaluation>/ (copy them with `card_assets(report_dir, figures_dir)`) and sums the heatmap up in
    words instead of the full query x candidate table; and the training curve of train_log.jsonl, unless the
    report's plots hold a training curve already. `hf-hybrid push` always passes one.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder (no modules.json)")
    repo_id = repo_id or f"{PLACEHOLDER_USER}/{model_dir.resolve().name}"
    model_name = repo_id.split("/")[-1]
    cfg = read_yaml(model_dir / "training_config.yaml") or {}
    summary = read_json(model_dir / "train_summary.json") or {}
    log_path = model_dir / "train_log.jsonl"
    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if log_path.is_file() else []
    log = [r for r in records if "loss" in r]  # the loss records (the others: dev evaluations)
    evaluations = find_evaluations(eval_dirs, model_dir if check_model else None)
    results = eval_results_of(evaluations)
    base = base_model_of(cfg["model"]) if cfg.get("model") else None
    languages = list(summary.get("languages") or cfg.get("languages") or [])
    card_data = _card_data(cfg, languages, base, license, model_name, results)
    model_rows, prompts = _model_facts(model_dir)
    toolkit = [ev for ev in evaluations if ev.kind == "toolkit"]
    report_figures = _figures(report_dir)
    report_curve = any(Path(f["file"]).name.startswith("training_") for f in report_figures)  # report.py's names
    training_figure = draw_training_figure(model_dir, Path(figures_dir)) \
        if figures_dir is not None and not report_curve else None
    text = render(
        MODEL_TEMPLATE, template_dir,
        card_data=card_data.to_yaml(), repo_id=repo_id, model_name=model_name, base=base, cfg=cfg,
        summary=summary, hardware=hardware, license=card_data.license,
        languages=[language_label(lang) for lang in languages], language_codes=languages,
        model_table=markdown_table(["model", "value", "from"], model_rows), prompts=prompts,
        training_table=markdown_table(["training", "value", "source"], _training_rows(cfg, summary, hardware)),
        log_first=log[0] if log else None, log_last=log[-1] if len(log) > 1 else None,
        toolkit=_toolkit_views(toolkit, cfg, figures_dir),
        mteb=[mteb_view(ev) for ev in evaluations if ev.kind == "mteb"],
        figures=report_figures, training_figure=training_figure, n_results=len(results),
        adapters=[str(p.parent.relative_to(model_dir)) for p in sorted(model_dir.rglob("adapter_config.json"))],
        data_hint=_data_hint(cfg.get("data"), evaluations), demo_data=cfg.get("data") == "demo",
        eval_languages=sorted({lang for ev in toolkit for lang in ev.data["languages"]}),
        xquad_subsets=[lang for lang in languages if lang in XQUAD_LANGUAGES],
        citations=_citation_keys(base, cfg, evaluations),
    )
    ModelCard(text)  # fails here, not on the Hub, if the metadata does not parse
    return text
