"""Hybrid batches in sentence-transformers' trainer (hf_hybrid.integrations.sentence_transformers)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from hf_hybrid.data.parallel_qa import load_parallel_qa
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.integrations.sentence_transformers import (
    SAMPLER_COLUMNS,
    HybridPairBatchSampler,
    PairTableCollator,
    column_prompts,
    hybrid_batch_sampler,
    pair_collator,
    pair_table,
    recommended_loss,
)
from hf_hybrid.sampling import SAMPLERS, make_sampler

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "recipes" / "examples" / "train_with_sentence_transformers.py"


@pytest.fixture(scope="module")
def demo():
    data = load_parallel_qa("demo")
    return data, pair_table(data)


def test_pair_table_holds_every_pair_the_samplers_can_draw(demo):
    data, table = demo
    groups, languages = set(data["group_id"]), sorted(set(data["lang"]))
    assert len(table) == len(groups) * len(languages) ** 2
    assert table.column_names == ["anchor", "positive", *SAMPLER_COLUMNS]
    row = table[len(languages) + 2]  # first group, second query language, third passage language
    first = data["group_id"][0]
    source = {r["lang"]: r for r in data if r["group_id"] == first}
    assert (row["group_id"], row["query_lang"], row["passage_lang"]) == (first, languages[1], languages[2])
    assert row["anchor"] == source[languages[1]]["query"] and row["positive"] == source[languages[2]]["passage"]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_yields_the_toolkit_samplers_batches(demo, name):
    data, table = demo
    ours = HybridPairBatchSampler(table, batch_size=8, seed=3, sampler=name, alpha=0.5)
    ours.set_epoch(1)
    toolkit = make_sampler(name, data, 8, alpha=0.5, seed=3)
    toolkit.set_epoch(1)
    batches = list(ours)
    assert len(batches) == len(ours) == len(toolkit) > 0
    kinds = set()
    for batch, pairs in zip(batches, toolkit, strict=True):
        rows = table[batch]
        assert rows["anchor"] == [data["query"][q] for q, _ in pairs]
        assert rows["positive"] == [data["passage"][p] for _, p in pairs]
        assert len(set(rows["group_id"])) == len(batch), "a group twice in one batch"
        mono = [q == p for q, p in zip(rows["query_lang"], rows["passage_lang"], strict=True)]
        if name != "random":
            assert all(mono) or not any(mono), "a batch mixes monolingual and cross-lingual pairs"
        if all(mono):
            assert len(set(rows["query_lang"])) == 1
        kinds.add(all(mono))
    if name == "hybrid":
        assert kinds == {True, False}
    if name == "en-en":
        assert all(set(table[b]["query_lang"]) == {"en"} for b in batches)


def test_two_replicas_get_their_slices_of_one_global_batch_in_rank_order(demo):
    data, table = demo
    ours = list(HybridPairBatchSampler(table, batch_size=4, seed=1, num_replicas=2))
    ranks = [list(make_sampler("hybrid", data, 4, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ours) == 2 * len(ranks[0])
    for step, (pairs0, pairs1) in enumerate(zip(*ranks, strict=True)):
        for batch, pairs in zip(ours[2 * step : 2 * step + 2], (pairs0, pairs1), strict=True):
            assert table[batch]["anchor"] == [data["query"][q] for q, _ in pairs]


def test_collator_keeps_the_sampler_columns_from_the_loss(tiny_model_dir, demo):
    model = SentenceTransformer(str(tiny_model_dir))
    batch = PairTableCollator(preprocess_fn=model.preprocess)([demo[1][i] for i in range(3)])
    assert {key.split("_")[0] for key in batch} == {"anchor", "positive"}
    assert column_prompts(model) == {"anchor": "query: ", "positive": "passage: "}


def test_recommended_loss_is_the_toolkits(tiny_model_dir):
    model = SentenceTransformer(str(tiny_model_dir))
    loss = recommended_loss(model)
    assert type(loss).__name__ == "MultipleNegativesRankingLoss"
    assert loss.scale == pytest.approx(20.0) and loss.gather_across_devices
    cached = recommended_loss(model, temperature=0.1, mini_batch_size=4)
    assert type(cached).__name__ == "CachedMultipleNegativesRankingLoss"
    assert cached.scale == pytest.approx(10.0) and cached.mini_batch_size == 4 and cached.gather_across_devices


def test_trainer_trains_on_hybrid_batches(tiny_model_dir, demo, tmp_path):
    model = SentenceTransformer(str(tiny_model_dir))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3,
        save_strategy="no", report_to="none", batch_sampler=hybrid_batch_sampler("hybrid", 0.5),
        prompts=column_prompts(model))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=demo[1], loss=recommended_loss(model),
                                         data_collator=pair_collator(model, args))
    result = trainer.train()
    assert result.global_step == 3 and result.training_loss > 0
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("encoder.layer" in k for k in changed), changed


def test_bad_input_is_one_line(demo):
    data, table = demo
    anchors_only = table.select_columns(["anchor", "positive"])
    with pytest.raises(DataError, match="needs the columns group_id, query_lang, passage_lang") as err:
        HybridPairBatchSampler(anchors_only, batch_size=4)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="missing lang"):
        pair_table(data.remove_columns("lang"))
    with pytest.raises(DataError, match="has no row for group"):
        HybridPairBatchSampler(table.select(range(1, len(table))), batch_size=4)
    with pytest.raises(DataError, match="has no row in language"):
        pair_table(data.select(range(1, len(data))))
    with pytest.raises(ConfigError, match="unknown sampler 'mixed'"):
        hybrid_batch_sampler("mixed")
    with pytest.raises(ConfigError, match=r"alpha must be in \[0, 1\]"):
        hybrid_batch_sampler("hybrid", alpha=2)
    with pytest.raises(DataError):
        pair_table(Dataset.from_dict({"anchor": ["a"], "positive": ["b"]}))


DRIVER = """
import json, sys
import torch.distributed as dist
sys.path.insert(0, {examples!r})
from train_with_sentence_transformers import build_trainer, parse_args
from hf_hybrid.integrations.sentence_transformers import SAMPLER_COLUMNS, PairTableCollator

