"""The anchors' replay: texts of several languages, the starting model's embeddings of them, and the two losses that
keep the model near those embeddings (what each is for: `hf_hybrid.training.auxiliary`).

- **Anchor**: the squared distance of a replay batch's embeddings from the starting model's (2 - 2 cos), under the
  anchor's prompts; with a pivot, only the pivot languages' texts.
- **Relational anchor**: one query language and another passage language a step, the KL from the starting model's
  query->passage score distribution (softmax at the contrastive temperature) to the model's; mined, the passages
  are the queries' nearest texts in their language under the starting model; with a relational pivot, one of the
  two languages is always a pivot language (as queries or as passages, in turn).

The starting model's embeddings are computed once, in eval mode, on the tokens training will see, and cached
(`$HF_HYBRID_CACHE/replay`, one file per prompt) keyed by its weights and the tokens, so the arms of a study embed
them once. Each step's rows are drawn from (seed, step, process), so a resumed run draws what the uninterrupted one
did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file

from hf_hybrid.config import Args, at_least
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.models.chunks import Chunks
from hf_hybrid.models.encoder import TEXT_KINDS
from hf_hybrid.models.offline import cache_dir

logger = logging.getLogger(__name__)


@dataclass
class AnchorArgs(Args):
    anchor_weight: float = field(default=0.0, metadata={
        "help": "weight of the anchor loss: a replay batch's embeddings kept near the starting model's (0: off)"})
    anchor_batch_size: int = field(default=32, metadata={"help": "replay texts per step"})
    anchor_texts_per_language: int = field(default=256, metadata={
        "help": "replay texts drawn once per language (the starting model embeds them before training)"})
    anchor_max_length: int = field(default=128, metadata={"help": "tokens of a replay text kept"})
    anchor_prompts: list[str] = field(default_factory=lambda: ["passage"], metadata={
        "help": f"the prompts each replay text is anchored under, of {', '.join(TEXT_KINDS)}"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 0, "anchor_weight")
        at_least(self, 1, "anchor_batch_size", "anchor_texts_per_language")
        at_least(self, 8, "anchor_max_length")
        unknown = [p for p in self.anchor_prompts if p not in TEXT_KINDS]
        if unknown or not self.anchor_prompts:
            raise ConfigError(f"anchor_prompts: expected {' and/or '.join(TEXT_KINDS)}, "
                              f"got {', '.join(unknown) or 'none'}")


def _model_digest(encoder) -> str:
    """What an encoder's embeddings depend on: every weight and buffer, the pooling, the routed languages and the
    device kind."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps([encoder.pooling, encoder.normalize, sorted(encoder.routed), encoder.langid is None,
                              encoder.device.type]).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _embedded(encoder, model_digest: str, ids: list[list[int]], langs: list[str], pad_id: int,
              max_tokens: int) -> tuple[torch.Tensor, bool]:
    """The encoder's embeddings of `ids` (eval mode), from the cache when it has them (True) or computed and
    cached, keyed by the model's digest, the token ids, their languages (routing) and the chunks' token budget."""
    key = hashlib.blake2b(json.dumps([model_digest, max_tokens, langs, ids]).encode(), digest_size=20).hexdigest()
    cached = cache_dir() / "replay" / f"{key}.safetensors"
    if cached.is_file():
        return load_file(cached)["embeddings"], True
    was_training = encoder.training
    encoder.eval()
    embeddings = torch.cat([Chunks.build(ids[i : i + 256], pad_id, max_tokens).embed(
        encoder, langs[i : i + 256], encoder.device).float().cpu() for i in range(0, len(ids), 256)])
    encoder.train(was_training)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.stem}.{os.getpid()}.partial")
    save_file({"embeddings": embeddings}, partial)
    os.replace(partial, cached)  # whole or absent, also with several processes
    return embeddings, False


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + rank)


