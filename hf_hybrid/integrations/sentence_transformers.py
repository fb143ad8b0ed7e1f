"""Hybrid batches in sentence-transformers' trainer.

    table = pair_table(load_parallel_qa("demo"))
    args = SentenceTransformerTrainingArguments(..., batch_sampler=hybrid_batch_sampler("hybrid", alpha=0.5),
                                                prompts=column_prompts(model))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=table,
                                         loss=recommended_loss(model), data_collator=pair_collator(model, args))

The trainer's DataLoader indexes one table, so every (query row, passage row) pair the toolkit's samplers
can draw is a row of it: anchor (the query), positive (the passage), and the group and languages the
sampler reads. The drawing itself is `hf_hybrid.sampling`'s, unchanged.

`ParallelRetrievalEvaluator` scores the model during training as `hf-hybrid eval` does (main score: multilingual
mAP): `SentenceTransformerTrainer(..., evaluator=ParallelRetrievalEvaluator.from_data("demo", split="dev",
dev_fraction=0.2))`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import DefaultBatchSampler
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)

from hf_hybrid.data.benchmark import load_benchmark
from hf_hybrid.data.parallel_qa import FIELDS
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.evaluation.retrieval import SETTINGS, ParallelBenchmark, evaluate_parallel, headline_metrics
from hf_hybrid.models.offline import E5_PREFIXES
from hf_hybrid.sampling import SAMPLERS, make_sampler

TEXT_COLUMNS = ("anchor", "positive")
SAMPLER_COLUMNS = ("group_id", "query_lang", "passage_lang")
TEMPERATURE = 0.05  # the toolkit's default (`hf-hybrid train --temperature`)


def pair_table(rows) -> Dataset:
    """ParallelQA rows -> one row per (group, query language, passage language): the query of one language
    as anchor, the passage of the other as positive. That is groups x languages^2 rows (XQuAD-R: 1190 x 11^2 =
    144k short rows, tens of MB), the full set the samplers can draw from, so any sampler and alpha index it."""
    missing = [c for c in FIELDS if c not in getattr(rows, "column_names", ())]
    if missing:
        raise DataError(f"pair_table needs ParallelQA rows (columns {', '.join(FIELDS)}); "
                        f"missing {', '.join(missing)}")
    by_group = defaultdict(dict)
    for group, lang, query, passage in zip(rows["group_id"], rows["lang"], rows["query"], rows["passage"],
                                           strict=True):
        by_group[group][lang] = (query, passage)
    languages = sorted({lang for per_lang in by_group.values() for lang in per_lang})
    table = {name: [] for name in (*TEXT_COLUMNS, *SAMPLER_COLUMNS)}
    for group, per_lang in by_group.items():
        absent = [lang for lang in languages if lang not in per_lang]
        if absent:
            raise DataError(f"group {group!r} has no row in language {absent[0]!r}")
        for q_lang in languages:
            for p_lang in languages:
                for name, value in zip(table, (per_lang[q_lang][0], per_lang[p_lang][1], group, q_lang, p_lang),
                                       strict=True):
                    table[name].append(value)
    return Dataset.from_dict(table)


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


class HybridPairBatchSampler(DefaultBatchSampler):
    """A `DefaultBatchSampler` over a `pair_table`: each step is one global batch drawn by the toolkit's
    sampler (`sampler`: hybrid, x-x, x-y, en-en or random), so every process trains on the same batch type
    and languages, on different groups. It yields the global batch's per-process slices in rank order, one
    after another; accelerate hands slice r to process r (its default sharding, `split_batches=False`)."""

    def __init__(self, dataset: Dataset, batch_size: int, drop_last: bool = True, valid_label_columns=None,
                 generator=None, seed: int = 0, sampler: str = "hybrid", alpha: float = 0.5,
                 num_replicas: int | None = None):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        missing = [c for c in SAMPLER_COLUMNS if c not in dataset.column_names]
        if missing:
            raise DataError(f"the hybrid batch sampler needs the columns {', '.join(SAMPLER_COLUMNS)} "
                            f"(build the dataset with pair_table); the dataset has {', '.join(dataset.column_names)}")
        keys = zip(*(list(dataset[c]) for c in SAMPLER_COLUMNS), strict=True)
        self.row_of = {key: i for i, key in enumerate(keys)}  # (group, query lang, passage lang) -> table row
        # the toolkit samplers draw (query row, passage row) pairs of these (group, language) rows
        self.rows = [(group, q_lang) for group, q_lang, p_lang in self.row_of if q_lang == p_lang]
        self._check_complete()
        rows = {"group_id": [g for g, _ in self.rows], "lang": [lang for _, lang in self.rows]}
        self.num_replicas = num_replicas or _world_size()
        self.drawers = [make_sampler(sampler, rows, batch_size, alpha=alpha, seed=seed,
                                     num_replicas=self.num_replicas, rank=rank) for rank in range(self.num_replicas)]

    def _check_complete(self) -> None:
        groups = list(dict.fromkeys(g for g, _ in self.rows))
        languages = sorted({lang for _, lang in self.rows})
        for group in groups:
            for q_lang in languages:
                for p_lang in languages:
                    if (group, q_lang, p_lang) not in self.row_of:
                        raise DataError(f"the pair table has no row for group {group!r}, query language {q_lang!r}, "
                                        f"passage language {p_lang!r} (build it with pair_table)")

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for drawer in self.drawers:
            drawer.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.drawers[0]) * self.num_replicas

    def __iter__(self):
        for slices in zip(*self.drawers, strict=True):
            for pairs in slices:
                yield [self.row_of[(self.rows[q][0], self.rows[q][1], self.rows[p][1])] for q, p in pairs]


def hybrid_batch_sampler(sampler: str = "hybrid", alpha: float = 0.5):
    """The value for `SentenceTransformerTrainingArguments(batch_sampler=...)`."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r} (expected one of {', '.join(SAMPLERS)})")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    return partial(HybridPairBatchSampler, sampler=sampler, alpha=alpha)


