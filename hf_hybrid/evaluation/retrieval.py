"""Parallel retrieval benchmarks in the three settings of LAReQA and the hybrid-batch paper.

- monolingual: queries and candidates in one language (one setting per language);
- cross-lingual: queries in X, candidates in Y != X (one setting per ordered pair);
- multilingual: candidates of all languages in one pool; a question's relevant candidates are
  its answer in every language, so mAP rewards ranking all of them above everything else.

mAP is LAReQA's: average precision over a query's relevant candidates, averaged over queries
(with one relevant candidate it is the reciprocal rank). nDCG@10 and Recall@k beside it.
Each language's queries and candidates are encoded once and reused by every setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_hybrid import tables
from hf_hybrid.errors import ConfigError, HfHybridError
from hf_hybrid.evaluation.bias import (
    rank_correlations,
    rank_distance,
    same_language_share,
)

SETTINGS = ("monolingual", "cross-lingual", "multilingual")
RECALL_KS = (1, 5, 10, 100)
# the per-language bias measures that also get a `<key>_mean` over languages
BIAS_MEANS = ("same_language_share", "same_language_preference", "rank_distance", "rank_correlation")


@dataclass
class ParallelBenchmark:
    """queries[l]: (group_id, text); candidates[l]: texts; relevant[l][group_id]: index in candidates[l].

    With `self_retrieval` (a sentence retrieves its translations, as on FLORES: every query is its own
    passage) there is no monolingual setting, a query's own language is left out of its multilingual
    pool, and cross-lingual pairs are those with `pivot` (X->pivot, pivot->X) when it is set.
    """

    languages: list[str]
    queries: dict[str, list[tuple[str, str]]]
    candidates: dict[str, list[str]]
    relevant: dict[str, dict[str, int]]
    self_retrieval: bool = False
    pivot: str | None = None

    def cross_lingual_pairs(self) -> list[tuple[str, str]]:
        return [(x, y) for x in self.languages for y in self.languages
                if x != y and (self.pivot is None or self.pivot in (x, y))]

    def pool_languages(self, query_lang: str) -> list[str]:
        """The candidate languages of the multilingual pool for queries in `query_lang`."""
        return [lang for lang in self.languages if not (self.self_retrieval and lang == query_lang)]

    @classmethod
    def from_rows(cls, rows, extra_candidates: dict[str, list[str]] | None = None) -> ParallelBenchmark:
        """From ParallelQA rows: candidates are the distinct passages of each language, plus any
        `extra_candidates` (e.g. every sentence of XQuAD-R's paragraphs, as LAReQA ranks them)."""
        languages = sorted(set(rows["lang"]))
        queries = {lang: [] for lang in languages}
        candidates = {lang: [] for lang in languages}
        index = {lang: {} for lang in languages}
        relevant = {lang: {} for lang in languages}

        def candidate_index(lang: str, text: str) -> int:
            if text not in index[lang]:
                index[lang][text] = len(candidates[lang])
                candidates[lang].append(text)
            return index[lang][text]

        columns = (rows["lang"], rows["group_id"], rows["query"], rows["passage"])
        for lang, group, query, passage in zip(*columns, strict=True):
            queries[lang].append((group, query))
            relevant[lang][group] = candidate_index(lang, passage)
        for lang, texts in (extra_candidates or {}).items():
            if lang in index:
                for text in texts:
                    candidate_index(lang, text)
        self_retrieval = all(q == p for q, p in zip(rows["query"], rows["passage"], strict=True))
        pivot = "en" if self_retrieval and "en" in languages else None
        return cls(languages, queries, candidates, relevant, self_retrieval, pivot)


def _ranks(scores: torch.Tensor, relevant_cols: torch.Tensor) -> torch.Tensor:
    """1-based rank of each relevant column among all columns (ties counted in the query's favour)."""
    rel_scores = scores.gather(1, relevant_cols)
    return 1 + (scores.unsqueeze(1) > rel_scores.unsqueeze(2)).sum(-1)


def _n_relevant(ranks: torch.Tensor, n_relevant: torch.Tensor | None) -> torch.Tensor:
    if n_relevant is None:
        return torch.full((len(ranks),), float(ranks.shape[1]), dtype=torch.double)
    return n_relevant.double()


def average_precision(ranks: torch.Tensor, n_relevant: torch.Tensor | None = None) -> torch.Tensor:
    """Each query's average precision from the ranks of its relevant candidates (see metrics_from_ranks)."""
    ranks = ranks.double().sort(dim=1).values
    position = torch.arange(1, ranks.shape[1] + 1, dtype=torch.double)
    return (position / ranks).sum(1) / _n_relevant(ranks, n_relevant)


def metrics_from_ranks(ranks: torch.Tensor, n_relevant: torch.Tensor | None = None) -> dict[str, float]:
    """mAP, nDCG@10 and Recall@k from the ranks [queries, relevant per query] of relevant candidates.

    +inf marks a relevant candidate that was not ranked, or pads a query with fewer relevant ones;
    `n_relevant` (per query) then says how many each query has (default: all columns).
    """
    ranks = ranks.double().sort(dim=1).values
    n_rel = _n_relevant(ranks, n_relevant)
    ap = average_precision(ranks, n_relevant)
    gains = torch.where(ranks <= 10, 1.0 / torch.log2(ranks + 1), torch.zeros_like(ranks)).sum(1)
    # ideal DCG of 1..10 relevant
    ideal_at = torch.cumsum(1.0 / torch.log2(torch.arange(2, 12, dtype=torch.double)), 0)
    ideal = ideal_at[n_rel.clamp(1, 10).long() - 1]
    out = {"map": ap.mean().item(), "ndcg@10": (gains / ideal).mean().item()}
    for k in RECALL_KS:
        out[f"recall@{k}"] = ((ranks <= k).sum(1) / n_rel).mean().item()
    return out


def _average(per_setting: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = next(iter(per_setting.values())).keys()
    return {k: sum(m[k] for m in per_setting.values()) / len(per_setting) for k in keys}


def check_settings(settings) -> None:
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} (expected {', '.join(SETTINGS)})")


def evaluate_parallel(encoder, bench: ParallelBenchmark, settings=SETTINGS, batch_size: int = 128,
                      progress: bool = True, query_chunk: int = 512, max_tokens: int | None = None,
                      per_query: bool = False) -> dict:
    """Encode each language's queries and candidates once, then score every requested setting. `batch_size` caps
    the texts of an encoding batch; `max_tokens`, when given, its padded tokens (the encoder's default otherwise,
    and an encoder without a token budget works too). `per_query` adds each query's AP (`results["per_query"]`:
    the groups of each query language, and the APs by setting and key in that order), for paired bootstraps."""
    check_settings(settings)
    device = encoder.device
    budget = {} if max_tokens is None else {"max_tokens": max_tokens}

    def embed(texts: list[str], kind: str, lang: str) -> torch.Tensor:
        return encoder.encode(texts, kind, batch_size, progress, lang, **budget).to(device)

    q_emb = {lang: embed([t for _, t in bench.queries[lang]], "query", lang) for lang in bench.languages}
    c_emb = {lang: embed(bench.candidates[lang], "passage", lang) for lang in bench.languages}
    for kind, emb in (("queries", q_emb), ("candidates", c_emb)):
        broken = [lang for lang in bench.languages if not torch.isfinite(emb[lang]).all()]
        if broken:
            raise HfHybridError(f"the model embedded {kind} in {', '.join(broken)} to NaN or inf")
    return ParallelScorer(bench, q_emb, c_emb, query_chunk, per_query).results(settings)


class ParallelScorer:
    """Exact ranks and metrics of a benchmark from its embeddings (L2-normalised: dot product scores).

    q_emb[l] rows follow bench.queries[l]; c_emb[l] rows follow bench.candidates[l].
    """

    def __init__(self, bench: ParallelBenchmark, q_emb: dict, c_emb: dict, query_chunk: int = 512,
                 per_query: bool = False):
        self.bench, self.q_emb, self.c_emb, self.query_chunk = bench, q_emb, c_emb, query_chunk
        # with per_query: each query's AP by setting and key ("de", "de-en"), in bench.queries order
        self.per_query: dict[str, dict[str, list[float]]] | None = {} if per_query else None

    def _metrics(self, setting: str, key: str, ranks: torch.Tensor) -> dict[str, float]:
        if self.per_query is not None:
            self.per_query.setdefault(setting, {})[key] = [round(ap, 6) for ap in average_precision(ranks).tolist()]
        return metrics_from_ranks(ranks)

    def ranks(self, query_lang: str, cand_langs: list[str],
              top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Ranks [queries, len(cand_langs)] of each query's relevant candidate in each language of the
        pool of `cand_langs`, and, if top_k, the pool-language index of each query's top-k candidates."""
        bench = self.bench
        offsets, start = {}, 0
        for lang in cand_langs:
            offsets[lang] = start
            start += len(bench.candidates[lang])
        pool = torch.cat([self.c_emb[lang] for lang in cand_langs])
        device = pool.device
        pool_lang = torch.cat([torch.full((len(bench.candidates[lang]),), i)
                               for i, lang in enumerate(cand_langs)]).to(device)
        groups = [g for g, _ in bench.queries[query_lang]]
        rel = torch.tensor([[offsets[lang] + bench.relevant[lang][g] for lang in cand_langs] for g in groups],
                           device=device)
        all_ranks, top_langs = [], []
        # bound the [queries, relevant, pool] comparison tensor to about 2**27 elements
        chunk = max(1, min(self.query_chunk, 2**27 // (len(pool) * len(cand_langs))))
        for s in range(0, len(groups), chunk):
            scores = self.q_emb[query_lang][s : s + chunk] @ pool.T
            all_ranks.append(_ranks(scores, rel[s : s + chunk]).cpu())
            if top_k:
                top_langs.append(pool_lang[scores.topk(top_k, dim=1).indices].cpu())
        return torch.cat(all_ranks), (torch.cat(top_langs) if top_k else None)

    def monolingual(self, lang: str) -> dict[str, float]:
        return self._metrics("monolingual", lang, self.ranks(lang, [lang])[0])

    def cross_lingual(self, query_lang: str, cand_lang: str) -> dict[str, float]:
        return self._metrics("cross-lingual", f"{query_lang}-{cand_lang}", self.ranks(query_lang, [cand_lang])[0])

    def results(self, settings=SETTINGS) -> dict:
        check_settings(settings)
        langs = self.bench.languages
        results: dict = {"languages": langs}
        if "monolingual" in settings and not self.bench.self_retrieval:
            per = {lang: self.monolingual(lang) for lang in langs}
            results["monolingual"] = {"per_setting": per, "average": _average(per)}
        if "cross-lingual" in settings:
            per = {f"{x}-{y}": self.cross_lingual(x, y) for x, y in self.bench.cross_lingual_pairs()}
            if per:
                results["cross-lingual"] = {"per_setting": per, "average": _average(per)}
        if "multilingual" in settings:
            results["multilingual"] = self.multilingual()
        if self.per_query is not None:
            results["per_query"] = {"groups": {lang: [g for g, _ in self.bench.queries[lang]] for lang in langs},
                                    "ap": self.per_query}
        return results

    def multilingual(self) -> dict:
        """Retrieval metrics per query language in the pool of all languages, and the language-bias profile."""
        bench, langs = self.bench, self.bench.languages
        pool_size = {lang: len(bench.candidates[lang]) for lang in langs}
        per, share, distance, mean_rank = {}, {}, {}, {}
        for lang in langs:
            pool = bench.pool_languages(lang)
            own = pool.index(lang) if lang in pool else None
            ranks, top = self.ranks(lang, pool, top_k=len(pool) if own is not None else 0)
            per[lang] = self._metrics("multilingual", lang, ranks)
            if own is not None:
                share[lang] = same_language_share(top, own).mean().item()
            distance[lang] = rank_distance(ranks).mean().item()
            mean_rank[lang] = {c: ranks[:, j].double().mean().item() for j, c in enumerate(pool)}
        bias = {
            "mean_rank": mean_rank,
            "mean_rank_by_candidate_language": {c: _mean(m[c] for m in mean_rank.values() if c in m) for c in langs},
            "rank_distance": distance,
        }
        if share:  # the query's own language is in its pool
            total = sum(pool_size.values())
            blind = {lang: pool_size[lang] / total for lang in langs}
            bias.update(top_k=len(langs), same_language_share=share, language_blind_share=blind,
                        same_language_preference={lang: share[lang] / blind[lang] for lang in langs})
            if len(langs) > 1:  # parallel queries rank the same pool
                bias["rank_correlation"] = self.rank_correlation()
        for key in BIAS_MEANS:
            if key in bias:
                bias[f"{key}_mean"] = _mean(bias[key].values())
        return {"per_setting": per, "average": _average(per), "bias": bias}

    def rank_correlation(self) -> dict[str, float]:
        """Mean Spearman correlation of each language's pool ranking with its parallel queries' rankings,
        over the groups asked in every language."""
        bench, langs = self.bench, self.bench.languages
        position = {lang: {g: i for i, (g, _) in enumerate(bench.queries[lang])} for lang in langs}
        common = sorted(set.intersection(*(set(position[lang]) for lang in langs)))
        pool = torch.cat([self.c_emb[lang] for lang in langs])
        index = {lang: torch.tensor([position[lang][g] for g in common], dtype=torch.long, device=pool.device)
                 for lang in langs}
        chunk = max(1, min(self.query_chunk, 2**24 // (len(langs) * len(pool))))
        parts = []
        for s in range(0, len(common), chunk):
            queries = torch.stack([self.q_emb[lang][index[lang][s : s + chunk]] for lang in langs], dim=1)
            parts.append(rank_correlations(queries @ pool.T).cpu())
        per_query = torch.cat(parts)
        return {lang: per_query[:, i].mean().item() for i, lang in enumerate(langs)}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# the settings' mean mAP by name, as evaluation during training reports them (the best-model metrics)
MAP_METRICS = {"multilingual_map": "multilingual", "cross_lingual_map": "cross-lingual",
               "monolingual_map": "monolingual"}


def headline_metrics(results: dict) -> dict[str, float]:
    """The numbers of `evaluate_parallel`'s results that evaluation during training logs: each setting's mean mAP,
    and the multilingual pool's bias means (same-language share, preference, rank distance and correlation)."""
    metrics = {name: results[setting]["average"]["map"] for name, setting in MAP_METRICS.items()
               if setting in results}
    bias = results.get("multilingual", {}).get("bias", {})
    metrics.update({key: bias[f"{key}_mean"] for key in BIAS_MEANS if f"{key}_mean" in bias})
    return metrics


def markdown_table(results: dict, metric: str = "map") -> str:
    """The results of `evaluate_parallel` as one table: a row per setting and per bias measure, a column per
    (query) language, plus the average."""
    langs = results["languages"]
    rows = []
    for setting in SETTINGS:
        if setting not in results:
            continue
        per = results[setting]["per_setting"]
        if setting == "cross-lingual":
            values = [_mean(m[metric] for pair, m in per.items() if pair.split("-")[0] == x) for x in langs]
        else:
            values = [per[lang][metric] for lang in langs]
        rows.append([setting, *(f"{v:.3f}" for v in values), f"{results[setting]['average'][metric]:.3f}"])
    bias = results["multilingual"]["bias"] if "multilingual" in results else {}
    measures = ((f"same-language share of top-{bias.get('top_k')}", "same_language_share", ".2f"),
                ("mean rank of the relevant candidate in this language", "mean_rank_by_candidate_language", ".1f"),
                ("rank distance", "rank_distance", ".1f"), ("rank correlation", "rank_correlation", ".3f"))
    for label, key, fmt in measures:
        if key in bias:
            values = bias[key]
            rows.append([label, *(f"{values[lang]:{fmt}}" for lang in langs), f"{_mean(values.values()):{fmt}}"])
    return tables.markdown_table([f"setting ({metric})", *langs, "avg"], rows)
