import json

from hf_hybrid.study import StudyConfig, run_study


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
