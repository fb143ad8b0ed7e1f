"""Push a trained model, a converted dataset, or language adapters to the Hugging Face Hub.

    hf-hybrid push MODEL_DIR --repo-id USER/NAME [--eval DIR ...] [--report DIR] [--hardware TEXT] [--private]
        [--revision BRANCH] [--create-pr] [--commit-message MSG] [--dry-run OUT_DIR] [--token TOKEN]
    hf-hybrid push --dataset DATASET_DIR --repo-id USER/NAME [...]
    hf-hybrid push --adapters DAPT_DIR --repo-id USER/NAME [...]
    hf-hybrid push MODEL_DIR | --adapters DAPT_DIR --adapter-repos --repo-id USER/NAME [...]

The folder that is pushed is built first, in full, then uploaded as it is with `HfApi.upload_folder`
(`--dry-run OUT_DIR` writes that same folder and uploads nothing). A model repo holds:

    README.md                         the model card (hf_hybrid.hub.cards.render_model_card)
    modules.json, config.json, model.safetensors, tokenizer files, config_sentence_transformers.json,
    sentence_bert_config.json, 1_Pooling/, ...   the sentence-transformers layout, as saved
    training_config.yaml, train_summary.json, train_log.jsonl
    results/<eval>/                   per --eval folder, its results files at their paths in it: the toolkit's
                                      results.json (+ results.md, summary.*), mteb's JSON (mteb/results/...)
    figures/<eval>/*.png              per --eval folder with results.json: its cross-lingual heatmap and bias
                                      profile, which the card shows
    figures/training_curve.png        the loss and dev mAP by step of train_log.jsonl, which the card shows
    figures/*.png                     with --report DIR: the report's plots the card shows (with the training
                                      curve of train_log.jsonl, in place of training_curve.png, when the report
                                      evaluated this model)
    runs/**/events.out.tfevents.*     TensorBoard's logs (`--report_to tensorboard`): the Hub's metrics tab

Training checkpoints, pickles and hidden files stay home. Per-language adapters, when a model folder has
them under `adapters/<lang>/`, go along at that path (a routed model loads them from there).
A dataset repo is the exported folder (parquet files under their config folders) with its README.md
replaced by the rendered dataset card.

Language adapters (hf_hybrid.models.adapters loads them by language from a folder or a repo id):

    --adapters DAPT_DIR               one model repo: adapters/<lang>/ (adapter_config.json,
                                      adapter_model.safetensors, dapt.json, base_signature.safetensors,
                                      mlm_head.safetensors), dapt_results.json/md, dapt_config.yaml, and the
                                      adapter card (hf_hybrid.hub.cards.render_adapter_card)
    --adapter-repos                   each adapter of MODEL_DIR or DAPT_DIR, and nothing else, as a model repo of
                                      its own, USER/NAME-<lang>: its files at the root, its own card. Every
                                      folder is built before the first upload (--dry-run OUT_DIR writes them to
                                      OUT_DIR/NAME-<lang>/); a failed upload says which repos were pushed before it.

The demo Space (`hf-hybrid space push --repo-id USER/NAME [--dry-run OUT_DIR]`) is the folder
spaces/hf-hybrid-demo (app.py, README.md) with hf-hybrid unpacked from its wheel and the requirements.txt that wheel
needs (hf_hybrid.hub.space_folder), pushed as a Gradio Space through the same upload.
The upload itself (token, repo, branch, upload_folder) and its one-line errors: hf_hybrid.hub.upload.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_hybrid.errors import PushError
from hf_hybrid.hub.cards import (
    card_assets,
    find_evaluations,
    render_adapter_card,
    render_dataset_card,
    render_model_card,
)
from hf_hybrid.hub.space_folder import write_space_folder
from hf_hybrid.hub.upload import PushResult, check_pr, check_write_access, folder_files, upload

# never pushed from a model folder: pickled weights and training state, per-rank batch logs, the old card
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
_SKIP_AT_TOP = ("README.md", "batches-rank*.jsonl")
ADAPTERS = "adapters"  # adapters/<lang>/: pushed with the model when the folder has them
RUNS = "runs"  # TensorBoard's event files (hf_hybrid.training.trackers.RUNS_DIR), pushed for the Hub's metrics tab
_EVENTS = "events.out.tfevents.*"
_DAPT_FILES = ("dapt_results.json", "dapt_results.md", "dapt_config.yaml")  # pushed with a DAPT folder's adapters
_EVAL_FILES = ("results.json", "results.md", "summary.json", "summary.md")
SPACE_DIR = Path(__file__).resolve().parents[2] / "spaces" / "hf-hybrid-demo"


# --- the folder -------------------------------------------------------------------------------------------

def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PushError(f"--repo-id {repo_id!r} is not a Hub repo id: {err}") from None
    if repo_id.count("/") != 1:
        raise PushError(f"--repo-id {repo_id!r}: give it as NAMESPACE/NAME (your user or organization name first)")


def check_push_ready(repo_id: str, token: str | None = None) -> None:
    """What a push can check before the work that makes its files: the repo id, the token, the namespace."""
    check_repo_id(repo_id)
    check_write_access(repo_id, token)


def model_files(model_dir: Path) -> list[Path]:
    """The files of a saved model folder that go to the Hub, relative to it."""
    if not (model_dir / "modules.json").is_file():
        raise PushError(f"{model_dir} is not a saved model folder (no modules.json; train one with `hf-hybrid train`)")
    if not list(model_dir.glob("*.safetensors")):
        raise PushError(f"{model_dir} has no safetensors weights (model.safetensors): push saves only safetensors")
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        module_dirs = {m["path"] for m in modules if m.get("path")}
    except (ValueError, TypeError, KeyError) as err:
        raise PushError(f"{model_dir / 'modules.json'} is not a sentence-transformers module list: {err}") from None
    chosen = []
    for path in folder_files(model_dir):
        rel = path.relative_to(model_dir)
        if rel.parts[0] == RUNS:
            if len(rel.parts) > 1 and fnmatch.fnmatch(rel.name, _EVENTS):
                chosen.append(rel)
            continue
        if len(rel.parts) > 1 and rel.parts[0] not in module_dirs | {ADAPTERS}:
            continue  # checkpoints/ and anything else that is not part of the model
        skip = _PICKLES + (_SKIP_AT_TOP if len(rel.parts) == 1 else ("README.md",) if rel.parts[0] == ADAPTERS else ())
        if not any(fnmatch.fnmatch(rel.name, pattern) for pattern in skip):
            chosen.append(rel)
    return chosen


def eval_files(eval_dir: Path) -> list[Path]:
    """The results files of one evaluation output folder, relative to it: the toolkit's results and summary,
    mteb's results tree (mteb/), and any other mteb task JSON the card reads in it."""
    if not eval_dir.is_dir():
        raise PushError(f"--eval {eval_dir}: no such folder")
    found = {Path(name) for name in _EVAL_FILES if (eval_dir / name).is_file()}
    if (eval_dir / "mteb").is_dir():
        found |= {p.relative_to(eval_dir) for p in folder_files(eval_dir / "mteb")}
    found |= {ev.path.relative_to(eval_dir) for ev in find_evaluations([eval_dir])}
    return sorted(found)


