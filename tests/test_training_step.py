"""The padding-free contrastive step (length-grouped chunks) and gradient caching: same loss, same gradients."""

import random

import pytest
import torch
from accelerate import Accelerator

from hf_hybrid.errors import ConfigError
from hf_hybrid.models.chunks import Chunks, pad, plan_chunks
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.training.hybrid import HybridTrainingConfig, PairCollator, PairDataset, contrastive_step
from hf_hybrid.training.loss import InBatchNegativesLoss


def test_chunks_keep_every_row_once_within_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 40) for _ in range(50)]
    chunks = plan_chunks(lengths, max_tokens=100, max_rows=6)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(50))
    for chunk in chunks:
        assert len(chunk) * max(lengths[i] for i in chunk) <= 100 and len(chunk) <= 6
    flat = [lengths[i] for chunk in chunks for i in chunk]
    assert flat == sorted(lengths, reverse=True)  # length-grouped: each chunk pads to its own longest
    padded = sum(len(c) * max(lengths[i] for i in c) for c in chunks)
    assert padded < len(lengths) * max(lengths)
    with pytest.raises(ConfigError, match="token budget 30 is below the longest text"):
        plan_chunks([10, 31], max_tokens=30)


def _tiny(tiny_model_dir, dropout: bool):
    torch.manual_seed(0)
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    if not dropout:
        encoder.model.config.hidden_dropout_prob = 0.0
        for module in encoder.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    encoder.train()
    return encoder


def _batch(encoder, max_tokens, max_rows=None, n=12):
    from hf_hybrid.data.parallel_qa import load_demo

    rows = load_demo(["en", "de", "sw"])
    pairs = PairDataset(rows, encoder, 48, 96)
    items = [pairs[(i, i)] for i in range(n)]
    return PairCollator(encoder.tokenizer.pad_token_id, max_tokens, max_rows)(items), items


