"""The project's parallel benchmarks as MTEB tasks (mteb 2 API), scored exactly as the toolkit scores them.

A task has one subset per language (monolingual, `de`), one per ordered language pair
(cross-lingual, `de-en`: German queries, English candidates) and `multilingual` (queries of every
language against one pool of all candidates). The main score is LAReQA's mAP over the full
ranking; MTEB's generic retrieval scoring cuts rankings at a depth (`map_at_1000`), so these tasks
rank every candidate with the toolkit's scorer instead, on embeddings from the model MTEB hands
them. The multilingual subset adds the language-bias profile of docs/metrics.md.

    import mteb
    from hf_hybrid.evaluation.mteb_tasks import XQuADRParallelRetrieval

    task = XQuADRParallelRetrieval(data="../shared/data/xquad-r", languages=["de", "en", "sw"])
    mteb.evaluate(mteb.get_model("path/to/model"), task)
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from mteb._create_dataloaders import create_dataloader
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.types import PromptType

from hf_hybrid.data.benchmark import load_benchmark
from hf_hybrid.data.parallel_qa import FLORES_HIGH_RESOURCE, FLORES_LOW_RESOURCE
from hf_hybrid.errors import ConfigError, DataError, HfHybridError
from hf_hybrid.evaluation.retrieval import (
    BIAS_MEANS,
    SETTINGS,
    ParallelBenchmark,
    ParallelScorer,
    check_settings,
)
from hf_hybrid.languages import mteb_language_code, normalize_lang

MULTILINGUAL = "multilingual"
SPLIT = "test"


def subset_names(languages: list[str], settings=SETTINGS, pivot: str | None = None,
                 self_retrieval: bool = False) -> list[str]:
    """The subsets of a parallel task (the rules of ParallelBenchmark: see its docstring)."""
    names = []
    if "monolingual" in settings and not self_retrieval:
        names += languages
    if "cross-lingual" in settings:
        names += [f"{x}-{y}" for x in languages for y in languages if x != y and (pivot is None or pivot in (x, y))]
    if "multilingual" in settings and len(languages) > 1:
        names.append(MULTILINGUAL)
    return names


def subset_languages(subset: str, languages: list[str]) -> tuple[list[str], list[str]]:
    """(query languages, candidate languages) of a subset: `de`, `de-en` or `multilingual`."""
    if subset == MULTILINGUAL:
        return languages, languages
    query, _, candidates = subset.partition("-")
    return [query], [candidates or query]


def setting_of(subset: str) -> str:
    return "multilingual" if subset == MULTILINGUAL else ("cross-lingual" if "-" in subset else "monolingual")


def setting_means(scores: dict[str, dict]) -> dict[str, float]:
    """Mean main score per setting, from mteb's per-subset scores of a parallel task."""
    by_setting: dict[str, list[float]] = {}
    for subset, s in scores.items():
        by_setting.setdefault(setting_of(subset), []).append(s["main_score"])
    return {k: sum(v) / len(v) for k, v in by_setting.items()}


def eval_langs(languages: list[str], pivot: str | None = None, self_retrieval: bool = False) -> dict[str, list[str]]:
    code = {lang: mteb_language_code(lang) for lang in languages}
    out = {}
    for name in subset_names(languages, SETTINGS, pivot, self_retrieval):
        out[name] = [code[lang] for lang in (languages if name == MULTILINGUAL else name.split("-"))]
    return out


def _flat_scores(metrics: dict[str, float]) -> dict[str, float]:
    """The toolkit's metric names in MTEB's spelling (ndcg@10 -> ndcg_at_10)."""
    return {k.replace("@", "_at_"): v for k, v in metrics.items()}


