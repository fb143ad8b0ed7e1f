"""Local copies of MTEB datasets, built from the raw source files, so MTEB's own tasks run offline.

    hf-hybrid data export xquad-retrieval --source ../shared/data/xquad --out DIR [--languages de en]
        [--datasets-cache CACHE] [--overwrite]

writes the dataset of MTEB's task `XQuADRetrieval` (Hub: mteb/XQuADRetrieval) from the XQuAD SQuAD
files, in the layout the task loads: per language the configs `<lang>-corpus` (id, title, text: the
distinct paragraphs), `<lang>-queries` (id, text: the questions) and `<lang>-qrels` (query-id,
corpus-id, score=1), split `validation`, as parquet under DIR, with a dataset card (README.md) whose
`configs:` block maps each config to its files. `datasets.load_dataset(DIR, "de-corpus",
split="validation")` and `get_dataset_config_names(DIR)` read it.

Every export also writes `export.json`: which export it is, its source (as given, and its kind: `source_kind`) and
its languages, the facts its dataset card (hf_hybrid.hub.cards.render_dataset_card) is filled from; it goes to the
Hub with the export's other files.

The rows are the toolkit's (`load_xquad`): one query per XQuAD question (id: the XQuAD question id,
text as is), candidates the distinct paragraphs of each language (stripped, as MTEB strips a document
before encoding it; id: sha256 of that text, as MTEB's original loader made them), title empty (MTEB
encodes "title text" when a title is set; the toolkit encodes the paragraph). So MTEB on this copy
scores what the toolkit's evaluator scores in its monolingual setting. The Hub copy differs slightly:
it also strips questions, and a question asked twice about the same paragraph is one query there
(1181 German queries there, 1190 here, as in the toolkit).

MTEB's unmodified task, offline: `datasets` (5.x) never reads the Hugging Face Hub cache for a dataset
repo when HF_HUB_OFFLINE=1 (it raises before looking), and without that flag it needs the Hub API to
resolve the repo's files; what it does reload offline is the Arrow cache an earlier `load_dataset`
left in HF_DATASETS_CACHE. `--datasets-cache CACHE` writes that cache from the export, so with
`HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=CACHE` both `mteb.evaluate(model, mteb.get_task("XQuADRetrieval"))`
and `mteb run ... -t XQuADRetrieval` load it. Use a cache folder of its own: offline, `datasets`
takes the most recently written copy of each config it finds there. (`mteb run -m` takes only a
model of MTEB's registry or the Hub, not a local folder: in mteb 2.26 a path gets no loader.)
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

from datasets import Dataset

from hf_hybrid.data.parallel_qa import (
    folder_kind,
    is_hub_id,
    languages_of,
    load_parallel_qa,
    load_xquad,
    xquad_r_candidates,
)
from hf_hybrid.errors import DataError

XQUAD_RETRIEVAL_REPO = "mteb/XQuADRetrieval"
SPLIT = "validation"
PARTS = ("corpus", "queries", "qrels")
# the cache's "hash" folder: not the task's pinned commit, so an online load of the real dataset
# into the same cache gets a folder of its own instead of finding (and reusing) this copy
CACHE_HASH = "hf_hybrid-export"
_CONFIG_DIR = re.compile(r"^.+-(corpus|queries|qrels)$")
EXPORT_FACTS = "export.json"


def source_kind(source: str) -> str | None:
    """What a data source is: "demo", "hub" (a Hub dataset id), the kind of a local folder (`folder_kind`), or,
    for anything else (a file, a path no longer there), "xquad" / "xquad-r" when its name says so."""
    if source == "demo":
        return "demo"
    if is_hub_id(source):
        return "hub"
    path = Path(source)
    kind = folder_kind(path) if path.is_dir() else None
    if kind is None and "xquad" in path.name.lower():
        kind = "xquad-r" if "xquad-r" in path.name.lower().replace("_", "-") else "xquad"
    return kind


def _write_facts(out: Path, export: str, source: str, kind: str | None, languages: list[str]) -> None:
    facts = {"export": export, "source": source, "source_kind": kind, "languages": languages}
    (out / EXPORT_FACTS).write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def xquad_retrieval_tables(source: str | Path, languages: list[str] | None = None) -> dict[str, dict[str, Dataset]]:
    """Language -> {"corpus", "queries", "qrels"} tables of XQuADRetrieval, from an XQuAD folder."""
    rows = load_xquad(source, languages)
    by_lang: dict[str, dict[str, list]] = {}
    for lang, group, query, passage in zip(rows["lang"], rows["group_id"], rows["query"], rows["passage"],
                                           strict=True):
        t = by_lang.setdefault(lang, {"corpus": {}, "queries": [], "qrels": []})
        doc_id = t["corpus"].setdefault(passage, hashlib.sha256(passage.encode("utf-8")).hexdigest())
        t["queries"].append({"id": group, "text": query})
        t["qrels"].append({"query-id": group, "corpus-id": doc_id, "score": 1})
    return {
        lang: {
            "corpus": Dataset.from_dict({"id": list(t["corpus"].values()), "title": [""] * len(t["corpus"]),
                                         "text": list(t["corpus"])}),
            "queries": Dataset.from_list(t["queries"]),
            "qrels": Dataset.from_list(t["qrels"]),
        }
        for lang, t in sorted(by_lang.items())
    }


def _write_configs(out: Path, tables: dict[str, Dataset], split: str) -> list[str]:
    """Each table as the config of that name (`<config>/<split>-00000-of-00001.parquet`, the Hub's layout);
    returns the dataset card's YAML `configs:` lines that map each config to its files."""
    lines = ["configs:"]
    for config, table in tables.items():
        (out / config).mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(out / config / f"{split}-00000-of-00001.parquet"))
        lines += [f"- config_name: {config}", "  data_files:", f"  - split: {split}",
                  f"    path: {config}/{split}-*.parquet"]
    return lines


