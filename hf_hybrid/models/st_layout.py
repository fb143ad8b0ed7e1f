"""The sentence-transformers folder layout of an encoder, read and written: the model and tokenizer files, with
modules.json (Transformer, Pooling, optional Normalize), the pooling config, sentence_bert_config.json (max length)
and config_sentence_transformers.json (the query and passage prompts), so `SentenceTransformer(path)` and `mteb`
load it with the encoder's settings."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import snapshot_download

# sentence-transformers and mteb call the passage prompt "document".
ST_PROMPT_NAMES = {"query": "query", "passage": "document"}
ROUTING_FILE = "routing.json"  # the project's own record of routed language adapters (hf_hybrid.models.adapters)
# the files of the layout that carry the encoder's settings, and routing.json
SETTINGS_FILES = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "*/config.json",
                  ROUTING_FILE]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def settings_folder(path: str) -> Path | None:
    """A local model folder, or the settings files of a Hub model repo downloaded into one (None if the Hub
    cannot be asked: then the model's own config is all there is)."""
    if Path(path).is_dir():
        return Path(path)
    if path.count("/") != 1:
        return None
    try:
        return Path(snapshot_download(path, allow_patterns=SETTINGS_FILES))
    except Exception:  # noqa: BLE001 (the Hub raises many types; the weights' own download reports what matters)
        return None


def read_settings(path: Path) -> dict:
    """Encoder settings (pooling, normalize, max_length, query_prefix, passage_prefix) from a sentence-transformers
    layout, if the folder has one."""
    if not (path / "modules.json").is_file():
        return {}
    settings = {}
    modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    types = [m["type"].rsplit(".", 1)[-1].lower() for m in modules]
    settings["normalize"] = "normalize" in types
    pooling_dir = next((m["path"] for m in modules if m["type"].rsplit(".", 1)[-1] == "Pooling"), None)
    pooling_cfg = read_json(path / pooling_dir / "config.json") if pooling_dir else {}
    if pooling_cfg.get("pooling_mode_cls_token") or pooling_cfg.get("pooling_mode") == "cls":
        settings["pooling"] = "cls"
    bert_cfg = read_json(path / "sentence_bert_config.json")
    if bert_cfg.get("max_seq_length"):
        settings["max_length"] = bert_cfg["max_seq_length"]
    prompts = read_json(path / "config_sentence_transformers.json").get("prompts", {})
    settings["query_prefix"] = prompts.get("query", "")
    settings["passage_prefix"] = prompts.get("document", prompts.get("passage", ""))
    return settings


def save(path: Path, model, tokenizer, pooling: str, normalize: bool, max_length: int,
         prefixes: dict[str, str]) -> None:
    """Write a plain transformers model and its tokenizer into `path`, with the sentence-transformers metadata
    of these settings (`prefixes`: the query and passage prompts)."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "1_Pooling").mkdir(exist_ok=True)
    write_json(path / "modules.json", modules)
    write_json(path / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    write_json(path / "1_Pooling" / "config.json", {
        "word_embedding_dimension": model.config.hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    write_json(path / "config_sentence_transformers.json", {
        "prompts": {ST_PROMPT_NAMES[k]: p for k, p in prefixes.items()},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })
