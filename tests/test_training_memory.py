"""Lean CPU training (bool dropout masks, lean attention) equals the plain model's step, keeps less for the backward
pass, and the allocator hands freed memory back."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from hf_hybrid.training import memory
from hf_hybrid.training.memory import BoolMaskDropout, lean_training, release_freed_memory


def _bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    return BertModel(config).train()


def _inputs():
    ids = torch.randint(5, 100, (3, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 10:], mask[2, 17:] = 0, 0
    return ids, mask


def _bool_mask_dropout(x, p=0.5, training=False, inplace=False):
    """torch's dropout, drawing its mask as a bool tensor (the draws lean training makes)."""
    if not training or p == 0:
        return x
    return torch.where(torch.empty_like(x, dtype=torch.bool).bernoulli_(1 - p), x, 0.0) * (1 / (1 - p))


def _step(model, seed: int = 3):
    ids, mask = _inputs()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = torch.randn(hidden.shape[-1], generator=torch.Generator().manual_seed(1))
    loss = ((hidden * mask.unsqueeze(-1)).sum(1) @ weights).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_lean_training_equals_the_eager_model_with_the_same_dropout_masks(monkeypatch):
    lean = _bert()
    lean.config._attn_implementation = "sdpa"
    lean_training(lean)
    assert lean.config._attn_implementation == memory.LEAN_ATTENTION
    assert any(isinstance(m, BoolMaskDropout) for m in lean.modules())
    loss, grads = _step(lean)

    reference = _bert()
    monkeypatch.setattr(torch.nn.functional, "dropout", _bool_mask_dropout)
    ref_loss, ref_grads = _step(reference)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    monkeypatch.undo()
    assert not torch.allclose(_step(lean, seed=4)[0], loss)  # dropout is on


def _saved_bytes(model) -> int:
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    ids, mask = _inputs()
    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=mask)
    return sum(size for ptr, size in saved.items() if ptr not in params)


def test_lean_training_keeps_less_for_the_backward_pass_and_evaluation_is_unchanged():
    plain, lean = _bert(), _bert()
    plain.config._attn_implementation = lean.config._attn_implementation = "sdpa"
    lean_training(lean)
    assert _saved_bytes(lean) < 0.8 * _saved_bytes(plain)
    plain.eval(), lean.eval()
    ids, mask = _inputs()
    with torch.inference_mode():
        torch.testing.assert_close(lean(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   plain(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_the_saved_config_does_not_name_the_lean_attention(tmp_path):
    model = _bert()
    model.config._attn_implementation = "sdpa"
    lean_training(model)
    model.save_pretrained(tmp_path)
    assert memory.LEAN_ATTENTION not in (tmp_path / "config.json").read_text()


def _resident_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory._libc() is None, reason="glibc only")
def test_freed_heap_memory_goes_back_to_the_system():
    memory.bound_allocator()
    before = _resident_gb()
    blocks = [torch.ones(16 * 1024 // 4) for _ in range(20000)]  # 320 MB of 16 kB tensors: heap, not mmap
    assert _resident_gb() - before > 0.25
    del blocks
    release_freed_memory()
    assert _resident_gb() - before < 0.05


def test_gradient_caching_equals_the_plain_step_under_lean_training(tiny_model_dir):
    from test_training_step import _assert_same, _batch, _step, _tiny

    encoder = _tiny(tiny_model_dir, dropout=True)
    lean_training(encoder.model)
    assert encoder.model.config._attn_implementation == memory.LEAN_ATTENTION
    batch, _ = _batch(encoder, max_tokens=4096, max_rows=3)
    torch.manual_seed(1)
    plain = _step(encoder, batch)
    torch.manual_seed(1)
    _assert_same(plain, _step(encoder, batch, cached=True))  # the replayed passes draw the same bool masks
