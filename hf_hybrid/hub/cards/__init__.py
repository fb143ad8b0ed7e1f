"""Model, adapter and dataset cards (README.md) filled only from what training, DAPT, evaluation and export wrote.

    from hf_hybrid.hub.cards import card_assets, render_adapter_card, render_dataset_card, render_model_card

    readme = render_model_card("outputs/demo/hybrid", eval_dirs=["outputs/demo/eval-hybrid"],
                               repo_id="me/e5-small-hybrid", report_dir="outputs/report")
    extra_files = card_assets("outputs/report")  # {"figures/settings_map.png": Path(...)}: copy beside README.md
    dataset_readme = render_dataset_card("outputs/xquad-r-export", repo_id="me/xquad-r")
    adapter_readme = render_adapter_card({"": Path("outputs/dapt/adapters/ha")}, repo_id="me/e5-small-dapt-ha")

One module per card kind, as sentence-transformers keeps a `model_card.py` per model family:

- `model`: `render_model_card` reads the model folder (`training_config.yaml`, `train_summary.json`,
  `train_log.jsonl` and the sentence-transformers files) and each evaluation folder. It returns README.md: YAML
  metadata built with huggingface_hub's `ModelCardData` / `EvalResult` (the `model-index` holds every result
  found, and `ModelCard(text).data.eval_results` gives them back), then a body from `model_card.md.j2`. What no
  file holds is left out, never guessed: without eval_dirs there is no results section and no model-index.
- `evaluations`: the evaluation results the model card reads (`results.json` of `hf-hybrid eval`, or mteb's task
  JSON under the folder of `hf-hybrid eval --tasks`), as `EvalResult`s and as the tables of the card's body.
- `dataset`: `render_dataset_card` does the same for a folder of `hf-hybrid data export` (`parallel-qa` or
  `xquad-retrieval`) from the `export.json` the export wrote. It keeps the folder's `configs:` block, so
  `datasets.load_dataset(folder, config)` still works once the card replaces README.md, and counts rows and columns
  from the parquet files.
- `adapter`: `render_adapter_card` writes the card of LoRA adapters of `hf-hybrid dapt` (one at a repo's root, or
  several under `adapters/<lang>/`) from their `dapt.json` alone: `library_name: peft`, the base model, the
  languages, and a table of the corpus, masking, steps and held-out MLM loss before and after.
- `common`: reading those files, the base model's facts, and rendering.

The templates are package data in `hf_hybrid/hub/templates/` (an installed package has them); pass
`template_dir=` to render with edited copies. Their tables come ready-made (`hf_hybrid.tables.markdown_table`).
"""

from hf_hybrid.hub.cards.adapter import render_adapter_card
from hf_hybrid.hub.cards.common import BaseModel, base_model_of
from hf_hybrid.hub.cards.dataset import render_dataset_card
from hf_hybrid.hub.cards.evaluations import (
    Evaluation,
    eval_results_of,
    find_evaluations,
    mteb_eval_results,
    toolkit_eval_results,
)
from hf_hybrid.hub.cards.model import card_assets, render_model_card

__all__ = [
    "BaseModel",
    "Evaluation",
    "base_model_of",
    "card_assets",
    "eval_results_of",
    "find_evaluations",
    "mteb_eval_results",
    "render_adapter_card",
    "render_dataset_card",
    "render_model_card",
    "toolkit_eval_results",
]
