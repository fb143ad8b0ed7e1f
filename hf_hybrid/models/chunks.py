"""Length-grouped chunks under a token budget: texts sorted by length and cut into chunks whose padded size
(rows x the chunk's longest text) stays within the budget, so each chunk is padded only to its own longest
text instead of the whole batch's. Training (`Chunks.embed`) and encoding (`Encoder.encode`) batch this way;
training packs its texts instead where the encoder allows (`packing.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from hf_hybrid.errors import ConfigError


def plan_chunks(lengths: list[int], max_tokens: int, max_rows: int | None = None,
                packed: bool = False) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into chunks of at most `max_tokens` padded tokens (rows x the
    chunk's longest text), or with `packed` of at most `max_tokens` real tokens (their sum), and at most `max_rows`
    rows. A text longer than the budget is an error: it would not fit any chunk."""
    if lengths and max(lengths) > max_tokens:
        raise ConfigError(f"token budget {max_tokens} is below the longest text ({max(lengths)} tokens): "
                          "expected a budget of at least the longest allowed sequence")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            size = (sum(lengths[j] for j in current) + lengths[i] if packed
                    else (len(current) + 1) * lengths[current[0]])
            if size > max_tokens or (max_rows is not None and len(current) == max_rows):
                chunks.append(current)
                current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


def pack(sequences: list[list[int]]) -> dict:
    """One pack: `input_ids` (all tokens, one text after another), `cu_seq_lens` (where each text starts, then
    the total: int32, as the varlen kernels take them) and `max_length` (the longest text)."""
    lengths = torch.tensor([len(s) for s in sequences])
    return {"input_ids": torch.tensor([t for s in sequences for t in s], dtype=torch.long),
            "cu_seq_lens": F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32), "max_length": int(lengths.max())}


def pad(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def in_order(pieces: list[torch.Tensor], groups: list[list[int]]) -> torch.Tensor:
    """Rows computed group by group (`pieces[k]` holds the rows `groups[k]`) put back in their original order."""
    order = torch.tensor([i for rows in groups for i in rows])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return torch.cat(pieces)[inverse.to(pieces[0].device)]


@dataclass
class Chunks:
    """One side of a batch (its queries, or its passages) as length-grouped chunks, each padded to its own
    longest text; `rows[k]` are the batch rows of chunk k."""

    inputs: list[dict[str, torch.Tensor]]
    rows: list[list[int]]

    @classmethod
    def build(cls, sequences: list[list[int]], pad_id: int, max_tokens: int, max_rows: int | None = None,
              packed: bool = False):
        """`packed`: each chunk is a pack of texts with no padding (`packing.py`), `max_tokens` real tokens."""
        if packed:
            rows = plan_chunks([len(s) for s in sequences], max_tokens, max_rows, packed=True)
            return cls([pack([sequences[i] for i in chunk]) for chunk in rows], rows)
        rows = plan_chunks([len(s) for s in sequences], max_tokens, max_rows)
        return cls([pad([sequences[i] for i in chunk], pad_id) for chunk in rows], rows)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows)

    @property
    def tokens(self) -> int:
        """Real tokens, padding excluded."""
        return sum(int(chunk["cu_seq_lens"][-1]) if "cu_seq_lens" in chunk else int(chunk["attention_mask"].sum())
                   for chunk in self.inputs)

    def embed_chunk(self, model, k: int, langs: list[str] | None, device) -> torch.Tensor:
        chunk = self.inputs[k]
        chunk_langs = [langs[i] for i in self.rows[k]] if langs is not None else None
        if "cu_seq_lens" in chunk:
            return model(chunk["input_ids"].to(device, non_blocking=True), None, chunk_langs,
                         packed=(chunk["cu_seq_lens"].to(device, non_blocking=True), chunk["max_length"]))
        return model(chunk["input_ids"].to(device, non_blocking=True),
                     chunk["attention_mask"].to(device, non_blocking=True), chunk_langs)

    def in_batch_order(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """The chunks' embeddings (in chunk order) put back in batch order."""
        return in_order(pieces, self.rows)

    def embed(self, model, langs: list[str] | None, device) -> torch.Tensor:
        """Embeddings of every row, in batch order, with gradients."""
        return self.in_batch_order([self.embed_chunk(model, k, langs, device) for k in range(len(self.inputs))])