@dataclass
class PairTableCollator(SentenceTransformerDataCollator):
    """sentence-transformers' collator without the sampler's columns: it tokenizes every other column, and
    MultipleNegativesRankingLoss would take the group and language columns for hard negatives."""

    def __call__(self, features):
        return super().__call__([{k: v for k, v in f.items() if k not in SAMPLER_COLUMNS} for f in features])


def pair_collator(model, args) -> PairTableCollator:
    """The trainer's own collator (as `SentenceTransformerTrainer.get_data_collator` builds it), minus the
    sampler's columns."""
    return PairTableCollator(preprocess_fn=model.preprocess, router_mapping=args.router_mapping, prompts=args.prompts)


def column_prompts(model) -> dict[str, str]:
    """The model's query and passage prompts (e5: "query: ", "passage: ") for the anchor and positive columns."""
    prompts = model.prompts or {}
    return {column: prompts[name] for column, name in zip(TEXT_COLUMNS, ("query", "document"), strict=True)
            if prompts.get(name)}


def recommended_loss(model, temperature: float = TEMPERATURE, mini_batch_size: int | None = None):
    """The toolkit's loss in sentence-transformers' terms: InfoNCE with in-batch negatives gathered from every
    process, scale = 1 / temperature; with `mini_batch_size`, its gradient-cached form."""
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    if mini_batch_size is None:
        return MultipleNegativesRankingLoss(model, scale=1 / temperature, gather_across_devices=True)
    return CachedMultipleNegativesRankingLoss(model, scale=1 / temperature, mini_batch_size=mini_batch_size,
                                              gather_across_devices=True)


def check_prompts(model) -> None:
    """An e5 model was trained with "query: " and "passage: " before its texts; without them its scores mislead."""
    name = str(model.model_card_data.base_model or getattr(model.tokenizer, "name_or_path", "") or "the model")
    prompts = model.prompts or {}
    if "e5" in name.lower() and not (prompts.get("query") or prompts.get("document")):
        raise ConfigError(f"{name} is an e5 model but has no prompts (e5 expects {E5_PREFIXES['query']!r} and "
                          f"{E5_PREFIXES['passage']!r} before its texts): load it with SentenceTransformer(..., "
                          f"prompts={{'query': {E5_PREFIXES['query']!r}, 'document': {E5_PREFIXES['passage']!r}}})")


class PromptedEncoder:
    """A SentenceTransformer as `evaluate_parallel` calls an encoder: queries through its query prompt, passages
    through its document prompt, L2-normalised when its similarity is cosine (the scorer ranks by dot product)."""

    def __init__(self, model):
        self.model = model
        self.normalize = model.similarity_fn_name in (None, "cosine")

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, texts: list[str], kind: str, batch_size: int, progress: bool, lang: str | None = None):
        encode = self.model.encode_query if kind == "query" else self.model.encode_document
        return encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_tensor=True,
                      normalize_embeddings=self.normalize).float()


class ParallelRetrievalEvaluator(SentenceEvaluator):
    """The toolkit's parallel retrieval scorer (`hf-hybrid eval`) as a sentence-transformers evaluator: the three
    settings' mAP (`multilingual_map`, the main score; `cross_lingual_map`, `monolingual_map`) and the multilingual
    pool's bias profile (`same_language_share`, ...). With an `output_path`, the full results (per language and
    pair) go to `<name>_parallel_retrieval_results.json` there."""

    def __init__(self, benchmark: ParallelBenchmark, name: str = "", batch_size: int = 128, settings=SETTINGS,
                 show_progress_bar: bool = False):
        super().__init__()
        self.benchmark, self.name, self.batch_size = benchmark, name, batch_size
        self.settings, self.show_progress_bar = list(settings), show_progress_bar
        self.primary_metric = "multilingual_map"
        self.results: dict | None = None  # the last call's full results

    @classmethod
    def from_data(cls, data: str, languages: list[str] | None = None, split: str = "all", n_folds: int = 0,
                  fold: int = 0, dev_fraction: float = 0.0, **kwargs) -> ParallelRetrievalEvaluator:
        """The benchmark `hf-hybrid eval --data ... --split ...` scores (same rows, same candidate pool)."""
        return cls(load_benchmark(data, languages, split, n_folds, fold, dev_fraction), **kwargs)

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        check_prompts(model)
        self.results = evaluate_parallel(PromptedEncoder(model), self.benchmark, self.settings, self.batch_size,
                                         progress=self.show_progress_bar)
        if output_path is not None:
            out = Path(output_path)
            out.mkdir(parents=True, exist_ok=True)
            record = {"epoch": epoch, "steps": steps, **self.results}
            (out / f"{self.name or 'eval'}_parallel_retrieval_results.json").write_text(json.dumps(record, indent=2))
        metrics = self.prefix_name_to_metrics(headline_metrics(self.results), self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict:
        return {"languages": self.benchmark.languages, "settings": self.settings}
