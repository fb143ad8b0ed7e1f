"""Domain-adaptive pretraining (DAPT): masked-LM training of one LoRA adapter per language.

For each language: the encoder gets an MLM head (its own if the checkpoint has one; else one whose
decoder is tied to the word embeddings, fitted first on the language's text with the encoder
frozen), the held-out MLM loss is measured, a fresh LoRA adapter is trained with the head, and the
held-out loss is measured again on the same masks. With `--anchor_weight`, each adapter step also keeps the
retriever's embeddings of a replay batch of the language's training documents near the base model's (the anchor
loss of hf_hybrid.training.replay). Either way the adapter's embedding drift is measured: how far it moves the
retriever's embeddings of the held-out documents from the base model's. Each adapter is saved on its own, in peft's
layout, with `dapt.json` recording its language, base model, corpus and metrics
(see hf_hybrid.models.adapters for loading it by language).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate.utils import set_seed
from peft import get_peft_model
from safetensors.torch import save_file

from hf_hybrid.config import LoopArgs, LoraArgs, ModelArgs, at_least, check_output_dir, positive, redefault
from hf_hybrid.data.text import load_corpus
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.langid import fit_profile, save_profile
from hf_hybrid.languages import normalize_lang
from hf_hybrid.models.adapters import lora_config, save_signature
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.models.offline import hub_name
from hf_hybrid.tables import markdown_table
from hf_hybrid.training.auxiliary import with_auxiliary, with_replay
from hf_hybrid.training.loop import Loop, StepOutput, append_jsonl, make_accelerator, prepare
from hf_hybrid.training.mlm import (
    MaskedLMObjective,
    MaskingCollator,
    chunk_documents,
    fixed_batches,
    heldout_loss,
    load_mlm,
)
from hf_hybrid.training.replay import AnchorArgs, AnchorReplay, anchor_loss

MASKING = ("token", "whole-word")
LOG_FILE = "dapt_log.jsonl"


@dataclass
class DaptConfig(ModelArgs, LoraArgs, LoopArgs, AnchorArgs):
    """DAPT: the shared model, LoRA, loop and anchor arguments (LoRA rank 8, steps per language; the anchor's
    replay texts are each language's training documents), and these."""

    languages: list[str] | None = field(default=None, metadata={"help": "one adapter per language (required)"})
    text: list[str] | None = field(default=None, metadata={
        "help": "text sources: MasakhaNEWS or SIB-200 folders, files named with {lang}, datasets "
                "(see hf_hybrid.data.text)"})
    exclude: list[str] | None = field(default=None, metadata={
        "help": "evaluation benchmarks (any --data source): documents overlapping their sentences are dropped"})
    heldout_fraction: float = field(default=0.05, metadata={"help": "share of each language's documents held out"})
    min_heldout: int = field(default=8, metadata={"help": "fewest held-out documents a language may have"})
    max_heldout_sequences: int = field(default=128, metadata={"help": "held-out sequences scored per language"})
    masking: str = field(default="token", metadata={"help": "token or whole-word"})
    mask_rate: float = field(default=0.15, metadata={"help": "share of the tokens (or words) masked"})
    max_seq_length: int = field(default=128, metadata={"help": "tokens per training sequence"})
    head_steps: int = field(default=100, metadata={
        "help": "steps fitting a newly initialised MLM head (encoder frozen) before the 'before' loss"})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "learning rate of those head steps"})
    eval_batch_size: int = field(default=32, metadata={"help": "sequences per held-out loss batch"})
    resume: bool = field(default=False, metadata={
        "help": "keep the adapters output_dir holds already (a language whose dapt.json exists is not trained again)"})
    batch_size: int = redefault(LoopArgs, "batch_size", 16)
    max_steps: int = redefault(LoopArgs, "max_steps", 200, help="adapter training steps per language")
    learning_rate: float = redefault(LoopArgs, "learning_rate", 5e-4)
    weight_decay: float = redefault(LoopArgs, "weight_decay", 0.0)
    warmup_ratio: float = redefault(LoopArgs, "warmup_ratio", 0.06)
    output_dir: str = redefault(LoopArgs, "output_dir", "outputs/dapt")
    lora_r: int = redefault(LoraArgs, "lora_r", 8)
    lora_alpha: int = redefault(LoraArgs, "lora_alpha", 16)

    def __post_init__(self):
        super().__post_init__()
        if self.masking not in MASKING:
            raise ConfigError(f"masking must be one of {', '.join(MASKING)}, got {self.masking!r}")
        if not 0.0 < self.mask_rate < 1.0:
            raise ConfigError(f"mask_rate must be in (0, 1), got {self.mask_rate}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        at_least(self, 1, "max_heldout_sequences", "min_heldout", "eval_batch_size")
        at_least(self, 0, "head_steps")
        positive(self, "head_learning_rate")
        if self.max_seq_length < 8:
            raise ConfigError(f"max_seq_length must be at least 8, got {self.max_seq_length}")


def shuffled_batches(chunks: list[dict], batch_size: int, collator, generator) -> Iterator[dict]:
    """Masked batches without end, each pass over the chunks in a new random order."""
    order, position = [], 0
    while True:
        if position + batch_size > len(order):
            order, position = torch.randperm(len(chunks), generator=generator).tolist(), 0
        yield collator([chunks[i] for i in order[position : position + batch_size]], generator)
        position += batch_size


def masked_lm_step(device):
    """`forward_backward` of the loop: the mean cross-entropy over the masked tokens of one batch."""
    def forward_backward(model, batch, backward) -> StepOutput:
        batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}  # not the replay batch
        loss_sum, n = model(**batch)
        loss = loss_sum / n
        backward(loss)
        return StepOutput(loss.detach(), len(batch["input_ids"]), int(batch["attention_mask"].sum()))

    return forward_backward


