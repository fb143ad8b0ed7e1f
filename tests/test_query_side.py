"""recipes/robust/query_side.py: queries of one model against another model's FLORES sentences."""

import importlib.util
from pathlib import Path

from test_flores import write_sib

from hf_hybrid.data.parallel_qa import load_flores
from hf_hybrid.evaluation.retrieval import ParallelBenchmark, evaluate_parallel
from hf_hybrid.models.encoder import Encoder

SCRIPT = Path(__file__).parent.parent / "recipes" / "robust" / "query_side.py"


def _script():
    spec = importlib.util.spec_from_file_location("query_side", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_same_model_on_both_sides_scores_as_the_toolkits_evaluation(tiny_model_dir, tmp_path, capsys):
    sib = write_sib(tmp_path / "sib")
    model = str(tiny_model_dir)
    bench = ParallelBenchmark.from_rows(load_flores(str(sib), ["eng", "hau"], splits=("train",)))
    evaluated = evaluate_parallel(Encoder.from_pretrained(model).eval(), bench, progress=False)["cross-lingual"]
    for direction, setting in (("en-x", "en-ha"), ("x-en", "ha-en")):
        assert _script().main(["--base", model, "--tuned", model, "--flores", str(sib), "--languages", "hau",
                               "--direction", direction]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"FLORES {direction}, mean reciprocal rank")
        cells = [line for line in out.splitlines() if line.startswith("| ha |")][0].strip("| ").split(" | ")[1:]
        assert len(cells) == 4 and set(cells) == {f"{evaluated['per_setting'][setting]['map']:.3f}"}


def test_an_unknown_language_is_one_error_line(tiny_model_dir, tmp_path, capsys):
    sib = write_sib(tmp_path / "sib")
    assert _script().main(["--tuned", str(tiny_model_dir), "--flores", str(sib), "--languages", "yor"]) != 0
    assert capsys.readouterr().err == "error: no FLORES/SIB-200 folder for language 'yor'\n"