def build_model_folder(model_dir: str | Path, out: str | Path, repo_id: str, eval_dirs=(), *,
                       report_dir: str | Path | None = None, hardware: str | None = None) -> list[str]:
    """Write the model repo's folder into `out` (empty or absent); return its files, sorted."""
    model_dir, out = Path(model_dir), Path(out)
    eval_dirs = [Path(d) for d in eval_dirs]
    if not model_dir.is_dir():
        raise PushError(f"{model_dir}: no such model folder")
    check_repo_id(repo_id)
    names = [d.resolve().name for d in eval_dirs]
    if len(set(names)) != len(names):
        raise PushError(f"--eval folders must have different names (they become results/<name>/): {' '.join(names)}")
    plan: list[tuple[Path, str]] = [(model_dir / rel, rel.as_posix()) for rel in model_files(model_dir)]
    for eval_dir, name in zip(eval_dirs, names, strict=True):
        plan += [(eval_dir / rel, f"results/{name}/{rel.as_posix()}") for rel in eval_files(eval_dir)]
    with tempfile.TemporaryDirectory() as figures:  # the heatmaps, bias profiles and training curve drawn for the card
        card = render_model_card(model_dir, eval_dirs=eval_dirs, hardware=hardware, repo_id=repo_id,
                                 report_dir=report_dir, figures_dir=figures)
        plan += [(Path(src), dst) for dst, src in card_assets(report_dir, figures).items()]
        return _write(out, plan, card)