def train_stage(accelerator, objective, params, chunks, collator, cfg: DaptConfig, steps: int, lr: float,
                desc: str, log, anchor: AnchorReplay | None = None, encoder: Encoder | None = None) -> float:
    """`steps` optimizer steps of `params` over this process's share of the chunks, with `anchor`'s loss through
    `encoder` (weighted by cfg.anchor_weight) beside the masked LM when given; returns tokens per second."""
    model, optimizer, scheduler = prepare(accelerator, objective, params, cfg, steps, lr)
    generator = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
    per_rank = chunks[accelerator.process_index :: accelerator.num_processes]
    if len(per_rank) < cfg.batch_size:
        raise DataError(f"{desc}: {len(per_rank)} training sequences per process, fewer than one batch of "
                        f"{cfg.batch_size}")
    loop = Loop(accelerator, model, optimizer, scheduler, cfg.logging_steps, cfg.max_grad_norm, log, desc=desc,
                examples_name="sequences", extra={"stage": desc})
    batches = with_replay(shuffled_batches(per_rank, cfg.batch_size, collator, generator), 0, anchor, None)
    forward_backward = with_auxiliary(masked_lm_step(accelerator.device), accelerator, anchor, cfg.anchor_weight,
                                      None, 0.0, embedder=encoder)
    window = loop.run(batches, forward_backward, steps)
    return window.tokens / window.seconds


@dataclass
class LanguageRun:
    """One language's model, head and sequences, ready for its stages; `encoder` is the retriever's view of the
    same model (its pooling, normalisation and prefixes), for the anchor and the drift."""

    lang: str
    objective: MaskedLMObjective
    encoder: Encoder
    collator: MaskingCollator
    new_head: bool
    train_chunks: list
    heldout_chunks: list
    heldout: list


def _language_run(accelerator, cfg: DaptConfig, lang: str, corpus: dict) -> LanguageRun:
    set_seed(cfg.seed)
    mlm, tokenizer, new_head = load_mlm(cfg.model)
    if cfg.gradient_checkpointing:
        mlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    collator = MaskingCollator(tokenizer, cfg.masking, cfg.mask_rate)
    train_chunks = chunk_documents(tokenizer, corpus["train"], cfg.max_seq_length)
    heldout_chunks = chunk_documents(tokenizer, corpus["heldout"], cfg.max_seq_length)[: cfg.max_heldout_sequences]
    if not heldout_chunks:
        raise DataError(f"{lang}: the held-out text is shorter than one sequence of {cfg.max_seq_length} tokens")
    heldout = fixed_batches(collator, heldout_chunks, cfg.eval_batch_size, cfg.seed)
    objective = MaskedLMObjective(mlm).to(accelerator.device)
    for p in objective.encoder.parameters():
        p.requires_grad_(False)
    accelerator.print(f"{lang}: {len(train_chunks)} training and {len(heldout_chunks)} held-out sequences "
                      f"of {cfg.max_seq_length} tokens ({corpus['stats']['documents']} documents)")
    encoder = Encoder.around(objective.encoder, tokenizer, cfg.model)
    return LanguageRun(lang, objective, encoder, collator, new_head, train_chunks, heldout_chunks, heldout)


def replay_texts(cfg: DaptConfig, corpus: dict) -> list[str]:
    """The anchor's replay texts: up to anchor_texts_per_language of the training documents (never held-out ones)."""
    docs = corpus["train"]
    return random.Random(cfg.seed).sample(docs, min(cfg.anchor_texts_per_language, len(docs)))


