"""Evaluation results for a card: found in evaluation folders (results.json of `hf-hybrid eval`, mteb's task JSON
of `hf-hybrid eval --tasks`), turned into huggingface_hub `EvalResult`s for the model-index, and into the tables
of the card's body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult

from hf_hybrid.data.export import source_kind
from hf_hybrid.errors import DataError
from hf_hybrid.hub.cards.common import language_label, read_json
from hf_hybrid.tables import markdown_table

TASK_TYPE = "text-retrieval"
TASK_NAME = "Parallel QA retrieval (LAReQA settings)"
MTEB_SOURCE = ("MTEB", "https://github.com/embeddings-benchmark/mteb")
_PER_SETTING = {"monolingual": "languages", "cross-lingual": "ordered language pairs",
                "multilingual": "query languages"}
_SETTING_COLUMNS = {"monolingual": "monolingual", "cross-lingual": "cross-lingual (mean over candidate languages)",
                    "multilingual": "multilingual pool"}


@dataclass
class Evaluation:
    path: Path  # the file read
    kind: str  # "toolkit" (results.json of hf-hybrid eval) or "mteb" (mteb's task JSON)
    data: dict


def _is_mteb_result(data) -> bool:
    return isinstance(data, dict) and {"task_name", "scores", "mteb_version"} <= set(data)


def same_path(a: str, b: str | Path) -> bool:
    pa, pb = Path(str(a)), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b) or (not pa.exists() and pa.name == pb.name)


def _evaluations_in(root: Path) -> list[Evaluation]:
    from hf_hybrid.evaluation.report import load_runs  # imports torch

    if not root.exists():
        raise FileNotFoundError(f"evaluation folder {root} does not exist")
    if root.is_dir() and (root / "study.json").is_file():
        raise DataError(f"{root} is a study (several models); pass the evaluation folder of this model")
    found = []
    for file in [root] if root.is_file() else sorted(root.rglob("*.json")):
        if file.name == "results.json" and (file == root or file.parent == root):
            found.append(Evaluation(file, "toolkit", load_runs([file])[0].results))
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if _is_mteb_result(data):
            found.append(Evaluation(file, "mteb", data))
    if not found:
        raise FileNotFoundError(f"no evaluation results in {root} (expected results.json of `hf-hybrid eval` "
                                "or mteb's task JSON of `hf-hybrid eval --tasks`)")
    return found


def _check_model(root: Path, evaluations: list[Evaluation], model_dir: str | Path) -> None:
    summary = read_json(root / "summary.json") if root.is_dir() else None
    for ev in evaluations:
        if ev.kind == "toolkit":
            recorded = (ev.data.get("config") or {}).get("model")
        elif summary and "model" in summary:
            recorded = summary["model"]
        else:  # mteb's <cache>/results/<model name>/<revision>/<task>.json
            recorded = ev.path.parent.parent.name
        if recorded is not None and not same_path(recorded, model_dir):
            raise DataError(f"{ev.path} holds results of model {recorded!r}, not of {model_dir} "
                            "(pass check_model=False if it is the same model moved)")


def find_evaluations(eval_dirs, model_dir: str | Path | None = None) -> list[Evaluation]:
    """Every evaluation result in `eval_dirs` (folders or files): results.json of `hf-hybrid eval` at a
    folder's top, and mteb's task JSON anywhere below it. With `model_dir`, results whose recorded model
    is another model are an error."""
    found = []
    for root in map(Path, eval_dirs):
        mine = _evaluations_in(root)
        if model_dir is not None:
            _check_model(root, mine, model_dir)
        found += mine
    return found


def data_identity(data: str | None) -> tuple[str, str, str | None]:
    """(dataset type, pretty name, kind) of an evaluation's `data`: a Hub id is its own type; local
    data is named by its folder or file name (never by its path) and described in prose."""
    if data is None:
        return "unknown", "data not recorded", None
    kind = source_kind(data)
    if kind == "demo":
        return "hf-hybrid-demo", "hf-hybrid demo sample", "demo"
    if kind == "hub":
        return data, data, "hub"
    name = Path(data).name
    pretty = {"xquad-r": "XQuAD-R", "xquad": "XQuAD", "repo": "ParallelQA export"}.get(kind, "local data")
    return name, f"{pretty} (local: {name})", kind


def toolkit_eval_results(results: dict) -> list[EvalResult]:
    """One EvalResult per setting average (mAP, nDCG@10, Recall@k) and per bias mean of a results.json."""
    from hf_hybrid.evaluation.report import BIAS_MEANS, metric_label  # imports torch
    from hf_hybrid.evaluation.retrieval import SETTINGS  # imports torch

    cfg = results.get("config") or {}
    dataset_type, pretty, _ = data_identity(cfg.get("data"))
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
            out.append(EvalResult(**common, metric_type=metric.replace("@", "_at_"), metric_value=value,
                                  metric_name=f"{metric_label(metric)} (mean over {_PER_SETTING[setting]})"))
        bias = (results[setting].get("bias") or {}) if setting == "multilingual" else {}
        for key, label, _ in BIAS_MEANS:
            if key in bias:
                out.append(EvalResult(**common, metric_type=key, metric_name=label, metric_value=bias[key]))
    return out


def mteb_metadata(task_name: str):
    """(mteb's metadata of the task or None, whether it is one of the project's tasks)."""
    try:
        from hf_hybrid.evaluation.mteb_tasks import PROJECT_TASKS  # imports mteb

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
    meta, project = mteb_metadata(name)
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


# ---------------------------------------------------------------- the tables of the card's body


def _overlaps_training(train_cfg: dict, eval_cfg: dict) -> bool:
    """Whether an evaluation's questions may include training questions (or their translations)."""
    if not train_cfg.get("data") or not eval_cfg.get("data") or not same_path(train_cfg["data"], eval_cfg["data"]):
        return False
    split = eval_cfg.get("split", "all")
    same_fold = train_cfg.get("n_folds") == eval_cfg.get("n_folds") and train_cfg.get("fold") == eval_cfg.get("fold")
    if split == "test" and train_cfg.get("n_folds") and same_fold:
        return False
    held_out_dev = split == "dev" and same_fold and train_cfg.get("dev_fraction") == eval_cfg.get("dev_fraction")
    return not (held_out_dev and train_cfg.get("dev_fraction"))


