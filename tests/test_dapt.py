import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_hybrid.data.parallel_qa import DEMO_PATH
from hf_hybrid.data.text import load_corpus, load_texts
from hf_hybrid.errors import AdapterError, DataError
from hf_hybrid.models.adapters import available_adapters, compose
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.training.dapt import DaptConfig, train_dapt
from hf_hybrid.training.hybrid import HybridTrainingConfig, train
from hf_hybrid.training.mlm import MaskingCollator, chunk_documents

ROOT = Path(__file__).resolve().parents[1]


def _demo_texts(lang: str) -> list[str]:
    rows = [json.loads(line) for line in DEMO_PATH.read_text(encoding="utf-8").splitlines()]
    return [f"{r['query']} {r['passage']}" for r in rows if r["lang"] == lang]


@pytest.fixture(scope="module")
def news_folder(tmp_path_factory) -> Path:
    """A MasakhaNEWS-shaped folder (<lang>/train.tsv: category, headline, text, url) from the demo sample."""
    root = tmp_path_factory.mktemp("news")
    for lang, folder in (("sw", "swa"), ("de", "deu")):
        (root / folder).mkdir()
        lines = ["category\theadline\ttext\turl"]
        for i, text in enumerate(_demo_texts(lang) * 3):  # each text three times under distinct headlines
            lines.append(f"news\tHeadline {i}\t{text}\thttp://example.org/{i}")
        (root / folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _dapt_config(tiny_model_dir, news_folder, out, **kw) -> DaptConfig:
    return DaptConfig(**{"model": str(tiny_model_dir), "languages": ["swa", "de"], "text": [str(news_folder)],
                         "heldout_fraction": 0.2, "min_heldout": 2, "max_seq_length": 32, "batch_size": 8,
                         "max_steps": 25, "head_steps": 25, "learning_rate": 3e-3, "head_learning_rate": 3e-3,
                         "lora_r": 4, "lora_alpha": 8, "masking": "whole-word", "logging_steps": 5,
                         "output_dir": str(out), **kw})


@pytest.fixture(scope="module")
def dapt_dir(tiny_model_dir, news_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dapt") / "run"
    train_dapt(_dapt_config(tiny_model_dir, news_folder, out))
    return out


def test_chunks_carry_special_tokens_and_word_starts(tiny_model_dir):
    tokenizer = Encoder.from_pretrained(str(tiny_model_dir)).tokenizer
    chunks = chunk_documents(tokenizer, _demo_texts("en"), 24)
    assert len(chunks) > 10
    for chunk in chunks:
        assert len(chunk["input_ids"]) == 24
        assert chunk["input_ids"][0] == tokenizer.cls_token_id and chunk["input_ids"][-1] == tokenizer.sep_token_id
        assert chunk["special"] == [1] + [0] * 22 + [1]
        assert not chunk["word_start"][0] and not chunk["word_start"][-1]
    # word starts follow the tokenizer's words: a piece beginning with the word marker starts a word
    pieces = tokenizer.convert_ids_to_tokens(chunks[3]["input_ids"][1:-1])
    assert [p.startswith("▁") for p in pieces][1:] == chunks[3]["word_start"][2:-1]


@pytest.mark.parametrize("masking", ["token", "whole-word"])
def test_masking_rate_words_and_fixed_masks(tiny_model_dir, masking):
    tokenizer = Encoder.from_pretrained(str(tiny_model_dir)).tokenizer
    chunks = chunk_documents(tokenizer, _demo_texts("en") + _demo_texts("de"), 32)
    collator = MaskingCollator(tokenizer, masking, 0.15)
    batch = collator(chunks, torch.Generator().manual_seed(0))
    chosen = batch["labels"] != -100
    assert chosen.any(1).all()  # every sequence has a target
    assert 0.11 < chosen.sum().item() / (len(chunks) * 30) < 0.19
    assert (batch["labels"][chosen] == torch.tensor([c["input_ids"] for c in chunks])[chosen]).all()
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # never a special token
    masked = batch["input_ids"] == tokenizer.mask_token_id
    assert 0.7 < (masked & chosen).sum() / chosen.sum() < 0.9  # 80% mask token
    if masking == "whole-word":  # a word is masked whole or not at all
        for i, chunk in enumerate(chunks):
            word = torch.cumsum(torch.tensor(chunk["word_start"]), 0)
            for w in word[chosen[i]].unique():
                if w > 0:
                    assert chosen[i][(word == w) & ~torch.tensor(chunk["special"], dtype=torch.bool)].all()
    again = collator(chunks, torch.Generator().manual_seed(0))
    assert torch.equal(again["input_ids"], batch["input_ids"]) and torch.equal(again["labels"], batch["labels"])


def test_corpus_sources_heldout_and_decontamination(news_folder, tmp_path):
    corpus = load_corpus([str(news_folder)], "swa", heldout_fraction=0.2, min_heldout=2)
    docs = corpus["train"] + corpus["heldout"]
    assert corpus["stats"]["documents"] == len(docs) == len(set(docs)) == 3 * len(_demo_texts("sw"))
    assert docs[0].startswith("Headline 0 ")  # headline + text
    assert not set(corpus["train"]) & set(corpus["heldout"])
    # a text file per language, named with {lang}: ISO 639-1 or 639-3 names both work
    (tmp_path / "sw.txt").write_text("one document\n\nanother document\n", encoding="utf-8")
    assert load_texts(str(tmp_path / "{lang}.txt"), "swh_Latn") == ["one document", "another document"]
    assert load_texts(str(tmp_path / "{lang}.txt"), "de") == []
    # a document containing an evaluation sentence is dropped
    eval_rows = [{"group_id": "g", "lang": "sw", "query": "q", "passage": _demo_texts("sw")[0].split(" ", 3)[-1]},
                 {"group_id": "g", "lang": "en", "query": "q", "passage": "p"}]
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in eval_rows), encoding="utf-8")
    clean = load_corpus([str(news_folder)], "sw", exclude=[str(tmp_path / "eval.jsonl")], heldout_fraction=0.2,
                        min_heldout=2)
    assert clean["stats"]["dropped_overlapping_eval"] == 3
    assert not any(eval_rows[0]["passage"] in d for d in clean["train"] + clean["heldout"])
    with pytest.raises(DataError, match="no DAPT text for language 'fr'"):
        load_corpus([str(news_folder)], "fr")
    with pytest.raises(DataError, match="too little DAPT text for language 'sw'"):
        load_corpus([str(news_folder)], "sw", heldout_fraction=0.01, min_heldout=50)


