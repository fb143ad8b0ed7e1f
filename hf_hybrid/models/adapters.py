"""Language adapters (from `hf-hybrid dapt`) on an encoder: found by language code, checked against
the base model, and composed in one of two ways:

- merge: one adapter, or a weighted sum of several, folded into the encoder's weights;
- route: adapters kept apart, and each text encoded with the adapter of its language (MAD-X style);
  texts in a language without an adapter use the plain encoder.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file, save_file

from hf_hybrid.errors import AdapterError, ConfigError
from hf_hybrid.langid import LanguageIdentifier
from hf_hybrid.languages import known_code, normalize_lang

logger = logging.getLogger(__name__)

COMPOSITIONS = ("none", "merge", "route")
RETRIEVER = "retriever"  # the adapter name of a LoRA retriever trained on top of routed language adapters
SIGNATURE_FILE = "base_signature.safetensors"
SIGNATURE_ROWS = 32
# what an adapter folder holds beside peft's files (hf_hybrid.langid's profile: for routing by detection)
RECORD_FILES = ("dapt.json", SIGNATURE_FILE, "mlm_head.safetensors", "langid.safetensors")
SAME_BASE_COSINE = 0.5  # fine-tuning moves embedding rows a little; another model's rows are unrelated


def _local(source: str, lang: str | None = None) -> Path:
    """A local folder for `source`; of a Hub repo id, the adapter files are downloaded (only `lang`'s if given):
    at the repo's root (a repo of one adapter), under <lang>/ or under adapters/<lang>/."""
    path = Path(source)
    if path.exists() or source.count("/") != 1 or source.startswith(("/", ".", "~")):  # a path, not a repo id
        if not path.exists():
            raise AdapterError(f"adapter source not found: {source!r}")
        return path
    names = ("adapter_*", *RECORD_FILES)
    folders = ("", f"{lang}/", f"adapters/{lang}/") if lang else ("", "*/")  # fnmatch's * also matches "/"
    patterns = [folder + name for folder in folders for name in names]
    try:
        return Path(snapshot_download(source, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 (the Hub raises many types; one line is what the user needs)
        raise AdapterError(f"cannot download adapters from {source!r}: {str(err).splitlines()[0]}") from None


def adapter_info(path: Path) -> dict:
    """What `hf-hybrid dapt` recorded about an adapter (dapt.json); {} for a peft adapter without it."""
    info = path / "dapt.json"
    return json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}


def available_adapters(source: str) -> dict[str, Path]:
    """Language -> adapter folder, for a DAPT output folder (adapters/<lang>/), a folder of adapter
    folders (<lang>/), or one adapter folder (its dapt.json names the language), local or a Hub repo id."""
    root = _local(source)
    found = {}
    for base in (root / "adapters", root):
        for folder in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
            if (folder / "adapter_config.json").is_file():
                lang = known_code(adapter_info(folder).get("language") or folder.name)
                if lang:
                    found.setdefault(lang, folder)
    if (root / "adapter_config.json").is_file() and adapter_info(root).get("language"):
        found.setdefault(normalize_lang(adapter_info(root)["language"]), root)
    return found


def find_adapter(source: str, lang: str) -> Path:
    lang = normalize_lang(lang)
    path = Path(source)
    if not path.exists() and source.count("/") == 1:
        path = _local(source, lang)
        source = str(path)
    found = available_adapters(source)
    if lang not in found:
        have = ", ".join(found) or "none"
        raise AdapterError(f"no adapter for language {lang!r} in {source} (adapters there: {have})")
    return found[lang]


def embedding_signature(model) -> dict[str, torch.Tensor]:
    weight = model.get_input_embeddings().weight.detach().float().cpu()
    rows = torch.linspace(0, weight.shape[0] - 1, SIGNATURE_ROWS).long()
    return {"rows": rows, "embeddings": weight[rows].clone()}


def save_signature(model, folder: Path) -> None:
    save_file(embedding_signature(model), str(folder / SIGNATURE_FILE))


def check_base(model, folder: Path, model_name: str) -> None:
    """The adapter in `folder` was trained on this model or a fine-tuned copy of it: the word
    embeddings at the recorded rows still point the same way."""
    signature_path = folder / SIGNATURE_FILE
    info = adapter_info(folder)
    if not signature_path.is_file():
        return
    saved = load_file(str(signature_path))
    weight = model.get_input_embeddings().weight.detach().float().cpu()
    trained_on = info.get("base_model", "another model")
    adapter = f"the {info['language']} adapter {folder}" if info.get("language") else f"the adapter {folder}"
    fix = f"use it with {trained_on}" if "base_model" in info else "use it with the model it was trained on"
    if weight.shape[1] != saved["embeddings"].shape[1] or int(saved["rows"].max()) >= weight.shape[0]:
        raise AdapterError(f"{adapter} was trained on {trained_on}, a model of another shape than the model "
                           f"it was put on, {model_name}: {fix}")
    cosine = torch.nn.functional.cosine_similarity(weight[saved["rows"]], saved["embeddings"], dim=-1).mean().item()
    if cosine < SAME_BASE_COSINE:
        raise AdapterError(f"{adapter} was trained on {trained_on}, not on the model it was put on, {model_name} "
                           f"(word embeddings agree at cosine {cosine:.2f}): {fix}")


def _load(model, folders: dict[str, Path], model_name: str, check: bool = True):
    """A PeftModel with one frozen adapter per language, named by its code."""
    from peft import PeftModel

    peft_model = None
    for lang, folder in folders.items():
        if check:
            check_base(model, folder, model_name)
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(folder), adapter_name=lang, is_trainable=False)
            else:
                peft_model.load_adapter(str(folder), adapter_name=lang, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as err:
            raise AdapterError(f"cannot load adapter {folder} onto {model_name}: {str(err).splitlines()[0]}") from None
    return peft_model


def check_weights(languages: list[str], weights: list[float] | None) -> list[float]:
    if weights is None:
        return [1.0 / len(languages)] * len(languages)
    if len(weights) != len(languages):
        raise AdapterError(f"{len(weights)} adapter weights for {len(languages)} adapters ({', '.join(languages)})")
    if not sum(weights) > 0:
        raise AdapterError(f"adapter weights must sum to a positive number, got {weights}")
    return [float(w) for w in weights]


def merge_adapters(encoder, source: str, languages: list[str], weights: list[float] | None = None) -> None:
    """Fold the adapters of `languages`, weighted (default: equally), into the encoder's weights:
    W + sum_i w_i * delta_W_i, through peft's weighted adapter merge ("cat": exact for LoRA)."""
    languages = [normalize_lang(lang) for lang in languages]
    weights = check_weights(languages, weights)
    folders = {lang: find_adapter(source, lang) for lang in languages}
    peft_model = _load(encoder.model, folders, encoder.name)
    if len(languages) == 1 and weights[0] == 1.0:
        peft_model.set_adapter(languages[0])
    else:
        peft_model.add_weighted_adapter(languages, weights, "merged", combination_type="cat")
        peft_model.set_adapter("merged")
    encoder.model = peft_model.merge_and_unload().requires_grad_(True)  # peft froze the base for its adapters
    encoder.composition = {"composition": "merge", "adapters": source, "languages": languages, "weights": weights}


def route_adapters(encoder, source: str, languages: list[str] | None = None, check: bool = True,
                   detect: bool = False) -> None:
    """Keep the adapters of `languages` (default: all in `source`) beside the encoder; each text is then
    encoded with its language's adapter (see Encoder.forward's `langs`). A requested language without
    an adapter is left to the plain encoder, with a warning. With `detect`, Encoder.encode finds each
    text's language itself, among the adapters' (hf_hybrid.langid), instead of taking it as given."""
    local = str(_local(source))
    found = available_adapters(local)
    languages = [normalize_lang(lang) for lang in languages] if languages else list(found)
    missing = [lang for lang in languages if lang not in found]
    if missing:
        logger.warning("no adapter for %s in %s: %s texts use the plain encoder", ", ".join(missing), source,
                       "these languages'" if len(missing) > 1 else "its")
    languages = [lang for lang in languages if lang in found]
    if not languages:
        raise AdapterError(f"no adapters to route in {source} (adapters there: {', '.join(found) or 'none'})")
    if detect:
        encoder.langid = LanguageIdentifier.from_adapters({lang: found[lang] for lang in languages})
    encoder.model = _load(encoder.model, {lang: found[lang] for lang in languages}, encoder.name, check)
    encoder.routed = set(languages)
    encoder.composition = {"composition": "route", "adapters": source, "languages": languages, "detect": detect}


def compose(encoder, composition: str, source: str | None, languages: list[str] | None,
            weights: list[float] | None = None, detect: bool = False) -> None:
    """The one entry point of training and evaluation configs."""
    if composition not in COMPOSITIONS:
        raise ConfigError(f"composition must be one of {', '.join(COMPOSITIONS)}, got {composition!r}")
    if detect and composition != "route":
        raise ConfigError("--detect_languages picks a routed adapter per text: it goes with --composition route")
    if composition == "none":
        return
    if not source:
        raise ConfigError(f"composition {composition!r} needs --adapters (a `hf-hybrid dapt` output folder)")
    if composition == "merge":
        if not languages:
            languages = list(available_adapters(source))
        merge_adapters(encoder, source, languages, weights)
    else:
        route_adapters(encoder, source, languages, detect=detect)
    logger.info("%s: %s adapters of %s", composition, ", ".join(encoder.composition["languages"]), source)


def copy_adapter_records(source: str, languages: list[str], out: Path) -> None:
    """dapt.json and the base signature of each adapter, next to a copy peft saved in out/<lang>/."""
    for lang in languages:
        folder = find_adapter(source, lang)
        for name in RECORD_FILES:
            if (folder / name).is_file() and folder.resolve() != (out / lang).resolve():
                shutil.copy2(folder / name, out / lang / name)


@dataclass
class AdapterOptions:
    """Options shared by training and evaluation configs."""

    adapters: str | None = field(default=None, metadata={
        "help": "language adapters: a `hf-hybrid dapt` output folder, a folder of adapters or a Hub repo id"})
    composition: str = field(default="none", metadata={
        "help": "none; merge (fold the adapters into the encoder); route (each text through its language's adapter)"})
    adapter_languages: list[str] | None = field(default=None, metadata={"help": "which adapters (default: all)"})
    adapter_weights: list[float] | None = field(default=None, metadata={
        "help": "merge: one weight per adapter language (default: equal weights summing to 1)"})
    detect_languages: bool = field(default=False, metadata={
        "help": "route: at encode time, detect each text's language among the adapters' instead of taking the data's"})

    def compose(self, encoder) -> None:
        compose(encoder, self.composition, self.adapters, self.adapter_languages, self.adapter_weights,
                self.detect_languages)


def lora_config(r: int, alpha: int, dropout: float, target_modules: list[str]):
    """LoRA on the named modules of the encoder, except BERT's pooler (a `dense` too, unused by
    mean/CLS pooling): a pattern, so that the adapter config says the same with or without a pooler."""
    from peft import LoraConfig

    names = "|".join(re.escape(m) for m in target_modules)
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                      target_modules=rf"^(?!pooler\.)(.*\.)?({names})$")