@torch.no_grad()
def embedding_drift(encoder: Encoder, peft_encoder, docs: list[str]) -> dict:
    """How far the adapter moved the retriever's passage embeddings of `docs` from the base model's (adapter off)."""
    adapted = encoder.encode(docs, "passage")
    with peft_encoder.disable_adapter():
        base = encoder.encode(docs, "passage")
    return {"documents": len(docs),
            "mean_cosine_to_base": torch.nn.functional.cosine_similarity(adapted, base).mean().item(),
            "mean_squared_distance": anchor_loss(adapted, base).item()}


def adapt_language(accelerator, cfg: DaptConfig, run: LanguageRun, corpus: dict, log) -> tuple[dict, object]:
    """Fit a new head (encoder frozen), then a LoRA adapter with the head (and the anchor, if weighted); the
    held-out loss before, after, and after with the adapter off, and the embedding drift of the held-out
    documents. Returns the language's measurements and the peft encoder."""
    objective, device = run.objective, accelerator.device
    head_params = list(objective.head_parameters().values())
    head_speed = None
    if run.new_head and cfg.head_steps:
        objective.freeze_encoder = True
        head_speed = train_stage(accelerator, objective, head_params, run.train_chunks, run.collator, cfg,
                                 cfg.head_steps, cfg.head_learning_rate, f"{run.lang} head", log)
        objective.freeze_encoder = False
    before = heldout_loss(objective, run.heldout, device)
    anchor = None
    if cfg.anchor_weight > 0:  # the base model's embeddings, before the adapter exists
        anchor = AnchorReplay.build(run.encoder, {run.lang: replay_texts(cfg, corpus)}, cfg,
                                    cfg.anchor_batch_size * cfg.anchor_max_length, cfg.seed, accelerator.process_index)
    peft_encoder = get_peft_model(objective.encoder, lora_config(  # injects into the MLM model in place
        cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules), adapter_name=run.lang)
    for p in head_params:
        p.requires_grad_(True)
    adapter_params = [p for p in objective.parameters() if p.requires_grad]
    started = time.perf_counter()
    speed = train_stage(accelerator, objective, adapter_params, run.train_chunks, run.collator, cfg, cfg.max_steps,
                        cfg.learning_rate, f"{run.lang} adapter", log, anchor, run.encoder)
    seconds = time.perf_counter() - started
    after = heldout_loss(objective, run.heldout, device)
    with peft_encoder.disable_adapter():  # the head kept training with the adapter: what it alone explains
        after_head_only = heldout_loss(objective, run.heldout, device)
    drift = embedding_drift(run.encoder, peft_encoder, corpus["heldout"])
    accelerator.print(f"{run.lang}: held-out MLM loss {before['mlm_loss']:.4f} -> {after['mlm_loss']:.4f}, "
                      f"embeddings' cosine to the base {drift['mean_cosine_to_base']:.4f} ({speed:.0f} tokens/s)")
    measured = {"heldout": {"sequences": len(run.heldout_chunks), "before": before, "after": after,
                            "after_without_adapter": after_head_only},
                "embedding_drift": drift,
                "tokens_per_s": speed, "head_tokens_per_s": head_speed, "train_seconds": seconds}
    return measured, peft_encoder


def language_record(cfg: DaptConfig, run: LanguageRun, corpus: dict, measured: dict, processes: int) -> dict:
    """What `dapt.json` records of one adapter."""
    anchor = None if cfg.anchor_weight == 0 else {
        "weight": cfg.anchor_weight, "replay_texts": len(replay_texts(cfg, corpus)),
        "batch_size": cfg.anchor_batch_size, "max_length": cfg.anchor_max_length}
    return {
        "language": run.lang, "base_model": cfg.model, "model_type": run.objective.mlm.config.model_type,
        "corpus": {"text": cfg.text, "exclude": cfg.exclude or [], **corpus["stats"]},
        "masking": cfg.masking, "mask_rate": cfg.mask_rate, "max_seq_length": cfg.max_seq_length,
        "steps": cfg.max_steps, "batch_size": cfg.batch_size * processes,
        "head": "initialised, tied to the word embeddings" if run.new_head else "the checkpoint's",
        "head_steps": cfg.head_steps if run.new_head else 0,
        "anchor": anchor,
        **measured,
    }


def adapter_bytes(adapter_dir: Path) -> int:
    return sum(f.stat().st_size for f in adapter_dir.glob("adapter_model.*"))


