import numpy as np
import pytest
import torch

from hf_hybrid.errors import EncoderLoadError
from hf_hybrid.models.encoder import Encoder

TEXTS = ["Where is the river?", "Mto uko wapi?", "¿Dónde está el río?", "a"]


def test_sentence_transformers_loads_the_same_model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    st = SentenceTransformer(str(tiny_model_dir), device="cpu")
    for kind, prompt_name in (("query", "query"), ("passage", "document")):
        ours = encoder.encode(TEXTS, kind).numpy()
        theirs = st.encode(TEXTS, prompt_name=prompt_name, convert_to_numpy=True)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)


def test_settings_round_trip(tiny_model_dir, tmp_path):
    encoder = Encoder.from_pretrained(str(tiny_model_dir), pooling="cls", query_prefix="q: ", passage_prefix="")
    encoder.save_pretrained(tmp_path / "cls")
    again = Encoder.from_pretrained(str(tmp_path / "cls"))
    assert (again.pooling, again.prefixes, again.normalize) == ("cls", {"query": "q: ", "passage": ""}, True)
    torch.testing.assert_close(encoder.encode(TEXTS, "query"), again.encode(TEXTS, "query"))


def test_encode_keeps_input_order(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    together = encoder.encode(TEXTS, "passage", batch_size=2)
    one_by_one = torch.cat([encoder.encode([t], "passage") for t in TEXTS])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)


def test_not_an_encoder(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(EncoderLoadError, match="'gpt2' model, not a text encoder"):
        Encoder.from_pretrained(str(tmp_path))


def test_missing_model(tmp_path):
    with pytest.raises(EncoderLoadError, match="cannot load model .*: no such folder"):
        Encoder.from_pretrained(str(tmp_path / "nowhere"))


def test_mteb_wrapper_gives_the_same_embeddings(tiny_model_dir):
    mteb = pytest.importorskip("mteb")
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from mteb.models.sentence_transformer_wrapper import (
        SentenceTransformerEncoderWrapper,
    )
    from mteb.types import PromptType

    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    wrapped = SentenceTransformerEncoderWrapper(str(tiny_model_dir), device="cpu")
    metadata = mteb.get_task("XQuADRetrieval").metadata
    loader = create_dataloader(Dataset.from_dict({"text": TEXTS}), task_metadata=metadata, batch_size=2)
    for prompt_type, kind in ((PromptType.query, "query"), (PromptType.document, "passage")):
        theirs = wrapped.encode(loader, task_metadata=metadata, hf_split="test", hf_subset="de",
                                prompt_type=prompt_type)
        np.testing.assert_allclose(np.asarray(theirs), encoder.encode(TEXTS, kind).numpy(), atol=1e-5)


def test_folders_that_are_not_saved_models(tmp_path):
    from hf_hybrid.training.mlm import load_mlm

    empty = tmp_path / "empty"
    empty.mkdir()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "bert"}')
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"model_type": "bert"}')
    (pickled / "pytorch_model.bin").write_bytes(b"")
    cases = [(empty, f"no config.json in {empty}: not a saved model folder$"),
             (adapter, "not a saved model folder \\(it holds a LoRA adapter: give it as --adapters\\)"),
             (no_weights, "cannot load .*'.*no-weights'.*: Error no file named model.safetensors"),
             (pickled, f"{pickled} has pytorch_model.bin but no .safetensors weights: .* loads safetensors only")]
    for folder, message in cases:
        for load in (Encoder.from_pretrained, load_mlm):
            with pytest.raises(EncoderLoadError, match=message):
                load(str(folder))


def test_adapter_on_another_base_names_adapter_base_and_model(tiny_model_dir, tmp_path):
    import json

    from hf_hybrid.errors import AdapterError
    from hf_hybrid.models.adapters import check_base, compose, save_signature

    trained_on = Encoder.from_pretrained(str(tiny_model_dir))
    adapter = tmp_path / "dapt" / "adapters" / "sw"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    save_signature(trained_on.model, adapter)
    (adapter / "dapt.json").write_text(json.dumps({"language": "sw", "base_model": "org/base-model"}))
    check_base(trained_on.model, adapter, trained_on.name)  # its own base passes
    other = Encoder.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        other.model.get_input_embeddings().weight.normal_()
    with pytest.raises(AdapterError) as err:
        compose(other, "route", str(tmp_path / "dapt"), ["sw"])
    message = str(err.value)
    assert message.startswith(f"the sw adapter {adapter} was trained on org/base-model, not on the model it was put "
                              f"on, {tiny_model_dir} (word embeddings agree at cosine ")
    assert message.endswith("): use it with org/base-model")
