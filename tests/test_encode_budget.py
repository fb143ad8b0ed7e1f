"""Encoding by token budget: texts sorted by token count, length-grouped batches padded only to their own
longest text; the embeddings and the evaluation's scores are those of encoding each text alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_hybrid.errors import ConfigError
from hf_hybrid.evaluation.run import EvalConfig, run_evaluation
from hf_hybrid.models.chunks import plan_chunks
from hf_hybrid.models.encoder import Encoder

WORDS = "the river flows north through the delta and into the sea past old towns and green fields".split()
# 1 to about 300 words, shuffled so that input order is not length order; the longest are cut at max_length
TEXTS = [" ".join(WORDS[j % len(WORDS)] for j in range(n)) for n in (3, 250, 1, 40, 7, 120, 300, 15, 2, 60, 33, 5)]


def alone(encoder: Encoder, text: str, kind: str) -> torch.Tensor:
    """One text encoded by itself: no padding at all."""
    (ids,) = encoder.token_ids([text], kind)
    with torch.inference_mode():
        return encoder(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_budgeted_encode_equals_each_text_alone_in_input_order(tiny_model_dir, kind):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    lengths = [len(ids) for ids in encoder.token_ids(TEXTS, kind)]
    assert max(lengths) == encoder.max_length and min(lengths) < 10  # very different lengths, some cut
    budget = encoder.max_length  # the smallest budget allowed: many chunks
    chunks = plan_chunks(lengths, budget, 64)
    assert len(chunks) >= 5 and max(len(rows) for rows in chunks) > 1  # many chunks, some of them padded
    expected = torch.stack([alone(encoder, text, kind) for text in TEXTS])
    for max_tokens in (budget, 10**6):
        torch.testing.assert_close(encoder.encode(TEXTS, kind, max_tokens=max_tokens), expected,
                                   atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(encoder.encode(TEXTS, kind, batch_size=3), expected, atol=1e-5, rtol=1e-4)


def score_leaves(tree, path=()):
    """Every number of a results tree, by its path."""
    if isinstance(tree, dict):
        return {leaf: v for key, sub in tree.items() for leaf, v in score_leaves(sub, (*path, key)).items()}
    return {path: tree} if isinstance(tree, (int, float)) else {}


def test_evaluation_scores_do_not_depend_on_the_token_budget(tiny_model_dir):
    # in float64, so that padding's float32 noise (1e-7) cannot reorder the random tiny model's near-tied
    # candidates deep in a ranking, which moves its rank correlations by about 1e-6; embeddings come out float32
    encoder = Encoder.from_pretrained(str(tiny_model_dir), dtype=torch.float64)
    runs = [run_evaluation(EvalConfig(model=str(tiny_model_dir), data="demo", languages=["de", "en", "sw"],
                                      batch_size=batch_size, batch_tokens=batch_tokens), encoder)
            for batch_size, batch_tokens in ((128, encoder.max_length), (10**6, 10**9))]
    small, huge = ({k: v for k, v in score_leaves(r).items() if k[0] not in ("seconds", "config")} for r in runs)
    assert small.keys() == huge.keys() and len(small) > 100
    assert {k[0] for k in small} >= {"monolingual", "cross-lingual", "multilingual"}
    for key, value in small.items():
        assert value == pytest.approx(huge[key], abs=1e-6), key


def test_a_budget_below_the_longest_allowed_sequence_is_one_error(tiny_model_dir):
    cfg = EvalConfig(model=str(tiny_model_dir), data="demo", batch_tokens=100)
    with pytest.raises(ConfigError) as err:
        run_evaluation(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("token budget 100 is below the longest allowed sequence (128 tokens, ")
    assert message.endswith("max_length): expected at least 128")


def test_the_command_line_names_the_bad_budget_in_one_line(tiny_model_dir):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("HF_HYBRID_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "hf_hybrid.cli", "eval", "--model", str(tiny_model_dir),
                             "--data", "demo", "--batch_tokens", "64"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: token budget 64 is below the longest allowed sequence (128 tokens"), last
