"""Evaluate one model on a parallel benchmark and write results.json + results.md."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from hf_hybrid import tables
from hf_hybrid.config import DataArgs, ModelArgs, check_output_dir
from hf_hybrid.data.benchmark import load_benchmark
from hf_hybrid.data.parallel_qa import languages_of, load_parallel_qa
from hf_hybrid.errors import ConfigError, DataError, EncoderLoadError
from hf_hybrid.evaluation.presets import PRESETS
from hf_hybrid.evaluation.retrieval import SETTINGS, evaluate_parallel, markdown_table
from hf_hybrid.languages import mteb_language_code, normalize_lang
from hf_hybrid.models.adapters import AdapterOptions
from hf_hybrid.models.encoder import ENCODE_BATCH_TOKENS, Encoder
from hf_hybrid.models.offline import resolve_model_path


@dataclass
class EvalConfig(ModelArgs, DataArgs, AdapterOptions):
    """Evaluation: the shared model and data arguments (`split` picks the articles), and these."""

    split: str = field(default="all", metadata={
        "help": "all, test (fold `fold` of n_folds), or dev (held out from the training articles)"})
    settings: list[str] = field(default_factory=lambda: list(SETTINGS), metadata={
        "help": "monolingual, cross-lingual and/or multilingual"})
    all_sentences: bool = field(default=True, metadata={
        "help": "XQuAD-R: rank every sentence of the paragraphs (LAReQA), not only answer sentences"})
    batch_size: int = field(default=128, metadata={"help": "texts per encoding batch (at most)"})
    batch_tokens: int = field(default=ENCODE_BATCH_TOKENS, metadata={
        "help": "padded tokens per encoding batch (at most; texts are sorted by token count and each batch is "
                "padded to its own longest text); at least the model's max_length. --tasks batches by batch_size"})
    tasks: list[str] | None = field(default=None, metadata={
        "help": "run these through mteb.evaluate instead: the project's tasks (XQuADRParallelRetrieval, "
                "MLQARParallelRetrieval; on `data`), MTEB task names and/or presets of MTEB tasks: "
                f"{', '.join(PRESETS)} (docs/evaluation.md)"})
    flores_splits: list[str] | None = field(default=None, metadata={
        "help": "a SIB-200/FLORES folder: its splits to read (train, dev, test; default all three)"})
    per_query: bool = field(default=False, metadata={
        "help": "also write each query's AP (per_query.json), for paired bootstrap intervals"})
    output_dir: str | None = field(default=None, metadata={"help": "where to write the results"})

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        unknown = sorted(set(self.flores_splits or []) - {"train", "dev", "test"})
        if unknown or self.flores_splits == []:
            raise ConfigError(f"flores_splits must name SIB-200 splits (train, dev, test), got {self.flores_splits}")


def run_evaluation(cfg: EvalConfig, encoder=None) -> dict:
    check_output_dir(cfg.output_dir)
    bench = load_benchmark(cfg.data, cfg.languages, cfg.split, cfg.n_folds, cfg.fold, cfg.dev_fraction,
                           cfg.all_sentences, cfg.flores_splits)
    if encoder is None:
        encoder = Encoder.from_pretrained(cfg.model)
        cfg.compose(encoder)
    started = time.perf_counter()
    results = evaluate_parallel(encoder, bench, cfg.settings, cfg.batch_size, max_tokens=cfg.batch_tokens,
                                per_query=cfg.per_query)
    per_query = results.pop("per_query", None)
    results["seconds"] = time.perf_counter() - started
    results["config"] = dataclasses.asdict(cfg)
    results["sizes"] = {lang: {"queries": len(bench.queries[lang]), "candidates": len(bench.candidates[lang])}
                        for lang in bench.languages}
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "results.md").write_text(f"# {cfg.model} on {cfg.data}\n\n" + markdown_table(results) + "\n")
        if per_query is not None:
            (out / "per_query.json").write_text(json.dumps(per_query) + "\n")
    if per_query is not None:
        results["per_query"] = per_query
    return results


def resolve_tasks(names: list[str], cfg: EvalConfig) -> list:
    """Task objects for presets, project and MTEB task names; an unknown name is one error with the closest
    names."""
    from hf_hybrid.evaluation.mteb_tasks import PROJECT_TASKS  # imports mteb

    tasks = []
    for name in names:
        preset = PRESETS.get(name.lower())
        if preset is not None:
            tasks += [_mteb_task(task, cfg.languages or preset.languages) for task in preset.task_names()]
        elif name in PROJECT_TASKS:
            tasks.append(_project_task(name, PROJECT_TASKS[name], cfg))
        else:
            try:
                tasks.append(_mteb_task(name, cfg.languages))
            except KeyError:
                raise ConfigError(_unknown_task(name, list(PROJECT_TASKS))) from None
    return tasks


def _project_task(name: str, cls, cfg: EvalConfig):
    languages = cfg.languages
    if not languages:
        available = set(languages_of(load_parallel_qa(cfg.data)))
        languages = sorted(available & set(cls.benchmark_languages))
        if not languages:
            raise DataError(f"{cfg.data} has none of {name}'s languages ({', '.join(cls.benchmark_languages)})")
    return cls(data=cfg.data, languages=languages, settings=cfg.settings,
               n_folds=cfg.n_folds if cfg.split == "test" else 0, fold=cfg.fold)


def _unknown_task(name: str, project_tasks: list[str]) -> str:
    import mteb

    known = {t.metadata.name.lower(): t.metadata.name for t in mteb.get_tasks()}
    known.update({n.lower(): n for n in [*project_tasks, *PRESETS]})
    close = [known[n] for n in difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)]
    hint = f"; closest: {', '.join(close)}" if close else ""
    if name == name.lower():  # written as a preset is
        return f"unknown preset or task {name!r}: the presets are {', '.join(PRESETS)}{hint}"
    return f"unknown task {name!r}: neither a project task nor an MTEB task{hint}"


def _mteb_task(name: str, languages: list[str] | None):
    """An MTEB task restricted to `languages`: by subset where its subsets are named by our codes
    (XQuADRetrieval's `de`), else by MTEB's ISO 639-3 codes."""
    import mteb

    task = mteb.get_task(name)
    if not languages:
        return task
    ours = [normalize_lang(lang) for lang in languages]
    if set(ours) <= set(task.hf_subsets):
        return mteb.get_task(name, hf_subsets=ours)
    # a three-letter code is passed as given, so that MTEB's individual languages (`swh`) stay reachable
    return mteb.get_task(name, languages=[lang if len(lang) == 3 else mteb_language_code(lang).split("-")[0]
                                          for lang in languages])


def run_tasks(cfg: EvalConfig) -> dict:
    """Evaluate one model on project and MTEB tasks through mteb.evaluate; mteb's JSON goes to output_dir."""
    check_output_dir(cfg.output_dir)
    import mteb
    from sentence_transformers import SentenceTransformer

    from hf_hybrid.evaluation.mteb_tasks import ParallelRetrievalTask, setting_means  # imports mteb

    if cfg.split == "dev":
        raise ConfigError("tasks evaluate on split 'all' or 'test', not 'dev'")
    if cfg.composition != "none":
        raise ConfigError("--tasks loads the model with sentence-transformers, which has no language adapters: "
                         "evaluate a composition without --tasks, or save the merged model first")
    tasks = resolve_tasks(cfg.tasks, cfg)
    try:
        model = SentenceTransformer(resolve_model_path(cfg.model), device=None)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"cannot load {cfg.model!r} as a sentence-transformers model: {err}") from None
    # names mteb's results folder: the model folder's name, or the Hub id as given
    model.model_card_data.model_name = Path(cfg.model).name if Path(cfg.model).is_dir() else cfg.model
    cache = mteb.ResultCache(Path(cfg.output_dir) / "mteb") if cfg.output_dir else None
    summary = {}
    for task in tqdm(tasks, desc="tasks", unit="task"):
        started = time.perf_counter()
        try:
            result = mteb.evaluate(model, task, cache=cache, overwrite_strategy="always",
                                   encode_kwargs={"batch_size": cfg.batch_size}, show_progress_bar=False)
        except ConnectionError as err:  # what `datasets` raises for a Hub dataset it cannot reach
            raise DataError(_unreachable(task, err)) from None
        task_result = result.task_results[0]
        split = next(iter(task_result.scores))
        subsets = {s["hf_subset"]: s for s in task_result.scores[split]}
        summary[task.metadata.name] = {
            "main_score": task.metadata.main_score,
            "mean": sum(s["main_score"] for s in subsets.values()) / len(subsets),
            "subsets": {name: s["main_score"] for name, s in subsets.items()},
            "seconds": time.perf_counter() - started,
        }
        if isinstance(task, ParallelRetrievalTask):
            summary[task.metadata.name]["settings"] = setting_means(subsets)
    report = {"model": cfg.model, "data": cfg.data, "tasks": summary}
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "summary.md").write_text(f"# {cfg.model}\n\n" + tasks_table(report) + "\n")
    return report


