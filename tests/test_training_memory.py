"""Lean CPU training (bool dropout masks, lean attention) equals the plain model's step and keeps less for the
backward pass; deferred weight decay writes only the embedding rows that are read."""

import io

import torch
from transformers import BertConfig, BertModel

from hf_hybrid.training import memory
from hf_hybrid.training.memory import BoolMaskDropout, lean_training


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
    return torch.where(memory._keep_mask(x, p), x, 0.0) * memory._keep_scale(p)


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


def _saved_bytes(model, monkeypatch) -> int:
    """Bytes the forward pass keeps for the backward pass, besides the parameters (lean training's own pack hook,
    active inside its forward pass, is counted through)."""
    saved = {}

    def count(t):
        if isinstance(t, torch.Tensor):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        else:  # a recomputed output: what it is computed from is kept
            for x in t.inputs:
                count(x if isinstance(x, memory._Recipe) else x[0])
        return t

    lean_pack = memory.Recomputed.pack
    monkeypatch.setattr(memory.Recomputed, "pack", lambda self, t: count(lean_pack(self, t)))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    ids, mask = _inputs()
    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        model(input_ids=ids, attention_mask=mask)
    return sum(size for ptr, size in saved.items() if ptr not in params)


def test_dropout_masks_keep_each_element_independently_with_probability_1_minus_p():
    torch.manual_seed(0)
    for p in (0.1, 0.05, 0.5):
        keep = memory._keep_mask(torch.empty(1000, 999), p)  # not a multiple of the 4 fields of a random integer
        assert keep.shape == (1000, 999) and keep.dtype == torch.bool
        rate = keep.float().mean().item()
        assert abs(rate - (1 - p)) < 5 * (p * (1 - p) / keep.numel()) ** 0.5
        assert abs(rate * memory._keep_scale(p) - 1) < 5 * (p / (1 - p) / keep.numel()) ** 0.5  # unbiased output
        flat = keep.flatten().float()
        for lag in (1, 2, 3, 4):  # the fields of one random integer and of the next are unrelated
            assert abs(torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1].item()) < 0.005
    torch.manual_seed(1)
    first = memory._keep_mask(torch.empty(64), 0.1)
    torch.manual_seed(1)
    assert torch.equal(memory._keep_mask(torch.empty(64), 0.1), first)  # torch's generator: seeded, resumable


