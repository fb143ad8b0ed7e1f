import json
import re
from pathlib import Path

from hf_hybrid.config import parse_config
from hf_hybrid.study import StudyConfig, StudyRun, run_study


def test_arms_side_by_side_on_folds(tiny_model_dir, tmp_path):
    study = run_study(StudyConfig(model=str(tiny_model_dir), data="demo", languages=["en", "de", "sw"], n_folds=2,
                                  folds=[0, 1], arms=["base", "hybrid"], batch_size=4, max_steps=2,
                                  output_dir=str(tmp_path / "study")))
    assert set(study["mean_over_folds"]) == {"base", "hybrid"}
    assert len(study["per_fold"]["hybrid"]) == 2
    for arm in ("base", "hybrid"):
        for fold in (0, 1):
            results = json.loads((tmp_path / "study" / f"fold{fold}" / arm / "results.json").read_text())
            # evaluated on the fold's test articles only: 6 of the demo's 12 articles, 5 groups each
            assert results["sizes"]["en"]["queries"] == 30
    table = (tmp_path / "study" / "study.md").read_text()
    assert "| hybrid |" in table and "top-3" in table
    assert not (tmp_path / "study" / "fold0" / "hybrid" / "model").exists()  # trained models are not kept by default


def test_dapt_arms_and_flores_in_one_table(tiny_model_dir, tmp_path):
    import pytest
    from conftest import shared_data

    from hf_hybrid.training.dapt import DaptConfig, train_dapt

    sib = shared_data("sib-200")
    news = tmp_path / "news"  # DAPT text: the SIB-200 train sentences are enough for a tiny model
    dapt = train_dapt(DaptConfig(model=str(tiny_model_dir), languages=["hau", "yor"], text=[str(sib)],
                                 heldout_fraction=0.2, min_heldout=2, max_seq_length=32, batch_size=4, max_steps=2,
                                 head_steps=2, output_dir=str(news)))
    with pytest.raises(ValueError, match="unknown arm 'dapt-mix'"):
        StudyConfig(arms=["dapt-mix"])
    with pytest.raises(ValueError, match="need --adapters"):
        StudyConfig(arms=["dapt-route"])
    study = run_study(StudyConfig(
        model=str(tiny_model_dir), data="demo", languages=["en", "de"], n_folds=2, folds=[0, 1],
        arms=["base", "dapt-route", "dapt-route+hybrid"], adapters=str(dapt), batch_size=4,
        max_steps=1, flores=str(sib), flores_languages=["eng", "hau", "fra"], output_dir=str(tmp_path / "study")))
    flores = study["flores_mean_over_folds"]
    assert set(flores) == {"base", "dapt-route", "dapt-route+hybrid"}
    assert set(flores["base"]["per_language"]) == {"ha", "fr"}
    assert flores["base"]["low_x-en"] == flores["base"]["per_language"]["ha"]["x-en"]
    assert flores["base"]["high_x-en"] == flores["base"]["per_language"]["fr"]["x-en"]
    # routing changes Hausa (it has an adapter) and leaves French-English retrieval as the base model has it
    # (French's multilingual pool holds Hausa candidates, so that one moves too)
    assert flores["dapt-route"]["per_language"]["ha"]["x-en"] != flores["base"]["per_language"]["ha"]["x-en"]
    for key in ("x-en", "en-x"):
        assert flores["dapt-route"]["per_language"]["fr"][key] == flores["base"]["per_language"]["fr"][key]
    assert len(study["flores_per_fold"]["dapt-route+hybrid"]) == 2
    md = (tmp_path / "study" / "study.md").read_text()
    assert "| dapt-route+hybrid |" in md and "low X->en" in md and "held-out MLM loss" in md and "Rerun with" in md


