"""The accelerate loop both recipes share, in named steps: an optimizer with its schedule, the training
step and the log window (checkpoints and resuming: `checkpoint.py`).

A recipe supplies what differs: its batches (an iterator), its `forward_backward(model, batch, backward)`
(the forward pass, `backward(loss)`, and a `StepOutput`: the loss and what the batch counts), and what it
saves. `hybrid.py` and `dapt.py` are the two recipes; a new objective is one more `forward_backward`, a new
batching one more iterator. The loop then clips the gradients and steps the optimizer and the schedule.
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch.profiler import record_function
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import get_linear_schedule_with_warmup

from hf_hybrid.config import LoopArgs
from hf_hybrid.training.heap import HeapTrim, resident_gb
from hf_hybrid.training.sparse_adamw import RowSparseAdamW, sparse_gradient_norm_


@dataclass
class StepOutput:
    """What one training step returns: its loss, and the examples and tokens it counted on this process."""

    loss: torch.Tensor
    examples: int
    tokens: int
    parts: dict = field(default_factory=dict)  # losses beside the main one (anchor, MLM), logged by name


def make_accelerator(args: LoopArgs, **kwargs):
    """accelerate's Accelerator for the loop; `kwargs` go to it too (trackers: `trackers.accelerator_kwargs`)."""
    # the encoder's buffers (position and token type ids) are constants; broadcasting them before every forward
    # pass would pair one process's chunk with another's collective when the processes run different chunk counts
    return Accelerator(mixed_precision=args.mixed_precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)], **kwargs)


def prepare(accelerator, model, params: list, args: LoopArgs, steps: int, learning_rate: float):
    """AdamW over `params` (row by row for a sparse word-embedding gradient: `sparse_adamw.py`) with a linear
    warm-up from 0 and a linear decay to 0 (transformers' schedule; warm-up steps rounded up, as
    `TrainingArguments`), prepared by accelerate. Returns (model, optimizer, scheduler)."""
    optimizer = RowSparseAdamW(params, lr=learning_rate, weight_decay=args.weight_decay,
                               fused=accelerator.device.type in ("cuda", "cpu"))
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.sparse and module.weight.requires_grad:
            optimizer.defer_weight_decay(module)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(steps * args.warmup_ratio), steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler


def clip_gradients(accelerator, model, max_norm: float) -> None:
    params = [p for p in model.parameters() if p.grad is not None]
    if any(p.grad.is_sparse for p in params):
        accelerator.unscale_gradients()
        sparse_gradient_norm_(params, max_norm)
    else:
        accelerator.clip_grad_norm_(params, max_norm)


def training_step(accelerator, model, optimizer, scheduler, batch, forward_backward,
                  max_grad_norm: float) -> StepOutput:
    out = forward_backward(model, batch, accelerator.backward)
    with record_function("optimizer"):
        if max_grad_norm > 0:
            clip_gradients(accelerator, model, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return out


@dataclass
class LogWindow:
    """Losses since the last log line, and throughput since the start (all processes)."""

    processes: int
    examples: int = 0
    tokens: int = 0
    losses: list = field(default_factory=list)
    parts: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, out: StepOutput) -> None:
        self.losses.append(out.loss.detach())
        for name, value in out.parts.items():
            self.parts.setdefault(name, []).append(value.detach())
        self.examples += out.examples * self.processes
        self.tokens += out.tokens * self.processes

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def record(self, accelerator, step: int, lr: float, examples_name: str) -> dict:
        """The mean loss of the window over every process (then the window empties) and throughput."""
        loss = accelerator.reduce(torch.stack(self.losses).mean(), "mean").item()
        parts = {name: accelerator.reduce(torch.stack(values).mean(), "mean").item()
                 for name, values in self.parts.items()}
        self.losses, self.parts = [], {}
        elapsed = self.seconds
        return {"step": step, "loss": loss, **parts, "lr": lr, f"{examples_name}_per_s": self.examples / elapsed,
                "tokens_per_s": self.tokens / elapsed, "memory_gb": memory_gb(accelerator.device)}


def peak_memory_gb(device: torch.device) -> float:
    """The peak of torch's allocated memory on a CUDA device, else this process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def memory_gb(device: torch.device) -> float:
    """torch's allocated memory on a CUDA device, else this process's resident memory (VmRSS), now: the log's
    trace of it shows whether memory grows over a run."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**30
    resident = resident_gb()
    return peak_memory_gb(device) if resident is None else resident  # not Linux: the peak is what there is


def append_jsonl(accelerator, path: Path, record: dict) -> None:
    if accelerator.is_main_process:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop the records after `step` from a step log: a resumed run logs those steps again."""
    if path.is_file():
        records = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in records))


@dataclass
class Loop:
    """Runs `steps` training steps over `batches` from step `start`. After each step `after_step(step,
    batch)` runs (checkpoints, batch logs); every `logging_steps` and at the end a record goes to `log`."""

    accelerator: object
    model: object
    optimizer: object
    scheduler: object
    logging_steps: int
    max_grad_norm: float
    log: Callable[[dict], None]
    desc: str = "train"
    examples_name: str = "examples"
    extra: dict = field(default_factory=dict)  # keys put first in every log record
    after_step: Callable | None = None

    def run(self, batches: Iterator, forward_backward, steps: int, start: int = 0) -> LogWindow:
        accelerator = self.accelerator
        window = LogWindow(accelerator.num_processes)
        progress = tqdm(total=steps, initial=start, disable=not accelerator.is_main_process, desc=self.desc)
        trim = HeapTrim() if accelerator.device.type == "cpu" else None
        self.model.train()
        with logging_redirect_tqdm():  # log lines above the progress bar, not through it
            for step in range(start + 1, steps + 1):
                with record_function("collate"):
                    batch = next(batches)
                out = training_step(accelerator, self.model, self.optimizer, self.scheduler, batch, forward_backward,
                                    self.max_grad_norm)
                window.add(out)
                if trim is not None:
                    trim()
                progress.update(1)
                if step % self.logging_steps == 0 or step == steps:
                    record = window.record(accelerator, step, self.scheduler.get_last_lr()[0], self.examples_name)
                    progress.set_postfix(loss=f"{record['loss']:.4f}")
                    self.log({**self.extra, **record})
                if self.after_step is not None:
                    self.after_step(step, batch)
        progress.close()
        return window