class LoggingCollator(PairTableCollator):
    def __call__(self, features):
        with open(f"{out}/batches-rank{{dist.get_rank()}}.jsonl", "a") as f:
            f.write(json.dumps({{c: [row[c] for row in features] for c in SAMPLER_COLUMNS}}) + "\\n")
        return super().__call__(features)

trainer = build_trainer(parse_args(sys.argv[1:]))
c = trainer.data_collator
trainer.data_collator = LoggingCollator(preprocess_fn=c.preprocess_fn, router_mapping=c.router_mapping,
                                        prompts=c.prompts)
trainer.train()
"""


def test_two_processes_draw_the_same_batch_type_and_languages_per_step(tiny_model_dir, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER.format(examples=str(EXAMPLE.parent), out=str(tmp_path))))
    # torchrun-style launch of 2 processes; ACCELERATE_USE_CPU makes accelerate join them with gloo
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(driver),
           "--model", str(tiny_model_dir), "--batch_size", "4", "--max_steps", "6", "--output_dir", str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"batches-rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert min(map(len, ranks)) >= 6
    kinds = set()
    for b0, b1 in list(zip(*ranks, strict=False))[:6]:
        assert not set(b0["group_id"]) & set(b1["group_id"]), "both processes trained on the same rows"
        mono = [all(q == p for q, p in zip(b["query_lang"], b["passage_lang"], strict=True)) for b in (b0, b1)]
        assert mono[0] == mono[1], "processes drew different batch types"
        if mono[0]:
            assert set(b0["query_lang"]) == set(b1["query_lang"]) and len(set(b0["query_lang"])) == 1
        else:
            assert all(q != p for b in (b0, b1) for q, p in zip(b["query_lang"], b["passage_lang"], strict=True))
        kinds.add(mono[0])
    assert kinds == {True, False}
    data = load_parallel_qa("demo")  # exactly the toolkit loop's batches (the example's seed is 0)
    for rank, batches in enumerate(ranks):
        expected = [{"group_id": [data["group_id"][q] for q, _ in pairs],
                     "query_lang": [data["lang"][q] for q, _ in pairs],
                     "passage_lang": [data["lang"][p] for _, p in pairs]}
                    for pairs in make_sampler("hybrid", data, 4, seed=0, num_replicas=2, rank=rank)]
        assert batches[:6] == expected[:6]


def test_example_says_bad_input_in_one_line(tiny_model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(EXAMPLE), "--model", str(tiny_model_dir), "--sampler", "mixed",
                             "--output_dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown sampler 'mixed'")
    assert "Traceback" not in result.stderr