def test_sib200_text_is_the_train_split_only():
    sib = ROOT.parent / "shared" / "data" / "sib-200"
    if not sib.is_dir():
        pytest.skip(f"{sib} is absent")
    texts = load_texts(str(sib), "hau")
    train = (sib / "data" / "annotated" / "hau_Latn" / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert len(texts) == len(train) - 1


def test_dapt_adapters_lower_heldout_loss_and_load_by_language(dapt_dir, tiny_model_dir):
    results = json.loads((dapt_dir / "dapt_results.json").read_text())
    assert set(results) == {"sw", "de"}
    for lang, r in results.items():
        folder = dapt_dir / "adapters" / lang
        assert {"adapter_config.json", "adapter_model.safetensors", "dapt.json", "base_signature.safetensors",
                "mlm_head.safetensors"} <= {p.name for p in folder.iterdir()}
        info = json.loads((folder / "dapt.json").read_text())
        assert info["language"] == lang and info["base_model"] == str(tiny_model_dir)
        assert info["head"].startswith("initialised") and info["corpus"]["documents"] > 0
        assert r["heldout"]["after"]["mlm_loss"] < r["heldout"]["before"]["mlm_loss"]
        # with the adapter switched off, the trained head alone scores the same sequences
        assert r["heldout"]["after_without_adapter"]["masked_tokens"] == r["heldout"]["after"]["masked_tokens"]
        assert r["heldout"]["after_without_adapter"]["mlm_loss"] != r["heldout"]["after"]["mlm_loss"]
        assert r["adapter_bytes"] == (folder / "adapter_model.safetensors").stat().st_size
    assert set(available_adapters(str(dapt_dir))) == {"sw", "de"}
    assert "| sw |" in (dapt_dir / "dapt_results.md").read_text()


def _embed(encoder, texts, lang=None):
    return encoder.encode(texts, "passage", lang=lang)


def test_merge_and_route_give_the_adapter_embeddings(dapt_dir, tiny_model_dir):
    texts = _demo_texts("sw")[:6]
    plain = _embed(Encoder.from_pretrained(str(tiny_model_dir)), texts)
    merged_sw = Encoder.from_pretrained(str(tiny_model_dir))
    compose(merged_sw, "merge", str(dapt_dir), ["swa"], [1.0])
    sw = _embed(merged_sw, texts)
    assert (sw - plain).abs().max() > 1e-3  # the adapter changes the encoder
    routed = Encoder.from_pretrained(str(tiny_model_dir))
    compose(routed, "route", str(dapt_dir), None)
    assert routed.routed == {"sw", "de"}
    torch.testing.assert_close(_embed(routed, texts, "sw"), sw, atol=1e-5, rtol=0)
    torch.testing.assert_close(_embed(routed, texts, "fr"), plain, atol=1e-5, rtol=0)  # no adapter: plain encoder
    torch.testing.assert_close(_embed(routed, texts), plain, atol=1e-5, rtol=0)
    # one batch of mixed languages: each row through its own language's adapter
    batch = routed.tokenize(texts[:2], "passage")
    mixed = routed(batch["input_ids"], batch["attention_mask"], ["sw", "fr"])
    torch.testing.assert_close(mixed[0], sw[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1], plain[1], atol=1e-5, rtol=0)
    # a weight of zero leaves that adapter out
    weighted = Encoder.from_pretrained(str(tiny_model_dir))
    compose(weighted, "merge", str(dapt_dir), ["sw", "de"], [1.0, 0.0])
    torch.testing.assert_close(_embed(weighted, texts), sw, atol=1e-5, rtol=0)


def test_adapter_errors(dapt_dir, tiny_model_dir, tmp_path):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    with pytest.raises(AdapterError, match="sum to a positive number"):
        compose(encoder, "merge", str(dapt_dir), ["sw", "de"], [0.5, -0.5])
    with pytest.raises(AdapterError, match="2 adapter weights for 1 adapters"):
        compose(encoder, "merge", str(dapt_dir), ["sw"], [0.5, 0.5])
    with pytest.raises(AdapterError, match="no adapter for language 'yo'.*adapters there: de, sw"):
        compose(encoder, "merge", str(dapt_dir), ["yor"])
    with pytest.raises(AdapterError, match="no adapters to route"):
        compose(encoder, "route", str(dapt_dir), ["yor"])
    with pytest.raises(ValueError, match="needs --adapters"):
        compose(encoder, "route", None, None)
    # the same architecture with other weights is another base model
    other = Encoder.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        other.model.get_input_embeddings().weight.normal_()
    with pytest.raises(AdapterError, match="was trained on .*, not on"):
        compose(other, "route", str(dapt_dir), ["sw"])


def test_route_hybrid_training_keeps_language_adapters_and_saves_them(dapt_dir, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    out = train(HybridTrainingConfig(
        model=str(tiny_model_dir), data="demo", languages=["en", "de", "sw"], batch_size=8, max_steps=3,
        learning_rate=1e-3, lora=True, lora_r=4, adapters=str(dapt_dir), composition="route",
        output_dir=str(tmp_path / "route")))
    assert json.loads((out / "routing.json").read_text())["languages"] == ["de", "sw"]
    for lang in ("de", "sw"):
        saved = load_file(str(out / "adapters" / lang / "adapter_model.safetensors"))
        trained = load_file(str(dapt_dir / "adapters" / lang / "adapter_model.safetensors"))
        assert saved.keys() == trained.keys()
        assert all(torch.equal(saved[k], trained[k]) for k in saved)  # frozen during retrieval training
        assert (out / "adapters" / lang / "dapt.json").is_file()
    reloaded = Encoder.from_pretrained(str(out))
    assert reloaded.routed == {"de", "sw"}
    texts = _demo_texts("sw")[:3]
    assert (_embed(reloaded, texts, "sw") - _embed(reloaded, texts)).abs().max() > 1e-3
    # sentence-transformers loads the retriever itself (without routing)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")
    torch.testing.assert_close(torch.tensor(st.encode(["passage: " + t for t in texts])), _embed(reloaded, texts),
                               atol=1e-5, rtol=0)


def test_merge_hybrid_training_saves_a_plain_encoder(dapt_dir, tiny_model_dir, tmp_path):
    out = train(HybridTrainingConfig(
        model=str(tiny_model_dir), data="demo", languages=["en", "sw"], batch_size=8, max_steps=2,
        adapters=str(dapt_dir), composition="merge", adapter_languages=["sw", "de"], adapter_weights=[0.5, 0.5],
        output_dir=str(tmp_path / "merge")))
    assert not (out / "routing.json").exists() and not (out / "adapters").exists()
    assert Encoder.from_pretrained(str(out)).routed == set()


def test_dapt_command_bad_input_is_one_line(tiny_model_dir, news_folder, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "hf_hybrid.cli", "dapt", "--model", str(tiny_model_dir),
                               "--output_dir", str(tmp_path / "o"), *args], capture_output=True, text=True, cwd=ROOT)

    for args, message in (
        (["--languages", "xx", "--text", str(news_folder)], "unknown language code 'xx'"),
        (["--languages", "fr", "--text", str(news_folder)], "no DAPT text for language 'fr'"),
        (["--languages", "sw", "--text", str(tmp_path / "missing.txt")], "file not found"),
        (["--languages", "sw"], "give DAPT text sources"),
        (["--languages", "sw", "--text", str(news_folder), "--masking", "span"], "masking must be one of"),
    ):
        result = run(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
        assert message in result.stderr


def test_route_falls_back_to_the_plain_encoder_with_one_warning(dapt_dir, tiny_model_dir, caplog):
    texts = _demo_texts("fr")[:3]
    plain = _embed(Encoder.from_pretrained(str(tiny_model_dir)), texts)
    routed = Encoder.from_pretrained(str(tiny_model_dir))
    with caplog.at_level("WARNING"):
        compose(routed, "route", str(dapt_dir), ["sw", "yor"])
    assert routed.routed == {"sw"}
    assert "no adapter for yo in" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        first, second = _embed(routed, texts, "fr"), _embed(routed, texts, "fr")
    assert [r.getMessage() for r in caplog.records] == [
        "no adapter routed for language 'fr': its texts use the encoder without one"]
    torch.testing.assert_close(first, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, plain, atol=1e-5, rtol=0)


def test_dapt_with_two_processes(tiny_model_dir, news_folder, tmp_path):
    import os

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "recipes" / "train_dapt.py"), "--model", str(tiny_model_dir), "--languages", "sw",
           "--text", str(news_folder), "--heldout_fraction", "0.2", "--min_heldout", "2", "--max_seq_length", "32",
           "--batch_size", "4", "--max_steps", "3", "--head_steps", "2", "--output_dir", str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "adapters" / "sw" / "dapt.json").read_text())
    assert info["batch_size"] == 8  # 4 sequences on each of 2 processes
    assert [json.loads(line)["stage"] for line in (out / "dapt_log.jsonl").read_text().splitlines()] == [
        "sw head", "sw adapter"]


