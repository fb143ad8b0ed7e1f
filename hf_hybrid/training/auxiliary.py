"""Losses beside the contrastive one that keep what fine-tuning on a few languages would lose elsewhere.

- **Anchor** (Reimers & Gurevych 2020's student kept on its teacher): a replay batch of texts whose embeddings stay
  near the starting model's; the loss is the squared distance of the normalised embeddings (2 - 2 cos), the starting
  model's embeddings computed once, before training, on the same truncated tokens, under the passage prompt (on
  the dev split, anchoring the query prompt too cost FLORES X->en three times as much: docs/study.md).
- **Relational anchor** (score distillation, as in RocketQAv2 or ColBERTv2, from the starting model): each step
  draws a query language and a passage language of the replay texts, and keeps the fine-tuned model's
  query->passage score distribution (softmax at the contrastive temperature, over that step's passages of the one
  language) near the starting model's (KL). Unlike the anchor it lets the space move as a whole and lets languages
  move relative to each other (one language's passages are ranked at a time, so the starting model's language
  bias is not kept); it keeps how a query of one language ranks another language's text. On the dev split the
  FLORES en->X loss of hybrid training sat on the English query side: hybrid's English queries ranked the
  starting model's Oromo passages as badly as their own (docs/study.md).
- **Joint masked LM** (LASER3's MLM beside distillation; MAFT's mixed-language adaptation): a masked-LM loss on
  low-resource (and high-resource) text in the same step, on the same trainable parameters, through an MLM head whose
  decoder is the word-embedding matrix; a checkpoint without a head gets one fitted first with the encoder frozen,
  as DAPT does.

Each step's replay and MLM batches are drawn from (seed, step, process), so a resumed run draws what the
uninterrupted one did. Their texts are kept apart from evaluation text by the 8-gram check of DAPT (`--exclude`).
The starting model's embeddings of the replay texts are cached (`$HF_HYBRID_CACHE/replay`), keyed by its weights
and the tokens, so the arms of a study embed them once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file
from torch.profiler import record_function

from hf_hybrid.config import Args, at_least
from hf_hybrid.data.parallel_qa import FLORES_LOW_RESOURCE
from hf_hybrid.data.text import clean_documents
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.languages import normalize_lang
from hf_hybrid.models.chunks import Chunks
from hf_hybrid.models.encoder import TEXT_KINDS
from hf_hybrid.models.offline import cache_dir
from hf_hybrid.training.mlm import MaskedLMObjective, MaskingCollator, chunk_documents, load_mlm

logger = logging.getLogger(__name__)

TRAIN_TEXT = "train"  # a text source: the training rows' own queries and passages
RELATION_PAIRS = ("all", "unseen")


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


@dataclass
class AuxiliaryArgs(AnchorArgs):
    """The anchor and joint-MLM options of hybrid fine-tuning."""

    anchor_text: list[str] | None = field(default=None, metadata={
        "help": f"replay text sources: any DAPT text source (MasakhaNEWS, SIB-200, files, datasets) and "
                f"'{TRAIN_TEXT}' (the training rows' own texts)"})
    anchor_languages: list[str] | None = field(default=None, metadata={
        "help": "replay languages of the text sources (default: the 13 FLORES low-resource languages they have)"})
    anchor_pivot: list[str] | None = field(default=None, metadata={
        "help": "replay languages the anchor holds in place, the others left to move (default: every replay "
                "language; e.g. en: a pivot the training languages align to; the relational anchor still uses all)"})
    relation_weight: float = field(default=0.0, metadata={
        "help": "weight of the relational anchor on the --anchor_text replay texts: the starting model's "
                "query->passage score distributions, one query and one passage language per step (0: off)"})
    relation_pairs: str = field(default="all", metadata={
        "help": f"the language pairs the relational anchor keeps: {', '.join(RELATION_PAIRS)} ('unseen': "
                "pairs with a replay language the training rows lack, so the training languages' rankings of "
                "each other are left to the contrastive loss)"})
    mlm_weight: float = field(default=0.0, metadata={
        "help": "weight of a masked-LM loss on --mlm_text in the same step (0: off; one process)"})
    mlm_text: list[str] | None = field(default=None, metadata={
        "help": f"masked-LM text sources, as --anchor_text ('{TRAIN_TEXT}': the training passages)"})
    mlm_languages: list[str] | None = field(default=None, metadata={
        "help": "masked-LM languages of the text sources (default: the 13 FLORES low-resource languages they have)"})
    mlm_batch_size: int = field(default=8, metadata={"help": "masked-LM sequences per step"})
    mlm_max_length: int = field(default=128, metadata={"help": "tokens per masked-LM sequence"})
    mlm_sequences_per_language: int = field(default=512, metadata={"help": "masked-LM sequences kept per language"})
    mlm_head_steps: int = field(default=100, metadata={
        "help": "steps fitting a new MLM head (encoder frozen) when the checkpoint has none"})
    exclude: list[str] | None = field(default=None, metadata={
        "help": "evaluation benchmarks (any --data source): replay and MLM documents overlapping them are dropped"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 0, "mlm_weight", "mlm_head_steps", "relation_weight")
        if self.relation_pairs not in RELATION_PAIRS:
            raise ConfigError(f"relation_pairs: expected one of {', '.join(RELATION_PAIRS)}, got "
                              f"{self.relation_pairs!r}")
        at_least(self, 1, "mlm_batch_size", "mlm_sequences_per_language")
        at_least(self, 8, "mlm_max_length")
        for option in ("anchor_weight", "relation_weight"):
            if getattr(self, option) > 0 and not self.anchor_text:
                raise ConfigError(f"{option} {getattr(self, option)} needs --anchor_text (text sources, or "
                                  f"'{TRAIN_TEXT}' for the training rows' texts)")
        if self.anchor_pivot is not None:
            if not self.anchor_pivot or self.anchor_weight <= 0:
                raise ConfigError(f"anchor_pivot {self.anchor_pivot}: expected one or more replay languages, with "
                                  f"--anchor_weight above 0")
            self.anchor_pivot = [normalize_lang(lang) for lang in self.anchor_pivot]
        if self.mlm_weight > 0 and not self.mlm_text:
            raise ConfigError(f"mlm_weight {self.mlm_weight} needs --mlm_text (text sources, or '{TRAIN_TEXT}')")


def source_texts(sources: list[str], languages: list[str] | None, train_rows, exclude: list[str] | None,
                 per_language: int, seed: int, option: str) -> dict[str, list[str]]:
    """Up to `per_language` documents per language: the training rows' texts for 'train', and the other sources'
    documents in `languages` (default: the FLORES low-resource languages they have), those overlapping the
    `exclude` benchmarks dropped. A language asked for by name without text is an error."""
    rng = random.Random(seed)
    texts: dict[str, list[str]] = {}
    if TRAIN_TEXT in sources:
        for lang in sorted(set(train_rows["lang"])):
            rows = [i for i, row_lang in enumerate(train_rows["lang"]) if row_lang == lang]
            texts[lang] = list(dict.fromkeys([train_rows["query"][i] for i in rows] +
                                             [train_rows["passage"][i] for i in rows]))
    others = [s for s in sources if s != TRAIN_TEXT]
    asked = [normalize_lang(lang) for lang in languages] if languages else None
    for lang in asked or [normalize_lang(lang) for lang in FLORES_LOW_RESOURCE]:
        docs = clean_documents(others, lang, exclude)[0]
        if docs:
            texts[lang] = texts.get(lang, []) + docs
        elif others and asked:
            raise DataError(f"--{option}: no text in language {lang!r} in {', '.join(others)}")
    if not texts:
        raise DataError(f"--{option}: no text in {', '.join(sources)} for any language asked for")
    return {lang: rng.sample(docs, min(per_language, len(docs))) for lang, docs in texts.items()}


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


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
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
                 seen: frozenset[str] = frozenset(), pivot: frozenset[str] | None = None):
        self.ids, self.langs, self.targets, self.seen = ids, langs, targets, seen
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
              pivot: frozenset[str] | None = None) -> AnchorReplay:
        """The starting model's embeddings of `texts` under each prompt (eval mode: no dropout), on the tokens
        training will see: the anchor's prompts (when `anchor`; only the `pivot` languages' texts are anchored
        when given), and query and passage for the relational anchor (when a `relation_temperature` is given),
        which skips pairs of two `seen` languages."""
        if relation_temperature is not None and seen and set(texts) <= seen:
            raise DataError(f"relation_pairs unseen: every replay language ({', '.join(texts)}) is a training "
                            f"language; add --anchor_text sources in other languages")
        if pivot is not None and not pivot <= set(texts):
            raise DataError(f"anchor_pivot: no replay text in {', '.join(sorted(pivot - set(texts)))} (replay "
                            f"languages: {', '.join(texts)})")
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
                   pivot)

    def _rows(self, picked: list[int]) -> dict:
        return {"chunks": Chunks.build([self.ids[i] for i in picked], self.pad_id, self.max_tokens, self.max_rows),
                "langs": [self.langs[i] for i in picked], "targets": self.targets[picked]}

    def batch(self, step: int) -> dict:
        """The step's anchor rows (`batch_size` texts under the anchor's prompts) and relational rows (half the
        batch of one language as queries, half of another language as passages, not both `seen`)."""
        batch = {}
        if self.anchored:
            picked = torch.randperm(len(self.anchor_pool), generator=_step_generator(self.seed, step, self.rank))
            batch.update(self._rows(self.anchor_pool[picked[: self.batch_size]].tolist()))
        if self.temperature is not None:
            generator = _step_generator(self.seed + 1, step, self.rank)
            langs = sorted(self.by_lang)
            query_lang = langs[torch.randint(len(langs), (1,), generator=generator).item()]
            others = ([lang for lang in langs if lang != query_lang and not {lang, query_lang} <= self.seen]
                      or langs)
            passage_lang = others[torch.randint(len(others), (1,), generator=generator).item()]
            half = max(1, self.batch_size // 2)
            queries, passages = ([self.by_lang[lang][i] for i in torch.randperm(
                len(self.by_lang[lang]), generator=generator)] for lang in (query_lang, passage_lang))
            if query_lang == passage_lang:  # one replay language: two halves of its texts
                half = min(half, len(queries) // 2)
                queries, passages = queries[:half], queries[half:]
            query_at, passage_at = (self.texts_count * self.kinds.index(kind) for kind in ("query", "passage"))
            batch["relation"] = {"queries": self._rows([query_at + i for i in queries[:half]]),
                                 "passages": self._rows([passage_at + i for i in passages[:half]])}
        return batch

    def loss(self, model, batch: dict, device) -> torch.Tensor:
        embeddings = batch["chunks"].embed(model, batch["langs"], device)
        return anchor_loss(embeddings, batch["targets"].to(device))

    def relation_loss(self, model, batch: dict, device) -> torch.Tensor:
        queries, passages = (batch["relation"][side] for side in ("queries", "passages"))
        return relation_loss(queries["chunks"].embed(model, queries["langs"], device),
                             passages["chunks"].embed(model, passages["langs"], device),
                             queries["targets"].to(device), passages["targets"].to(device), self.temperature)


def plain_model(model):
    """The transformers model inside a peft wrapper (its LoRA layers in place), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class JointMLM:
    """Masked-LM sequences of several languages and DAPT's MLM objective on the encoder being trained: the MLM
    model's base is the encoder's own model, and its head is registered on the encoder as `mlm_head`, so
    checkpoints keep it and the final save leaves it out."""

    def __init__(self, objective: MaskedLMObjective, sequences: list[dict], collator: MaskingCollator,
                 batch_size: int, seed: int):
        self.objective, self.sequences, self.collator = objective, sequences, collator
        self.batch_size, self.seed = batch_size, seed

    @classmethod
    def build(cls, encoder, model_name: str, texts: dict[str, list[str]], args: AuxiliaryArgs,
              seed: int) -> JointMLM:
        mlm, tokenizer, new_head = load_mlm(model_name)
        base = plain_model(encoder.model)
        output = mlm.get_output_embeddings()
        if output is not None and output.weight is mlm.get_input_embeddings().weight:  # tied: to the trained matrix
            output.weight = base.get_input_embeddings().weight
        setattr(mlm, mlm.base_model_prefix, base)  # the encoder being trained, LoRA layers and all
        objective = MaskedLMObjective(mlm)
        encoder.add_module("mlm_head", objective.head.to(encoder.device))
        collator = MaskingCollator(tokenizer, "token", 0.15)
        sequences = []
        for lang, docs in texts.items():
            chunks = chunk_documents(tokenizer, docs, args.mlm_max_length)
            if not chunks:
                raise DataError(f"--mlm_text: the {lang} text is shorter than one sequence of "
                                f"{args.mlm_max_length} tokens")
            sequences += chunks[: args.mlm_sequences_per_language]
        logger.info("joint MLM: %d sequences of %d tokens in %d languages (%s)", len(sequences),
                    args.mlm_max_length, len(texts), ", ".join(texts))
        joint = cls(objective, sequences, collator, min(args.mlm_batch_size, len(sequences)), seed)
        if new_head and args.mlm_head_steps:
            joint.fit_head(encoder, args.mlm_head_steps)
        return joint

    def batch(self, step: int) -> dict:
        generator = _step_generator(self.seed, step, 0)
        picked = torch.randperm(len(self.sequences), generator=generator)[: self.batch_size].tolist()
        return self.collator([self.sequences[i] for i in picked], generator)

    def loss(self, batch: dict, device) -> torch.Tensor:
        """Mean cross-entropy over the masked tokens (the vocabulary projection runs at those positions only)."""
        total, count = self.objective(**{k: v.to(device) for k, v in batch.items()})
        return total / count

    def fit_head(self, encoder, steps: int, learning_rate: float = 1e-3) -> None:
        """A new head fitted on the MLM text with every other parameter frozen (its decoder is the word-embedding
        matrix, so only the transform and the bias learn), before it trains the encoder."""
        params = [p for n, p in encoder.mlm_head.named_parameters() if p.requires_grad and "decoder.weight" not in n]
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
        fitted = {id(p) for p in params}
        frozen = [p for p in encoder.parameters() if p.requires_grad and id(p) not in fitted]
        for p in frozen:  # the decoder (the word embeddings) gets no gradient to carry into the first step
            p.requires_grad_(False)
        first = last = None
        for step in range(steps):
            loss = self.loss(self.batch(-1 - step), encoder.device)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            first, last = first if first is not None else loss.item(), loss.item()
        for p in frozen:
            p.requires_grad_(True)
        logger.info("joint MLM: new head fitted in %d steps (loss %.3f -> %.3f)", steps, first, last)