def build_dataset_folder(dataset_dir: str | Path, out: str | Path, repo_id: str) -> list[str]:
    """Write the dataset repo's folder into `out` (empty or absent); return its files, sorted."""
    dataset_dir, out = Path(dataset_dir), Path(out)
    if not dataset_dir.is_dir():
        raise PushError(f"{dataset_dir}: no such dataset folder")
    check_repo_id(repo_id)
    if not (dataset_dir / "README.md").is_file():
        raise PushError(f"{dataset_dir} is not a converted dataset (no README.md; write one with "
                        "`hf-hybrid data export ... --out DIR`)")
    plan = [(p, p.relative_to(dataset_dir).as_posix()) for p in folder_files(dataset_dir) if p.name != "README.md"]
    if not any(dst.endswith(".parquet") for _, dst in plan):
        raise PushError(f"{dataset_dir} has no parquet files (write it with `hf-hybrid data export ... --out DIR`)")
    card = render_dataset_card(dataset_dir, repo_id=repo_id)
    return _write(out, plan, card)


def adapter_folders(source: Path) -> dict[str, Path]:
    """Language -> adapter folder of a `hf-hybrid dapt` output folder or of a model folder (adapters/<lang>/)."""
    from hf_hybrid.models.adapters import available_adapters  # imports torch

    if not source.is_dir():
        raise PushError(f"{source}: no such folder")
    found = available_adapters(str(source))
    if not found:
        raise PushError(f"{source} holds no language adapters (adapters/<lang>/ with adapter_config.json, as "
                        "`hf-hybrid dapt` writes them)")
    return found


def adapter_files(folder: Path) -> list[Path]:
    """The files of one adapter folder that go to the Hub, relative to it: peft's adapter, dapt.json, the base
    signature, the MLM head (not peft's README.md: the repo's card describes the adapter)."""
    if not (folder / "adapter_model.safetensors").is_file():
        raise PushError(f"{folder} has no adapter_model.safetensors: push saves only safetensors")
    return [p.relative_to(folder) for p in folder_files(folder)
            if p.name != "README.md" and not any(fnmatch.fnmatch(p.name, pattern) for pattern in _PICKLES)]


def build_adapter_folder(adapters: dict[str, Path], out: str | Path, repo_id: str,
                         extra: list[Path] = ()) -> list[str]:
    """Write an adapter repo's folder into `out` (empty or absent): each adapter's files at its path in the repo
    ("" for the root), the `extra` files at the top, and the adapter card; return its files, sorted."""
    check_repo_id(repo_id)
    plan = [(path, path.name) for path in extra]
    for prefix, folder in adapters.items():
        plan += [(folder / rel, f"{prefix}/{rel.as_posix()}" if prefix else rel.as_posix())
                 for rel in adapter_files(folder)]
    return _write(Path(out), plan, render_adapter_card(adapters, repo_id))


