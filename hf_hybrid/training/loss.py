"""Contrastive loss with in-batch negatives (InfoNCE), negatives gathered across processes."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' `x` concatenated (gradients flow back to each owner) and this rank's offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed._functional_collectives import all_gather_tensor_autograd

    # backward is a reduce-scatter: each process gets the gradient of its own rows from every process
    return all_gather_tensor_autograd(x.contiguous(), gather_dim=0, group=dist.group.WORLD), dist.get_rank() * x.shape[0]


class InBatchNegativesLoss(nn.Module):
    """Cross-entropy of each query against every passage of the global batch.

    `passages` holds the B positives first (row i belongs to query i), then any hard negatives.
    Each process must pass the same number of passages.
    """

    def __init__(self, temperature: float = 0.05, gather_across_processes: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_across_processes = gather_across_processes

    def forward(self, queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        offset = 0
        if self.gather_across_processes:
            passages, offset = gather_with_grad(passages)
        logits = queries.float() @ passages.float().T / self.temperature
        labels = torch.arange(queries.shape[0], device=queries.device) + offset
        return nn.functional.cross_entropy(logits, labels)
