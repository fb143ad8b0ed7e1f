"""`hf-hybrid push` against a Hub-protocol server on 127.0.0.1 (tests/hub_server.py).

HF_ENDPOINT is read when huggingface_hub is imported: `constants.ENDPOINT`, the module-level `HfApi` behind
`hf_hub_download` / `model_info`, the Hub origins trusted for redirects; transformers, sentence-transformers
and datasets reach the Hub through those. So the round trip runs as a user runs it: fresh processes (the CLI,
then a loader) with HF_ENDPOINT, HF_TOKEN, HF_HOME and HF_HUB_CACHE in their environment. The flag and error
cases run in this process through `main([...])` with `huggingface_hub.constants.ENDPOINT` monkeypatched: the
push reads nothing else of it (`HfApi()` takes `constants.ENDPOINT` when it is built, at each push), and this
saves an interpreter start (~3 s) per case.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
from hub_server import OTHER_TOKEN, TOKEN, USER, HubServer

from hf_hybrid.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Where is the river?", "The river flows through the old town.", "Wo ist der Fluss?"]

LOADER = f"""
import json, sys
import datasets
from sentence_transformers import SentenceTransformer

model_id, local_dir, dataset_id = sys.argv[1:4]
hub = SentenceTransformer(model_id).encode({TEXTS}).tolist()
local = SentenceTransformer(local_dir).encode({TEXTS}).tolist()
rows = datasets.load_dataset(dataset_id, "default", split="train")
print(json.dumps({{"hub": hub, "local": local, "rows": rows.to_list()}}))
"""


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from hf_hybrid.training.hybrid import HybridTrainingConfig, train

    out = tmp_path_factory.mktemp("push") / "tiny-hybrid"
    train(HybridTrainingConfig(model=str(tiny_model_dir), data="demo", languages=["de", "en"], batch_size=4,
                               max_steps=2, output_dir=str(out)))
    return out


@pytest.fixture(scope="module")
def eval_dir(run_dir, tmp_path_factory) -> Path:
    """The toolkit's results.json and mteb's JSON of the project's task, as `hf-hybrid eval` writes them."""
    out = tmp_path_factory.mktemp("eval") / "demo-eval"
    common = ["eval", "--model", str(run_dir), "--data", "demo", "--languages", "de", "en", "--output_dir", str(out)]
    assert main(common) == 0
    assert main([*common, "--tasks", "XQuADRParallelRetrieval"]) == 0
    return out


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from hf_hybrid.data.export import export_parallel_qa

    return export_parallel_qa("demo", tmp_path_factory.mktemp("data") / "demo-qa", languages=["de", "en"])