def test_an_untied_encoder_without_mlm_head_is_one_error(tiny_model_dir, tmp_path):
    import shutil

    from hf_hybrid.training.mlm import load_mlm

    untied = tmp_path / "untied"
    shutil.copytree(tiny_model_dir, untied)
    config = json.loads((untied / "config.json").read_text())
    (untied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(ValueError, match="no MLM head and its config does not tie word embeddings"):
        load_mlm(str(untied))
    _, _, new_head = load_mlm(str(tiny_model_dir))
    assert new_head


def test_route_by_detected_language(dapt_dir, tiny_model_dir, tmp_path):
    import shutil

    detecting = Encoder.from_pretrained(str(tiny_model_dir))
    compose(detecting, "route", str(dapt_dir), None, detect=True)
    given = Encoder.from_pretrained(str(tiny_model_dir))
    compose(given, "route", str(dapt_dir), None)
    sw, fr = _demo_texts("sw")[:4], _demo_texts("fr")[:4]
    assert detecting.langid.detect(sw) == ["sw"] * 4 and detecting.langid.detect(fr) == [None] * 4
    torch.testing.assert_close(_embed(detecting, sw), _embed(given, sw, "sw"), atol=1e-5, rtol=0)
    torch.testing.assert_close(_embed(detecting, fr), _embed(given, fr), atol=1e-5, rtol=0)  # no adapter
    with pytest.raises(ValueError, match="goes with --composition route"):
        compose(Encoder.from_pretrained(str(tiny_model_dir)), "merge", str(dapt_dir), None, detect=True)
    old = tmp_path / "old"  # adapters trained before profiles were saved
    shutil.copytree(dapt_dir / "adapters" / "sw", old / "sw")
    (old / "sw" / "langid.safetensors").unlink()
    with pytest.raises(ValueError, match="no language profile"):
        compose(Encoder.from_pretrained(str(tiny_model_dir)), "route", str(old), None, detect=True)


def test_a_missing_adapter_folder_is_named_as_such(tiny_model_dir):
    with pytest.raises(AdapterError, match="adapter source not found: '/nosuch'"):
        compose(Encoder.from_pretrained(str(tiny_model_dir)), "route", "/nosuch", None)


# Anchored DAPT: an adapter trained with the anchor loss, and the embedding drift every adapter records


@pytest.fixture(scope="module")
def anchored_dir(tiny_model_dir, news_folder, tmp_path_factory):
    """The Swahili adapter of `dapt_dir`, trained the same way (same seed, steps) with a heavy anchor."""
    out = tmp_path_factory.mktemp("anchored") / "run"
    train_dapt(_dapt_config(tiny_model_dir, news_folder, out, languages=["swa"], anchor_weight=50.0,
                            anchor_batch_size=8, anchor_max_length=32))
    return out


def _record(run, lang="sw") -> dict:
    return json.loads((run / "adapters" / lang / "dapt.json").read_text())


def test_every_adapter_records_the_drift_of_the_retrievers_embeddings(dapt_dir, tiny_model_dir, news_folder):
    heldout = load_corpus([str(news_folder)], "swa", heldout_fraction=0.2, min_heldout=2,
                          seed=DaptConfig().seed)["heldout"]
    info = _record(dapt_dir)
    drift = info["embedding_drift"]
    assert info["anchor"] is None
    assert drift["documents"] == len(heldout) > 0
    assert 0 < drift["mean_cosine_to_base"] < 1 - 1e-4  # the plain adapter moves the embeddings
    # measured as the retriever sees them: the saved encoder (its pooling and passage prefix) with and without
    # the adapter merged in
    base = Encoder.from_pretrained(str(tiny_model_dir)).encode(heldout, "passage")
    merged = Encoder.from_pretrained(str(tiny_model_dir))
    compose(merged, "merge", str(dapt_dir), ["sw"], [1.0])
    adapted = merged.encode(heldout, "passage")
    cosine = torch.nn.functional.cosine_similarity(adapted, base).mean().item()
    assert drift["mean_cosine_to_base"] == pytest.approx(cosine, abs=1e-4)
    assert drift["mean_squared_distance"] == pytest.approx((adapted - base).pow(2).sum(-1).mean().item(), abs=1e-4)
    table = (dapt_dir / "dapt_results.md").read_text()
    assert "held-out embeddings' cosine to base" in table and f"{drift['mean_cosine_to_base']:.4f}" in table
    log = [json.loads(line) for line in (dapt_dir / "dapt_log.jsonl").read_text().splitlines()]
    assert not any("anchor_loss" in r for r in log)  # no anchor: the log of before


def test_an_anchored_adapter_drifts_less_and_still_learns_its_language(anchored_dir, dapt_dir):
    plain, anchored = _record(dapt_dir), _record(anchored_dir)
    assert anchored["anchor"] == {"weight": 50.0, "replay_texts": plain["corpus"]["train_documents"],
                                  "batch_size": 8, "max_length": 32}
    assert anchored["embedding_drift"]["documents"] == plain["embedding_drift"]["documents"]
    moved, kept = plain["embedding_drift"], anchored["embedding_drift"]
    assert kept["mean_squared_distance"] < 0.5 * moved["mean_squared_distance"], (kept, moved)
    assert kept["mean_cosine_to_base"] > moved["mean_cosine_to_base"]
    assert anchored["heldout"]["after"]["mlm_loss"] < anchored["heldout"]["before"]["mlm_loss"]
    assert anchored["heldout"]["before"] == plain["heldout"]["before"]  # the same head stage, the same masks
    log = [json.loads(line) for line in (anchored_dir / "dapt_log.jsonl").read_text().splitlines()]
    adapter_steps = [r for r in log if r["stage"] == "sw adapter"]
    assert [r["step"] for r in adapter_steps] == [5, 10, 15, 20, 25]
    assert all(r["anchor_loss"] >= 0 for r in adapter_steps)
    assert not any("anchor_loss" in r for r in log if r["stage"] == "sw head")  # the head stage has no anchor
    assert "| 50 |" in (anchored_dir / "dapt_results.md").read_text()


def test_a_negative_anchor_weight_is_one_line(tiny_model_dir, news_folder, tmp_path):
    result = subprocess.run([sys.executable, "-m", "hf_hybrid.cli", "dapt", "--model", str(tiny_model_dir),
                             "--languages", "sw", "--text", str(news_folder), "--anchor_weight", "-1",
                             "--output_dir", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert "anchor_weight" in result.stderr and "-1" in result.stderr


def test_a_resumed_dapt_run_keeps_the_adapters_it_finished(tiny_model_dir, news_folder, tmp_path, monkeypatch):
    import hf_hybrid.training.dapt as dapt

    out = tmp_path / "dapt"
    train_dapt(_dapt_config(tiny_model_dir, news_folder, out, languages=["swa"]))
    saved = (out / "adapters" / "sw" / "adapter_model.safetensors").read_bytes()
    trained = []
    adapt = dapt.adapt_language

    def counting(accelerator, cfg, run, *args):
        trained.append(run.lang)
        return adapt(accelerator, cfg, run, *args)

    monkeypatch.setattr(dapt, "adapt_language", counting)
    train_dapt(_dapt_config(tiny_model_dir, news_folder, out, resume=True))
    assert trained == ["de"]  # Swahili's adapter was complete: only German trained
    assert (out / "adapters" / "sw" / "adapter_model.safetensors").read_bytes() == saved
    results = json.loads((out / "dapt_results.json").read_text())
    assert set(results) == {"sw", "de"} and results["sw"]["language"] == "sw"
    assert results["sw"]["adapter_bytes"] == len(saved)  # the kept adapter's size is in the table too
