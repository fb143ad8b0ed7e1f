"""Packed training (`models/packing.py`): texts concatenated with no padding, attention kept within each text; the
same loss and gradients as the padded step."""

import json
import logging
import math
import random
from unittest.mock import patch

import pytest
import torch
from test_training_step import _assert_same, _batch, _step, _tiny

from hf_hybrid.errors import ConfigError
from hf_hybrid.models import packing
from hf_hybrid.models.chunks import pack, plan_chunks
from hf_hybrid.training.hybrid import HybridTrainingConfig, PairCollator, train
from hf_hybrid.training.memory import lean_training


def test_packs_keep_every_row_once_within_the_budget_of_real_tokens():
    rng = random.Random(0)
    lengths = [rng.randint(1, 40) for _ in range(50)]
    packs = plan_chunks(lengths, max_tokens=100, max_rows=6, packed=True)
    assert sorted(i for p in packs for i in p) == list(range(50))
    assert all(sum(lengths[i] for i in p) <= 100 and len(p) <= 6 for p in packs)
    assert [lengths[i] for p in packs for i in p] == sorted(lengths, reverse=True)
    assert len(plan_chunks(lengths, max_tokens=sum(lengths), packed=True)) == 1
    with pytest.raises(ConfigError, match="token budget 30 is below the longest text"):
        plan_chunks([10, 31], max_tokens=30, packed=True)


def test_a_pack_has_no_padding_and_each_text_its_own_positions():
    one = pack([[5, 6, 7], [8], [9, 10]])
    assert one["input_ids"].tolist() == [5, 6, 7, 8, 9, 10]
    assert one["cu_seq_lens"].tolist() == [0, 3, 4, 6] and one["max_length"] == 3
    assert packing.position_ids(one["cu_seq_lens"], 6).tolist() == [[0, 1, 2, 0, 0, 1]]
    assert packing.position_ids(one["cu_seq_lens"], 6, offset=2).tolist() == [[2, 3, 4, 2, 2, 3]]
    hidden = torch.arange(12.0).view(6, 2)
    assert packing.pool(hidden, one["cu_seq_lens"], "cls").tolist() == [[0, 1], [6, 7], [8, 9]]
    assert packing.pool(hidden, one["cu_seq_lens"], "mean").tolist() == [[2, 3], [6, 7], [9, 10]]


@pytest.mark.parametrize("attention", ["varlen", "grouped"])
def test_packed_attention_keeps_to_each_text(attention):
    # varlen: CUDA's path (jagged nested tensors), run here on CPU; grouped: the CPU path, with groups small
    # enough that the texts fall into several, each padded to its own longest text
    torch.manual_seed(0)
    lengths = [4, 1, 6, 3, 3]
    cu = torch.tensor([0, 4, 5, 11, 14, 17], dtype=torch.int32)
    q, k, v = (torch.randn(1, 2, 17, 8, dtype=torch.float64) for _ in range(3))
    if attention == "varlen":
        got = packing.varlen_attention(q, k, v, cu, max(lengths), 0.0, None)
    else:
        with patch.object(packing, "ATTENTION_GROUP_TOKENS", 8):
            got = packing.grouped_attention(q, k, v, cu, 0.0, None, packing._sdpa)
    assert got.shape == (1, 17, 2, 8)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        alone = torch.nn.functional.scaled_dot_product_attention(q[..., start:end, :], k[..., start:end, :],
                                                                 v[..., start:end, :])
        torch.testing.assert_close(got[0, start:end], alone[0].transpose(0, 1))


@pytest.mark.parametrize("lora", [False, True])
def test_the_packed_step_equals_the_padded_step(tiny_model_dir, lora):
    encoder = _tiny(tiny_model_dir, dropout=False).double()
    if lora:
        from peft import get_peft_model

        from hf_hybrid.models.adapters import lora_config

        encoder.model = get_peft_model(encoder.model, lora_config(4, 8, 0.0, ["query", "key", "value", "dense"]))
    lean_training(encoder.model)
    padded, items = _batch(encoder, max_tokens=4096)
    packed = PairCollator(encoder.tokenizer.pad_token_id, 200, packed=True)(items)
    assert len(packed["passage"].inputs) > 1 and all("attention_mask" not in c for c in packed["passage"].inputs)
    assert packed["query"].tokens + packed["passage"].tokens == padded["query"].tokens + padded["passage"].tokens
    _assert_same(_step(encoder, packed), _step(encoder, padded))
    _assert_same(_step(encoder, packed, cached=True), _step(encoder, padded))  # gradient caching packs too


def test_roberta_like_positions_start_after_the_padding_index(tiny_model_dir):
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    from hf_hybrid.models.encoder import Encoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=130, pad_token_id=1)
    encoder = Encoder(XLMRobertaModel(config), tokenizer)
    assert packing.first_position(encoder.model) == 2
    assert not packing.packs_correctly(encoder)  # its sdpa attention would attend across the texts of a pack
    lean_training(encoder.model)
    assert packing.packs_correctly(encoder)


def test_packing_is_chosen_where_it_is_right(tiny_model_dir, caplog):
    caplog.set_level(logging.INFO, logger="hf_hybrid.models.packing")
    encoder = _tiny(tiny_model_dir, dropout=False)
    assert not packing.use_packing(False, encoder)
    assert not packing.use_packing(None, encoder)  # plain sdpa would attend across texts: padded chunks, logged
    assert "training on padded chunks, not packs: its packed embeddings differ" in caplog.text
    with pytest.raises(ConfigError, match="--packing true: .* cannot be trained on packed texts"):
        packing.use_packing(True, encoder)
    lean_training(encoder.model)  # the training attention packs
    assert packing.use_packing(None, encoder) and packing.use_packing(True, encoder)
    encoder.routed.add("sw")
    with pytest.raises(ConfigError, match="routes adapters by language"):
        packing.use_packing(True, encoder)


def test_a_packed_run_trains(tiny_model_dir, tmp_path):
    out = train(HybridTrainingConfig(model=str(tiny_model_dir), data="demo", languages=["en", "sw"], batch_size=4,
                                     max_steps=2, packing=True, chunk_tokens=256, output_dir=str(tmp_path / "run"),
                                     logging_steps=1))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in log if "loss" in record]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert (out / "modules.json").is_file()
