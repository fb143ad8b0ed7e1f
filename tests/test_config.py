"""The argument mixins: each config gets their fields and checks; values that make no sense are refused."""

import dataclasses

import pytest

from hf_hybrid.config import LoopArgs, LoraArgs, parse_config
from hf_hybrid.errors import ConfigError
from hf_hybrid.evaluation.run import EvalConfig
from hf_hybrid.study import StudyConfig
from hf_hybrid.training.dapt import DaptConfig
from hf_hybrid.training.hybrid import HybridTrainingConfig

CONFIGS = (HybridTrainingConfig, DaptConfig, EvalConfig, StudyConfig)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_field_has_its_help(config):
    assert [f.name for f in dataclasses.fields(config) if not f.metadata.get("help")] == []


def test_dapt_and_hybrid_change_only_defaults():
    dapt, hybrid = DaptConfig(), HybridTrainingConfig()
    assert (dapt.lora_r, dapt.lora_alpha, dapt.batch_size, dapt.max_steps) == (8, 16, 16, 200)
    assert (hybrid.lora_r, hybrid.lora_alpha, hybrid.batch_size, hybrid.max_steps) == (16, 32, 32, 100)
    shared = {f.name for f in dataclasses.fields(LoopArgs)} | {f.name for f in dataclasses.fields(LoraArgs)}
    assert shared <= {f.name for f in dataclasses.fields(DaptConfig)}
    assert shared <= {f.name for f in dataclasses.fields(HybridTrainingConfig)}


@pytest.mark.parametrize("config, field, value", [
    (HybridTrainingConfig, "learning_rate", 0.0),
    (HybridTrainingConfig, "learning_rate", -1e-5),
    (HybridTrainingConfig, "warmup_ratio", 5.0),
    (HybridTrainingConfig, "warmup_ratio", -0.1),
    (HybridTrainingConfig, "weight_decay", -0.01),
    (HybridTrainingConfig, "temperature", 0.0),
    (HybridTrainingConfig, "max_query_length", 0),
    (HybridTrainingConfig, "hard_negatives", -1),
    (HybridTrainingConfig, "lora_r", 0),
    (HybridTrainingConfig, "lora_dropout", 1.0),
    (HybridTrainingConfig, "dev_fraction", 1.0),
    (HybridTrainingConfig, "n_folds", -2),
    (HybridTrainingConfig, "save_total_limit", -1),
    (HybridTrainingConfig, "batch_size", 0),
    (HybridTrainingConfig, "mixed_precision", "fp8"),
    (DaptConfig, "learning_rate", 0.0),
    (DaptConfig, "head_learning_rate", 0.0),
    (DaptConfig, "head_steps", -1),
    (DaptConfig, "mask_rate", 1.5),
    (DaptConfig, "max_seq_length", 4),
    (EvalConfig, "batch_size", 0),
    (StudyConfig, "eval_batch_size", 0),
])
def test_values_that_make_no_sense_are_refused_naming_the_field(config, field, value):
    with pytest.raises(ConfigError, match=field):
        config(**{field: value})


def test_a_refused_value_in_a_recipe_is_one_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 0\n")
    with pytest.raises(ConfigError, match="learning_rate must be greater than 0"):
        parse_config(HybridTrainingConfig, ["--config", str(recipe)])


def test_an_empty_list_in_a_recipe_is_the_default_or_one_error(tmp_path):
    from hf_hybrid.study import StudyConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("interpolate: []\nlanguages: []\n")
    cfg = parse_config(StudyConfig, ["--config", str(recipe)])
    assert cfg.interpolate is None and cfg.languages is None  # no value: their default, none
    recipe.write_text("arms: []\n")
    with pytest.raises(ConfigError, match=r"r.yaml: arms: an empty list, where at least one value is expected"):
        parse_config(StudyConfig, ["--config", str(recipe)])