def _split_label(cfg: dict) -> str:
    split = cfg.get("split", "all")
    if split == "test":
        return f"test fold {cfg.get('fold')} of {cfg.get('n_folds')} (split by article)"
    if split == "dev":
        return f"dev split ({cfg.get('dev_fraction')} of the training articles)"
    return split


def _per_language_table(r: dict, settings: list[str]) -> str:
    """mAP per query language and setting (cross-lingual: the mean over candidate languages)."""
    from hf_hybrid.evaluation.report import METRIC_FORMAT  # imports torch

    rows = []
    for lang in r["languages"]:
        cells = []
        for s in settings:
            per = r[s]["per_setting"]
            if s == "cross-lingual":
                vals = [m["map"] for pair, m in per.items() if pair.split("-")[0] == lang and "map" in m]
                cells.append(f"{sum(vals) / len(vals):{METRIC_FORMAT}}" if vals else "–")
            else:
                cells.append(f"{per[lang]['map']:{METRIC_FORMAT}}" if lang in per and "map" in per[lang] else "–")
        rows.append([language_label(lang)] + cells)
    return markdown_table(["query language"] + [_SETTING_COLUMNS[s] for s in settings], rows)


def _bias_tables(r: dict) -> tuple[str | None, str | None]:
    """The multilingual pool's bias means, and its per-language bias measures; None where there are none."""
    from hf_hybrid.evaluation.report import BIAS_MEANS, BIAS_PER_LANGUAGE  # imports torch

    bias = (r.get("multilingual") or {}).get("bias") or {}
    means = [[label, f"{bias[key]:{fmt}}"] for key, label, fmt in BIAS_MEANS if key in bias]
    keys = [(key, title, fmt) for key, title, fmt in BIAS_PER_LANGUAGE if isinstance(bias.get(key), dict)]
    per_language = [[lang] + [f"{bias[key][lang]:{fmt}}" if lang in bias[key] else "–" for key, _, fmt in keys]
                    for lang in r["languages"]]
    return (markdown_table(["measure", "value"], means) if means else None,
            markdown_table(["language"] + [title for _, title, _ in keys], per_language) if keys else None)


