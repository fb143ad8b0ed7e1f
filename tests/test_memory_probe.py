"""benchmarks/memory_probe.py: a row per step with resident memory and glibc's heap, then the peak."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "memory_probe.py"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="reads glibc's heap")
def test_the_probe_prints_each_steps_memory(tiny_model_dir):
    done = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_model_dir),
                           "--data", "demo", "--mode", "lora", "--steps", "2", "--batch_size", "4", "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "step" not in line]
    assert [row[0].strip() for row in rows] == ["1", "2"]
    for row in rows:
        assert int(row[1]) > 0
        for cell in row[2:]:
            resident, heap, used = map(float, cell.split(" / "))
            assert resident > 0 and heap >= used > 0
    assert "peak resident memory" in done.stdout.splitlines()[-1]