def _dataset_card(configs_yaml: list[str], languages: list[str], source: Path) -> str:
    lines = ["---", "license: cc-by-sa-4.0", "language:", *[f"- {lang}" for lang in languages], *configs_yaml]
    lines += ["---", "", f"# {XQUAD_RETRIEVAL_REPO} (local copy)", "",
              (f"Built by `hf-hybrid data export xquad-retrieval` from the XQuAD files in `{source}` "
               "(SQuAD v1.1 JSON, CC BY-SA 4.0), in the layout of MTEB's `XQuADRetrieval` task: per language "
               "`<lang>-corpus` (the distinct paragraphs), `<lang>-queries` (one per XQuAD question) and "
               f"`<lang>-qrels`, split `{SPLIT}`. See `hf_hybrid/data/export.py` for how it differs from the Hub "
               "copy."),
              ""]
    return "\n".join(lines)


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"output folder {out} exists and is not empty "
                            "(pass --overwrite to replace the export in it)")
        # replace only what an export writes: the card, its facts and the config folders
        (out / "README.md").unlink(missing_ok=True)
        (out / EXPORT_FACTS).unlink(missing_ok=True)
        for path in out.iterdir():
            if path.is_dir() and _CONFIG_DIR.match(path.name):
                shutil.rmtree(path)


def export_xquad_retrieval(source: str | Path, out: str | Path, languages: list[str] | None = None,
                           overwrite: bool = False, datasets_cache: str | Path | None = None) -> Path:
    """Write XQuADRetrieval (see the module docstring) to `out`, and into `datasets_cache` if given."""
    source, out = Path(source), Path(out)
    tables = xquad_retrieval_tables(source, languages)  # validates source and languages before writing
    if out.resolve() == source.resolve():
        raise DataError(f"output folder {out} is the source folder; write the export elsewhere")
    if datasets_cache is not None:
        _check_cache(Path(datasets_cache), [f"{lang}-{p}" for lang in tables for p in PARTS], overwrite)
    _check_output(out, overwrite)
    configs = {f"{lang}-{part}": parts[part] for lang, parts in tables.items() for part in PARTS}
    configs_yaml = _write_configs(out, configs, SPLIT)
    (out / "README.md").write_text(_dataset_card(configs_yaml, list(tables), source), encoding="utf-8")
    _write_facts(out, "xquad-retrieval", str(source), "xquad", list(tables))
    if datasets_cache is not None:
        write_datasets_cache(out, Path(datasets_cache), list(configs))
    return out


def _cache_root(cache: Path, repo: str = XQUAD_RETRIEVAL_REPO) -> Path:
    """Where `datasets` keeps a Hub dataset's Arrow files in a cache (`mteb___x_qu_ad_retrieval`)."""
    from datasets.naming import camelcase_to_snakecase

    namespace, name = repo.split("/")
    return cache / f"{namespace}___{camelcase_to_snakecase(name)}"