def _unreachable(task, err: ConnectionError) -> str:
    """One line naming the Hub dataset a task could not load and why: from `datasets`' message ("Couldn't reach
    'mteb/ArguAna-PL' on the Hub (OfflineModeIsEnabled)"), else the task's dataset (an aggregate's: its parts')."""
    message = " ".join(str(err).split())
    quoted = re.search(r"'([^'\s]+/[^'\s]+)'", message)
    parts = task.tasks if task.is_aggregate else [task]  # CQADupstackRetrieval-PL loads its parts' datasets
    dataset = quoted.group(1) if quoted else ", ".join(t.metadata.dataset["path"] for t in parts)
    why = re.search(r"\((\w+)\)$", message)
    return f"{task.metadata.name} needs the Hub dataset {dataset} (not reachable: {why.group(1) if why else message})"


def tasks_table(report: dict) -> str:
    """One row per task: its main score averaged over subsets, and the project tasks' per-setting means."""
    rows = [[name, t["main_score"], len(t["subsets"]), f"{t['mean']:.4f}",
             *(f"{t['settings'][s]:.4f}" if s in t.get("settings", {}) else "" for s in SETTINGS)]
            for name, t in report["tasks"].items()]
    return tables.markdown_table(["task", "main score", "subsets", "mean", *SETTINGS], rows)
