"""Packed encoding: a chunk's texts concatenated into one sequence with no padding at all, attention kept within
each text by variable-length attention (torch's jagged nested tensors under `scaled_dot_product_attention`, which
on CUDA run the flash or memory-efficient kernels over cumulative sequence lengths, dropout included). Training
packs on GPU (`--packing`, docs/training.md); the padded length-grouped chunks stay for CPU and for encoders
packing does not fit (checked once, `check_packing`)."""

from __future__ import annotations

import logging
import warnings

import torch
from torch.nn import functional as F

from hf_hybrid.errors import ConfigError

logger = logging.getLogger(__name__)


def plan_packs(lengths: list[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Indices into `lengths`, longest first (as `plan_chunks`, so gradient caching's mini-batches stay
    length-sorted), cut into packs of at most `max_tokens` real tokens (and at most `max_rows` rows)."""
    if lengths and max(lengths) > max_tokens:
        raise ConfigError(f"token budget {max_tokens} is below the longest text ({max(lengths)} tokens): "
                          "expected a budget of at least the longest allowed sequence")
    packs: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if current and (used + lengths[i] > max_tokens or (max_rows is not None and len(current) == max_rows)):
            packs.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        packs.append(current)
    return packs


def pack(sequences: list[list[int]]) -> dict:
    """One pack: `input_ids` (all tokens, one text after another), `cu_seq_lens` (where each text starts, then
    the total: int32, as the varlen kernels take them) and `max_length` (the longest text)."""
    lengths = torch.tensor([len(s) for s in sequences])
    return {"input_ids": torch.tensor([t for s in sequences for t in s], dtype=torch.long),
            "cu_seq_lens": F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32), "max_length": int(lengths.max())}


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
                     scale: float | None = None) -> torch.Tensor:
    """transformers' (1, heads, tokens, head_dim) query, key and value of a pack; each token attends to the tokens
    of its own text only. Returns (1, tokens, heads, head_dim), as transformers' attention functions do."""
    offsets = cu_seq_lens.long()

    def jagged(x):  # (texts, heads, text length, head_dim)
        return torch.nested.nested_tensor_from_jagged(x[0].transpose(0, 1).contiguous(), offsets, max_seqlen=max_length
                                                       ).transpose(1, 2)

    with warnings.catch_warnings():  # on CPU torch runs it on its older nested tensors, and says so every call
        warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")
        out = F.scaled_dot_product_attention(jagged(query), jagged(key), jagged(value), dropout_p=dropout,
                                             scale=scale)
    return out.transpose(1, 2).values()[None]


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


def use_packing(option: bool | None, encoder, device: torch.device) -> bool:
    """`--packing` (`option`), or its default: on GPU, unless the encoder routes adapters or does not pack
    correctly (then padded chunks, said in the log; asked for explicitly, an error)."""
    if not (device.type == "cuda" if option is None else option):
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
