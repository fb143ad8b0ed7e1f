"""torch's AdamW, with the word-embedding matrix updated row by row.

A multilingual encoder's word embeddings are most of its weights (multilingual-e5-small: 96M of 118M, 250k
rows), but a batch touches a few thousand rows. With `nn.Embedding(sparse=True)` the matrix gets a sparse
gradient, and this optimizer keeps AdamW's moments only for the rows that have had a gradient: a row that never
had one has zero moments, so AdamW moves it by weight decay alone, which is applied to every row. The result is
torch's AdamW (decoupled weight decay, bias correction, the same operations in the same order), without the dense
gradient and the two dense moments of the matrix (3 x 384 MB for multilingual-e5-small) or a full pass of the
update over rows that have no moments. Dense parameters take torch's AdamW unchanged (fused where asked).

Weight decay of the rows without moments is deferred (`defer_weight_decay`): the optimizer keeps the product of
the decay factors since each row was last brought up to date, and applies it when the row is read: before a
forward pass through the embedding for that pass's tokens, and for every row before a state dict is taken. The
matrix (mmap'ed from the checkpoint by transformers) is thus written only where training touches it, not whole
at every step: a few hundred MB of resident memory less, the same values up to float rounding of the product.
"""

from __future__ import annotations

import math

import torch

ROW_KEYS = ("slot", "rows")  # integer state: a row's slot in the moments (-1: none yet), and each slot's row
# float64 state of deferred decay: the product of every step's decay factor, and its value when each row was last
# brought up to date
DECAY_KEYS = ("decay", "decay_at")


class RowSparseAdamW(torch.optim.AdamW):
    def __init__(self, params, **kwargs):
        if kwargs.get("amsgrad") or kwargs.get("maximize"):
            raise ValueError("RowSparseAdamW supports neither amsgrad nor maximize")
        super().__init__(params, **kwargs)
        # fp16 loss scaling: the GradScaler unscales every gradient and skips a step with inf/NaN itself (a fused
        # AdamW would take that over, and the row update below would not know of it)
        self._step_supports_amp_scaling = False
        self._deferred: list[torch.Tensor] = []  # weights whose rows decay only where read (defer_weight_decay)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts every state tensor but `step` to its parameter's dtype: the row indices and the decay
        products are kept out of that (a bf16 matrix could not hold them) and put back as they were."""
        state_dict = _copy(state_dict)
        rows = {index: {key: entry.pop(key) for key in (*ROW_KEYS, *DECAY_KEYS) if key in entry}
                for index, entry in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for index, kept in rows.items():
            if kept:
                param = params[int(index)]
                self.state[param].update({key: (value.long() if key in ROW_KEYS else value.double()).to(param.device)
                                          for key, value in kept.items()})
                self.state[param]["step"] = self.state[param]["step"].float().cpu()

    def state_dict(self) -> dict:
        self.apply_deferred_decay()  # the model's state dict, taken with this one, holds every row up to date
        return super().state_dict()

    def defer_weight_decay(self, embedding: torch.nn.Embedding) -> None:
        """Decay the rows of `embedding`'s (sparse-gradient) weight only where they are read: its forward pass
        brings the rows of its input ids up to date first, its state dict every row."""
        weight = embedding.weight
        self._deferred.append(weight)
        embedding.register_forward_pre_hook(lambda module, args: self._bring_up_to_date(weight, args[0].unique()))
        embedding.register_state_dict_pre_hook(lambda module, prefix, keep_vars: self.apply_deferred_decay())

    def apply_deferred_decay(self) -> None:
        """Every row of the deferred weights up to date (a state dict, a saved model)."""
        for weight in self._deferred:
            self._bring_up_to_date(weight, None)

    @torch.no_grad()
    def _bring_up_to_date(self, p: torch.Tensor, rows: torch.Tensor | None) -> None:
        state = self.state[p]
        if "decay" not in state:  # no step yet
            return
        decay, decay_at = state["decay"], state["decay_at"]
        rows = (decay_at != decay).nonzero().squeeze(1) if rows is None else rows[decay_at[rows] != decay]
        if len(rows):
            p.index_copy_(0, rows, p.index_select(0, rows).mul_(self._pending_decay(p, rows)))

    def _pending_decay(self, p: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The decay `rows` of `p` have missed since they were last brought up to date, a factor a row; from now on
        they count as up to date."""
        state = self.state[p]
        factor = (state["decay"] / state["decay_at"][rows]).to(p.dtype).unsqueeze(1)
        state["decay_at"][rows] = state["decay"]
        return factor

    @torch.no_grad()
    def step(self, closure=None):
        sparse = [(p, group) for group in self.param_groups for p in group["params"]
                  if p.grad is not None and p.grad.is_sparse]
        grads = [p.grad for p, _ in sparse]
        for p, _ in sparse:
            p.grad = None  # torch's AdamW skips a parameter without a gradient
        try:
            loss = super().step(closure)
        finally:
            for (p, _), grad in zip(sparse, grads, strict=True):
                p.grad = grad
        for (p, group), grad in zip(sparse, grads, strict=True):
            self._row_step(p, grad.coalesce(), group)
        return loss

    def _row_step(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["slot"] = torch.full((p.shape[0],), -1, dtype=torch.long, device=p.device)
            state["rows"] = torch.empty(0, dtype=torch.long, device=p.device)
            state["exp_avg"] = p.new_zeros((0, *p.shape[1:]))
            state["exp_avg_sq"] = p.new_zeros((0, *p.shape[1:]))
        rows, values = grad.indices()[0], grad.values()
        new = rows[state["slot"][rows] < 0]
        if len(new):
            state["slot"][new] = torch.arange(len(state["rows"]), len(state["rows"]) + len(new), device=p.device)
            state["rows"] = torch.cat([state["rows"], new])
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = torch.cat([state[key], state[key].new_zeros((len(new), *p.shape[1:]))])
        slot_grad = torch.zeros_like(state["exp_avg"])
        slot_grad[state["slot"][rows]] = values
        state["step"] += 1
        step = state["step"].item()
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        deferred = any(p is weight for weight in self._deferred)
        if deferred:  # this step's factor onto the product; rows without moments take it when next read
            if "decay" not in state:
                state["decay"] = torch.ones(1, dtype=torch.float64, device=p.device)
                state["decay_at"] = torch.ones(p.shape[0], dtype=torch.float64, device=p.device)
            state["decay"] *= 1 - lr * group["weight_decay"]
        else:
            p.mul_(1 - lr * group["weight_decay"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(slot_grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(slot_grad, slot_grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        updated = p.index_select(0, state["rows"])
        if deferred:  # the rows with moments are written now: their decay goes with the update
            updated.mul_(self._pending_decay(p, state["rows"]))
        p.index_copy_(0, state["rows"], updated.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step)))


def _copy(state_dict: dict) -> dict:
    return {**state_dict, "state": {index: dict(entry) for index, entry in state_dict["state"].items()}}


def sparse_gradient_norm_(parameters, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for gradients that may be sparse: the global 2-norm of every gradient
    (a sparse one coalesced first: its repeated rows add up), and all of them scaled by max_norm / norm where the
    norm is larger. Returns the norm."""
    grads = []
    for p in parameters:
        if p.grad is not None:
            if p.grad.is_sparse:
                p.grad = p.grad.coalesce()
            grads.append(p.grad)
    norms = [(g.values() if g.is_sparse else g).norm(2.0) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        (g.values() if g.is_sparse else g).mul_(scale.to(g.device))
    return total