def test_parse_arm_grammar_and_its_errors():
    import pytest

    from hf_hybrid.errors import ConfigError
    from hf_hybrid.study import parse_arm

    arm = parse_arm("dapt-anchored-merge+hybrid+anchor+mlm@0.7#43")
    assert (arm.composition, arm.adapters, arm.sampler, arm.anchor, arm.mlm, arm.weight, arm.seed) == \
        ("merge", "anchored", "hybrid", True, True, 0.7, 43)
    assert arm.model_key == "dapt-anchored-merge+hybrid+anchor+mlm#43"  # interpolations share the trained model
    assert parse_arm("hybrid").model_key == "hybrid" and parse_arm("base").sampler is None
    arm = parse_arm("hybrid+mlm=0.5+anchor=20@0.6")
    assert (arm.anchor_weight, arm.mlm_weight, arm.weight) == (20.0, 0.5, 0.6)
    assert arm.model_key == "hybrid+mlm=0.5+anchor=20"
    arm = parse_arm("hybrid+relation=2@0.5")
    assert (arm.relation, arm.relation_weight, arm.anchor, arm.weight) == (True, 2.0, False, 0.5)
    arm = parse_arm("hybrid+relation-unseen=5#43")
    assert (arm.relation, arm.relation_pairs, arm.relation_weight, arm.seed) == (True, "unseen", 5.0, 43)
    assert parse_arm("dapt-merge+hybrid+relation-mined=3").relation_pairs == "mined"
    assert parse_arm("hybrid+relation").relation_pairs is None  # the study's --relation_pairs
    arm = parse_arm("hybrid+relation-mined-eng=3")
    assert (arm.relation_pairs, arm.relation_pivot, arm.relation_weight) == ("mined", "en", 3.0)
    assert parse_arm("hybrid+relation-en").relation_pairs is None
    assert parse_arm("hybrid+relation").relation_pivot is None  # the study's --relation_pivot
    arm = parse_arm("hybrid+anchor-en=3+relation=3@0.5")
    assert (arm.anchor, arm.anchor_pivot, arm.anchor_weight, arm.relation_weight) == (True, "en", 3.0, 3.0)
    assert parse_arm("hybrid+anchor").anchor_pivot is None  # the study's --anchor_pivot
    assert parse_arm("hybrid+anchor-eng").anchor_pivot == "en"  # as the training config records it
    for name, why in [("hybrid+anchor+anchor", "at most once"), ("base+hybrid", "takes no +"),
                      ("hybrid@1.5", r"in \[0, 1\], got 1.5"), ("hybrid@x", "'x' is not a number"),
                      ("hybrid#4.5", "not a whole number"), ("dapt-route+hybrid@0.5", "routed arm"),
                      ("dapt-merge@0.5", "only a fine-tuned arm"), ("hybrid+dropout", "at most once"),
                      ("dapt-mix", "neither base"),
                      ("hybrid+anchor=x", "'x' is not a number"), ("hybrid+mlm=-1", "at least 0"),
                      ("hybrid+relation=-2", "at least 0"), ("hybrid+relations", "at most once"),
                      ("hybrid+relation+relation-unseen", "at most once"), ("hybrid+anchor-en+anchor", "at most once"),
                      ("hybrid+anchor-", "at most once"),
                      ("hybrid+relation-qqq", "relation pivot: unknown language code"),
                      ("hybrid+relation-mined-en-fr", r"relation takes \[-unseen\|-mined\]\[-LANG\]"),
                      ("hybrid+mlm-en", "at most once"),
                      ("hybrid+anchor-qqq", "anchor pivot: unknown language code")]:
        with pytest.raises(ConfigError, match=f"unknown arm {re.escape(repr(name))}: .*{why}"):
            parse_arm(name)


