"""MaskingCollator against transformers' DataCollatorForLanguageModeling on the same text: the same masking rate
and, for token masking, the same 80/10/10 split; for whole-word masking transformers puts the mask token at every
chosen position, which is one reason the toolkit keeps its own (training/mlm.py says why)."""

import json

import pytest
import torch
from transformers import DataCollatorForLanguageModeling

from hf_hybrid.data.parallel_qa import DEMO_PATH
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.training.mlm import MaskingCollator, chunk_documents

RATE = 0.15


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return Encoder.from_pretrained(str(tiny_model_dir)).tokenizer


@pytest.fixture(scope="module")
def docs() -> list[str]:
    rows = [json.loads(line) for line in DEMO_PATH.read_text(encoding="utf-8").splitlines()]
    return [f"{r['query']} {r['passage']}" for r in rows]


def shares(batch: dict, original: torch.Tensor, special: torch.Tensor, mask_id: int) -> dict[str, float]:
    """Share of the real tokens chosen, and how the chosen ones were replaced."""
    chosen = batch["labels"] != -100
    assert not (chosen & special).any()  # never a special token (or padding)
    assert torch.equal(batch["labels"][chosen], original[chosen])
    n = chosen.sum().item()
    masked = (batch["input_ids"] == mask_id) & chosen
    kept = (batch["input_ids"] == original) & chosen
    return {"chosen": n / (~special).sum().item(), "real_tokens": (~special).sum().item(),
            "mask": masked.sum().item() / n, "kept": kept.sum().item() / n,
            "random": (chosen & ~masked & ~kept).sum().item() / n}


@pytest.fixture(scope="module")
def chunked(tokenizer, docs) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """The demo text cut into 128-token sequences, their token ids and their special-token marks."""
    chunks = chunk_documents(tokenizer, docs, 128)
    return (chunks, torch.tensor([c["input_ids"] for c in chunks]),
            torch.tensor([c["special"] for c in chunks], dtype=torch.bool))


def our_shares(tokenizer, chunked, masking: str) -> dict[str, float]:
    chunks, original, special = chunked
    return shares(MaskingCollator(tokenizer, masking, RATE)(chunks, torch.Generator().manual_seed(0)),
                  original, special, tokenizer.mask_token_id)


def test_token_masking_matches_transformers(tokenizer, chunked):
    chunks, original, special = chunked
    ours = our_shares(tokenizer, chunked, "token")
    theirs_collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=RATE, seed=0)
    theirs = shares(theirs_collator([{"input_ids": c["input_ids"], "special_tokens_mask": c["special"]}
                                     for c in chunks]), original, special, tokenizer.mask_token_id)
    assert ours["real_tokens"] > 5000
    assert abs(ours["chosen"] - RATE) < 0.01 and abs(theirs["chosen"] - RATE) < 0.01
    assert abs(ours["chosen"] - theirs["chosen"]) < 0.01
    for split in (ours, theirs):  # 80% mask token, 10% random token, 10% unchanged
        assert split["mask"] == pytest.approx(0.8, abs=0.03)
        assert split["random"] == pytest.approx(0.1, abs=0.03)
        assert split["kept"] == pytest.approx(0.1, abs=0.03)


def test_whole_word_masking_rate_and_what_transformers_takes_for_a_word(tokenizer, docs, chunked):
    ours = our_shares(tokenizer, chunked, "whole-word")
    assert ours["real_tokens"] > 5000 and abs(ours["chosen"] - RATE) < 0.01
    assert ours["mask"] == pytest.approx(0.8, abs=0.03) and ours["random"] == pytest.approx(0.1, abs=0.03)
    # transformers finds words by gaps between character offsets, which only a document tokenized alone has: the
    # same documents, one sequence each
    enc = tokenizer(docs, max_length=128, truncation=True, padding="max_length", return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    examples = [{key: enc[key][i] for key in ("input_ids", "special_tokens_mask", "offset_mapping")}
                for i in range(len(docs))]
    with pytest.warns(UserWarning, match="not supported with whole word masking"):
        theirs_collator = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, mlm_probability=RATE,
                                                          seed=0)
    real = ~torch.tensor(enc["special_tokens_mask"], dtype=torch.bool)
    theirs = shares(theirs_collator(examples), torch.tensor(enc["input_ids"]), ~real, tokenizer.mask_token_id)
    assert theirs["mask"] == 1.0  # no random or unchanged tokens with whole-word masking
    # A SentencePiece piece's offsets include its leading space (XLM-R's, so the e5 models', do too): no gaps, so
    # nearly every sequence is one "word", masked whole or not at all
    chosen = theirs_collator(examples)["labels"] != -100
    whole = [bool(row[keep].all() or not row[keep].any()) for row, keep in zip(chosen, real, strict=True)]
    assert sum(whole) / len(whole) > 0.9 and 0 < chosen.any(1).sum() < len(docs)


def test_chunks_of_different_lengths_are_padded_on_the_right_by_the_tokenizer(tokenizer, docs):
    chunks = chunk_documents(tokenizer, docs, 32)[:3]
    chunks[1] = {key: value[:20] for key, value in chunks[1].items()}  # a shorter sequence (cut, as a test only)
    batch = MaskingCollator(tokenizer, "token", 0.5)(chunks, torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, 32)
    assert batch["attention_mask"].sum(1).tolist() == [32, 20, 32]
    assert (batch["input_ids"][1, 20:] == tokenizer.pad_token_id).all() and (batch["labels"][1, 20:] == -100).all()
    for row, chunk in enumerate(chunks):
        n = len(chunk["input_ids"])
        chosen = batch["labels"][row, :n] != -100
        assert chosen.any()
        original = torch.tensor(chunk["input_ids"])
        assert torch.equal(batch["labels"][row, :n][chosen], original[chosen])
        assert torch.equal(batch["input_ids"][row, :n][~chosen], original[~chosen])  # only chosen tokens change
