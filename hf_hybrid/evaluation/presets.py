"""Named sets of MTEB tasks for `hf-hybrid eval --tasks`: BEIR in Polish and in Dutch, and Belebele in the
toolkit's low-resource (African) languages. A preset names tasks of mteb's registry; their data comes from the
Hub when they run."""

from __future__ import annotations

from dataclasses import dataclass

from hf_hybrid.data.parallel_qa import FLORES_LOW_RESOURCE


@dataclass(frozen=True)
class Preset:
    description: str
    tasks: tuple[str, ...] = ()
    benchmark: str | None = None  # a benchmark of mteb's registry, expanded to its tasks
    languages: tuple[str, ...] | None = None  # ISO 639-3 codes the tasks are restricted to (--languages replaces)

    def task_names(self) -> list[str]:
        if self.benchmark is None:
            return list(self.tasks)
        import mteb

        return [task.metadata.name for task in mteb.get_benchmark(self.benchmark).tasks]


PRESETS = {
    # mteb registers no BEIR-PL benchmark: its 13 datasets (arXiv 2305.19840, BEIR's public ones but FEVER and
    # Climate-FEVER), in the order of mteb's BEIR benchmark
    "beir-pl": Preset(
        "BEIR-PL, BEIR machine-translated to Polish (arXiv 2305.19840)",
        tasks=("TRECCOVID-PL", "NFCorpus-PL", "NQ-PL", "HotpotQA-PL", "FiQA-PL", "ArguAna-PL", "Touche2020-PL",
               "CQADupstackRetrieval-PL", "Quora-PL", "DBPedia-PL", "SCIDOCS-PL", "SciFact-PL", "MSMARCO-PL")),
    "beir-nl": Preset("BEIR-NL, BEIR machine-translated to Dutch (arXiv 2412.08329)", benchmark="BEIR-NL"),
    # Belebele's questions are asked about FLORES-200 passages, the toolkit's own low-resource benchmark, and
    # its languages are those the DAPT adapters are trained for (MasakhaNEWS); Belebele has no Rundi
    "belebele-africa": Preset(
        "BelebeleRetrieval in the toolkit's low-resource African languages: X-X, X-English, English-X",
        tasks=("BelebeleRetrieval",), languages=tuple(lang for lang in FLORES_LOW_RESOURCE if lang != "run")),
}