def test_a_robust_study_chooses_on_dev_resumes_and_reuses_its_models(tiny_model_dir, tmp_path, monkeypatch):
    import pytest
    from conftest import shared_data

    import hf_hybrid.study as study_module

    sib = shared_data("sib-200")
    common = dict(model=str(tiny_model_dir), data="demo", languages=["en", "de", "sw"], n_folds=2, folds=[0, 1],
                  dev_fraction=0.25, batch_size=4, max_steps=2, anchor_weight=5.0, anchor_text=["train"],
                  anchor_batch_size=4, mlm_weight=0.5, mlm_text=["train"], mlm_batch_size=2, mlm_max_length=32,
                  mlm_head_steps=1, flores=str(sib), flores_languages=["eng", "hau", "fra"],
                  models_dir=str(tmp_path / "models"))
    dev = run_study(StudyConfig(arms=["base", "hybrid", "hybrid+anchor+mlm"], interpolate=[0, 1],
                                eval_split="dev", output_dir=str(tmp_path / "dev"), **common))
    table = dev["mean_over_folds"]
    assert set(table) == {"base", "hybrid", "hybrid@0", "hybrid@1", "hybrid+anchor+mlm", "hybrid+anchor+mlm@0",
                          "hybrid+anchor+mlm@1"}
    for setting in ("monolingual", "cross-lingual", "multilingual"):  # weight 0 is the start, weight 1 the tuned
        assert table["hybrid@0"][setting] == pytest.approx(table["base"][setting], abs=1e-6)
        assert table["hybrid@1"][setting] == pytest.approx(table["hybrid"][setting], abs=1e-6)
    results = json.loads((tmp_path / "dev" / "fold0" / "base" / "results.json").read_text())
    assert results["sizes"]["en"]["queries"] == 10  # a quarter of the fold's 6 training articles, rounded up: 2
    flores = json.loads((tmp_path / "dev" / "fold0" / "base" / "flores" / "results.json").read_text())
    assert flores["sizes"]["en"]["queries"] == 701 and flores["config"]["flores_splits"] == ["train"]
    interval = dev["intervals"]["hybrid+anchor+mlm"]["base"]["flores"]["x-en"]["low-resource mean"]
    assert interval["low"] <= interval["diff"] <= interval["high"]
    assert set(dev["intervals"]["hybrid+anchor+mlm"]) == {"base", "hybrid"}
    assert "meets_target" in dev["target"]["hybrid"]
    md = (tmp_path / "dev" / "study.md").read_text()
    assert "Evaluated on the dev split" in md and "paired bootstrap 95% intervals" in md and "The target" in md
    assert "![tradeoff](tradeoff.png)" in md and (tmp_path / "dev" / "flores_vs_base.png").stat().st_size > 1000

    def must_not_run(*args, **kwargs):
        raise AssertionError("ran again")

    monkeypatch.setattr(study_module, "train", must_not_run)
    monkeypatch.setattr(study_module, "run_evaluation", must_not_run)
    again = run_study(StudyConfig(arms=["base", "hybrid", "hybrid+anchor+mlm"], interpolate=[0, 1],
                                  eval_split="dev", output_dir=str(tmp_path / "dev"), **common))
    assert again["mean_over_folds"] == dev["mean_over_folds"]  # every arm's results read back, nothing rerun

    monkeypatch.undo()
    monkeypatch.setattr(study_module, "train", must_not_run)  # the test study evaluates the dev study's models
    test = run_study(StudyConfig(arms=["base", "hybrid+anchor+mlm"], eval_split="test",
                                 output_dir=str(tmp_path / "test"), **common))
    flores = json.loads((tmp_path / "test" / "fold1" / "hybrid+anchor+mlm" / "flores" / "results.json").read_text())
    assert flores["sizes"]["en"]["queries"] == 303 and set(test["mean_over_folds"]) == {"base", "hybrid+anchor+mlm"}


