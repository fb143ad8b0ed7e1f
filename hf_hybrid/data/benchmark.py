"""A parallel benchmark from any data source: its ParallelQA rows of one split, and the candidate pool
LAReQA ranks (every paragraph sentence of XQuAD-R, from its folder or from a converted dataset)."""

from __future__ import annotations

from pathlib import Path

from datasets import get_dataset_config_names, load_dataset

from hf_hybrid.data.parallel_qa import folder_kind, is_hub_id, load_parallel_qa, xquad_r_candidates
from hf_hybrid.data.splits import select_split
from hf_hybrid.evaluation.retrieval import ParallelBenchmark


def load_benchmark(data: str, languages: list[str] | None = None, split: str = "all", n_folds: int = 0,
                   fold: int = 0, dev_fraction: float = 0.0, all_sentences: bool = True,
                   flores_splits: list[str] | None = None) -> ParallelBenchmark:
    """The benchmark of `data`'s rows in `split` (see select_split); with `all_sentences`, XQuAD-R's candidates
    are every sentence of the paragraphs, not only the answer sentences. `flores_splits`: the SIB-200 splits
    read from a FLORES folder (default all)."""
    rows = load_parallel_qa(data, languages, flores_splits=flores_splits)
    rows = select_split(rows, split, n_folds, fold, dev_fraction)
    extra = None
    kind = folder_kind(Path(data)) if Path(data).is_dir() else None
    if all_sentences and kind == "xquad-r":
        extra = xquad_r_candidates(data, sorted(set(rows["lang"])), set(rows["article_id"]))
    elif all_sentences and (kind == "repo" or is_hub_id(data)):
        extra = dataset_candidates(data, sorted(set(rows["lang"])), set(rows["article_id"]))
    return ParallelBenchmark.from_rows(rows, extra)


def dataset_candidates(source: str, languages: list[str], article_ids: set[str]) -> dict[str, list[str]] | None:
    """The `candidates` config of a converted dataset (an exported folder or its Hub id), if it has one."""
    if "candidates" not in get_dataset_config_names(source):
        return None
    table = load_dataset(source, "candidates", split="train")
    pool: dict[str, list[str]] = {lang: [] for lang in languages}
    for lang, article, text in zip(table["lang"], table["article_id"], table["text"], strict=True):
        if lang in pool and article in article_ids:
            pool[lang].append(text)
    return pool
