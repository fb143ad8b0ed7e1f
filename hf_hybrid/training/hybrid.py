"""Hybrid-batch contrastive fine-tuning with accelerate: the loop behind recipes/train_hybrid.py."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate.utils import set_seed
from peft import get_peft_model
from torch.profiler import record_function
from torch.utils.data import DataLoader

from hf_hybrid.config import (
    CheckpointArgs,
    DataArgs,
    HubArgs,
    LoopArgs,
    LoraArgs,
    ModelArgs,
    at_least,
    check_output_dir,
    positive,
    redefault,
)
from hf_hybrid.data.parallel_qa import languages_of, load_parallel_qa
from hf_hybrid.data.splits import select_split
from hf_hybrid.errors import ConfigError, DataError, PushError
from hf_hybrid.hub.push import check_push_ready, push
from hf_hybrid.models.adapters import RETRIEVER, AdapterOptions, lora_config
from hf_hybrid.models.chunks import Chunks
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.models.packing import use_packing
from hf_hybrid.sampling import SAMPLERS, make_sampler
from hf_hybrid.training.auxiliary import AuxiliaryArgs, JointMLM, build_auxiliary, with_auxiliary, with_replay
from hf_hybrid.training.checkpoint import resume, save_checkpoint
from hf_hybrid.training.dev_eval import DevEvalArgs, DevEvaluation
from hf_hybrid.training.grad_cache import cached_forward_backward
from hf_hybrid.training.heap import one_malloc_arena
from hf_hybrid.training.loop import (
    Loop,
    StepOutput,
    append_jsonl,
    make_accelerator,
    peak_memory_gb,
    prepare,
    truncate_jsonl,
)
from hf_hybrid.training.loss import InBatchNegativesLoss
from hf_hybrid.training.memory import lean_training
from hf_hybrid.training.replay import AnchorReplay
from hf_hybrid.training.trackers import ReportArgs, accelerator_kwargs, start_trackers, tracked

LOG_FILE = "train_log.jsonl"


@dataclass
class HybridTrainingConfig(ModelArgs, DataArgs, LoraArgs, LoopArgs, CheckpointArgs, HubArgs, AdapterOptions,
                           AuxiliaryArgs, DevEvalArgs, ReportArgs):
    """Hybrid-batch fine-tuning: the shared model, data, LoRA, loop, checkpoint, Hub, auxiliary-loss (anchor,
    joint MLM), dev-evaluation and tracker arguments, and these."""

    sampler: str = field(default="hybrid", metadata={"help": "hybrid, x-x, x-y, en-en or random"})
    alpha: float = field(default=0.5, metadata={"help": "probability of a monolingual batch (hybrid sampler)"})
    temperature: float = field(default=0.05, metadata={"help": "softmax temperature of the contrastive loss"})
    max_query_length: int = field(default=64, metadata={"help": "query tokens kept (the rest is cut)"})
    max_passage_length: int = field(default=128, metadata={"help": "passage tokens kept (the rest is cut)"})
    hard_negatives: int = field(default=0, metadata={"help": "hard negatives per pair, from the rows' hard_negatives"})
    chunk_tokens: int | None = field(default=None, metadata={
        "help": "token budget of a chunk of a side of a batch: the real tokens of a pack, or a padded chunk's rows x "
                "its longest text (default: 128 x the longest allowed sequence for packs and on GPU; 4 x for padded "
                "chunks on CPU, where small ones ran fastest)"})
    packing: bool | None = field(default=None, metadata={
        "help": "encode each side of a batch as packs of texts with no padding at all (variable-length attention) "
                "instead of padded length-grouped chunks; the token budget then counts real tokens (default: packs "
                "where the encoder packs correctly, else padded chunks)"})
    mini_batch_size: int | None = field(default=None, metadata={
        "help": "gradient caching: encode at most this many texts at a time, so memory is bounded by the mini-batch, "
                "not the batch (the loss and gradients stay the full batch's)"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (merged when saved), not every weight"})
    freeze_embeddings: bool = field(default=False, metadata={"help": "keep the word-embedding matrix fixed"})
    output_dir: str = redefault(LoopArgs, "output_dir", "outputs/hybrid")
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    log_batches: bool = field(default=False, metadata={"help": "write each rank's batches to batches-rank<N>.jsonl"})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r} (expected one of {', '.join(SAMPLERS)})")
        positive(self, "temperature")
        at_least(self, 1, "max_query_length", "max_passage_length")
        at_least(self, 0, "hard_negatives", "num_workers")
        longest = max(self.max_query_length, self.max_passage_length)
        if self.chunk_tokens is not None and self.chunk_tokens < longest:
            raise ConfigError(f"chunk_tokens {self.chunk_tokens} is below the longest allowed sequence ({longest} "
                              "tokens, max_query_length/max_passage_length): expected at least that")
        if self.mini_batch_size is not None and not 1 <= self.mini_batch_size <= self.batch_size:
            raise ConfigError(f"mini_batch_size must be between 1 and the batch size ({self.batch_size}), "
                              f"got {self.mini_batch_size}")


class PairDataset(torch.utils.data.Dataset):
    """Indexed by (query_row, passage_row) pairs from a sampler. Every text is tokenized once,
    up front, so a training step only pads."""

    def __init__(self, rows, encoder: Encoder, max_query_length: int, max_passage_length: int,
                 hard_negatives: int = 0):
        self.query_ids = encoder.token_ids(rows["query"], "query", max_query_length)
        self.passage_ids = encoder.token_ids(rows["passage"], "passage", max_passage_length)
        self.langs, self.groups = rows["lang"], rows["group_id"]
        self.negative_ids = None
        if hard_negatives:
            if "hard_negatives" not in rows.column_names:
                raise DataError("hard_negatives > 0 but the data has no 'hard_negatives' column")
            self.negative_ids = []
            for lang, group, negatives in zip(self.langs, self.groups, rows["hard_negatives"], strict=True):
                if len(negatives or []) < hard_negatives:
                    raise DataError(f"group {group!r} ({lang}) has {len(negatives or [])} hard negatives, "
                                     f"{hard_negatives} needed")
                negatives = negatives[:hard_negatives]
                self.negative_ids.append(encoder.token_ids(negatives, "passage", max_passage_length))

    def __len__(self):
        return len(self.query_ids)

    def __getitem__(self, pair):
        q, p = pair
        item = {"query": self.query_ids[q], "passage": self.passage_ids[p], "query_lang": self.langs[q],
                "passage_lang": self.langs[p], "group_id": self.groups[q]}
        if self.negative_ids is not None:
            item["negatives"] = self.negative_ids[p]
        return item


class PairCollator:
    """Queries, then passages (positives first, then each pair's hard negatives), each side in length-grouped
    chunks of at most `max_tokens` padded tokens (and `max_rows` rows, for gradient caching), or in packs of at most
    `max_tokens` real tokens (`packed`)."""

    def __init__(self, pad_id: int, max_tokens: int, max_rows: int | None = None, packed: bool = False):
        self.pad_id, self.max_tokens, self.max_rows, self.packed = pad_id, max_tokens, max_rows, packed

    def __call__(self, items):
        passages = [it["passage"] for it in items] + [n for it in items for n in it.get("negatives", [])]
        return {
            "query": Chunks.build([it["query"] for it in items], self.pad_id, self.max_tokens, self.max_rows,
                                  self.packed),
            "passage": Chunks.build(passages, self.pad_id, self.max_tokens, self.max_rows, self.packed),
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
    lora = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    if encoder.routed:  # the retriever is trained on top of the frozen language adapters
        if cfg.lora:
            encoder.model.add_adapter(RETRIEVER, lora)
        else:
            for name, param in encoder.model.named_parameters():
                param.requires_grad_("lora_" not in name)
        encoder.route_to(None)
    elif cfg.lora:
        encoder.model = get_peft_model(encoder.model, lora)
    if cfg.freeze_embeddings:
        encoder.model.get_input_embeddings().weight.requires_grad_(False)
    lean_training(encoder.model)  # less activation memory on CPU (memory.py)
    pooler = getattr(encoder.model.base_model, "pooler", None)  # unused by pooling: no gradient, frozen for DDP
    if pooler is not None:
        pooler.requires_grad_(False)
    return encoder


def sparse_embedding_gradient(encoder: Encoder, accelerator) -> None:
    """A trained word-embedding matrix gets a sparse gradient (the rows of the batch's tokens), which the loop's
    AdamW updates row by row; under several processes it stays dense, as DDP reduces dense gradients, and so it
    does under joint MLM, whose decoder (the same matrix) projects onto every row."""
    embeddings = encoder.model.get_input_embeddings()
    embeddings.sparse = (embeddings.weight.requires_grad and accelerator.num_processes == 1
                         and not hasattr(encoder, "mlm_head"))


def get_batch_sampler(cfg: HybridTrainingConfig, data, accelerator):
    """The one place that decides what goes into a batch (this process's share of it)."""
    return make_sampler(cfg.sampler, data, cfg.batch_size, alpha=cfg.alpha, seed=cfg.seed,
                        num_replicas=accelerator.num_processes, rank=accelerator.process_index)


def chunk_budget(cfg: HybridTrainingConfig, device: torch.device, packed: bool = False) -> int:
    """--chunk_tokens, or its default: 128 times the longest sequence for packs and on GPU (a side of a batch in
    one pack, or large chunks); 4 times for padded chunks on CPU, where on 2 cores XQuAD-R batches of 32 pairs
    ran fastest at 3-4 times (docs/benchmarks.md)."""
    if cfg.chunk_tokens is not None:
        return cfg.chunk_tokens
    return (128 if packed or device.type == "cuda" else 4) * max(cfg.max_query_length, cfg.max_passage_length)


def get_dataloader(cfg: HybridTrainingConfig, data, encoder: Encoder, sampler, accelerator) -> DataLoader:
    pairs = PairDataset(data, encoder, cfg.max_query_length, cfg.max_passage_length,
                        cfg.hard_negatives)
    packed = use_packing(cfg.packing, encoder)
    return DataLoader(pairs, batch_sampler=sampler, num_workers=cfg.num_workers,
                      collate_fn=PairCollator(encoder.tokenizer.pad_token_id,
                                              chunk_budget(cfg, accelerator.device, packed), cfg.mini_batch_size,
                                              packed),
                      persistent_workers=cfg.num_workers > 0,
                      pin_memory=accelerator.device.type == "cuda")


def epochs(loader: DataLoader, sampler, start: int, set_rng=None) -> Iterator[dict]:
    """Batches without end, epoch after epoch, from batch `start` of the whole run.

    A resumed run passes `set_rng`, which puts back the random states saved at step `start`. Each new
    DataLoader iterator draws a seed from torch's global generator: the uninterrupted run drew the current
    epoch's before that step, so a run resumed within an epoch sets the states after making its iterator, and
    one resumed at an epoch's end before (the next epoch's draw comes after the saved states)."""
    step = start
    if set_rng is not None and start % len(sampler) == 0:
        set_rng()
        set_rng = None
    while True:
        sampler.set_epoch(step // len(sampler), start_batch=step % len(sampler))
        batches = iter(loader)
        if set_rng is not None:
            set_rng()
            set_rng = None
        for batch in batches:
            yield batch
            step += 1


def contrastive_step(loss_fn: InBatchNegativesLoss, accelerator, cached: bool = False):
    """`forward_backward` of the loop: in-batch negatives over the queries and passages of one batch, each side
    encoded chunk by chunk; `cached` runs it as gradient caching does (`grad_cache.py`)."""
    device = accelerator.device

    def forward_backward(model, batch, backward) -> StepOutput:
        sides = [(batch["query"], batch["meta"]["query_lang"]), (batch["passage"], batch["passage_langs"])]
        if cached:
            loss = cached_forward_backward(accelerator, model, sides, loss_fn, backward)
        else:
            with record_function("forward"):
                embeddings = [side.embed(model, langs, device) for side, langs in sides]
            with record_function("loss"):
                loss = loss_fn(*embeddings)
            with record_function("backward"):
                backward(loss)
        return StepOutput(loss.detach(), len(batch["query"]), batch["query"].tokens + batch["passage"].tokens)

    return forward_backward


def _start_files(accelerator, cfg: HybridTrainingConfig, output_dir: Path, step: int) -> None:
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for old_log in [output_dir / LOG_FILE, *output_dir.glob("batches-rank*.jsonl")]:
            if step == 0:  # a fresh run does not append to an earlier run's logs
                old_log.unlink(missing_ok=True)
            else:  # a resumed run logs the steps after its checkpoint again
                truncate_jsonl(old_log, step)
        (output_dir / "training_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    accelerator.wait_for_everyone()


def _after_step(cfg: HybridTrainingConfig, batch_log, save, dev: DevEvaluation | None = None):
    def after_step(step: int, batch: dict) -> None:
        if batch_log is not None:
            batch_log.write(json.dumps({"step": step, **batch["meta"]}) + "\n")
        if dev is not None:  # before the checkpoint, so that a run resumed from it knows this step's best
            dev.after_step(step)
        if cfg.save_steps and (step % cfg.save_steps == 0 or step == cfg.max_steps):
            save(step)

    return after_step


def _save(accelerator, model, cfg: HybridTrainingConfig, output_dir: Path, step: int, window, data,
          best: dict) -> None:
    """The model in the sentence-transformers layout, train_summary.json (with `best`: the best dev evaluation's
    step and score, whose weights the model has), and the push if asked."""
    elapsed = window.seconds
    accelerator.unwrap_model(model).save_pretrained(output_dir)
    summary = {"steps": step, "seconds": elapsed, "pairs_per_s": window.examples / elapsed if elapsed else None,
               "tokens_per_s": window.tokens / elapsed if elapsed else None,
               "rows": len(data), "groups": len(set(data["group_id"])), "languages": languages_of(data),
               "processes": accelerator.num_processes, "device": str(accelerator.device),
               "peak_memory_gb": peak_memory_gb(accelerator.device), **best}
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    kept = f"; the weights of step {best['best_step']}, the best dev {best['best_metric']} " \
           f"({best['best_score']:.4f})" if best else ""
    accelerator.print(f"saved {output_dir} ({step} steps, {summary['pairs_per_s'] or 0:.1f} pairs/s{kept})")
    if cfg.push_to_hub:
        try:
            accelerator.print(push(output_dir, cfg.push_to_hub, private=cfg.hub_private))
        except PushError as err:
            raise PushError(f"{err} (the model is saved in {output_dir}; push it later with "
                            f"`hf-hybrid push {output_dir} --repo-id {cfg.push_to_hub}`)") from None


@dataclass
class Run:
    """A hybrid training run built and prepared, ready for its loop: `train` runs it, and the benchmarks that
    time or profile the training step run the same."""

    accelerator: object
    data: object
    sampler: object
    loader: DataLoader
    model: object
    optimizer: object
    scheduler: object
    forward_backward: object
    params: list
    anchor: AnchorReplay | None = None
    mlm: JointMLM | None = None

    def batches(self, start: int = 0, set_rng=None):
        """The training batches from step `start`, with each step's replay and MLM batches."""
        return with_replay(epochs(self.loader, self.sampler, start, set_rng), start, self.anchor, self.mlm)


def build_run(cfg: HybridTrainingConfig) -> Run:
    one_malloc_arena()  # before the tokenizer's and torch's threads exist
    accelerator = make_accelerator(cfg, **accelerator_kwargs(cfg))
    set_seed(cfg.seed)
    data = load_training_data(cfg)
    sampler = get_batch_sampler(cfg, data, accelerator)
    encoder = build_encoder(cfg)
    encoder.to(accelerator.device)  # before the packing check and the optimizer (fused AdamW checks the device)
    loader = get_dataloader(cfg, data, encoder, sampler, accelerator)
    anchor, mlm = build_auxiliary(cfg, encoder, data, accelerator, chunk_budget(cfg, accelerator.device), cfg.model,
                                  cfg.seed, cfg.temperature, cfg.mini_batch_size)
    sparse_embedding_gradient(encoder, accelerator)
    params = [p for p in encoder.parameters() if p.requires_grad]
    model, optimizer, scheduler = prepare(accelerator, encoder, params, cfg, cfg.max_steps, cfg.learning_rate)
    forward_backward = contrastive_step(InBatchNegativesLoss(cfg.temperature), accelerator,
                                        cached=cfg.mini_batch_size is not None)
    forward_backward = with_auxiliary(forward_backward, accelerator, anchor, cfg.anchor_weight, mlm, cfg.mlm_weight,
                                      relation_weight=cfg.relation_weight)
    return Run(accelerator, data, sampler, loader, model, optimizer, scheduler, forward_backward, params, anchor, mlm)


def train(cfg: HybridTrainingConfig) -> Path:
    """Fine-tune, checkpoint, and save the final model in the sentence-transformers layout."""
    check_output_dir(cfg.output_dir)
    if cfg.push_to_hub:  # a push that cannot work is refused before training, not after
        check_push_ready(cfg.push_to_hub)
    output_dir = Path(cfg.output_dir)
    run = build_run(cfg)
    accelerator, data, model, optimizer, scheduler = run.accelerator, run.data, run.model, run.optimizer, run.scheduler
    step, set_rng = resume(accelerator, model, optimizer, scheduler, output_dir) if cfg.resume else (0, None)
    _start_files(accelerator, cfg, output_dir, step)
    start_trackers(accelerator, cfg)
    log = tracked(accelerator, lambda record: append_jsonl(accelerator, output_dir / LOG_FILE, record))
    dev = DevEvaluation(cfg, accelerator, model, output_dir, log, step) if cfg.eval_steps else None
    accelerator.print(
        f"training {cfg.model} on {len(data)} rows ({len(set(data['group_id']))} groups, languages "
        f"{', '.join(languages_of(data))}), sampler {cfg.sampler} alpha {cfg.alpha}, "
        f"{cfg.batch_size} x {accelerator.num_processes} pairs per step, {cfg.max_steps} steps")

    def save(at: int) -> None:
        save_checkpoint(accelerator, model, optimizer, scheduler, output_dir, at, cfg.save_total_limit)

    batch_log_path = output_dir / f"batches-rank{accelerator.process_index}.jsonl"
    with open(batch_log_path, "a") if cfg.log_batches else contextlib.nullcontext() as batch_log:
        loop = Loop(accelerator, model, optimizer, scheduler, cfg.logging_steps, cfg.max_grad_norm, log=log,
                    examples_name="pairs", after_step=_after_step(cfg, batch_log, save, dev))
        window = loop.run(run.batches(step, set_rng), run.forward_backward, cfg.max_steps, start=step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        best = dev.restore_best() if dev is not None else {}
        _save(accelerator, model, cfg, output_dir, max(step, cfg.max_steps), window, data, best)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir
