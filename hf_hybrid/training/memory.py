"""Resident memory of CPU training: what a step keeps for its backward pass.

On CPU, torch's dropout keeps a float32 mask for the backward pass, and the attention behind transformers' `sdpa`
(its math path: CPU's fused kernel has no dropout) keeps three float32 matrices of every head's attention. With
`lean_training` a dropout keeps a bool mask (drawn four elements to a random integer), and attention keeps its
inputs and that bool mask, its probabilities being computed again in the backward pass (one more small matmul per
layer): the same values and gradients, a third less activation memory for BERT-like encoders
(docs/benchmarks.md). The masks are drawn from torch's generator in every pass, with or without gradients, so
gradient caching's replayed passes draw the same masks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn
from transformers import AttentionInterface
from transformers.activations import GELUActivation
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from hf_hybrid.models.packing import packed_attention

LEAN_ATTENTION = "hf_hybrid_lean_sdpa"


_FIELDS = 65536  # a mask element is one 16-bit field of a 64-bit random integer
DROPOUT_MASK = "dropout_mask"  # the profiler's label of drawing one


def _keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Each element kept with probability 1 - p, p rounded to a multiple of 2^-16 (0.1: 0.1000061): four
    elements from each of torch's 64-bit random integers (`random_` over every int64 value) where `bernoulli_`
    draws a double an element. A LoRA step of multilingual-e5-small draws about 170M of them; on the 2-core CPU
    this takes a quarter of bernoulli_'s time (docs/benchmarks.md)."""
    n = like.numel()
    with torch.profiler.record_function(DROPOUT_MASK):
        fields = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-2**63, 2**63 - 1)
        return (fields.view(torch.int16)[:n] >= round(p * _FIELDS) - _FIELDS // 2).view(like.shape)


def _keep_scale(p: float) -> float:
    """1 / the probability _keep_mask keeps an element, so the dropout's output is unbiased."""
    return _FIELDS / (_FIELDS - round(p * _FIELDS))


def _masked(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.where(keep, x, 0.0).mul_(scale)


class _BoolMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _masked(x, keep, scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return _masked(grad, keep, ctx.scale), None, None


class BoolMaskDropout(nn.Dropout):
    """nn.Dropout that keeps a bool mask (not float32) for the backward pass when it trains on CPU. Under
    `lean_training` its output is computed again from its input and mask where a later layer keeps it (peft's LoRA
    layers keep the dropped copy of their input: three copies of one input for query, key and value)."""

    recomputed: Recomputed | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0 < self.p < 1 and x.device.type == "cpu" and not self.inplace:
            keep, scale = _keep_mask(x, self.p), _keep_scale(self.p)
            out = _BoolMaskDropout.apply(x, keep, scale)
            if self.recomputed is not None:
                self.recomputed.record(out, partial(_masked, keep=keep, scale=scale), x)
            return out
        return super().forward(x)


def _attention_probs(q, k, mask, scale: float) -> torch.Tensor:
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)
    if mask is not None and mask.dtype == torch.bool:  # True: attend
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:  # additive
        scores += mask
    return scores.softmax(-1)


class _DropoutAttention(torch.autograd.Function):
    """softmax(q k^T * scale + mask), dropped out, times v. Keeps q, k, v and the bool dropout mask: the attention
    probabilities are computed again in the backward pass."""

    @staticmethod
    def forward(ctx, q, k, v, mask, p, scale):
        probs = _attention_probs(q, k, mask, scale)
        keep = _keep_mask(probs, p)
        ctx.save_for_backward(q, k, v, mask, keep)
        ctx.scale, ctx.keep_scale = scale, _keep_scale(p)
        return torch.matmul(_masked(probs, keep, ctx.keep_scale), v)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, mask, keep = ctx.saved_tensors
        probs = _attention_probs(q, k, mask, ctx.scale)
        grad_v = torch.matmul(_masked(probs, keep, ctx.keep_scale).transpose(-1, -2), grad)
        grad_probs = _masked(torch.matmul(grad, v.transpose(-1, -2)), keep, ctx.keep_scale)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype).mul_(ctx.scale)
        del grad_probs, probs
        return torch.matmul(grad_scores, k), torch.matmul(grad_scores.transpose(-1, -2), q), grad_v, None, None, None


def _lean_attend(q, k, v, mask, dropout: float, scale: float | None) -> torch.Tensor:
    """(rows, heads, length, head_dim) attention under a bool mask: `_DropoutAttention` with dropout on CPU,
    else torch's `scaled_dot_product_attention`."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    if dropout and q.device.type == "cpu":
        return _DropoutAttention.apply(q, k, v, mask, dropout, scale)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)


def lean_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                           scaling: float | None = None, **kwargs):
    """transformers' attention interface: `sdpa`, except with dropout on CPU, where `_DropoutAttention` runs, and
    for a pack of texts (`models/packing.py`), whose tokens attend within their own text."""
    if kwargs.get("cu_seq_lens_q") is not None:
        return packed_attention(query, key, value, kwargs["cu_seq_lens_q"], kwargs["max_length_q"], dropout,
                                scaling, attend=_lean_attend), None
    plain = (not dropout or query.device.type != "cpu" or getattr(module, "num_key_value_groups", 1) > 1
             or (attention_mask is None and getattr(module, "is_causal", False)))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = _DropoutAttention.apply(query, key, value, attention_mask, dropout, scale)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(LEAN_ATTENTION, lean_attention_forward)
AttentionMaskInterface.register(LEAN_ATTENTION, sdpa_mask)  # without one, transformers would pass no mask


@dataclass
class _Recipe:
    """How to compute a kept activation again: `fn` of inputs, each a tensor with the version it had (checked on
    use) or a recipe itself, viewed as the tensor that was saved."""

    fn: Callable
    inputs: list
    shape: torch.Size
    stride: tuple
    offset: int

    def compute(self) -> torch.Tensor:
        args = []
        for x in self.inputs:
            if isinstance(x, _Recipe):
                args.append(x.compute())
                continue
            tensor, version = x
            if tensor._version != version:
                raise RuntimeError("an input of a recomputed activation was modified in place after the forward "
                                   "pass")
            args.append(tensor)
        return self.fn(*args).as_strided(self.shape, self.stride, self.offset)


class Recomputed:
    """Within a training forward pass of the model, outputs that are cheap to compute again from a tensor the
    backward pass keeps anyway (a GELU's, from its input; a dropout's, from its input and bool mask) are not kept
    for a later layer's backward pass: the saved-tensor pack hook swaps such an output (or a view of it) for its
    recipe, and the unpack hook computes it again. A recipe's input that is itself such an output is kept as its
    recipe. Other saved tensors pass unchanged. A layer saves its input right after it is made, so only the last
    few outputs are remembered (holding them holds their memory)."""

    REMEMBERED = 4

    def __init__(self):
        self.outputs: OrderedDict[int, tuple] = OrderedDict()  # storage address -> output, version, fn, inputs
        self.hooks: list = []

    def record(self, output: torch.Tensor, fn, *inputs: torch.Tensor) -> None:
        if self.hooks and torch.is_grad_enabled():
            kept = [self._recipe(t) or (t, t._version) for t in inputs]
            self.outputs[output.untyped_storage().data_ptr()] = (output, output._version, fn, kept)
            while len(self.outputs) > self.REMEMBERED:
                self.outputs.popitem(last=False)

    def _recipe(self, t: torch.Tensor) -> _Recipe | None:
        found = self.outputs.get(t.untyped_storage().data_ptr()) if t.layout == torch.strided else None
        if found is None or found[1] != t._version:
            return None
        return _Recipe(found[2], found[3], t.shape, t.stride(), t.storage_offset())

    def pack(self, t: torch.Tensor):
        return self._recipe(t) or t

    @staticmethod
    def unpack(packed):
        return packed.compute() if isinstance(packed, _Recipe) else packed

    def enter(self, module, args) -> None:
        if module.training and torch.is_grad_enabled():
            hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
            hooks.__enter__()
            self.hooks.append(hooks)

    def leave(self, module, args, output) -> None:
        if self.hooks:
            self.hooks.pop().__exit__(None, None, None)
        if not self.hooks:
            self.outputs.clear()


class LeanLoraLinear(LoraLinear):
    """peft's LoRA Linear, whose CPU forward adds the adapter's product into the base layer's output in place
    (one addmm_) instead of through three temporaries of the output's size (B's output, it scaled, the sum). glibc's
    heap kept what those temporaries freed between the tensors kept for the backward pass: a LoRA forward of
    multilingual-e5-small on 32 x 128 tokens ended with 1.3 GB free inside a 2.6 GB heap (docs/benchmarks.md).
    Anything else (merged, disabled or several adapters, variants, a bias on B, other dtypes) is peft's forward."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        names = self.active_adapters
        name = names[0] if len(names) == 1 else None
        if (args or kwargs or self.disable_adapters or self.merged or name not in self.lora_A
                or name in self.lora_variant or self.lora_B[name].bias is not None or x.device.type != "cpu"
                or x.dtype != self.lora_A[name].weight.dtype or torch.is_autocast_enabled("cpu")):
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        down = self.lora_A[name](self.lora_dropout[name](x))
        if not result.is_contiguous():
            return result + self.lora_B[name](down) * self.scaling[name]
        result.view(-1, result.shape[-1]).addmm_(down.reshape(-1, down.shape[-1]), self.lora_B[name].weight.t(),
                                                   alpha=self.scaling[name])
        return result


def lean_training(model: nn.Module) -> None:
    """Bool-mask dropout everywhere in `model` (peft's LoRA dropout included), LoRA layers that add their product
    in place, lean attention where it runs transformers' `sdpa` (the saved config is unaffected: the attention
    setting is not written), and GELU and dropout outputs computed again in the backward pass instead of kept."""
    recomputed = Recomputed()
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = BoolMaskDropout
        if type(module) is LoraLinear:
            module.__class__ = LeanLoraLinear
        if isinstance(module, BoolMaskDropout):
            module.recomputed = recomputed
        if isinstance(module, (nn.GELU, GELUActivation)):
            module.register_forward_hook(lambda m, args, out: recomputed.record(out, m.forward, args[0]))
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = LEAN_ATTENTION
    model.register_forward_pre_hook(recomputed.enter)
    model.register_forward_hook(recomputed.leave, always_call=True)
