"""Weight-space interpolation (`hf-hybrid interpolate`): exact at the ends, the midpoint between, a LoRA adapter's
delta scaled, an ordinary saved model, and one line for each bad input."""

import json

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from hf_hybrid.models.adapters import lora_config
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.models.interpolate import interpolate


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _assert_params(model, expected: dict[str, torch.Tensor], exact: bool):
    got = _params(model)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        if exact:
            assert torch.equal(got[name], tensor), name
        else:
            torch.testing.assert_close(got[name], tensor, msg=name)


@pytest.fixture(scope="module")
def tuned_dir(tiny_model_dir, tmp_path_factory):
    """The tiny BERT with every weight moved, saved with other settings (CLS pooling, other prefixes)."""
    encoder = Encoder.from_pretrained(str(tiny_model_dir), pooling="cls", query_prefix="q: ", passage_prefix="p: ")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in encoder.model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return encoder.save_pretrained(tmp_path_factory.mktemp("tuned") / "model")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny BERT, with non-zero B matrices (a trained adapter's delta)."""
    from peft import get_peft_model

    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(encoder.model, lora_config(4, 8, 0.0, ["query", "value", "dense"]))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    folder = tmp_path_factory.mktemp("adapter") / "en"
    peft_model.save_pretrained(str(folder))
    return folder


def test_the_ends_are_exact_and_the_middle_is_the_midpoint(tiny_model_dir, tuned_dir, tmp_path):
    base = _params(Encoder.from_pretrained(str(tiny_model_dir)).model)
    tuned = _params(Encoder.from_pretrained(str(tuned_dir)).model)
    for weight, expected, exact in ((0.0, base, True), (1.0, tuned, True),
                                    (0.5, {n: (base[n] + tuned[n]) / 2 for n in base}, False)):
        out = interpolate(str(tiny_model_dir), str(tuned_dir), weight, tmp_path / str(weight))
        _assert_params(Encoder.from_pretrained(str(out)).model, expected, exact)
    assert not torch.equal(base["embeddings.word_embeddings.weight"], tuned["embeddings.word_embeddings.weight"])


def test_the_saved_model_is_an_ordinary_model_with_tuneds_settings(tiny_model_dir, tuned_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = interpolate(str(tiny_model_dir), str(tuned_dir), 0.3, tmp_path / "mixed")
    assert json.loads((out / "interpolation.json").read_text()) == {
        "base": str(tiny_model_dir), "tuned": str(tuned_dir), "weight": 0.3}
    encoder = Encoder.from_pretrained(str(out))
    assert (encoder.pooling, encoder.prefixes) == ("cls", {"query": "q: ", "passage": "p: "})
    ours = encoder.encode(["Nairobi ni mji mkuu wa Kenya."], kind="query")
    theirs = SentenceTransformer(str(out), device="cpu").encode(["Nairobi ni mji mkuu wa Kenya."],
                                                                 prompt_name="query", convert_to_tensor=True)
    torch.testing.assert_close(ours, theirs.cpu(), atol=1e-5, rtol=1e-4)


def test_a_lora_adapter_is_its_delta_scaled(tiny_model_dir, adapter_dir, tmp_path):
    from peft import PeftModel

    base = _params(Encoder.from_pretrained(str(tiny_model_dir)).model)
    merged_model = PeftModel.from_pretrained(Encoder.from_pretrained(str(tiny_model_dir)).model, str(adapter_dir))
    merged = _params(merged_model.merge_and_unload())
    assert any(not torch.equal(base[n], merged[n]) for n in base)

    full = interpolate(str(tiny_model_dir), str(adapter_dir), 1.0, tmp_path / "full")
    _assert_params(Encoder.from_pretrained(str(full)).model, merged, exact=True)
    half = interpolate(str(tiny_model_dir), str(adapter_dir), 0.5, tmp_path / "half")
    _assert_params(Encoder.from_pretrained(str(half)).model,
                   {n: base[n] + 0.5 * (merged[n] - base[n]) for n in base}, exact=False)


@pytest.fixture(scope="module")
def other_models(tiny_model_dir, tmp_path_factory):
    """A 3-layer model with the same vocabulary; the 2-layer model with two of its tokens' ids swapped, and with one
    token added."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from hf_hybrid.models.interpolate import PROBE_TEXT

    root = tmp_path_factory.mktemp("other")
    base = Encoder.from_pretrained(str(tiny_model_dir))
    config = BertConfig(**{**base.model.config.to_dict(), "num_hidden_layers": 3})
    deeper = Encoder(BertModel(config), base.tokenizer).save_pretrained(root / "deeper")
    shuffled = base.save_pretrained(root / "shuffled")
    spec = json.loads((shuffled / "tokenizer.json").read_text(encoding="utf-8"))
    first = base.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"][0]
    vocab = spec["model"]["vocab"]  # BPE's: token -> id
    token = {i: t for t, i in vocab.items()}
    vocab[token[first]], vocab[token[first + 1]] = first + 1, first
    (shuffled / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    assert len(PreTrainedTokenizerFast.from_pretrained(str(shuffled))) == len(base.tokenizer)
    base.tokenizer.add_tokens(["kiswahilini"])
    base.model.resize_token_embeddings(len(base.tokenizer))
    wider = base.save_pretrained(root / "wider")
    return {"deeper": deeper, "shuffled": shuffled, "wider": wider}


@pytest.mark.parametrize("case, fragments", [
    ("weight", ["interpolation weight must be in [0, 1]", "got 1.5"]),
    ("deeper", ["the architecture's num_hidden_layers differs (2 vs 3)"]),
    ("shuffled", ["the vocabulary (the probe text's token ids from position 1) differs"]),
    ("wider", ["the vocabulary's size differs (", "vs", "expected TUNED to be a fine-tuned copy of BASE"]),
    ("missing", ["cannot load model", "no such folder"]),
    ("out_file", ["is a file, not a folder; give another --out"]),
])
def test_bad_input_is_one_line(tiny_model_dir, tuned_dir, other_models, tmp_path, case, fragments):
    out, weight, tuned = tmp_path / "out", "0.5", str(tuned_dir)
    if case == "weight":
        weight = "1.5"
    elif case in other_models:
        tuned = str(other_models[case])
    elif case == "missing":
        tuned = str(tmp_path / "no-such-model")
    else:
        out.write_text("a file")
    result = run_cli("interpolate", str(tiny_model_dir), tuned, "--weight", weight, "--out", str(out))
    assert_one_line_error(result, *fragments)