def anchor_loss(embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the embeddings and the starting model's (2 - 2 cos when both are unit)."""
    return (embeddings.float() - targets).pow(2).sum(-1).mean()


def relation_loss(queries: torch.Tensor, passages: torch.Tensor, target_queries: torch.Tensor,
                  target_passages: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL from the starting model's query->passage score distributions to the model's, per query."""
    scores = queries.float() @ passages.float().T / temperature
    targets = target_queries @ target_passages.T / temperature
    return torch.nn.functional.kl_div(scores.log_softmax(-1), targets.log_softmax(-1), log_target=True,
                                      reduction="batchmean")


class AnchorReplay:
    """Replay texts (token ids under each prompt kind, languages) with the starting model's embeddings of them.
    `ids` and `targets` hold every text under `kinds[0]`, then under `kinds[1]`; the anchor draws from the first
    `anchored` kinds (its prompts), the relational anchor from the query and passage kinds."""

    def __init__(self, ids: list[list[int]], langs: list[str], targets: torch.Tensor, batch_size: int,
                 pad_id: int, max_tokens: int, seed: int, rank: int = 0, max_rows: int | None = None,
                 kinds: tuple[str, ...] = ("passage",), anchored: int = 1, temperature: float | None = None,
                 seen: frozenset[str] = frozenset(), pivot: frozenset[str] | None = None, mined: bool = False,
                 relation_pivot: frozenset[str] | None = None):
        self.ids, self.langs, self.targets, self.seen, self.mined = ids, langs, targets, seen, mined
        self.relation_pivot = relation_pivot
        self.batch_size, self.pad_id, self.max_tokens, self.max_rows = batch_size, pad_id, max_tokens, max_rows
        self.seed, self.rank, self.kinds, self.anchored, self.temperature = seed, rank, kinds, anchored, temperature
        self.texts_count = len(langs) // len(kinds)  # each text is in ids once per kind
        self.by_lang: dict[str, list[int]] = {}
        for i, lang in enumerate(langs[: self.texts_count]):
            self.by_lang.setdefault(lang, []).append(i)
        # the rows the anchor draws from: every text under the anchor's prompts, or the pivot languages' texts
        self.anchor_pool = torch.tensor([i for i in range(self.texts_count * anchored)
                                         if pivot is None or langs[i] in pivot], dtype=torch.long)

    @classmethod
    @torch.no_grad()
    def build(cls, encoder, texts: dict[str, list[str]], args: AnchorArgs, max_tokens: int, seed: int,
              rank: int = 0, max_rows: int | None = None, anchor: bool = True,
              relation_temperature: float | None = None, seen: frozenset[str] = frozenset(),
              pivot: frozenset[str] | None = None, mined: bool = False,
              relation_pivot: frozenset[str] | None = None) -> AnchorReplay:
        """The starting model's embeddings of `texts` under each prompt (eval mode: no dropout), on the tokens
        training will see: the anchor's prompts (when `anchor`; only the `pivot` languages' texts are anchored
        when given), and query and passage for the relational anchor (when a `relation_temperature` is given),
        which skips pairs of two `seen` languages, `mined` takes the queries' nearest passages, and with a
        `relation_pivot` pairs a pivot language with another one every step."""
        if relation_temperature is not None and seen and set(texts) <= seen:
            raise DataError(f"relation_pairs unseen: every replay language ({', '.join(texts)}) is a training "
                            f"language; add --anchor_text sources in other languages")
        if pivot is not None and not pivot <= set(texts):
            raise DataError(f"anchor_pivot: no replay text in {', '.join(sorted(pivot - set(texts)))} (replay "
                            f"languages: {', '.join(texts)})")
        if relation_temperature is not None and relation_pivot is not None and (
                not relation_pivot <= set(texts) or set(texts) <= relation_pivot):
            raise DataError(f"relation_pivot {', '.join(sorted(relation_pivot))}: expected replay languages, with "
                            f"another replay language beside them (replay languages: {', '.join(texts)})")
        texts_count = sum(len(docs) for docs in texts.values())
        if relation_temperature is not None and texts_count < 2:
            raise DataError(f"the relational anchor needs at least 2 replay texts, got {texts_count}")
        anchored = list(args.anchor_prompts) if anchor else []
        kinds = anchored + [k for k in TEXT_KINDS if relation_temperature is not None and k not in anchored]
        text_langs = [lang for lang, docs in texts.items() for _ in docs]
        pad_id = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else 0
        digest, ids, targets, hits = _model_digest(encoder), [], [], []
        for kind in kinds:  # cached per prompt: anchored and relational runs share the parts of the prompts they share
            kind_ids = [row for docs in texts.values()
                        for row in encoder.token_ids(docs, kind, args.anchor_max_length)]
            embeddings, hit = _embedded(encoder, digest, kind_ids, text_langs, pad_id, max_tokens)
            ids, targets, hits = ids + kind_ids, targets + [embeddings], hits + [kind] * hit
        langs = text_langs * len(kinds)
        logger.info("anchor: %d replay texts in %d languages (%s), under the %s prompts%s; the starting model's "
                    "embeddings under %s from the cache (%s)", texts_count, len(texts), ", ".join(texts),
                    " and ".join(kinds), "" if relation_temperature is None else ", with the relational anchor",
                    " and ".join(hits) or "no prompt", cache_dir() / "replay")
        return cls(ids, langs, torch.cat(targets), min(args.anchor_batch_size, texts_count * max(len(anchored), 1)),
                   pad_id, max_tokens, seed, rank, max_rows, tuple(kinds), len(anchored), relation_temperature, seen,
                   pivot, mined, relation_pivot)

    def _rows(self, picked: list[int]) -> dict:
        return {"chunks": Chunks.build([self.ids[i] for i in picked], self.pad_id, self.max_tokens, self.max_rows),
                "langs": [self.langs[i] for i in picked], "targets": self.targets[picked]}

    def batch(self, step: int) -> dict:
        """The step's anchor rows (`batch_size` texts under the anchor's prompts) and relational rows (half the
        batch of one language as queries, half of another language as passages, not both `seen`, one of them a
        relational pivot when there is one; `mined`: each query's nearest passage first)."""
        batch = {}
        if self.anchored:
            picked = torch.randperm(len(self.anchor_pool), generator=step_generator(self.seed, step, self.rank))
            batch.update(self._rows(self.anchor_pool[picked[: self.batch_size]].tolist()))
        if self.temperature is not None:
            generator = step_generator(self.seed + 1, step, self.rank)
            query_lang, passage_lang = self._languages(generator)
            half = max(1, self.batch_size // 2)
            queries, passages = ([self.by_lang[lang][i] for i in torch.randperm(
                len(self.by_lang[lang]), generator=generator)] for lang in (query_lang, passage_lang))
            if query_lang == passage_lang:  # one replay language: two halves of its texts
                half = min(half, len(queries) // 2)
                queries, passages = queries[:half], queries[half:]
            query_at, passage_at = (self.texts_count * self.kinds.index(kind) for kind in ("query", "passage"))
            if self.mined and query_lang != passage_lang:
                passages = self._nearest(query_at, passage_at, queries[:half], passages, half)
            batch["relation"] = {"queries": self._rows([query_at + i for i in queries[:half]]),
                                 "passages": self._rows([passage_at + i for i in passages[:half]])}
        return batch

    def _languages(self, generator: torch.Generator) -> tuple[str, str]:
        """A step's query and passage languages: a pivot and another language, in an order drawn, with a
        relational pivot; else any language, and another one that is not `seen` with it."""
        def draw(options: list[str]) -> str:
            return options[torch.randint(len(options), (1,), generator=generator).item()]
        langs = sorted(self.by_lang)
        if self.relation_pivot:
            pivot = draw([lang for lang in langs if lang in self.relation_pivot])
            other = draw([lang for lang in langs if lang not in self.relation_pivot
                          and not {lang, pivot} <= self.seen] or [lang for lang in langs if lang != pivot])
            return (pivot, other) if torch.randint(2, (1,), generator=generator).item() else (other, pivot)
        query_lang = draw(langs)
        return query_lang, draw([lang for lang in langs if lang != query_lang and not {lang, query_lang} <= self.seen]
                                or langs)

    def _nearest(self, query_at: int, passage_at: int, queries: list[int], shuffled: list[int],
                 count: int) -> list[int]:
        """`count` passages: the queries' nearest `shuffled` texts under the starting model, then the others in
        their shuffled order."""
        scores = self.targets[[query_at + i for i in queries]] @ self.targets[[passage_at + i for i in shuffled]].T
        nearest = list(dict.fromkeys(shuffled[j] for j in scores.argmax(-1).tolist()))
        taken = set(nearest)
        return (nearest + [i for i in shuffled if i not in taken])[:count]

    def loss(self, model, batch: dict, device) -> torch.Tensor:
        embeddings = batch["chunks"].embed(model, batch["langs"], device)
        return anchor_loss(embeddings, batch["targets"].to(device))

    def relation_loss(self, model, batch: dict, device) -> torch.Tensor:
        queries, passages = (batch["relation"][side] for side in ("queries", "passages"))
        return relation_loss(queries["chunks"].embed(model, queries["langs"], device),
                             passages["chunks"].embed(model, passages["langs"], device),
                             queries["targets"].to(device), passages["targets"].to(device), self.temperature)