class ParallelRetrievalTask(AbsTaskRetrieval):
    """Base class: subclasses set `metadata` and `benchmark_languages`."""

    benchmark_languages: tuple[str, ...] = ()
    pivot: str | None = None  # cross-lingual subsets only with this language (FLORES: X-en, en-X)
    self_retrieval: bool = False  # queries are the candidates themselves (FLORES sentences): no monolingual subsets

    def __init__(self, data: str | None = None, languages: list[str] | None = None, settings=SETTINGS,
                 n_folds: int = 0, fold: int = 0, **kwargs: Any):
        """data: local folder/file or Hub dataset id (default: the task's dataset path); languages:
        a subset of the benchmark's; n_folds > 0 evaluates the articles of test fold `fold` only."""
        super().__init__(**kwargs)
        check_settings(settings)
        self.data = data or self.metadata.dataset["path"]
        self.task_languages = sorted(normalize_lang(lang) for lang in (languages or self.benchmark_languages))
        outside = sorted(set(self.task_languages) - set(self.benchmark_languages))
        if outside:
            raise ConfigError(f"{self.metadata.name} has no language(s) {', '.join(outside)} "
                             f"(it has {', '.join(self.benchmark_languages)})")
        self.settings, self.n_folds, self.fold = list(settings), n_folds, fold
        self.hf_subsets = subset_names(self.task_languages, self.settings, self.pivot, self.self_retrieval)
        # this instance's languages: the `multilingual` pool has only these (the metadata is the class's, copy it)
        self.metadata = self.metadata.model_copy(
            update={"eval_langs": eval_langs(self.task_languages, self.pivot, self.self_retrieval)})
        self.benchmark: ParallelBenchmark | None = None

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        split = "test" if self.n_folds else "all"
        bench = load_benchmark(self.data, self.task_languages, split, self.n_folds, self.fold)
        missing = sorted(set(self.task_languages) - set(bench.languages))
        if missing:
            raise DataError(f"{self.data} has no rows in {', '.join(missing)}")
        if bench.self_retrieval != self.self_retrieval:
            kind = "sentences retrieving their translations" if self.self_retrieval else "questions and passages"
            raise DataError(f"{self.data} is not {self.metadata.name}'s kind of data ({kind})")
        self.benchmark = bench
        queries = {lang: Dataset.from_dict({"id": [f"{lang}:{g}" for g, _ in bench.queries[lang]],
                                         "text": [t for _, t in bench.queries[lang]]}) for lang in bench.languages}
        corpus = {lang: Dataset.from_dict({"id": [f"{lang}:{i}" for i in range(len(bench.candidates[lang]))],
                                        "text": bench.candidates[lang]}) for lang in bench.languages}

        def split_data(query_langs: list[str], cand_langs: list[str]) -> dict:
            qrels = {f"{q}:{g}": {f"{c}:{bench.relevant[c][g]}": 1 for c in cand_langs
                                  if g in bench.relevant[c] and not (bench.self_retrieval and c == q)}
                     for q in query_langs for g, _ in bench.queries[q]}
            return {"queries": concatenate_datasets([queries[lang] for lang in query_langs]),
                    "corpus": concatenate_datasets([corpus[lang] for lang in cand_langs]),
                    "relevant_docs": qrels, "top_ranked": None}

        self.dataset = {name: {SPLIT: split_data(*subset_languages(name, bench.languages))}
                        for name in self.hf_subsets}
        self.data_loaded = True

    def _encode(self, model, texts: Dataset, prompt_type: PromptType, hf_subset: str,
                encode_kwargs: dict) -> torch.Tensor:
        loader = create_dataloader(texts, task_metadata=self.metadata, prompt_type=prompt_type, **encode_kwargs)
        emb = model.encode(loader, task_metadata=self.metadata, hf_split=SPLIT, hf_subset=hf_subset,
                           prompt_type=prompt_type, **encode_kwargs)
        emb = torch.as_tensor(emb).float()
        if not torch.isfinite(emb).all():
            raise HfHybridError(f"the model embedded {self.metadata.name}/{hf_subset} texts to NaN or inf")
        return torch.nn.functional.normalize(emb, dim=-1)

    def _evaluate_subset(self, model, data_split: dict, *, encode_kwargs: dict, hf_split: str, hf_subset: str,
                         **kwargs: Any) -> dict[str, float]:
        bench = self.benchmark
        q_all = self._encode(model, data_split["queries"], PromptType.query, hf_subset, encode_kwargs)
        c_all = self._encode(model, data_split["corpus"], PromptType.document, hf_subset, encode_kwargs)
        query_langs, cand_langs = subset_languages(hf_subset, bench.languages)
        # the split's rows are each language's queries / candidates in benchmark order, language after language
        q_emb = dict(zip(query_langs, q_all.split([len(bench.queries[lang]) for lang in query_langs]), strict=True))
        c_emb = dict(zip(cand_langs, c_all.split([len(bench.candidates[lang]) for lang in cand_langs]), strict=True))
        scorer = ParallelScorer(bench, q_emb, c_emb)
        if hf_subset != MULTILINGUAL:
            return _flat_scores(scorer.cross_lingual(query_langs[0], cand_langs[0]))
        result = scorer.multilingual()
        scores = _flat_scores(result["average"])
        bias = result["bias"]
        for key in BIAS_MEANS:
            if key in bias:
                scores[key] = bias[f"{key}_mean"]
                scores.update({f"{key}_{lang}": v for lang, v in bias[key].items()})
        by_language = bias["mean_rank_by_candidate_language"]
        scores.update({f"mean_rank_of_{lang}_answers": v for lang, v in by_language.items()})
        return scores


_LAREQA_CITATION = r"""
@inproceedings{roy-etal-2020-lareqa,
  author = {Roy, Uma and Constant, Noah and Al-Rfou, Rami and Barua, Aditya and Phillips, Aaron and Yang, Yinfei},
  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  pages = {5919--5930},
  publisher = {Association for Computational Linguistics},
  title = {{LAReQA}: Language-Agnostic Answer Retrieval from a Multilingual Pool},
  url = {https://aclanthology.org/2020.emnlp-main.477},
  year = {2020},
}
"""

