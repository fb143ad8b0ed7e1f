"""How well routing by detected language picks the adapter: on FLORES sentences, the share of each
language's sentences sent to each adapter (or to none), with the profiles saved beside the adapters.

    python benchmarks/langid_accuracy.py --adapters outputs/dapt_cpu --data ../shared/data/sib-200
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from hf_hybrid.data.parallel_qa import load_flores
from hf_hybrid.langid import LanguageIdentifier
from hf_hybrid.models.adapters import available_adapters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", required=True, help="a `hf-hybrid dapt` output folder")
    parser.add_argument("--data", default="../shared/data/sib-200")
    parser.add_argument("--languages", nargs="+", help="FLORES languages (default: the benchmark's 19)")
    args = parser.parse_args()
    lid = LanguageIdentifier.from_adapters(available_adapters(args.adapters))
    rows = load_flores(args.data, args.languages)
    started = time.perf_counter()
    detected = lid.detect(list(rows["passage"]))
    seconds = time.perf_counter() - started
    counts = Counter(zip(rows["lang"], detected, strict=True))
    targets = [*lid.languages, None]
    print(f"| sentences in | {' | '.join(f'to {t}' if t else 'to no adapter' for t in targets)} |")
    print("|---" * (len(targets) + 1) + "|")
    for lang in sorted(set(rows["lang"])):
        n = sum(v for (truth, _), v in counts.items() if truth == lang)
        print(f"| {lang} | " + " | ".join(f"{counts[(lang, t)] / n:.1%}" for t in targets) + " |")
    others = [(truth, d) for truth, d in zip(rows["lang"], detected, strict=True) if truth not in lid.languages]
    wrong = sum(d is not None for _, d in others)
    print(f"\n{len(rows)} sentences in {seconds:.1f} s; sentences of other languages sent to an adapter: "
          f"{wrong} of {len(others)} ({wrong / len(others):.2%})")


if __name__ == "__main__":
    main()