def test_results_and_models_made_with_other_settings_are_not_reused(tiny_model_dir, tmp_path):
    import pytest

    from hf_hybrid.errors import ConfigError

    common = dict(model=str(tiny_model_dir), data="demo", languages=["en", "de"], n_folds=2, folds=[0],
                  arms=["hybrid"], batch_size=4, max_steps=1, models_dir=str(tmp_path / "models"))
    run_study(StudyConfig(output_dir=str(tmp_path / "a"), **common))
    with pytest.raises(ConfigError, match=r"/a/fold0/hybrid was made with other settings \(learning_rate: "
                                          r"3e-05, now 0.001\): give another --output_dir"):
        run_study(StudyConfig(output_dir=str(tmp_path / "a"), learning_rate=1e-3, **common))
    with pytest.raises(ConfigError, match=r"/models/fold0/hybrid was made with other settings \(learning_rate: "
                                          r"3e-05, now 0.001\): give another --models_dir"):
        run_study(StudyConfig(output_dir=str(tmp_path / "b"), learning_rate=1e-3, **common))


def test_the_settings_of_a_loss_that_is_off_do_not_hold_an_arm_back(tiny_model_dir, tmp_path):
    import pytest

    from hf_hybrid.errors import ConfigError

    common = dict(model=str(tiny_model_dir), data="demo", languages=["en", "de"], n_folds=2, folds=[0], batch_size=4,
                  max_steps=1, anchor_weight=5.0, anchor_text=["train"], anchor_batch_size=2,
                  output_dir=str(tmp_path / "a"))
    run_study(StudyConfig(arms=["hybrid", "hybrid+anchor"], **common))
    saved = json.loads((tmp_path / "a" / "fold0" / "hybrid+anchor" / "arm_settings.json").read_text())
    assert saved["anchor_prompts"] == ["passage"]
    # another anchor setting: the plain arm's results stand, the anchored arm's do not
    run_study(StudyConfig(arms=["hybrid"], **{**common, "anchor_prompts": ["query", "passage"]}))
    with pytest.raises(ConfigError, match=r"hybrid\+anchor was made with other settings \(anchor_prompts: "):
        run_study(StudyConfig(arms=["hybrid+anchor"], **{**common, "anchor_prompts": ["query", "passage"]}))
    # results recorded before a setting existed stand while it is at its default
    for arm in ("hybrid", "hybrid+anchor"):
        path = tmp_path / "a" / "fold0" / arm / "arm_settings.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "relation_weight"}))
    run_study(StudyConfig(arms=["hybrid", "hybrid+anchor"], **common))
    # ... or, where the setting changed what a run does, at what it meant before it existed: padded chunks
    for arm in ("hybrid", "hybrid+anchor"):
        path = tmp_path / "a" / "fold0" / arm / "arm_settings.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "packing"}))
    run_study(StudyConfig(arms=["hybrid"], **{**common, "packing": False}))
    with pytest.raises(ConfigError, match=r"fold0/hybrid was made with other settings \(packing: None, now True\)"):
        run_study(StudyConfig(arms=["hybrid"], **{**common, "packing": True}))


def test_the_final_robust_study_trains_what_the_dev_study_trained():
    """recipes/robust/study.yaml reuses the dev study's fold-0 models: every arm they share trains with the same
    settings (only where results are written differs)."""
    root = Path(__file__).resolve().parents[1] / "recipes" / "robust"
    dev, final = (parse_config(StudyConfig, ["--config", str(root / name)]) for name in ("dev.yaml", "study.yaml"))
    assert final.eval_split == "test" and final.folds == [0, 1] and dev.eval_split == "dev"
    shared = [arm for arm in final.all_arms() if arm.sampler and arm.composition == "none"]
    assert {"hybrid", "hybrid+relation-en=3", "hybrid+relation-en=3+mlm"} <= {arm.name for arm in shared}
    for arm in shared:
        dev_values, final_values = (StudyRun(cfg).training_values(0, arm) for cfg in (dev, final))
        differ = {k for k in dev_values if dev_values[k] != final_values[k]}
        assert differ <= {"output_dir"}, (arm.name, differ)
        assert StudyRun(dev).model_dir(0, arm) == StudyRun(final).model_dir(0, arm)


