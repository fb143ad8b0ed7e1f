"""Weight-space interpolation between a starting model and its fine-tuned copy (WiSE-FT, Wortsman et al. 2022):
(1-w)·base + w·tuned, which keeps some of the robustness that fine-tuning loses.

TUNED is a full model, or a peft LoRA adapter folder (a DAPT language adapter, adapters/<lang>/, or any LoRA
adapter trained on BASE): the adapter is first merged into BASE at full strength, so the result is
base + w·(the LoRA delta) exactly. A model the toolkit trained with `--lora true` is saved merged, so
interpolating it with its starting model is likewise exactly scaling its LoRA delta by w.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hf_hybrid.config import check_output_dir
from hf_hybrid.errors import AdapterError, ConfigError
from hf_hybrid.models import st_layout
from hf_hybrid.models.adapters import check_base
from hf_hybrid.models.encoder import Encoder

RECORD_FILE = "interpolation.json"
# two tokenizers that give these ids for this text (and have as many tokens) are taken to be the same vocabulary
PROBE_TEXT = "The capital of Kenya is Nairobi. Mji mkuu wa Kenya ni Nairobi. Addis Ababa, 東京, Москва, 1234."


def interpolate(base: str, tuned: str, weight: float, out: str | Path) -> Path:
    """Write (1-weight)·BASE + weight·TUNED into `out` as a model of the toolkit (TUNED's pooling and prefixes),
    with interpolation.json recording the three inputs; returns `out`. Every floating-point parameter and buffer
    is interpolated (in float32, saved in TUNED's dtype); integer buffers are TUNED's."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"interpolation weight must be in [0, 1] (0: BASE, 1: TUNED), got {weight}")
    check_output_dir(out, flag="--out")
    base_encoder = _plain(Encoder.from_pretrained(base))
    if _is_adapter(tuned):
        tuned_encoder = _merged(base, tuned)
    else:
        tuned_encoder = _plain(Encoder.from_pretrained(tuned))
    check_compatible(base_encoder, tuned_encoder)
    base_tensors = _tensors(base_encoder.model)
    with torch.no_grad():
        for name, tensor in _tensors(tuned_encoder.model).items():
            if tensor.is_floating_point():
                mixed = (1.0 - weight) * base_tensors[name].float() + weight * tensor.float()
                tensor.copy_(mixed.to(tensor.dtype))
    out = tuned_encoder.save_pretrained(out)
    st_layout.write_json(out / RECORD_FILE, {"base": str(base), "tuned": str(tuned), "weight": float(weight)})
    return out


def check_compatible(base: Encoder, tuned: Encoder) -> None:
    """The same architecture (model type, hidden size, layer count, parameter names and shapes) and the same
    vocabulary (tokenizer size, ids of a probe text), or a one-line ConfigError naming what differs."""
    def differ(what: str, base_value, tuned_value) -> ConfigError:
        return ConfigError(f"cannot interpolate {base.name} and {tuned.name}: {what} differs ({base_value} vs "
                           f"{tuned_value}); expected TUNED to be a fine-tuned copy of BASE")

    for key in ("model_type", "hidden_size", "num_hidden_layers"):
        base_value, tuned_value = getattr(base.model.config, key, None), getattr(tuned.model.config, key, None)
        if base_value != tuned_value:
            raise differ(f"the architecture's {key}", base_value, tuned_value)
    if len(base.tokenizer) != len(tuned.tokenizer):
        raise differ("the vocabulary's size", len(base.tokenizer), len(tuned.tokenizer))
    base_ids, tuned_ids = (enc.tokenizer(PROBE_TEXT)["input_ids"] for enc in (base, tuned))
    if base_ids != tuned_ids:
        first = next((i for i, (a, b) in enumerate(zip(base_ids, tuned_ids, strict=False)) if a != b),
                     min(len(base_ids), len(tuned_ids)))
        raise differ(f"the vocabulary (the probe text's token ids from position {first})",
                     base_ids[first:first + 3], tuned_ids[first:first + 3])
    base_shapes, tuned_shapes = ({n: tuple(t.shape) for n, t in _tensors(enc.model).items()} for enc in (base, tuned))
    if base_shapes.keys() != tuned_shapes.keys():
        only = sorted(base_shapes.keys() ^ tuned_shapes.keys())[0]
        where = "BASE" if only in base_shapes else "TUNED"
        raise differ(f"the architecture's parameter names (only {where} has {only})", len(base_shapes),
                     len(tuned_shapes))
    for name, shape in base_shapes.items():
        if shape != tuned_shapes[name]:
            raise differ(f"the shape of {name}", list(shape), list(tuned_shapes[name]))


def _tensors(model) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name, non-persistent buffers (position ids) included."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _is_adapter(source: str) -> bool:
    return (Path(source) / "adapter_config.json").is_file()


def _plain(encoder: Encoder) -> Encoder:
    if encoder.routed:
        raise ConfigError(f"{encoder.name} routes texts to language adapters: interpolation needs a plain model "
                          "(expected a model saved without --composition route)")
    return encoder


def _merged(base: str, adapter: str) -> Encoder:
    """BASE with the LoRA adapter folder merged in at full strength."""
    from peft import PeftModel

    peft_type = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")
    if peft_type != "LORA":
        raise ConfigError(f"adapter {adapter} is a {peft_type} adapter; expected a LoRA adapter")
    encoder = _plain(Encoder.from_pretrained(base))
    check_base(encoder.model, Path(adapter), encoder.name)
    try:
        peft_model = PeftModel.from_pretrained(encoder.model, adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        raise AdapterError(f"cannot load adapter {adapter} onto {base}: {str(err).splitlines()[0]}") from None
    encoder.model = peft_model.merge_and_unload()
    encoder.name = adapter
    return encoder