def _check_cache(cache: Path, configs: list[str], overwrite: bool) -> None:
    if cache.exists() and not cache.is_dir():
        raise DataError(f"datasets cache {cache} exists and is not a folder")
    there = [c for c in configs if (_cache_root(cache) / c).exists()]
    if there and not overwrite:
        raise DataError(f"datasets cache {cache} already holds {XQUAD_RETRIEVAL_REPO} {', '.join(there)} "
                        "(pass --overwrite to replace)")


def write_datasets_cache(export_dir: Path, cache: Path, configs: list[str], repo: str = XQUAD_RETRIEVAL_REPO) -> Path:
    """Prepare each config of an export in `cache` as `load_dataset(repo, config)` would have left it
    there after an online load, so that offline (HF_HUB_OFFLINE=1, HF_DATASETS_CACHE=cache) it loads."""
    from datasets.load import dataset_module_factory, get_dataset_builder_class

    name = repo.split("/")[1]
    root = _cache_root(cache, repo)
    root.mkdir(parents=True, exist_ok=True)
    module = dataset_module_factory(str(export_dir))
    builder_cls = get_dataset_builder_class(module, dataset_name=name)
    # built under a scratch root, then moved: the cache names a Hub dataset's folder
    # `<namespace>___<name>`, which a builder only writes for the repo's own files
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        for config in configs:
            builder = builder_cls(cache_dir=scratch, dataset_name=name, config_name=config, hash=CACHE_HASH,
                                  base_path=str(export_dir))
            builder.download_and_prepare()
            target = root / config
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(Path(scratch) / builder.dataset_name / config), str(target))
    return root


def export_parallel_qa(source: str | Path, out: str | Path, languages: list[str] | None = None,
                       overwrite: bool = False, datasets_cache: str | Path | None = None) -> Path:
    """Any data source as a dataset repo folder, the converted dataset the project's MTEB tasks and
    `--data` load (from this folder or, pushed, from the Hub): the ParallelQA rows (config `default`)
    and, for XQuAD-R, every paragraph sentence as a candidate (config `candidates`: lang, article_id, text)."""
    if datasets_cache is not None:
        raise DataError("--datasets-cache is for copies of MTEB's own datasets (xquad-retrieval)")
    rows = load_parallel_qa(str(source), languages)
    out = Path(out)
    if Path(source).is_dir() and out.resolve() == Path(source).resolve():
        raise DataError(f"output folder {out} is the source folder; write the export elsewhere")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite or not out.is_dir():
            raise DataError(f"output {out} exists and is not an empty folder (pass --overwrite to replace it)")
        shutil.rmtree(out)
    langs = languages_of(rows)
    configs = {"default": rows.select_columns(["group_id", "lang", "query", "passage", "article_id", "title"])}
    if Path(source).is_dir() and folder_kind(Path(source)) == "xquad-r":
        pool = xquad_r_candidates(source, langs, with_articles=True)
        configs["candidates"] = Dataset.from_list([{"lang": lang, "article_id": a, "text": t}
                                                   for lang in langs for a, t in pool[lang]])
    card = ["---", "language:", *[f"- {lang}" for lang in langs], *_write_configs(out, configs, "train")]
    card += ["---", "", f"# ParallelQA rows from {Path(str(source)).name}", "",
             f"Written by `hf-hybrid data export parallel-qa` from `{source}`: {len(rows)} rows, "
             f"{len(set(rows['group_id']))} question groups in {len(langs)} languages ({', '.join(langs)}). "
             "Rows with the same `group_id` are translations of each other; split by `article_id`."
             + (" The `candidates` config holds every sentence of every paragraph, LAReQA's candidate pool."
                if "candidates" in configs else ""), ""]
    (out / "README.md").write_text("\n".join(card), encoding="utf-8")
    _write_facts(out, "parallel-qa", str(source), source_kind(str(source)), langs)
    return out


EXPORTS = {"xquad-retrieval": export_xquad_retrieval, "parallel-qa": export_parallel_qa}


def export(name: str, source: str | Path, out: str | Path, **kwargs) -> Path:
    if name not in EXPORTS:
        raise DataError(f"unknown export {name!r} (expected one of {', '.join(EXPORTS)})")
    return EXPORTS[name](source, out, **kwargs)
