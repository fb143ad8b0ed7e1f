"""The folder the demo Space is pushed as: the app folder, hf-hybrid itself as its wheel installs it, and a
requirements.txt of what that wheel needs.

    app.py, README.md, screenshot.png      spaces/hf-hybrid-demo, as it is
    hf_hybrid/, hf_hybrid-<version>.dist-info/
                                           the package's wheel, built from this checkout and unpacked there (what
                                           `pip install --no-deps --target` would place); `python app.py` imports it
    requirements.txt                       the wheel's dependencies with its [space] extra, from its metadata, and
                                           PyTorch's CPU index

A Gradio Space's build installs requirements.txt before the repository's files are there: its Dockerfile mounts
that one file (`RUN --mount=target=/tmp/requirements.txt,source=requirements.txt pip install -r
/tmp/requirements.txt ...`) and copies the repository in a later step. A requirements line naming a wheel inside
the repository (`./wheels/hf_hybrid-....whl[space]`) would find no file there, and hf-hybrid is not on the package
index; so the package travels unpacked beside app.py and requirements.txt lists only what the index has.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

from hf_hybrid.errors import PushError

CHECKOUT = Path(__file__).resolve().parents[2]  # pyproject.toml, README.md, hf_hybrid/
EXTRA = "space"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_SOURCES = ("pyproject.toml", "README.md")  # what the build backend reads besides the package
_SKIP = ("__pycache__", "*.pyc", "flagged", ".gradio")  # a local run's leftovers


def build_wheel(dest: Path, root: Path = CHECKOUT) -> Path:
    """The package's wheel, built offline from a clean copy of the checkout's sources (a stale build/ folder in the
    checkout cannot leak into it) by the backend pyproject.toml names, without build isolation."""
    missing = [name for name in (*_SOURCES, "hf_hybrid") if not (root / name).exists()]
    if missing:
        raise PushError(f"cannot build hf-hybrid's wheel for the Space: {root} has no {', '.join(missing)} "
                        "(push the Space from a checkout of the repository)")
    with tempfile.TemporaryDirectory(prefix="hf-hybrid-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(root / "hf_hybrid", src / "hf_hybrid", ignore=shutil.ignore_patterns(*_SKIP))
        for name in _SOURCES:
            shutil.copyfile(root / name, src / name)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
               "-w", str(dest), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("hf_hybrid-*.whl"))
    if done.returncode or not wheels:
        said = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise PushError(f"cannot build hf-hybrid's wheel for the Space (pip wheel): {said}")
    return wheels[-1]


def wheel_requirements(wheel: Path, extra: str = EXTRA) -> list[str]:
    """The wheel's Requires-Dist: its dependencies and those of `extra`, without the extra's marker."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(zf.read(name).decode("utf-8"))
    lines = []
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            if not req.marker.evaluate({"extra": extra}):
                continue
            req.marker = None
        lines.append(str(req))
    return lines


def requirements_text(wheel: Path) -> str:
    return "\n".join([
        f"# Written by `hf-hybrid space push`: the dependencies of {wheel.name} with its [{EXTRA}] extra.",
        "# hf-hybrid itself is not on the package index: the Space carries it unpacked next to app.py (hf_hybrid/).",
        "# CPU wheels of PyTorch (a Space on CPU hardware does not need the CUDA build)",
        f"--extra-index-url {TORCH_CPU_INDEX}",
        *wheel_requirements(wheel),
    ]) + "\n"


def write_space_folder(app_folder: Path, out: Path) -> Path:
    """The folder a Space is pushed as (see the module's docstring), written to `out`."""
    shutil.copytree(app_folder, out, ignore=shutil.ignore_patterns(*_SKIP), dirs_exist_ok=True)
    for old in [out / "hf_hybrid", *out.glob("hf_hybrid-*.dist-info")]:  # an earlier dry run's package
        shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="hf-hybrid-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(out)
        (out / "requirements.txt").write_text(requirements_text(wheel), encoding="utf-8")
    return out