_XQUAD_R_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
_MLQA_R_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")


# MTEB's task-file conventions: `metadata = TaskMetadata(...)` by keyword in the class body, and a dataset
# {path, revision} on the Hub. The datasets are not published yet: each `revision` names the branch until then and
# becomes the commit sha once they are (docs/evaluation.md); then the classes can be contributed to MTEB as they are.


class XQuADRParallelRetrieval(ParallelRetrievalTask):
    benchmark_languages = _XQUAD_R_LANGUAGES
    metadata = TaskMetadata(
        name="XQuADRParallelRetrieval",
        dataset={"path": "hf-hybrid/xquad-r", "revision": "main"},
        description=(
            "XQuAD-R (LAReQA): questions retrieve their answer sentence among every sentence of the XQuAD "
            "paragraphs, per language, per ordered language pair, and from one multilingual pool where the "
            "answer in every language is relevant. Exact mAP over the full ranking."),
        reference="https://github.com/google-research-datasets/lareqa",
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[SPLIT],
        eval_langs=eval_langs(list(_XQUAD_R_LANGUAGES)),
        main_score="map",
        date=("2019-05-21", "2020-11-16"),
        domains=["Encyclopaedic", "Written"],
        task_subtypes=["Question answering"],
        license="cc-by-sa-4.0",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="human-translated",
        bibtex_citation=_LAREQA_CITATION,
    )


class MLQARParallelRetrieval(ParallelRetrievalTask):
    benchmark_languages = _MLQA_R_LANGUAGES
    metadata = TaskMetadata(
        name="MLQARParallelRetrieval",
        dataset={"path": "hf-hybrid/mlqa-r", "revision": "main"},
        description=(
            "MLQA-R after LAReQA: MLQA questions asked in every language retrieve their answer, per language, per "
            "ordered language pair, and from one multilingual pool. Exact mAP over the full ranking. MLQA ships no "
            "sentence breaks, so the candidates are the paragraphs (LAReQA split them into sentences). Needs the "
            "MLQA files (`test-context-<l>-question-<l>.json`) at `data`."),
        reference="https://github.com/facebookresearch/MLQA",
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[SPLIT],
        eval_langs=eval_langs(list(_MLQA_R_LANGUAGES)),
        main_score="map",
        date=("2019-10-16", "2020-11-16"),
        domains=["Encyclopaedic", "Written"],
        task_subtypes=["Question answering"],
        license="cc-by-sa-3.0",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="human-translated",
        bibtex_citation=_LAREQA_CITATION,
    )


_FLORES_LANGUAGES = tuple(sorted(normalize_lang(lang) for lang in (*FLORES_LOW_RESOURCE, *FLORES_HIGH_RESOURCE)))

_FLORES_CITATION = r"""
@article{nllb2022,
  author = {{NLLB Team} and Costa-juss{\`a}, Marta R. and others},
  journal = {arXiv preprint arXiv:2207.04672},
  title = {No Language Left Behind: Scaling Human-Centered Machine Translation},
  year = {2022},
}

@inproceedings{adelani-etal-2024-sib,
  author = {Adelani, David Ifeoluwa and Liu, Hannah and Shen, Xiaoyu and Vassilyev, Nikita and Alabi, Jesujoba O. and
            Mao, Yanke and Gao, Haonan and Lee, En-Shiun Annie},
  booktitle = {Proceedings of the 18th Conference of the European Chapter of the Association for Computational Linguistics},
  title = {{SIB}-200: A Simple, Inclusive, and Big Evaluation Dataset for Topic Classification in 200+ Languages and Dialects},
  year = {2024},
}
"""  # noqa: E501 (the citation as published)


class FloresLowResourceRetrieval(ParallelRetrievalTask):
    benchmark_languages = _FLORES_LANGUAGES
    pivot = "en"
    self_retrieval = True
    metadata = TaskMetadata(
        name="FloresLowResourceRetrieval",
        dataset={"path": "hf-hybrid/flores-low-resource", "revision": "main"},
        description=(
            "FLORES-200 sentences (the 1004 of SIB-200) in the MasakhaNEWS languages and a few high-resource ones: "
            "a sentence retrieves its translation, X->English and English->X, and its translations in every other "
            "language from one multilingual pool (its own language left out). Exact mAP over the full ranking."),
        reference="https://github.com/dadelani/sib-200",
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[SPLIT],
        eval_langs=eval_langs(list(_FLORES_LANGUAGES), "en", True),
        main_score="map",
        date=("2022-07-06", "2023-09-14"),
        domains=["Encyclopaedic", "News", "Written"],
        task_subtypes=[],
        license="cc-by-sa-4.0",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="human-translated",
        bibtex_citation=_FLORES_CITATION,
    )


PROJECT_TASKS = {cls.metadata.name: cls
                 for cls in (XQuADRParallelRetrieval, MLQARParallelRetrieval, FloresLowResourceRetrieval)}