def _check_new(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PushError(f"{out} exists and is not empty: give --dry-run a new folder")


def _write(out: Path, plan: list[tuple[Path, str]], card: str) -> list[str]:
    _check_new(out)
    targets = [dst for _, dst in plan] + ["README.md"]
    if len(set(targets)) != len(targets):
        raise PushError(f"two files would land at the same path in the repo: "
                        f"{sorted({t for t in targets if targets.count(t) > 1})}")
    out.mkdir(parents=True, exist_ok=True)
    for src, dst in plan:
        _copy(src, out / dst)
    (out / "README.md").write_text(card, encoding="utf-8")
    return sorted(targets)


# --- the pushes -------------------------------------------------------------------------------------------

def push(source: str | Path, repo_id: str, *, dataset: bool = False, adapters: bool = False, eval_dirs=(),
         report_dir=None, hardware: str | None = None, private: bool = False, revision: str | None = None,
         create_pr: bool = False, commit_message: str | None = None, dry_run: str | Path | None = None,
         token: str | None = None) -> PushResult:
    """Build the repo folder of a model (with dataset=True, a converted dataset; with adapters=True, the adapters
    of a `hf-hybrid dapt` output folder under adapters/<lang>/) and push it, or with `dry_run` only write it there."""
    repo_type = "dataset" if dataset else "model"
    if dataset and adapters:
        raise PushError("push a dataset or adapters, not both")
    if (dataset or adapters) and (eval_dirs or report_dir or hardware):
        raise PushError(f"--eval, --report and --hardware go with a model, not with "
                        f"{'--dataset' if dataset else '--adapters'}")
    check_pr(create_pr, revision)

    def build(out: Path) -> list[str]:
        if dataset:
            return build_dataset_folder(source, out, repo_id)
        if adapters:
            folders = {f"{ADAPTERS}/{lang}": folder for lang, folder in adapter_folders(Path(source)).items()}
            extra = [Path(source) / name for name in _DAPT_FILES if (Path(source) / name).is_file()]
            return build_adapter_folder(folders, out, repo_id, extra)
        return build_model_folder(source, out, repo_id, eval_dirs, report_dir=report_dir, hardware=hardware)

    if dry_run is not None:
        files = build(Path(dry_run))
        return PushResult(repo_id, repo_type, "", None, files, folder=Path(dry_run))
    with tempfile.TemporaryDirectory(prefix="hf-hybrid-push-") as tmp:
        build(Path(tmp) / "repo")
        return upload(Path(tmp) / "repo", repo_id, repo_type=repo_type, private=private, revision=revision,
                      create_pr=create_pr, commit_message=commit_message, token=token)


def push_adapter_repos(source: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                       create_pr: bool = False, commit_message: str | None = None, dry_run: str | Path | None = None,
                       token: str | None = None) -> list[PushResult]:
    """Push each language adapter of a `hf-hybrid dapt` output folder or of a model folder (adapters/<lang>/) as a
    model repo of its own, `<repo_id>-<lang>`, the adapter at its root; with `dry_run`, only write each repo's folder
    into dry_run/<name>-<lang>/. Every folder is built before the first upload; a failed upload says which repos
    were pushed before it."""
    check_pr(create_pr, revision)
    check_repo_id(repo_id)
    folders = adapter_folders(Path(source))
    repos = {lang: f"{repo_id}-{lang}" for lang in folders}
    with tempfile.TemporaryDirectory(prefix="hf-hybrid-push-") as tmp:
        root = Path(dry_run if dry_run is not None else tmp)
        _check_new(root)
        outs = {lang: root / repo.split("/")[1] for lang, repo in repos.items()}
        files = {lang: build_adapter_folder({"": folders[lang]}, outs[lang], repos[lang]) for lang in repos}
        if dry_run is not None:
            return [PushResult(repos[lang], "model", "", None, files[lang], folder=outs[lang]) for lang in repos]
        results = []
        for lang, repo in repos.items():
            try:
                results.append(upload(outs[lang], repo, private=private, revision=revision, create_pr=create_pr,
                                      commit_message=commit_message, token=token))
            except PushError as err:
                done = f" ({', '.join(list(repos)[:len(results)])})" if results else ""
                raise PushError(f"pushed {len(results)} of {len(repos)} adapter repos{done}; {lang} failed: {err}") \
                    from None
        return results


def push_space(repo_id: str, dry_run: str | Path | None = None, private: bool = False, token: str | None = None,
               folder: str | Path = SPACE_DIR) -> str:
    """Upload the Space folder (hf_hybrid.hub.space_folder: the app, hf-hybrid unpacked from its wheel, the
    requirements that wheel needs) as a Gradio Space through the same upload as models and datasets, or with
    `dry_run` write it there; returns the Space URL or the folder."""
    folder = Path(folder)
    if not (folder / "app.py").is_file():
        raise FileNotFoundError(f"Space folder not found: {folder} (run from a checkout of the repository)")
    check_repo_id(repo_id)
    if dry_run:
        return str(write_space_folder(folder, Path(dry_run)))
    with tempfile.TemporaryDirectory(prefix="hf-hybrid-space-") as tmp:
        space = write_space_folder(folder, Path(tmp) / "space")
        return upload(space, repo_id, repo_type="space", private=private, token=token,
                      commit_message="Upload the hf-hybrid demo Space", space_sdk="gradio").url