def _step(encoder, batch, cached=False):
    encoder.zero_grad(set_to_none=True)
    step = contrastive_step(InBatchNegativesLoss(0.05), Accelerator(cpu=True), cached=cached)
    loss = step(encoder, batch, lambda loss: loss.backward()).loss
    return loss, {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


def _assert_same(first, second):
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_chunked_step_equals_the_padded_step(tiny_model_dir):
    # float64: the token-type gradient sums every token, and float32 sums in another order differ by more than
    # the tolerance on some runs
    encoder = _tiny(tiny_model_dir, dropout=False).double()
    batch, items = _batch(encoder, max_tokens=96 * 2)
    assert len(batch["passage"].inputs) > 2  # the budget split the passages
    padded_tokens = sum(chunk["input_ids"].numel() for chunk in batch["passage"].inputs)
    assert padded_tokens < len(items) * max(len(it["passage"]) for it in items)

    # the reference: every side padded to its longest text, in batch order
    encoder.zero_grad(set_to_none=True)
    pad_id = encoder.tokenizer.pad_token_id
    q, p = pad([it["query"] for it in items], pad_id), pad([it["passage"] for it in items], pad_id)
    loss = InBatchNegativesLoss(0.05)(encoder(q["input_ids"], q["attention_mask"]),
                                      encoder(p["input_ids"], p["attention_mask"]))
    loss.backward()
    reference = (loss.detach(), {n: t.grad.clone() for n, t in encoder.named_parameters() if t.grad is not None})
    _assert_same(_step(encoder, batch), reference)
    real_tokens = int(q["attention_mask"].sum() + p["attention_mask"].sum())
    assert batch["query"].tokens + batch["passage"].tokens == real_tokens


def test_gradient_caching_equals_the_plain_step_with_dropout(tiny_model_dir):
    encoder = _tiny(tiny_model_dir, dropout=True)
    batch, _ = _batch(encoder, max_tokens=4096, max_rows=3)
    assert all(len(rows) <= 3 for rows in batch["passage"].rows)
    torch.manual_seed(1)
    plain = _step(encoder, batch)
    after_plain = torch.get_rng_state()
    torch.manual_seed(1)
    cached = _step(encoder, batch, cached=True)
    _assert_same(plain, cached)  # the same dropout masks in both passes
    assert torch.equal(torch.get_rng_state(), after_plain)  # and the next step draws as the plain one's would
    torch.manual_seed(2)
    assert not torch.allclose(_step(encoder, batch)[0], plain[0])  # dropout is really on


@pytest.mark.parametrize("options, message", [
    ({"mini_batch_size": 0}, "mini_batch_size must be between 1 and the batch size"),
    ({"mini_batch_size": 33}, "mini_batch_size must be between 1 and the batch size"),
    ({"chunk_tokens": 100}, "chunk_tokens 100 is below the longest allowed sequence"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"),
])
def test_bad_step_options_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        HybridTrainingConfig(batch_size=32, **options)


def test_a_mini_batched_run_trains(tiny_model_dir, tmp_path):
    from hf_hybrid.training.hybrid import train

    train(HybridTrainingConfig(model=str(tiny_model_dir), data="demo", languages=["en", "sw"], batch_size=4,
                               max_steps=2, mini_batch_size=2, chunk_tokens=256, output_dir=str(tmp_path / "run")))
    assert (tmp_path / "run" / "modules.json").is_file()


def test_chunks_survive_a_worker_process():
    import pickle

    side = Chunks.build([[5, 6, 7], [8], [9, 10]], pad_id=1, max_tokens=4)
    again = pickle.loads(pickle.dumps(side))
    assert again.rows == side.rows and len(again) == 3 and again.tokens == 6


def six_embedding_steps(runs, clip=None) -> None:
    """Six steps of each (model, optimizer) on the same ids: new rows appear, earlier ones go without a gradient.
    `clip(model)` runs between the backward pass and the step."""
    torch.manual_seed(1)
    for step in range(6):
        ids = torch.randint(0, 10 + 5 * step, (4, 5))
        for model, opt in runs:
            opt.zero_grad(set_to_none=True)
            (model(ids).sum() * 10).backward()
            if clip is not None:
                clip(model)
            opt.step()


def test_row_sparse_adamw_equals_torch_adamw_with_clipping():
    from hf_hybrid.training.sparse_adamw import RowSparseAdamW, sparse_gradient_norm_

    def model_and_optimizer(sparse: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(50, 8, sparse=sparse), torch.nn.Linear(8, 3))
        kind = RowSparseAdamW if sparse else torch.optim.AdamW
        return model, kind(model.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)

    dense, dense_opt = model_and_optimizer(False)
    sparse, sparse_opt = model_and_optimizer(True)
    norms = []

    def clip(model):
        if model is dense:
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        else:
            torch.testing.assert_close(sparse_gradient_norm_(list(model.parameters()), 1.0), norms[-1])

    six_embedding_steps([(dense, dense_opt), (sparse, sparse_opt)], clip)
    for a, b in zip(dense.parameters(), sparse.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    rows = sparse_opt.state[sparse[0].weight]["rows"]
    assert 10 < len(rows) < 50  # moments only for rows that had a gradient

    state = sparse_opt.state_dict()  # a checkpoint round trip keeps the row indices exact integers, even in bf16
    bf16 = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3)).to(torch.bfloat16)
    for model in (sparse, bf16):
        again = RowSparseAdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        again.load_state_dict(state)
        loaded = again.state[model[0].weight]
        assert loaded["slot"].dtype == loaded["rows"].dtype == torch.long
        assert torch.equal(loaded["rows"], sparse_opt.state[sparse[0].weight]["rows"])


def test_fp16_loss_scaling_skips_an_overflowing_step_for_the_embedding_rows_too():
    from hf_hybrid.training.sparse_adamw import RowSparseAdamW

    model = torch.nn.Sequential(torch.nn.Embedding(20, 4, sparse=True), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    opt = RowSparseAdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(model(torch.tensor([[1, 2, 3]])).sum() * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    for old, new in zip(before, model.parameters(), strict=True):
        assert torch.equal(old, new)  # the step was skipped everywhere, embedding rows included


def test_full_training_uses_a_sparse_embedding_gradient(tiny_model_dir, tmp_path):
    from hf_hybrid.training.hybrid import build_encoder, sparse_embedding_gradient

    cfg = HybridTrainingConfig(model=str(tiny_model_dir), data="demo", output_dir=str(tmp_path / "run"))
    encoder = build_encoder(cfg)
    sparse_embedding_gradient(encoder, Accelerator(cpu=True))
    assert encoder.model.get_input_embeddings().sparse
    batch, _ = _batch(encoder, max_tokens=4096)
    _step(encoder, batch)
    assert encoder.model.get_input_embeddings().weight.grad.is_sparse


@pytest.mark.parametrize("options", [["--mini_batch_size", "2"], ["--chunk_tokens", "128", "--batch_size", "6"]])
def test_two_processes_train_with_gradient_caching_or_many_chunks(tiny_model_dir, tmp_path, options):
    """Under 2 CPU processes: gathered negatives, a dense embedding gradient, one gradient synchronisation per step
    (no_sync before the last mini-batch), and processes that split their sides into different numbers of chunks."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(root / "recipes" / "train_hybrid.py"), "--model", str(tiny_model_dir), "--data", "demo",
           "--batch_size", "4", "--max_steps", "3", "--logging_steps", "1", "--output_dir", str(tmp_path / "run"),
           *options]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)
