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
The anchors' replay and losses are in `hf_hybrid.training.replay`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import torch
from torch.profiler import record_function

from hf_hybrid.config import at_least
from hf_hybrid.data.parallel_qa import FLORES_LOW_RESOURCE
from hf_hybrid.data.text import clean_documents
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.languages import normalize_lang
from hf_hybrid.training.mlm import MaskedLMObjective, MaskingCollator, chunk_documents, load_mlm
from hf_hybrid.training.replay import AnchorArgs, AnchorReplay, step_generator

logger = logging.getLogger(__name__)

TRAIN_TEXT = "train"  # a text source: the training rows' own queries and passages
RELATION_PAIRS = ("all", "unseen", "mined")


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
                "each other are left to the contrastive loss; 'mined': every pair, each step's passages being its "
                "queries' nearest texts in the passage language under the starting model, so the scores kept are "
                "those of its closest cross-lingual matches, not of unrelated texts)"})
    relation_pivot: list[str] | None = field(default=None, metadata={
        "help": "replay languages one side of every relational pair is in, as queries or as passages in turn "
                "(default: any two languages; e.g. en: how every other language ranks against English, and English "
                "against it, is what the relational anchor keeps)"})
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
        for loss in ("anchor", "relation"):
            weight, pivot = getattr(self, f"{loss}_weight"), getattr(self, f"{loss}_pivot")
            if weight > 0 and not self.anchor_text:
                raise ConfigError(f"{loss}_weight {weight} needs --anchor_text (text sources, or "
                                  f"'{TRAIN_TEXT}' for the training rows' texts)")
            if pivot is not None:
                if not pivot or weight <= 0:
                    raise ConfigError(f"{loss}_pivot {pivot}: expected one or more replay languages, with "
                                      f"--{loss}_weight above 0")
                setattr(self, f"{loss}_pivot", [normalize_lang(lang) for lang in pivot])
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
        generator = step_generator(self.seed, step, 0)
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
                                    frozenset(), pivot=frozenset(cfg.anchor_pivot) if cfg.anchor_pivot else None,
                                    mined=cfg.relation_pairs == "mined",
                                    relation_pivot=frozenset(cfg.relation_pivot) if cfg.relation_pivot else None)
    if cfg.mlm_weight > 0:
        if accelerator.num_processes > 1:
            raise ConfigError("mlm_weight > 0 runs in one process (its head is trained beside the DDP-wrapped "
                              "encoder): launch one process, or train without --mlm_weight")
        texts = source_texts(cfg.mlm_text, cfg.mlm_languages, train_rows, cfg.exclude,
                             cfg.mlm_sequences_per_language, seed, "mlm_text")
        mlm = JointMLM.build(encoder, model_name, texts, cfg, seed)
    return anchor, mlm