def with_replay(batches, start: int, anchor: AnchorReplay | None, mlm: JointMLM | None):
    """The batches of steps start+1, start+2, ... with that step's replay and MLM batches added."""
    for step, batch in enumerate(batches, start + 1):
        if anchor is not None:
            batch["anchor"] = anchor.batch(step)
        if mlm is not None:
            batch["mlm"] = mlm.batch(step)
        yield batch


def with_auxiliary(forward_backward, accelerator, anchor: AnchorReplay | None, anchor_weight: float,
                   mlm: JointMLM | None, mlm_weight: float, embedder=None, relation_weight: float = 0.0):
    """The contrastive `forward_backward` with the anchor, relational-anchor and MLM losses before it, each with its
    own backward (memory holds one graph at a time); gradients are synchronised once, by the contrastive backward.
    The replay batch goes through `embedder` when given (DAPT: an `Encoder` around the MLM model being trained),
    else through the trained model."""
    if anchor is None and mlm is None:
        return forward_backward
    device = accelerator.device
    replay_losses = [] if anchor is None else [("anchor", anchor_weight, anchor.loss),
                                               ("relation", relation_weight, anchor.relation_loss)]

    def step(model, batch, backward):
        parts = {}
        with accelerator.no_sync(model):
            for name, weight, replay_loss in replay_losses:
                if weight > 0:
                    with record_function(name):
                        loss = replay_loss(model if embedder is None else embedder, batch["anchor"], device)
                        backward(weight * loss)
                    parts[f"{name}_loss"] = loss.detach()
            if mlm is not None:
                with record_function("mlm"):
                    loss = mlm.loss(batch["mlm"], device)
                    backward(mlm_weight * loss)
                parts["mlm_loss"] = loss.detach()
        out = forward_backward(model, batch, backward)
        out.parts.update(parts)
        return out

    return step


