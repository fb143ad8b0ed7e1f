"""Packed encoding: a side of a batch as one sequence of its texts with no padding at all, so the linear layers,
layer norms and dropouts see real tokens only, and attention kept within each text: on CUDA by variable-length
kernels (torch's jagged nested tensors under `scaled_dot_product_attention`, dropout included), on CPU by padding
only attention's inputs, in length-grouped groups (torch runs nested attention text by text there). Training packs
by default (`--packing`, docs/training.md); padded length-grouped chunks stay for encoders packing does not fit
(checked once, `packs_correctly`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from hf_hybrid.errors import ConfigError
from hf_hybrid.models.chunks import pack, plan_chunks

logger = logging.getLogger(__name__)


def position_ids(cu_seq_lens: torch.Tensor, tokens: int, offset: int = 0) -> torch.Tensor:
    """(1, tokens): each text's positions from `offset` (0 for BERT, padding_idx + 1 for RoBERTa-like models).
    `tokens` (the pack's length) is passed so a GPU need not be waited for to read it."""
    starts = torch.repeat_interleave(cu_seq_lens[:-1].long(), cu_seq_lens.diff(), output_size=tokens)
    return (torch.arange(tokens, device=cu_seq_lens.device) - starts + offset)[None]


def pool(hidden: torch.Tensor, cu_seq_lens: torch.Tensor, pooling: str) -> torch.Tensor:
    """Each text's embedding from the pack's hidden states (tokens, dim): its first token, or its tokens' mean."""
    if pooling == "cls":
        return hidden[cu_seq_lens[:-1].long()]
    lengths = cu_seq_lens.diff()
    text = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths,
                                   output_size=len(hidden))
    sums = hidden.new_zeros(len(lengths), hidden.shape[-1]).index_add_(0, text, hidden)
    return sums / lengths[:, None].to(hidden.dtype)


def packed_attention(query, key, value, cu_seq_lens: torch.Tensor, max_length: int, dropout: float = 0.0,
                     scale: float | None = None, attend=None) -> torch.Tensor:
    """transformers' (1, heads, tokens, head_dim) query, key and value of a pack; each token attends to the tokens
    of its own text only. Returns (1, tokens, heads, head_dim), as transformers' attention functions do.
    `varlen_attention` on CUDA; elsewhere, where torch runs nested attention text by text, `grouped_attention`
    with `attend` for each group."""
    if query.device.type == "cuda":
        return varlen_attention(query, key, value, cu_seq_lens, max_length, dropout, scale)
    return grouped_attention(query, key, value, cu_seq_lens, dropout, scale, attend or _sdpa)


def varlen_attention(query, key, value, cu_seq_lens: torch.Tensor, max_length: int, dropout: float,
                     scale: float | None) -> torch.Tensor:
    """Variable-length attention through jagged nested tensors: on CUDA torch's flash or memory-efficient
    kernels over the cumulative lengths, dropout included."""
    offsets = cu_seq_lens.long()

    def jagged(x):  # (texts, heads, text length, head_dim)
        return torch.nested.nested_tensor_from_jagged(x[0].transpose(0, 1).contiguous(), offsets,
                                                       max_seqlen=max_length).transpose(1, 2)

    out = F.scaled_dot_product_attention(jagged(query), jagged(key), jagged(value), dropout_p=dropout, scale=scale)
    return out.transpose(1, 2).values()[None]


def _sdpa(q, k, v, mask, dropout: float, scale: float | None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)


# Padded tokens of one group of texts in `grouped_attention`: the CPU chunk budget that trained fastest
# (docs/benchmarks.md).
ATTENTION_GROUP_TOKENS = 512