def test_each_part_of_an_arm_is_compared_with_the_arm_without_it(tmp_path):
    from hf_hybrid.study_report import intervals, intervals_tables, without_one_part

    chosen = "hybrid+relation-en=3"
    assert without_one_part(f"dapt-anchored-merge+{chosen}", ["hybrid", chosen]) == {"DAPT": chosen}
    assert without_one_part(f"{chosen}+mlm@0.7#43", [f"{chosen}@0.7#43", f"{chosen}+mlm#43", f"{chosen}+mlm@0.7"]) \
        == {"joint MLM": f"{chosen}@0.7#43", "interpolation": f"{chosen}+mlm#43", "seed": f"{chosen}+mlm@0.7"}
    assert without_one_part(chosen, ["hybrid"]) == {"relational anchor": "hybrid"}
    assert without_one_part("dapt-merge", ["base", "hybrid"]) == {}  # DAPT alone: base is compared anyway

    # every query of an arm scores base's AP + the arm's offset, a different offset for Hausa's FLORES queries
    offsets = {"base": (0.0, 0.0), "hybrid": (0.2, -0.1), "hybrid#43": (0.21, -0.09), chosen: (0.15, 0.01),
               f"dapt-anchored-merge+{chosen}": (0.14, 0.03), "dapt-merge+hybrid": (0.18, -0.2)}
    for arm, (xquad, hausa) in offsets.items():
        folder = tmp_path / "fold0" / arm
        (folder / "flores").mkdir(parents=True)
        groups = {lang: ["g1", "g2", "g3"] for lang in ("de", "en", "ha", "yo")}
        xquad_ap = {"monolingual": {"de-de": [0.5 + xquad] * 3}, "multilingual": {"de": [0.4 + xquad] * 3}}
        flores_ap = {"cross-lingual": {f"{a}-{b}": [0.6 + (hausa if "ha" in (a, b) else 0)] * 3
                                       for a, b in (("ha", "en"), ("en", "ha"), ("yo", "en"), ("en", "yo"))},
                     "multilingual": {lang: [0.3] * 3 for lang in ("ha", "yo")}}
        (folder / "per_query.json").write_text(json.dumps({"groups": groups, "ap": xquad_ap}))
        (folder / "flores" / "per_query.json").write_text(json.dumps({"groups": groups, "ap": flores_ap}))
    found = intervals(tmp_path, list(offsets), [0], flores=True, n_resamples=50)

    dapt = found[f"dapt-anchored-merge+{chosen}"][chosen]
    assert dapt["part"] == "DAPT"
    assert abs(dapt["xquad-r"]["multilingual"]["diff"] - (0.14 - 0.15)) < 1e-9
    assert abs(dapt["flores"]["x-en"]["ha"]["diff"] - (0.03 - 0.01)) < 1e-9
    assert dapt["flores"]["x-en"]["yo"]["diff"] == 0
    assert found["dapt-merge+hybrid"]["hybrid"]["part"] == "DAPT"  # also in the table against hybrid
    assert found["hybrid#43"]["hybrid"]["part"] == "seed" and "part" not in found["hybrid"]["base"]
    assert set(found[chosen]) == {"base", "hybrid"} and found[chosen]["hybrid"]["part"] == "relational anchor"
    assert "base" not in found  # base against hybrid would be hybrid against base again, sign reversed
    md = intervals_tables(found)
    assert f"| DAPT | dapt-anchored-merge+{chosen} | {chosen} | -0.010 [-0.010, -0.010] |" in md
    assert "What DAPT adds per low-resource language" in md
    assert "FLORES difference from hybrid per low-resource language" in md
    assert f"| {chosen} X->en | +0.110 [+0.110, +0.110] |" in md  # Hausa: +0.01 against hybrid's -0.1
    assert f"| dapt-anchored-merge+{chosen} against {chosen} X->en | +0.020 [+0.020, +0.020] | +0.000" in md
