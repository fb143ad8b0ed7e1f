import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_hybrid.config import parse_config
from hf_hybrid.errors import ConfigError
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.training.hybrid import HybridTrainingConfig, train
from hf_hybrid.training.loss import InBatchNegativesLoss

ROOT = Path(__file__).resolve().parents[1]


def test_loss_is_cross_entropy_over_in_batch_passages():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)  # 4 positives + 2 hard negatives
    loss = InBatchNegativesLoss(temperature=0.1)(q, p)
    logits = q @ p.T / 0.1
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(4), torch.arange(4)].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature must be positive"):
        InBatchNegativesLoss(temperature=0)


def test_config_yaml_and_overrides(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("alpha: 0.3\nlanguages: [en, sw]\nmax_steps: 7\n")
    cfg = parse_config(HybridTrainingConfig, ["--config", str(yaml_path), "--max_steps", "9"])
    assert (cfg.alpha, cfg.languages, cfg.max_steps) == (0.3, ["en", "sw"], 9)


def test_train_resume_and_saved_model(tiny_model_dir, tmp_path):
    def config(**kw):
        return HybridTrainingConfig(model=str(tiny_model_dir), data="demo", languages=["en", "de", "sw"],
                                    batch_size=8, learning_rate=1e-3, logging_steps=2,
                                    output_dir=str(tmp_path / "run"),
                                    **kw)

    before = Encoder.from_pretrained(str(tiny_model_dir)).encode(["Where is the river?"], "query")
    train(config(max_steps=4, save_steps=2))
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all(r["pairs_per_s"] > 0 for r in log)
    after = Encoder.from_pretrained(str(out)).encode(["Where is the river?"], "query")
    assert not torch.allclose(before, after), "training changed nothing"
    assert "alpha: 0.5" in (out / "training_config.yaml").read_text()

    train(config(max_steps=6, save_steps=2, resume=True))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6]  # resumed at 4, not from 0
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 6


def test_lora_and_frozen_embeddings(tiny_model_dir, tmp_path):
    train(HybridTrainingConfig(model=str(tiny_model_dir), data="demo", languages=["en", "fr"], batch_size=8,
                               max_steps=2, lora=True, lora_r=4, freeze_embeddings=True,
                               output_dir=str(tmp_path / "lora")))
    saved = Encoder.from_pretrained(str(tmp_path / "lora"))  # merged: loads as a plain encoder
    assert saved.encode(["hello"], "query").shape == (1, 32)


def test_two_processes_train_different_rows_with_the_same_batch_types(tiny_model_dir, tmp_path):
    out = tmp_path / "ddp"
    # torchrun-style launch of 2 processes; ACCELERATE_USE_CPU makes accelerate join them with gloo
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "recipes" / "train_hybrid.py"), "--model", str(tiny_model_dir), "--data", "demo",
           "--batch_size", "4", "--max_steps", "6", "--alpha", "0.5", "--log_batches", "true",
           "--output_dir", str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [[json.loads(line) for line in (out / f"batches-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [b["step"] for b in ranks[0]] == [b["step"] for b in ranks[1]] == list(range(1, 7))
    kinds = set()
    for b0, b1 in zip(*ranks, strict=True):
        assert not set(b0["group_id"]) & set(b1["group_id"]), "both ranks trained on the same rows"
        mono = [all(q == p for q, p in zip(b["query_lang"], b["passage_lang"], strict=True)) for b in (b0, b1)]
        assert mono[0] == mono[1], "ranks drew different batch types"
        if mono[0]:
            assert set(b0["query_lang"]) == set(b1["query_lang"]) and len(set(b0["query_lang"])) == 1
        else:
            assert all(q != p for b in (b0, b1) for q, p in zip(b["query_lang"], b["passage_lang"], strict=True))
        kinds.add(mono[0])
    assert (out / "modules.json").is_file()


def _gather_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    q_all, p_all = torch.randn(world * 3, 8), torch.randn(world * 3, 8)
    q = q_all[rank * 3 : (rank + 1) * 3].clone().requires_grad_()
    p = p_all[rank * 3 : (rank + 1) * 3].clone().requires_grad_()
    InBatchNegativesLoss(temperature=0.5)(q, p).backward()
    torch.save({"q": q.grad, "p": p.grad}, f"{out_dir}/grad{rank}.pt")
    dist.destroy_process_group()


def test_gathered_negatives_give_the_full_batch_gradient(tmp_path):
    """Across 2 processes, each rank's gradient is world x the full-batch loss's (DDP then averages)."""
    import torch.multiprocessing as mp

    world = 2
    mp.spawn(_gather_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world)
    torch.manual_seed(0)
    q_all = torch.randn(world * 3, 8).requires_grad_()
    p_all = torch.randn(world * 3, 8).requires_grad_()
    logits = q_all @ p_all.T / 0.5
    torch.nn.functional.cross_entropy(logits, torch.arange(world * 3)).backward()
    for rank in range(world):
        grads = torch.load(tmp_path / f"grad{rank}.pt")
        rows = slice(rank * 3, (rank + 1) * 3)
        torch.testing.assert_close(grads["q"], world * q_all.grad[rows])
        torch.testing.assert_close(grads["p"], world * p_all.grad[rows])


def test_hard_negatives_join_the_passages(tiny_model_dir, tmp_path):
    from hf_hybrid.data.parallel_qa import load_demo
    from hf_hybrid.training.hybrid import PairCollator, PairDataset

    rows = [dict(r, hard_negatives=[f"{r['passage']} (not this one)"]) for r in load_demo(["en", "sw"])]
    data = tmp_path / "with_negatives.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    train(HybridTrainingConfig(model=str(tiny_model_dir), data=str(data), batch_size=4, max_steps=2,
                               hard_negatives=1, output_dir=str(tmp_path / "run")))
    assert (tmp_path / "run" / "modules.json").is_file()

    from hf_hybrid.data.parallel_qa import load_parallel_qa

    ds = load_parallel_qa(str(data))
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    pairs = PairDataset(ds, encoder, 32, 32, hard_negatives=1)
    batch = PairCollator(encoder.tokenizer.pad_token_id, max_tokens=4096)([pairs[(0, 1)], pairs[(2, 3)]])
    assert len(batch["query"]) == 2 and len(batch["passage"]) == 4
    # the pre-tokenized rows are what the encoder's own tokenization gives
    passages = [ds[1]["passage"], ds[3]["passage"], *ds[1]["hard_negatives"], *ds[3]["hard_negatives"]]
    expected = encoder.tokenize(passages, "passage", max_length=32)
    (chunk,), (rows,) = batch["passage"].inputs, batch["passage"].rows
    for position, row in enumerate(rows):
        length = int(expected["attention_mask"][row].sum())
        assert torch.equal(chunk["input_ids"][position, :length], expected["input_ids"][row, :length])
        assert int(chunk["attention_mask"][position].sum()) == length


def test_bf16_with_gradient_checkpointing(tiny_model_dir, tmp_path):
    # a process of its own: accelerate keeps one mixed-precision setting per process
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "hf_hybrid.cli", "train", "--model", str(tiny_model_dir), "--data", "demo",
         "--batch_size", "4", "--max_steps", "2", "--mixed_precision", "bf16", "--gradient_checkpointing", "true",
         "--output_dir", str(tmp_path / "bf16")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "bf16" / "train_summary.json").read_text())["steps"] == 2