@dataclass
class _Groups:
    """A pack's texts in length-grouped groups: `index[g]` gathers group g's tokens, padded to its longest text
    (padding repeats the text's last token, never attended to), `keys[g]` is the (rows, 1, 1, longest) mask of
    its real tokens, and `unpad` puts the groups' real tokens back in pack order."""

    index: list[torch.Tensor]
    keys: list[torch.Tensor]
    real: list[torch.Tensor]
    unpad: torch.Tensor

    @classmethod
    def plan(cls, cu_seq_lens: torch.Tensor) -> _Groups:
        starts, ends = cu_seq_lens[:-1].tolist(), cu_seq_lens[1:].tolist()
        lengths = [b - a for a, b in zip(starts, ends, strict=True)]
        index, keys, real, order = [], [], [], []
        for rows in plan_chunks(lengths, max(ATTENTION_GROUP_TOKENS, max(lengths))):
            longest = lengths[rows[0]]
            positions = torch.arange(longest)
            group_starts = torch.tensor([starts[r] for r in rows])[:, None]
            group_lengths = torch.tensor([lengths[r] for r in rows])[:, None]
            index.append((group_starts + torch.minimum(positions, group_lengths - 1)).flatten())
            mask = positions < group_lengths
            keys.append(mask[:, None, None, :])
            real.append(mask.flatten())
            order += [t for r in rows for t in range(starts[r], ends[r])]
        unpad = torch.empty(len(order), dtype=torch.long)
        unpad[torch.tensor(order)] = torch.arange(len(order))
        return cls(index, keys, real, unpad)


_last_plan: tuple[torch.Tensor, _Groups] | None = None


def grouped_attention(query, key, value, cu_seq_lens: torch.Tensor, dropout: float, scale: float | None,
                      attend) -> torch.Tensor:
    """A pack's attention group by group: the texts sorted by length and cut into groups of at most
    `ATTENTION_GROUP_TOKENS` padded tokens, each padded to its own longest text for `attend(q, k, v, key_mask,
    dropout, scale)`; the linear layers around it still see no padding. The same values as attending text by
    text (a test). The plan is made once per pack and reused by every layer."""
    global _last_plan
    if _last_plan is None or _last_plan[0] is not cu_seq_lens:
        _last_plan = (cu_seq_lens, _Groups.plan(cu_seq_lens.cpu()))
    groups = _last_plan[1]
    _, heads, _, dim = query.shape
    outs = []
    for index, keys, real in zip(groups.index, groups.keys, groups.real, strict=True):
        index, keys, real = (t.to(query.device) for t in (index, keys, real))
        q, k, v = (x[0].index_select(1, index).view(heads, len(keys), -1, dim).transpose(0, 1)
                   for x in (query, key, value))  # (rows, heads, longest, head_dim)
        out = attend(q, k, v, keys, dropout, scale)
        outs.append(out.transpose(1, 2).reshape(-1, heads, dim)[real])
    return torch.cat(outs)[groups.unpad.to(query.device)][None]


def first_position(model) -> int:
    """The position id of a text's first token: 0 for BERT, padding_idx + 1 for RoBERTa-like embeddings."""
    embeddings = next((m for m in model.modules() if hasattr(m, "position_embeddings")), None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    return 0 if padding_idx is None else padding_idx + 1


@torch.no_grad()
def packs_correctly(encoder) -> bool:
    """Whether `encoder` embeds a pack as it embeds the same texts padded (eval mode, two short texts of
    different lengths): its forward pass must take position ids and its attention keep to each text (the
    training attention of `training/memory.py` does; `eager` or plain `sdpa` would attend across texts)."""
    was_training = encoder.training
    encoder.eval()
    try:
        ids = encoder.token_ids(["packing check", "a second, longer text to check packing with"], "passage")
        padded = encoder.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        device = next(encoder.parameters()).device
        expected = encoder(padded["input_ids"].to(device), padded["attention_mask"].to(device))
        one = pack(ids)
        got = encoder(one["input_ids"].to(device), None, packed=(one["cu_seq_lens"].to(device), one["max_length"]))
        return torch.allclose(expected.float(), got.float(), atol=1e-4)
    except (TypeError, RuntimeError):
        return False
    finally:
        encoder.train(was_training)


def use_packing(option: bool | None, encoder) -> bool:
    """`--packing` (`option`), or its default: packs, unless the encoder routes adapters or does not pack
    correctly (then padded chunks, said in the log; asked for explicitly, an error)."""
    if option is False:
        return False
    problem = ("it routes adapters by language" if encoder.routed else
               None if packs_correctly(encoder) else "its packed embeddings differ from its padded ones")
    if problem is None:
        return True
    if option:
        raise ConfigError(f"--packing true: {encoder.name} cannot be trained on packed texts ({problem}); "
                          "expected --packing false")
    logger.info("training on padded chunks, not packs: %s", problem)
    return False