def toolkit_view(ev: Evaluation, train_cfg: dict) -> dict:
    """The tables and facts of one results.json for the card body."""
    from hf_hybrid.evaluation.report import METRIC_FORMAT, cross_lingual_matrix, metric_label  # imports torch
    from hf_hybrid.evaluation.retrieval import SETTINGS  # imports torch

    r, cfg = ev.data, ev.data.get("config") or {}
    langs = r["languages"]
    settings = [s for s in SETTINGS if s in r]
    metrics = list(dict.fromkeys(m for s in settings for m in r[s]["average"]))
    averages = markdown_table(["setting"] + [metric_label(m) for m in metrics],
                              [[s] + [f"{r[s]['average'][m]:{METRIC_FORMAT}}" if m in r[s]["average"] else "–"
                                      for m in metrics] for s in settings])
    matrix = cross_lingual_matrix(r, "map")
    cross = markdown_table(["query \\ candidate"] + langs,
                           [[x] + [f"{matrix[x][y]:{METRIC_FORMAT}}" if y in matrix[x] else "–" for y in langs]
                            for x in langs]) if matrix else None
    bias_means, bias_per_language = _bias_tables(r)
    sizes = r.get("sizes") or {}
    return {
        "name": ev.path.parent.name, "file": ev.path.name, "data": data_identity(cfg.get("data"))[1],
        "split": _split_label(cfg), "languages": ", ".join(language_label(lang) for lang in langs),
        "k": ((r.get("multilingual") or {}).get("bias") or {}).get("top_k"),
        "sizes": ", ".join(f"{lang} {s['queries']}/{s['candidates']}" for lang, s in sizes.items()),
        "all_sentences": cfg.get("all_sentences"), "seconds": r.get("seconds"),
        "averages": averages, "per_language": _per_language_table(r, settings), "cross": cross,
        "bias_means": bias_means, "bias_per_language": bias_per_language,
        "overlaps_training": _overlaps_training(train_cfg, cfg),
    }


def mteb_view(ev: Evaluation) -> dict:
    """The tables and facts of one mteb task JSON for the card body."""
    data = ev.data
    meta, project = mteb_metadata(data["task_name"])
    splits = []
    for split, subsets in data["scores"].items():
        rows = [[s.get("hf_subset", "default"), f"{s['main_score']:.4f}"] for s in subsets]
        settings = None
        if project:
            from hf_hybrid.evaluation.mteb_tasks import setting_means  # imports mteb

            means = setting_means({s.get("hf_subset", "default"): s for s in subsets})
            settings = markdown_table(["setting", f"mean {meta.main_score}"],
                                      [[k, f"{v:.4f}"] for k, v in means.items()])
        splits.append({"split": split, "n_subsets": len(rows), "settings": settings,
                       "subsets": markdown_table(["subset", meta.main_score if meta else "main score"], rows)})
    return {"task": data["task_name"], "project": project, "mteb_version": data.get("mteb_version"),
            "dataset": meta.dataset["path"] if meta and not project else None,
            "revision": data.get("dataset_revision") if not project else None, "splits": splits,
            "file": str(ev.path.name), "seconds": data.get("evaluation_time")}
