"""Watching a hybrid run: --eval_steps on the dev split with the best model kept, --report_to trackers, and the
training curve in the report, the model card and the pushed folder."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_hybrid.config import parse_config
from hf_hybrid.errors import ConfigError
from hf_hybrid.evaluation.report import build_report
from hf_hybrid.evaluation.run import EvalConfig, run_evaluation
from hf_hybrid.hub.cards import render_model_card
from hf_hybrid.hub.push import build_model_folder, model_files
from hf_hybrid.training import dev_eval, trackers
from hf_hybrid.training.hybrid import HybridTrainingConfig, train

SCRIPTED = {2: 0.5, 4: 0.9, 6: 0.7}  # the dev multilingual mAP the test makes each evaluation report


def config(model, out, **overrides) -> HybridTrainingConfig:
    options = dict(model=str(model), data="demo", languages=["en", "de", "sw"], batch_size=4, max_steps=6,
                   logging_steps=2, learning_rate=1e-3, dev_fraction=0.25, eval_steps=2, output_dir=str(out))
    return HybridTrainingConfig(**{**options, **overrides})


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def scripted_run(tiny_model_dir, tmp_path_factory):
    """A run whose evaluations are real but whose multilingual mAP is SCRIPTED, so the best is not the last step."""
    real = dev_eval.headline_metrics
    steps = iter(SCRIPTED)

    def scripted(results):
        return {**real(results), "multilingual_map": SCRIPTED[next(steps)]}

    out = tmp_path_factory.mktemp("scripted") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dev_eval, "headline_metrics", scripted)
        train(config(tiny_model_dir, out, save_steps=2, save_total_limit=0))
    return out


def test_eval_steps_log_the_dev_metrics_with_their_step(scripted_run, tiny_model_dir, tmp_path):
    evals = [r for r in records(scripted_run) if "eval_cross_lingual_map" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert [r["eval_multilingual_map"] for r in evals] == list(SCRIPTED.values())
    for r in evals:
        assert 0 < r["eval_cross_lingual_map"] <= 1 and 0 < r["eval_monolingual_map"] <= 1
        assert 0 <= r["eval_same_language_share"] <= 1
    # the last evaluation is hf-hybrid eval on the dev split of the model trained to the end (step 6's checkpoint)
    last = load_file(str(scripted_run / "checkpoints" / "step-6" / "trainable.safetensors"))
    from hf_hybrid.models.encoder import Encoder

    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    encoder.load_state_dict(last, strict=False)
    dev = run_evaluation(EvalConfig(model=str(tiny_model_dir), data="demo", languages=["en", "de", "sw"],
                                    split="dev", dev_fraction=0.25), encoder=encoder)
    assert evals[-1]["eval_cross_lingual_map"] == pytest.approx(dev["cross-lingual"]["average"]["map"], abs=1e-9)


def test_the_final_model_is_the_best_step(scripted_run):
    summary = json.loads((scripted_run / "train_summary.json").read_text())
    assert (summary["best_step"], summary["best_metric"], summary["best_score"]) == (4, "multilingual_map", 0.9)
    assert summary["steps"] == 6
    saved = load_file(str(scripted_run / "model.safetensors"))

    def as_saved(weights):  # the encoder's parameter names, as the transformers model saves them
        return {name.removeprefix("model."): value for name, value in weights.items()}

    best = as_saved(load_file(str(scripted_run / "checkpoints" / "step-4" / "trainable.safetensors")))
    kept = as_saved(load_file(str(scripted_run / "checkpoints" / "best" / "trainable.safetensors")))
    last = as_saved(load_file(str(scripted_run / "checkpoints" / "step-6" / "trainable.safetensors")))
    assert best.keys() <= saved.keys() and kept.keys() == best.keys()
    assert all(torch.equal(saved[name], best[name]) and torch.equal(kept[name], best[name]) for name in best)
    assert any(not torch.equal(saved[name], last[name]) for name in last)


def test_training_curve_in_report_card_and_push(scripted_run, tmp_path):
    evaluated = tmp_path / "dev_eval"
    run_evaluation(EvalConfig(model=str(scripted_run), data="demo", languages=["en", "de"], output_dir=str(evaluated)))
    report = tmp_path / "report"
    page = build_report([evaluated], report).read_text()
    assert "## Training" in page and "(training_1_dev_eval.png)" in page
    assert (report / "training_1_dev_eval.png").stat().st_size > 10_000
    card = render_model_card(scripted_run, [evaluated], repo_id="me/tiny", report_dir=report)
    assert "![dev_eval: training loss and dev mAP by step](figures/training_1_dev_eval.png)" in card
    assert "the weights saved are those of step 4, the best by multilingual_map (0.9000)" in card
    assert "Logged training loss (`train_log.jsonl`)" in card and "at step 6." in card
    files = build_model_folder(scripted_run, tmp_path / "push", "me/tiny", [evaluated], report_dir=report)
    assert "figures/training_1_dev_eval.png" in files and not any(f.startswith("checkpoints/") for f in files)


@pytest.mark.parametrize("argv, fragment", [
    (["--eval_steps", "5"], "eval_steps 5 needs a dev split: give --dev_fraction too"),
    (["--eval_steps", "5", "--dev_fraction", "0.2", "--metric_for_best_model", "loss"],
     "metric_for_best_model 'loss' is not a dev metric (expected one of multilingual_map, cross_lingual_map, "
     "monolingual_map)"),
    (["--report_to", "mlflow"], "report_to 'mlflow' is not a tracker (expected none, tensorboard, wandb)"),
])
def test_bad_options_are_one_line(argv, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config(HybridTrainingConfig, argv)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_tracker_that_is_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "wandb", lambda: False)
    expected = r"report_to wandb: wandb is not installed \(pip install 'hf-hybrid\[wandb\]'\)"
    with pytest.raises(ConfigError, match=expected):
        parse_config(HybridTrainingConfig, ["--report_to", "wandb"])


def test_tracker_values_name_train_and_eval_scalars():
    record = {"step": 4, "loss": 1.2, "lr": 1e-4, "pairs_per_s": 9.0, "anchor_loss": 0.1}
    assert trackers.tracker_values(record) == {"train/loss": 1.2, "train/lr": 1e-4, "train/pairs_per_s": 9.0,
                                               "train/anchor_loss": 0.1}
    assert trackers.tracker_values({"step": 4, "eval_multilingual_map": 0.5}) == {"eval/multilingual_map": 0.5}


def test_tensorboard_logs_every_record_and_is_pushed(tiny_model_dir, tmp_path):
    pytest.importorskip("torch.utils.tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(config(tiny_model_dir, out, max_steps=4, report_to="tensorboard"))
    events = sorted((out / "runs").rglob("events.out.tfevents.*"))
    assert events
    scalars = {}
    for file in events:
        acc = EventAccumulator(str(file))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    log = records(out)
    assert scalars["train/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in log if "loss" in r]
    assert [s for s, _ in scalars["eval/multilingual_map"]] == [2, 4]
    assert {"train/lr", "train/pairs_per_s", "train/tokens_per_s", "eval/same_language_share"} <= set(scalars)
    pushed = {p.as_posix() for p in model_files(out)}
    assert {f.relative_to(out).as_posix() for f in events} <= pushed


def test_a_pushed_card_without_report_draws_its_own_training_curve(scripted_run, tmp_path):
    files = build_model_folder(scripted_run, tmp_path / "push", "me/tiny")  # no --eval, no --report
    assert "figures/training_curve.png" in files
    assert (tmp_path / "push" / "figures" / "training_curve.png").stat().st_size > 10_000
    card = (tmp_path / "push" / "README.md").read_text()
    assert "![training loss and dev mAP by step (train_log.jsonl)](figures/training_curve.png)" in card
    assert card.index("figures/training_curve.png") > card.index("the best by multilingual_map")
    # a card whose report holds the training curve shows that one only
    evaluated = tmp_path / "dev_eval"
    run_evaluation(EvalConfig(model=str(scripted_run), data="demo", languages=["en", "de"], output_dir=str(evaluated)))
    report = tmp_path / "report"
    build_report([evaluated], report)
    with_report = build_model_folder(scripted_run, tmp_path / "push2", "me/tiny", [evaluated], report_dir=report)
    assert "figures/training_1_dev_eval.png" in with_report and "figures/training_curve.png" not in with_report


def test_the_saved_line_names_the_best_step(tiny_model_dir, tmp_path, capsys):
    train(config(tiny_model_dir, tmp_path / "run", max_steps=2))
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["best_step"] == 2
    assert (f"pairs/s; the weights of step 2, the best dev multilingual_map ({summary['best_score']:.4f}))"
            in capsys.readouterr().out)
