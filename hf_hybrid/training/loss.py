"""Contrastive loss with in-batch negatives (InfoNCE), negatives gathered across processes."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from hf_hybrid.errors import ConfigError


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient and returns this rank's rows.

    Plain collectives only: gloo aborts at exit after torch.distributed.nn's autograd all_gather.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' `x` concatenated (gradients flow back to each owner) and this rank's offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return _AllGatherWithGrad.apply(x), dist.get_rank() * x.shape[0]


class InBatchNegativesLoss(nn.Module):
    """Cross-entropy of each query against every passage of the global batch.

    `passages` holds the B positives first (row i belongs to query i), then any hard negatives.
    Each process must pass the same number of passages.
    """

    def __init__(self, temperature: float = 0.05, gather_across_processes: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_across_processes = gather_across_processes

    def forward(self, queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        offset = 0
        if self.gather_across_processes:
            passages, offset = gather_with_grad(passages)
        logits = queries.float() @ passages.float().T / self.temperature
        labels = torch.arange(queries.shape[0], device=queries.device) + offset
        return nn.functional.cross_entropy(logits, labels)