def build_auxiliary(cfg: AuxiliaryArgs, encoder, train_rows, accelerator, max_tokens: int, model_name: str,
                    seed: int, temperature: float, max_rows: int | None = None,
                    ) -> tuple[AnchorReplay | None, JointMLM | None]:
    """The replay and MLM streams a config asks for (None for each it does not), the encoder on its device."""
    anchor = mlm = None
    if cfg.anchor_weight > 0 or cfg.relation_weight > 0:
        texts = source_texts(cfg.anchor_text, cfg.anchor_languages, train_rows, cfg.exclude,
                             cfg.anchor_texts_per_language, seed, "anchor_text")
        anchor = AnchorReplay.build(encoder, texts, cfg, max(max_tokens, cfg.anchor_max_length), seed,
                                    accelerator.process_index, max_rows, anchor=cfg.anchor_weight > 0,
                                    relation_temperature=temperature if cfg.relation_weight > 0 else None,
                                    seen=frozenset(train_rows["lang"]) if cfg.relation_pairs == "unseen" else
                                    frozenset(), pivot=frozenset(cfg.anchor_pivot) if cfg.anchor_pivot else None)
    if cfg.mlm_weight > 0:
        if accelerator.num_processes > 1:
            raise ConfigError("mlm_weight > 0 runs in one process (its head is trained beside the DDP-wrapped "
                              "encoder): launch one process, or train without --mlm_weight")
        texts = source_texts(cfg.mlm_text, cfg.mlm_languages, train_rows, cfg.exclude,
                             cfg.mlm_sequences_per_language, seed, "mlm_text")
        mlm = JointMLM.build(encoder, model_name, texts, cfg, seed)
    return anchor, mlm
