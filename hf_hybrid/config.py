"""One parser for YAML configs and command-line overrides (alignment-handbook style):
`script.py --config recipe.yaml --learning_rate 1e-5` reads the YAML, then the flags win."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TypeVar

import yaml
from transformers import HfArgumentParser

from hf_hybrid.errors import ConfigError

T = TypeVar("T")


def _as_flags(values: dict) -> list[str]:
    flags = []
    for key, value in values.items():
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
    (config,) = parser.parse_args_into_dataclasses(args=_as_flags(from_yaml) + argv)
    return config
