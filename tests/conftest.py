import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # the offline model is built once per test session unless a cache is given
    os.environ.setdefault("HF_HYBRID_CACHE", str(tmp_path_factory.mktemp("hf_hybrid_cache")))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT with a BPE tokenizer trained on the demo sample, saved by the toolkit.

    BPE, not unigram as multilingual-e5 has: the unigram trainer's piece scores and ids vary from run to run, so the
    model did too, and now and then one had score ties that made comparisons between encoding routes flaky.
    """
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from hf_hybrid.data.parallel_qa import DEMO_PATH
    from hf_hybrid.models.encoder import Encoder

    texts = []
    for line in DEMO_PATH.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts += [row["query"], row["passage"]]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=800, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                        sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                        model_max_length=128)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=1)
    encoder = Encoder(BertModel(config), tokenizer, pooling="mean",
                      query_prefix="query: ", passage_prefix="passage: ", max_length=128)
    return encoder.save_pretrained(tmp_path_factory.mktemp("tiny") / "model")