@pytest.fixture
def on_hub(hub, monkeypatch, tmp_path):
    """This process pushes to `hub` with USER's token in HF_TOKEN and no stored token."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return hub


def hub_env(hub: HubServer, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    return {**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_CACHE": str(tmp_path / "hub_cache"), "HF_DATASETS_CACHE": str(tmp_path / "datasets_cache"),
            "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def push(capsys, *args) -> tuple[int, str, str]:
    code = main(["push", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(result, *fragments) -> str:
    code, _, err = result
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_dry_run_writes_the_repo_folder_and_contacts_no_hub(run_dir, eval_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing may be called
    code, out, err = push(capsys, run_dir, "--repo-id", "alice/tiny-hybrid", "--eval", eval_dir,
                          "--dry-run", tmp_path / "dry")
    assert code == 0, err
    files = folder_bytes(tmp_path / "dry")
    assert f"dry run: {len(files)} files" in out
    for name in ("README.md", "modules.json", "config.json", "model.safetensors", "tokenizer.json",
                 "config_sentence_transformers.json", "1_Pooling/config.json", "training_config.yaml",
                 "train_summary.json", "results/demo-eval/results.json", "results/demo-eval/summary.json"):
        assert name in files, sorted(files)
    assert files["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    assert [f for f in files if f.startswith("results/demo-eval/mteb/") and f.endswith("XQuADRParallelRetrieval.json")]
    assert not [f for f in files if f.startswith("checkpoints/") or f.endswith((".bin", ".pkl"))]
    card = huggingface_hub.ModelCard(files["README.md"].decode())
    assert card.data.library_name == "sentence-transformers" and card.data.eval_results
    assert "alice/tiny-hybrid" in card.text

    # --report: the card shows the report's plots, and they go along at the paths it links
    from hf_hybrid.evaluation.report import build_report

    build_report([eval_dir], tmp_path / "report")
    code, _, err = push(capsys, run_dir, "--repo-id", "alice/tiny-hybrid", "--eval", eval_dir, "--report",
                        tmp_path / "report", "--hardware", "1x test CPU", "--dry-run", tmp_path / "dry-report")
    assert code == 0, err
    files = folder_bytes(tmp_path / "dry-report")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", files["README.md"].decode())
    assert images and all(image in files for image in images) and "1x test CPU" in files["README.md"].decode()
    # the folder must be new: a dry run never mixes with earlier files
    assert_one_line_error(push(capsys, run_dir, "--repo-id", "alice/tiny-hybrid", "--dry-run", tmp_path / "dry"),
                          "not empty")


def test_round_trip_model_and_dataset_through_the_hub(hub, run_dir, eval_dir, dataset_dir, tmp_path, capsys):
    model_args = [str(run_dir), "--repo-id", f"{USER}/tiny-hybrid", "--eval", str(eval_dir)]
    data_args = ["--dataset", str(dataset_dir), "--repo-id", f"{USER}/demo-qa"]
    assert push(capsys, *model_args, "--dry-run", tmp_path / "dry-model")[0] == 0
    assert push(capsys, *data_args, "--dry-run", tmp_path / "dry-data")[0] == 0

    env = hub_env(hub, tmp_path)
    script = (f"import sys; from hf_hybrid.cli import main; "
              f"sys.exit(main(['push', *{model_args!r}]) or main(['push', *{data_args!r}]))")
    pushed = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True,
                            timeout=300)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert "created and pushed" in pushed.stdout and f"{hub.url}/{USER}/tiny-hybrid" in pushed.stdout

    # the server received exactly the dry run's folder, in one commit per repo
    for repo_id, repo_type, dry in ((f"{USER}/tiny-hybrid", "model", "dry-model"),
                                    (f"{USER}/demo-qa", "dataset", "dry-data")):
        commits = hub.commits(repo_id, repo_type)
        assert len(commits) == 2  # the Hub's initial .gitattributes, then the push
        assert commits[-1].added == folder_bytes(tmp_path / dry)
        assert set(hub.files(repo_id, repo_type)) == set(commits[-1].added) | {".gitattributes"}
    card = huggingface_hub.ModelCard(hub.files(f"{USER}/tiny-hybrid")["README.md"].decode())
    assert {r.task_type for r in card.data.eval_results} and card.data.library_name == "sentence-transformers"
    assert huggingface_hub.DatasetCard(hub.files(f"{USER}/demo-qa", "dataset")["README.md"].decode()).data.configs

    # a fresh process and cache load both back through HF_ENDPOINT
    env.pop("HF_TOKEN")  # public repos: anonymous reads
    loaded = subprocess.run([sys.executable, "-c", LOADER, f"{USER}/tiny-hybrid", str(run_dir), f"{USER}/demo-qa"],
                            check=False, env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    diff = max(abs(a - b) for row_h, row_l in zip(result["hub"], result["local"], strict=True)
               for a, b in zip(row_h, row_l, strict=True))
    assert diff < 1e-6 and len(result["hub"]) == len(TEXTS)
    from datasets import load_dataset

    local_rows = load_dataset(str(dataset_dir), "default", split="train").to_list()
    assert result["rows"] == local_rows
    assert (Path(env["HF_HUB_CACHE"]) / "models--alice--tiny-hybrid").is_dir()
    # every request of huggingface_hub, sentence-transformers and datasets was one the server implements
    # (huggingface_hub also asks for its agent-harness registry, best effort)
    assert [r for r in hub.unhandled if r[1] != "/api/agent-harnesses"] == []


def test_private_branch_and_pull_requests(on_hub, run_dir, capsys):
    hub = on_hub
    code, out, err = push(capsys, run_dir, "--repo-id", f"{USER}/flags", "--private", "--revision", "dev",
                          "--commit-message", "first version")
    assert code == 0, err
    assert hub.repo(f"{USER}/flags").private and f"{hub.url}/{USER}/flags/tree/dev" in out
    assert ("POST", f"/api/models/{USER}/flags/branch/dev", 200) in hub.log
    assert "model.safetensors" in hub.files(f"{USER}/flags", revision="dev")
    assert set(hub.files(f"{USER}/flags")) == {".gitattributes"}  # main untouched
    assert hub.commits(f"{USER}/flags")[-1].summary == "first version"

    # the same push again: the branch exists, nothing changed, no new commit
    n_commits = len(hub.commits(f"{USER}/flags"))
    assert push(capsys, run_dir, "--repo-id", f"{USER}/flags", "--revision", "dev")[0] == 0
    assert len(hub.commits(f"{USER}/flags")) == n_commits

    # a pull request against main
    code, out, err = push(capsys, run_dir, "--repo-id", f"{USER}/flags", "--create-pr")
    assert code == 0, err
    assert f"{hub.url}/{USER}/flags/discussions/1" in out
    assert hub.pull_requests(f"{USER}/flags")[1]["author"] == USER
    assert "model.safetensors" in hub.files(f"{USER}/flags", revision="refs/pr/1")
    assert set(hub.files(f"{USER}/flags")) == {".gitattributes"}

    # someone else's public repo takes a pull request, not a push
    hub.add_repo("bob/shared", files={"README.md": b"# shared\n"})
    assert_one_line_error(push(capsys, run_dir, "--repo-id", "bob/shared"), "403", "namespace bob", "--create-pr")
    code, out, err = push(capsys, run_dir, "--repo-id", "bob/shared", "--create-pr")
    assert code == 0, err
    assert hub.pull_requests("bob/shared")[1]["author"] == USER and set(hub.files("bob/shared")) == {
        ".gitattributes", "README.md"}

    # --private never silently pushes into a public repo
    hub.add_repo(f"{USER}/public")
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/public", "--private"), "is public")
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/flags", "--create-pr", "--revision", "dev"),
                          "--create-pr", "main")


def test_token_errors(on_hub, run_dir, capsys, monkeypatch):
    hub = on_hub
    monkeypatch.delenv("HF_TOKEN")
    n_requests = len(hub.log)
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/x"), "no Hugging Face token", "HF_TOKEN")
    assert len(hub.log) == n_requests  # nothing was asked of the Hub
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/x", "--token", "hf_not_a_token"),
                          "refused the token", "401")
    assert hub.repo(f"{USER}/x") is None
    # --token wins over HF_TOKEN; bob may not write into alice's namespace
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/x", "--token", OTHER_TOKEN),
                          "403", "bob's", f"namespace {USER}")
    assert hub.repo(f"{USER}/x") is None


def test_repo_errors(on_hub, run_dir, capsys):
    hub = on_hub
    assert_one_line_error(push(capsys, run_dir, "--repo-id", "bob/mine"), "403", "namespace bob")
    assert hub.repo("bob/mine") is None
    assert_one_line_error(push(capsys, run_dir, "--repo-id", "bob/missing", "--create-pr"),
                          "does not exist", "404", "--create-pr")
    hub.add_repo(f"{USER}/taken", repo_type="dataset")
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/taken"), "taken by a dataset repo")
    assert hub.repo(f"{USER}/taken") is None
    assert_one_line_error(push(capsys, run_dir, "--repo-id", "no-namespace"), "NAMESPACE/NAME")
    assert_one_line_error(push(capsys, run_dir.parent / "nothing-here", "--repo-id", f"{USER}/y"), "no such")


def test_failures_after_the_repo_was_created_are_reported(on_hub, run_dir, capsys):
    hub = on_hub
    with hub.failing("commit", 422):
        assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/half"), "422", "nothing was committed",
                              f"this push created model repo {USER}/half")
    assert hub.repo(f"{USER}/half") is not None and set(hub.files(f"{USER}/half")) == {".gitattributes"}
    with hub.failing("branch", 422):
        assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/half2", "--revision", "dev"),
                              "creating branch dev", "this push created")
    # upload_folder opens the pull request before its first commit: a failed commit leaves it open, and says so
    hub.add_repo("bob/pr-target")
    with hub.failing("commit", 422):
        line = assert_one_line_error(push(capsys, run_dir, "--repo-id", "bob/pr-target", "--create-pr"), "422",
                                     "refs/pr/1 was created")
    assert "this push created" not in line
    # ... and the push can go on into that pull request
    code, _, err = push(capsys, run_dir, "--repo-id", "bob/pr-target", "--revision", "refs/pr/1")
    assert code == 0, err
    assert "model.safetensors" in hub.files("bob/pr-target", revision="refs/pr/1")
    assert set(hub.files("bob/pr-target")) == {".gitattributes"}


def test_unreachable_or_offline_hub_fails_fast(run_dir, capsys, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    started = time.monotonic()
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/z"), "cannot reach the Hub",
                          f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10  # no retry loop
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert_one_line_error(push(capsys, run_dir, "--repo-id", f"{USER}/z"), "HF_HUB_OFFLINE")


def test_training_pushes_with_push_to_hub(on_hub, tiny_model_dir, tmp_path, capsys):
    hub = on_hub
    common = ["train", "--model", str(tiny_model_dir), "--data", "demo", "--languages", "de", "en",
              "--batch_size", "4", "--max_steps", "2"]
    assert main([*common, "--output_dir", str(tmp_path / "trained"), "--push_to_hub", f"{USER}/from-training",
                 "--hub_private", "true"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert {"model.safetensors", "README.md", "training_config.yaml", "train_summary.json"} <= set(
        hub.files(f"{USER}/from-training"))
    assert hub.repo(f"{USER}/from-training").private
    # a push that fails after training keeps the model and says how to push it again
    with hub.failing("commit", 403):
        code = main([*common, "--output_dir", str(tmp_path / "again"), "--push_to_hub", f"{USER}/refused"])
    captured = capsys.readouterr()
    assert_one_line_error((code, captured.out, captured.err), "403", "the model is saved in", "hf-hybrid push")
    assert (tmp_path / "again" / "model.safetensors").is_file()


def test_push_to_hub_that_cannot_work_is_refused_before_training(on_hub, tiny_model_dir, tmp_path, capsys,
                                                                  monkeypatch):
    common = ["train", "--model", str(tiny_model_dir), "--data", "demo", "--languages", "de", "en",
              "--batch_size", "4", "--max_steps", "2"]

    def refused(repo_id: str, *fragments: str) -> None:
        out = tmp_path / repo_id.replace("/", "_").replace(" ", "_")
        code = main([*common, "--output_dir", str(out), "--push_to_hub", repo_id])
        captured = capsys.readouterr()
        assert_one_line_error((code, captured.out, captured.err), *fragments)
        assert not out.exists(), "training ran although the push could not work"

    refused("not a repo id", "is not a Hub repo id")
    refused("just-a-name", "NAMESPACE/NAME")
    refused("bob/not-mine", "may not write to namespace bob", f"--push_to_hub {USER}/not-mine")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    refused(f"{USER}/bad-token", "refused the token", "nothing was trained")
    monkeypatch.delenv("HF_TOKEN")
    refused(f"{USER}/no-token", "no Hugging Face token")


def test_space_goes_through_the_same_push(on_hub, capsys, monkeypatch):
    hub = on_hub
    code = main(["space", "push", "--repo-id", f"{USER}/demo-space"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"{hub.url}/spaces/{USER}/demo-space" in captured.out
    assert {"app.py", "requirements.txt", "README.md"} <= set(hub.files(f"{USER}/demo-space", repo_type="space"))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    code = main(["space", "push", "--repo-id", f"{USER}/demo-space"])
    captured = capsys.readouterr()
    assert_one_line_error((code, captured.out, captured.err), "refused the token")
