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
