"""`mteb run -m <user>/<model>` on a model pushed with `hf-hybrid push`, against the loopback Hub of
tests/hub_server.py: MTEB's unmodified XQuADRetrieval, its dataset served at MTEB's pinned revision from the
toolkit's offline export, gives the nDCG@10 of `hf-hybrid eval --tasks XQuADRetrieval` on the same model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
from conftest import shared_data
from hub_server import TOKEN, USER, HubServer

from hf_hybrid.cli import main
from hf_hybrid.data.export import XQUAD_RETRIEVAL_REPO, export_xquad_retrieval

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = f"{USER}/tiny-mteb"
CLI = "import sys; from hf_hybrid.cli import main; sys.exit(main(sys.argv[1:]))"


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def clean_env(**extra) -> dict:
    """This process's environment without any HF_* setting (so no HF_HUB_OFFLINE), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    return {**env, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            **extra}


def ndcg_at_10(output_folder: Path) -> float:
    files = list(output_folder.rglob("XQuADRetrieval.json"))
    assert len(files) == 1, sorted(output_folder.rglob("*"))
    scores = json.loads(files[0].read_text(encoding="utf-8"))["scores"]["validation"]
    assert [s["hf_subset"] for s in scores] == ["de"]
    return scores[0]["ndcg_at_10"]


def test_mteb_run_on_a_pushed_model_matches_hf_hybrid_eval(tiny_model_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("mteb")
    import mteb

    source = shared_data("xquad")
    revision = mteb.get_task("XQuADRetrieval").metadata.dataset["revision"]
    cache = tmp_path / "datasets-cache"
    export = export_xquad_retrieval(source, tmp_path / "xquad-retrieval", ["de"], datasets_cache=cache)

    with HubServer() as hub:
        # MTEB's dataset at the revision the task pins, as the toolkit exports it
        hub.add_repo(XQUAD_RETRIEVAL_REPO, "dataset", files=folder_bytes(export), commit=revision)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        assert main(["push", str(tiny_model_dir), "--repo-id", REPO_ID]) == 0, capsys.readouterr().err

        # a user's shell: HF_ENDPOINT set, HF_HUB_OFFLINE not, fresh caches; public repos, so no token
        env = clean_env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"),
                        HF_HUB_CACHE=str(tmp_path / "hub_cache"), HF_DATASETS_CACHE=str(tmp_path / "hub_datasets"))
        ran = subprocess.run([sys.executable, "-m", "mteb", "run", "-m", REPO_ID, "-t", "XQuADRetrieval",
                              "-l", "deu", "--batch-size", "32", "--no-co2-tracker",
                              "--output-folder", str(tmp_path / "mteb-run")],
                             check=False, env=env, capture_output=True, text=True, timeout=900)
        assert ran.returncode == 0, ran.stderr[-3000:]
        # every request of mteb, sentence-transformers and datasets was one the test Hub implements
        assert [r for r in hub.unhandled if r[1] != "/api/agent-harnesses"] == [], hub.unhandled
        # mteb asks for the model's commits (to record its revision); datasets reads the task's pinned revision
        assert ("GET", f"/api/models/{REPO_ID}/commits/main", 200) in hub.log
        pinned = f"/datasets/{XQUAD_RETRIEVAL_REPO}/resolve/{revision}/de-corpus/"
        assert any(method == "GET" and path.startswith(pinned) and status == 200 for method, path, status in hub.log)

    # the toolkit on the saved folder, offline, on the export's datasets cache
    evaluated = subprocess.run([sys.executable, "-c", CLI, "eval", "--model", str(tiny_model_dir), "--tasks",
                                "XQuADRetrieval", "--languages", "de", "--batch_size", "32",
                                "--output_dir", str(tmp_path / "eval")],
                               check=False, env=clean_env(HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(cache)),
                               capture_output=True, text=True, timeout=900)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert ndcg_at_10(tmp_path / "mteb-run") == pytest.approx(ndcg_at_10(tmp_path / "eval"), abs=1e-5)
