"""benchmarks/gpu_check.sh, the prepared GPU check, runs end to end (here on CPU, at toy sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_at_toy_sizes(tiny_model_dir, tmp_path):
    env = dict(os.environ, BATCH="4", STEPS="1", WARMUP="1", REPEATS="1", PRECISION="no", CHUNK_TOKENS="256",
               TRAIN_STEPS="2", PYTHON=sys.executable)
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(tiny_model_dir), "demo", str(tmp_path / "out")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    speed = json.loads((tmp_path / "out" / "train_speed.json").read_text())
    assert speed["ratio_pairs_per_s"] > 0
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["peak_memory_gb"] > 0
    assert (tmp_path / "out" / "device.txt").read_text().strip()
    assert not (tmp_path / "out" / "run").exists()
