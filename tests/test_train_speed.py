"""benchmarks/train_speed.py: both sides run, on the same batches, and the summary says so."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_speed.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_smoke_run_reports_both_sides(tiny_model_dir, tmp_path):
    out = tmp_path / "speed.json"
    done = run("--model", str(tiny_model_dir), "--data", "demo", "--batch_size", "8", "--steps", "1",
               "--warmup_steps", "1", "--repeats", "1", "--smoke", "--threads", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    for side in ("hf_hybrid", "sentence_transformers"):
        assert result[side]["median_pairs_per_s"] > 0
        assert result[side]["peak_rss_gb"] > 0
        assert len(result[side]["repeats"]) == 1
    assert result["ratio_pairs_per_s"] > 0
    ours, peer = result["hf_hybrid"]["repeats"][0], result["sentence_transformers"]["repeats"][0]
    assert ours["tokens_per_step"] == peer["tokens_per_step"]  # the same batches, cut at the same lengths
    assert ours["trainable_parameters"] == peer["trainable_parameters"]
    assert "| median |" in done.stdout


def test_bad_input_ends_in_one_line():
    for args, expected in ((["--mode", "half"], "unknown mode 'half'"), (["--repeats", "2"], "at least 3")):
        done = run(*args)
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and expected in done.stderr, done.stderr