def save_adapter(accelerator, cfg: DaptConfig, run: LanguageRun, peft_encoder, corpus: dict, record: dict,
                 output_dir: Path) -> Path:
    """The adapter in peft's layout under output_dir/adapters/<lang>/, with its MLM head, base-model
    signature, language profile and dapt.json."""
    adapter_dir = output_dir / "adapters" / run.lang
    unwrapped = accelerator.unwrap_model(peft_encoder)
    # the base as a user would load it, not this machine's cache folder of the offline default
    unwrapped.peft_config[run.lang].base_model_name_or_path = hub_name(cfg.model)
    # no embedding layers are adapted, so peft need not ask the Hub whether the vocabulary changed
    unwrapped.save_pretrained(str(output_dir / "adapters"), selected_adapters=[run.lang], save_embedding_layers=False)
    save_file({n: p.detach().cpu().contiguous() for n, p in run.objective.head_parameters().items()},
              str(adapter_dir / "mlm_head.safetensors"))
    save_signature(run.objective.mlm, adapter_dir)
    save_profile(fit_profile(corpus["train"], corpus["heldout"]), adapter_dir)
    record["adapter_bytes"] = adapter_bytes(adapter_dir)
    (adapter_dir / "dapt.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return adapter_dir


def _load_corpora(cfg: DaptConfig) -> dict[str, dict]:
    """Every language's text, checked before any training starts."""
    if not cfg.languages:
        raise ConfigError("give the languages to adapt to (--languages hau yor ...)")
    if not cfg.text:
        raise ConfigError("give DAPT text sources (--text ../shared/data/masakhanews ...)")
    languages = list(dict.fromkeys(normalize_lang(lang) for lang in cfg.languages))
    return {lang: load_corpus(cfg.text, lang, cfg.exclude, cfg.heldout_fraction, cfg.min_heldout, cfg.seed)
            for lang in languages}


def train_dapt(cfg: DaptConfig) -> Path:
    """Train and save one adapter per language under output_dir/adapters/<lang>/; returns output_dir."""
    check_output_dir(cfg.output_dir)
    corpora = _load_corpora(cfg)
    accelerator = make_accelerator(cfg)
    output_dir = Path(cfg.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "dapt_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        if not cfg.resume:
            (output_dir / LOG_FILE).unlink(missing_ok=True)

    def log(record: dict) -> None:
        append_jsonl(accelerator, output_dir / LOG_FILE, record)

    summary = {}
    for lang, corpus in corpora.items():
        record_file = output_dir / "adapters" / lang / "dapt.json"
        if cfg.resume and record_file.is_file():  # written last: the adapter is complete
            accelerator.print(f"{lang}: adapter saved already ({record_file}), not trained again")
            summary[lang] = json.loads(record_file.read_text())
            # records written before dapt.json held the adapter's size
            summary[lang].setdefault("adapter_bytes", adapter_bytes(record_file.parent))
            continue
        run = _language_run(accelerator, cfg, lang, corpus)
        measured, peft_encoder = adapt_language(accelerator, cfg, run, corpus, log)
        record = language_record(cfg, run, corpus, measured, accelerator.num_processes)
        if accelerator.is_main_process:
            save_adapter(accelerator, cfg, run, peft_encoder, corpus, record, output_dir)
        summary[lang] = record
        accelerator.free_memory()
    if accelerator.is_main_process:
        (output_dir / "dapt_results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        (output_dir / "dapt_results.md").write_text(dapt_table(summary) + "\n")
        accelerator.print(dapt_table(summary))
    accelerator.wait_for_everyone()
    return output_dir


def dapt_table(summary: dict) -> str:
    rows = []
    for lang, r in summary.items():
        b, a = r["heldout"]["before"]["mlm_loss"], r["heldout"]["after"]["mlm_loss"]
        head_only = r["heldout"].get("after_without_adapter", {}).get("mlm_loss")
        size = f"{r['adapter_bytes'] / 1e6:.2f}" if "adapter_bytes" in r else ""
        cosine = r.get("embedding_drift", {}).get("mean_cosine_to_base")  # absent from records before the drift
        anchor = (r.get("anchor") or {}).get("weight", 0)
        rows.append([lang, r["corpus"]["documents"], f"{r['tokens_per_s']:.0f}", f"{b:.4f}", f"{a:.4f}",
                     f"{a - b:+.4f}", "" if head_only is None else f"{head_only:.4f}",
                     "" if cosine is None else f"{cosine:.4f}", f"{anchor:g}", size])
    return markdown_table(["language", "documents", "train tokens/s", "held-out MLM loss before", "after", "change",
                           "after, adapter off (head alone)", "held-out embeddings' cosine to base", "anchor weight",
                           "adapter MB"], rows)