def test_lean_training_keeps_less_for_the_backward_pass_and_evaluation_is_unchanged(monkeypatch):
    plain, lean, no_gelu = _bert(), _bert(), _bert()
    for model in (plain, lean, no_gelu):
        model.config._attn_implementation = "sdpa"
    lean_training(lean)
    assert _saved_bytes(lean, monkeypatch) < 0.7 * _saved_bytes(plain, monkeypatch)
    ids, mask = _inputs()
    gelu_outputs = 2 * ids.numel() * 4 * lean.config.intermediate_size  # 2 layers, float32
    lean_training(no_gelu)
    with monkeypatch.context() as patch:
        patch.setattr(memory.Recomputed, "record", lambda *args: None)  # nothing recomputed
        no_gelu_bytes = _saved_bytes(no_gelu, patch)
    assert no_gelu_bytes - _saved_bytes(lean, monkeypatch) == gelu_outputs
    plain.eval(), lean.eval()
    with torch.inference_mode():
        torch.testing.assert_close(lean(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   plain(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_the_saved_config_does_not_name_the_lean_attention(tmp_path):
    model = _bert()
    model.config._attn_implementation = "sdpa"
    lean_training(model)
    model.save_pretrained(tmp_path)
    assert memory.LEAN_ATTENTION not in (tmp_path / "config.json").read_text()


def test_deferred_weight_decay_equals_torch_adamw_and_writes_only_the_rows_read():
    from test_training_step import six_embedding_steps

    from hf_hybrid.training.sparse_adamw import RowSparseAdamW

    def model_and_optimizer(sparse: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(50, 8, sparse=sparse), torch.nn.Linear(8, 3))
        if not sparse:
            return model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
        opt = RowSparseAdamW(model.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
        opt.defer_weight_decay(model[0])
        return model, opt

    dense, dense_opt = model_and_optimizer(False)
    lazy, lazy_opt = model_and_optimizer(True)
    start = lazy[0].weight.detach().clone()
    six_embedding_steps([(dense, dense_opt), (lazy, lazy_opt)])
    unread = torch.arange(35, 50)  # no batch had these ids: decayed on paper, never written
    assert torch.equal(lazy[0].weight[unread], start[unread])
    assert not torch.equal(dense[0].weight[unread], start[unread])

    checkpoint = io.BytesIO()
    torch.save({"model": lazy.state_dict(), "optimizer": lazy_opt.state_dict()}, checkpoint)  # every row up to date
    for (name, a), b in zip(dense.state_dict().items(), lazy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)

    resumed, resumed_opt = model_and_optimizer(True)  # a resumed run goes on as the uninterrupted one
    checkpoint.seek(0)
    checkpoint = torch.load(checkpoint)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    assert resumed_opt.state[resumed[0].weight]["decay_at"].dtype == torch.float64
    ids = torch.randint(0, 50, (4, 5))
    for model, opt in ((lazy, lazy_opt), (resumed, resumed_opt)):
        opt.zero_grad(set_to_none=True)
        (model(ids).sum() * 10).backward()
        opt.step()
    for a, b in zip(lazy.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


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


def _lora_bert(attention: str = "sdpa"):
    from peft import LoraConfig, get_peft_model

    model = _bert()
    model.config._attn_implementation = attention  # eager: its attention dropout draws through F.dropout
    return get_peft_model(model, LoraConfig(r=4, target_modules=["query", "key", "value", "dense"], lora_dropout=0.1))


def test_lora_layers_keep_their_input_and_mask_instead_of_its_dropped_copy(monkeypatch):
    lean, without_recipes, reference = _lora_bert(), _lora_bert(), _lora_bert("eager")
    lean_training(lean)
    loss, grads = _step(lean)
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "dropout", _bool_mask_dropout)
        ref_loss, ref_grads = _step(reference)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and all("lora_" in name for name in grads) and len(grads) == 24
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    lean_training(without_recipes)
    for module in without_recipes.modules():
        if isinstance(module, BoolMaskDropout):
            module.recomputed = None  # dropped copies kept, as before
    # query, key and value each kept a dropped copy of one input: now the input and three bool masks
    assert _saved_bytes(lean, monkeypatch) < 0.85 * _saved_bytes(without_recipes, monkeypatch)


def _new_tensors_of_size(layer, x, numel: int) -> int:
    """How many tensors of `numel` elements `layer`'s forward allocates (views and in-place results excluded)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    made = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.numel() == numel:
                made.append(out.untyped_storage().data_ptr())
            return out

    with Count():
        layer(x)
    return len(set(made))


def test_lora_layers_add_their_product_into_the_base_output_in_place():
    from peft.tuners.lora.layer import Linear as LoraLinear

    lean, reference = _lora_bert(), _lora_bert()
    lean_training(lean)
    name, layer = next((n, m) for n, m in lean.named_modules() if isinstance(m, memory.LeanLoraLinear)
                       and m.in_features != m.out_features)
    peft_layer = reference.get_submodule(name)
    assert type(peft_layer) is LoraLinear
    with torch.no_grad():  # B starts at 0: give the adapter a product to add
        for model_layer in (layer, peft_layer):
            model_layer.lora_B["default"].weight.copy_(torch.randn(layer.out_features, 4,
                                                                  generator=torch.Generator().manual_seed(2)))
    x = torch.randn(3, 24, layer.in_features, requires_grad=True)
    size = 3 * 24 * layer.out_features
    # training: peft makes the base output, B's output, it scaled and the sum; the lean layer the base output only
    assert _new_tensors_of_size(layer, x, size) == 1 < _new_tensors_of_size(peft_layer, x, size)
    layer.eval(), peft_layer.eval()  # the same values without dropout (the masks are drawn differently)
    out = layer(x)
    torch.testing.assert_close(out, peft_layer(x))
    out.sum().backward()
    grads = x.grad.clone(), layer.lora_B["default"].weight.grad.clone()
    x.grad = None
    peft_layer(x).sum().backward()
    torch.testing.assert_close(grads, (x.grad, peft_layer.lora_B["default"].weight.grad))
    layer.merge()
    torch.testing.assert_close(layer(x), out, rtol=1e-5, atol=1e-5)  # merged: peft's own forward, same values