class Stopped(Exception):
    pass


@pytest.mark.parametrize("where", ["within an epoch", "at an epoch's end"])
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tiny_model_dir, tmp_path, monkeypatch, where):
    from safetensors.torch import load_file

    import hf_hybrid.training.hybrid as hybrid
    from hf_hybrid.data.parallel_qa import load_parallel_qa
    from hf_hybrid.sampling import make_sampler

    languages, batch_size = ["en", "de"], 8
    per_epoch = len(make_sampler("hybrid", load_parallel_qa("demo", languages), batch_size))
    cut = per_epoch if where == "at an epoch's end" else 3
    assert 0 < cut < per_epoch + 2 and (cut % per_epoch == 0) == (where == "at an epoch's end")

    def config(out, **kw):
        return HybridTrainingConfig(model=str(tiny_model_dir), data="demo", languages=languages, batch_size=batch_size,
                                    learning_rate=1e-3, logging_steps=1, max_steps=per_epoch + 2, save_steps=cut,
                                    output_dir=str(out), **kw)

    whole = train(config(tmp_path / "whole"))
    save = hybrid.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise Stopped  # as a run killed right after its checkpoint

    monkeypatch.setattr(hybrid, "save_checkpoint", save_then_stop)
    with pytest.raises(Stopped):
        train(config(tmp_path / "cut"))
    monkeypatch.setattr(hybrid, "save_checkpoint", save)
    resumed = train(config(tmp_path / "cut", resume=True))

    expected, got = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert expected.keys() == got.keys()
    assert max((expected[k] - got[k]).abs().max().item() for k in expected) == 0.0

    def log(run):
        return [(r["step"], r["loss"]) for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())]

    assert log(resumed) == log(whole)  # every step once, with the same loss


def test_checkpoints_hold_only_safetensors_and_json_and_a_damaged_one_is_skipped(tiny_model_dir, tmp_path, caplog):
    def config(**kw):
        return HybridTrainingConfig(**{"model": str(tiny_model_dir), "data": "demo", "languages": ["en", "de"],
                                       "batch_size": 4, "max_steps": 4, "logging_steps": 2, "save_steps": 2,
                                       "output_dir": str(tmp_path / "run"), **kw})

    with pytest.raises(ConfigError, match="no complete checkpoint"):
        train(config(resume=True))
    train(config())
    checkpoints = tmp_path / "run" / "checkpoints"
    assert {p.suffix for p in checkpoints.rglob("*") if p.is_file()} == {".safetensors", ".json"}
    with open(checkpoints / "step-4" / "optimizer.safetensors", "r+b") as f:  # altered after it was saved
        f.seek(-1, 2)
        f.write(b"\0")
    train(config(max_steps=6, resume=True))
    assert "skipping" in caplog.text and "step-4" in caplog.text
    log = [json.loads(line)["step"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log == [2, 4, 6]  # resumed from step 2: the steps after it are logged once, by the resumed run
