"""The dataset card of a folder of `hf-hybrid data export` (`parallel-qa` or `xquad-retrieval`): which export, its
source and languages from the `export.json` the export wrote beside its files; rows, columns and rows per language
counted from the parquet files. The folder's `configs:` block is kept as it is, so `datasets.load_dataset(folder,
config)` still works once the card replaces README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from hf_hybrid.data.export import EXPORT_FACTS, EXPORTS
from hf_hybrid.errors import DataError
from hf_hybrid.hub.cards.common import PLACEHOLDER_USER, language_label, public, read_json, render
from hf_hybrid.tables import markdown_table

DATASET_TEMPLATE = "dataset_card.md.j2"
_XQUAD_RETRIEVAL_CONFIG = re.compile(r"^(.+)-(corpus|queries|qrels)$")
# by the source's kind: the licence of the data, and the card's `source_datasets`
_LICENSES = {"demo": "apache-2.0", "xquad": "cc-by-sa-4.0", "xquad-r": "cc-by-sa-4.0"}
_SOURCE_DATASETS = {"demo": ["original"], "xquad": ["extended|xquad"], "xquad-r": ["extended|xquad_r"]}
_PRETTY = {("parallel-qa", "xquad-r"): "XQuAD-R as ParallelQA rows",
           ("parallel-qa", "xquad"): "XQuAD as ParallelQA rows",
           ("parallel-qa", "demo"): "hf-hybrid demo sample as ParallelQA rows"}


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


def _read_export(folder: Path) -> tuple[dict, list[dict]]:
    """The export's facts (export.json) and the `configs:` block of its README.md, checked to belong together."""
    readme = folder / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{folder} has no README.md (expected a folder of `hf-hybrid data export`)")
    configs = DatasetCard(readme.read_text(encoding="utf-8")).data.get("configs")
    if not configs:
        raise DataError(f"{readme} has no `configs:` block (expected a folder of `hf-hybrid data export`)")
    facts = read_json(folder / EXPORT_FACTS)
    if facts is None:
        raise DataError(f"{folder} has no {EXPORT_FACTS} (an export written before hf-hybrid recorded one): "
                        "export it again with `hf-hybrid data export`")
    names = [c["config_name"] for c in configs]
    expected = {"parallel-qa": "default" in names,
                "xquad-retrieval": all(_XQUAD_RETRIEVAL_CONFIG.match(n) for n in names)}
    if not expected.get(facts.get("export")):
        raise DataError(f"{readme}: configs {', '.join(names)} are not those of "
                        f"`hf-hybrid data export {facts.get('export')}` (expected one of {', '.join(EXPORTS)})")
    return facts, configs


def _layout_tables(kind: str, measured: list[dict], languages: list[str]) -> tuple[str, str]:
    """The rows and columns of each config and split, and the rows per language."""
    layout = markdown_table(["config", "split", "rows", "columns"],
                            [[f"`{m['config']}`", f"`{m['split']}`", str(m["rows"]), ", ".join(m["columns"])]
                             for m in measured])
    if kind == "parallel-qa":
        counted = [m for m in measured if m["per_lang"]]
        return layout, markdown_table(["language"] + [f"`{m['config']}` rows" for m in counted],
                                      [[language_label(lang)] + [str(m["per_lang"].get(lang, 0)) for m in counted]
                                       for lang in languages])
    rows_of = {m["config"]: m["rows"] for m in measured}
    parts = ("corpus", "queries", "qrels")
    return layout, markdown_table(["language", *parts],
                                  [[language_label(lang)] + [str(rows_of.get(f"{lang}-{p}", "–")) for p in parts]
                                   for lang in languages])


def _task_languages(source_kind: str | None, languages: list[str]) -> list[str]:
    """The languages the project's MTEB task runs on, for an export of XQuAD-R (imports mteb: only then)."""
    if source_kind != "xquad-r":
        return []
    from hf_hybrid.evaluation.mteb_tasks import XQuADRParallelRetrieval  # imports mteb

    return [lang for lang in languages if lang in XQuADRParallelRetrieval.benchmark_languages]


def render_dataset_card(dataset_dir, repo_id: str | None = None, *, license: str | None = None,
                        template_dir: str | Path | None = None) -> str:
    """README.md for a folder written by `hf-hybrid data export parallel-qa` or `... xquad-retrieval`.

    Keeps the folder's `configs:` block as it is; counts rows, columns and languages from its parquet files.
    license: default cc-by-sa-4.0 for XQuAD / XQuAD-R data, Apache-2.0 for the project's demo sample, else none.
    """
    folder = Path(dataset_dir)
    facts, configs = _read_export(folder)
    kind, source, source_kind, languages = facts["export"], facts["source"], facts["source_kind"], facts["languages"]
    measured = _measure(folder, configs)
    if kind == "parallel-qa":
        n_examples = next(m["rows"] for m in measured if m["config"] == "default")
    else:
        n_examples = sum(m["rows"] for m in measured if m["config"].endswith("-queries"))
    pretty = _PRETTY.get((kind, source_kind),
                         "ParallelQA rows" if kind == "parallel-qa" else "XQuADRetrieval (MTEB layout)")
    data = DatasetCardData(
        pretty_name=pretty, language=languages, license=license or _LICENSES.get(source_kind),
        multilinguality="multilingual" if len(languages) > 1 else "monolingual",
        size_categories=_size_category(n_examples), source_datasets=_SOURCE_DATASETS.get(source_kind),
        task_categories=["text-retrieval"], task_ids=["document-retrieval"],
        tags=["hf-hybrid", "parallel", "cross-lingual"] + (["mteb"] if kind == "xquad-retrieval" else []),
        configs=configs,
    )
    layout, by_language = _layout_tables(kind, measured, languages)
    text = render(
        DATASET_TEMPLATE, template_dir, card_data=data.to_yaml(), kind=kind, source_kind=source_kind,
        source=public(source), repo_id=repo_id or f"{PLACEHOLDER_USER}/{folder.resolve().name}", pretty=pretty,
        license=data.license, languages=[language_label(lang) for lang in languages], language_codes=languages,
        layout=layout, by_language=by_language, configs=[c["config_name"] for c in configs], n_examples=n_examples,
        split=measured[0]["split"], task_languages=_task_languages(source_kind, languages),
    )
    DatasetCard(text)
    return text
