"""recipes/robust/query_side.py: English queries of one model against another model's FLORES sentences."""

import importlib.util
from pathlib import Path

import pytest
import torch
from test_flores import write_sib

SCRIPT = Path(__file__).parent.parent / "recipes" / "robust" / "query_side.py"


def _script():
    spec = importlib.util.spec_from_file_location("query_side", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reciprocal_rank_of_each_querys_own_passage():
    script = _script()
    passages = torch.eye(3)
    assert script.reciprocal_rank(passages, passages) == 1.0
    queries = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # the first ranks its own second
    assert script.reciprocal_rank(queries, passages) == pytest.approx((0.5 + 1 + 1) / 3)


def test_the_same_model_on_both_sides_gives_one_score_per_language(tiny_model_dir, tmp_path, capsys):
    sib = write_sib(tmp_path / "sib")
    model = str(tiny_model_dir)
    for direction in ("en-x", "x-en"):
        assert _script().main(["--base", model, "--tuned", model, "--flores", str(sib), "--languages", "hau",
                               "--direction", direction]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"FLORES {direction}, mean reciprocal rank")
        cells = [line for line in out.splitlines() if line.startswith("| ha |")][0].strip("| ").split(" | ")[1:]
        assert len(cells) == 4 and len(set(cells)) == 1 and 0.5 <= float(cells[0]) <= 1.0


def test_an_unknown_language_is_one_error_line(tiny_model_dir, tmp_path, capsys):
    sib = write_sib(tmp_path / "sib")
    assert _script().main(["--tuned", str(tiny_model_dir), "--flores", str(sib), "--languages", "yor"]) != 0
    assert capsys.readouterr().err == "error: no FLORES/SIB-200 folder for language 'yor'\n"
