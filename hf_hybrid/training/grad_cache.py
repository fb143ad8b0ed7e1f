"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup";
sentence-transformers' CachedMultipleNegativesRankingLoss): a contrastive step whose memory is bounded by a
mini-batch, not the batch.

1. Every mini-batch (a chunk of at most `mini_batch_size` texts) is embedded without gradients.
2. The loss runs over the whole batch's embeddings; its backward stops at them (their gradients are cached).
3. Every mini-batch is embedded again, with gradients and the random state of its first pass (the same dropout
   masks), and its cached gradient is pushed through the encoder.

The loss and the gradients equal the plain step's.
"""

from __future__ import annotations

import contextlib

import torch
from torch.profiler import record_function


def _random_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def _replayed(state: tuple, device: torch.device):
    """Random draws inside start from `state`; afterwards the generators are where they were before."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def cached_forward_backward(accelerator, model, sides: list, loss_fn, backward) -> torch.Tensor:
    """`sides`: (Chunks, languages) per side of the batch, in the order `loss_fn` takes their embeddings.
    Returns the loss; the encoder's gradients are set (synchronised across processes once, at the end)."""
    device = accelerator.device
    states, embeddings = [], []
    with record_function("forward"), torch.no_grad():
        for side, langs in sides:
            pieces = []
            for k in range(len(side.inputs)):
                states.append(_random_state(device))
                pieces.append(side.embed_chunk(model, k, langs, device))
            embeddings.append(side.in_batch_order(pieces).detach().requires_grad_())
    with record_function("loss"):
        loss = loss_fn(*embeddings)
    with record_function("backward"):
        backward(loss)  # to the embeddings only (scaled, under fp16)
        chunks = [(side, langs, k, cached.grad) for (side, langs), cached in zip(sides, embeddings, strict=True)
                  for k in range(len(side.inputs))]
        for i, ((side, langs, k, grad), state) in enumerate(zip(chunks, states, strict=True)):
            last = i == len(chunks) - 1
            with _replayed(state, device), contextlib.nullcontext() if last else accelerator.no_sync(model):
                again = side.embed_chunk(model, k, langs, device)
                torch.autograd.backward(again, grad[side.rows[k]].to(again.dtype))
    return loss
