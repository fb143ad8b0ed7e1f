"""Anchored fine-tuning and joint masked-LM training: the losses beside the contrastive one."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_hybrid.data.parallel_qa import load_parallel_qa
from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.training.auxiliary import source_texts
from hf_hybrid.training.hybrid import HybridTrainingConfig, train
from hf_hybrid.training.replay import AnchorArgs, AnchorReplay, relation_loss

LANGS = ["en", "de", "sw"]


def config(tiny_model_dir, out, **kw):
    return HybridTrainingConfig(**{"model": str(tiny_model_dir), "data": "demo", "languages": LANGS,
                                   "batch_size": 8, "learning_rate": 2e-3, "logging_steps": 2, "max_steps": 8,
                                   "output_dir": str(out), **kw})


def _drift(model_dir, start_dir, texts) -> float:
    """Mean squared distance of the texts' embeddings from the starting model's."""
    start = Encoder.from_pretrained(str(start_dir)).encode(texts)
    return (Encoder.from_pretrained(str(model_dir)).encode(texts) - start).pow(2).sum(-1).mean().item()


def test_the_anchor_loss_starts_at_zero_and_is_the_distance_to_the_starting_embeddings(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    rows = load_parallel_qa("demo", LANGS)
    texts = source_texts(["train"], None, rows, None, 5, 0, "anchor_text")
    assert sorted(texts) == sorted(LANGS) and all(len(t) == 5 for t in texts.values())
    replay = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=6), 512, seed=0)
    every = [t for docs in texts.values() for t in docs]
    assert replay.ids == encoder.token_ids(every, "passage", 128)
    both = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_prompts=["query", "passage"]), 512, seed=0)
    assert both.ids == encoder.token_ids(every, "query", 128) + replay.ids
    torch.testing.assert_close(both.targets[5 * len(LANGS) :], replay.targets, rtol=0, atol=1e-5)
    batch = replay.batch(1)
    assert len(batch["chunks"]) == 6 and replay.batch(1)["langs"] == batch["langs"]  # drawn from (seed, step)
    assert replay.batch(2)["targets"].tolist() != batch["targets"].tolist()
    encoder.eval()
    with torch.no_grad():
        assert replay.loss(encoder, batch, "cpu").item() < 1e-10  # the starting model is its own anchor
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved = replay.loss(encoder, batch, "cpu").item()
        embeddings = batch["chunks"].embed(encoder, batch["langs"], "cpu")
    cosines = (embeddings * batch["targets"]).sum(-1)
    assert moved > 0 and moved == pytest.approx((2 - 2 * cosines).mean().item(), rel=1e-4)


def test_the_starting_models_replay_embeddings_are_cached_by_weights_and_tokens(tiny_model_dir, tmp_path,
                                                                                   monkeypatch, caplog):
    monkeypatch.setenv("HF_HYBRID_CACHE", str(tmp_path))
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    texts = source_texts(["train"], None, load_parallel_qa("demo", LANGS), None, 4, 0, "anchor_text")
    first = AnchorReplay.build(encoder, texts, AnchorArgs(), 512, seed=0, relation_temperature=0.05)
    files = list((tmp_path / "replay").iterdir())
    assert len(files) == 2 and {f.suffix for f in files} == {".safetensors"}  # one per prompt
    caplog.set_level("INFO", logger="hf_hybrid.training.replay")
    again = AnchorReplay.build(encoder, texts, AnchorArgs(), 512, seed=0, relation_temperature=0.05)
    assert "under passage and query from the cache" in caplog.text and torch.equal(again.targets, first.targets)
    relational = AnchorReplay.build(encoder, texts, AnchorArgs(), 512, seed=0, anchor=False,
                                    relation_temperature=0.05)  # query, then passage: the same two parts
    assert len(list((tmp_path / "replay").iterdir())) == 2
    assert torch.equal(relational.targets, first.targets.roll(len(first.ids) // 2, 0))
    AnchorReplay.build(encoder, texts, AnchorArgs(anchor_max_length=16), 512, seed=0, relation_temperature=0.05)
    with torch.no_grad():
        next(encoder.parameters()).add_(0.01)
    moved = AnchorReplay.build(encoder, texts, AnchorArgs(), 512, seed=0, relation_temperature=0.05)
    assert len(list((tmp_path / "replay").iterdir())) == 6  # other tokens, other weights: embedded again
    assert not torch.equal(moved.targets, first.targets)


def test_the_anchor_keeps_replay_texts_near_the_starting_model(tiny_model_dir, tmp_path):
    plain = train(config(tiny_model_dir, tmp_path / "plain"))
    anchored = train(config(tiny_model_dir, tmp_path / "anchored", anchor_weight=20.0, anchor_text=["train"]))
    rows = load_parallel_qa("demo", LANGS)
    texts = list(dict.fromkeys(rows["passage"]))
    drift_plain, drift_anchored = (_drift(run, tiny_model_dir, texts) for run in (plain, anchored))
    assert drift_anchored < 0.5 * drift_plain, (drift_anchored, drift_plain)
    log = [json.loads(line) for line in (anchored / "train_log.jsonl").read_text().splitlines()]
    assert all("anchor_loss" in r and r["anchor_loss"] >= 0 for r in log)


def test_the_relational_anchor_ranks_one_languages_passages_for_anothers_queries(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    texts = source_texts(["train"], None, load_parallel_qa("demo", LANGS), None, 6, 0, "anchor_text")
    every = [t for docs in texts.values() for t in docs]
    replay = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=8), 512, seed=0, anchor=False,
                                relation_temperature=0.05)
    assert replay.kinds == ("query", "passage") and replay.anchored == 0
    assert replay.ids == encoder.token_ids(every, "query", 128) + encoder.token_ids(every, "passage", 128)
    pairs = set()
    for step in range(1, 7):
        batch = replay.batch(step)
        assert "chunks" not in batch  # no anchor rows
        queries, passages = batch["relation"]["queries"], batch["relation"]["passages"]
        assert len(queries["langs"]) == len(passages["langs"]) == 4
        assert len(set(queries["langs"])) == len(set(passages["langs"])) == 1 != len(
            set(queries["langs"] + passages["langs"]))
        pairs.add((queries["langs"][0], passages["langs"][0]))
    assert len(pairs) > 1 and replay.batch(3)["relation"]["queries"]["langs"] == \
        replay.batch(3)["relation"]["queries"]["langs"]
    encoder.eval()
    batch = replay.batch(1)
    with torch.no_grad():
        assert abs(replay.relation_loss(encoder, batch, "cpu").item()) < 1e-6  # the start is its own teacher
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved = replay.relation_loss(encoder, batch, "cpu").item()
        q, d = (batch["relation"][side]["chunks"].embed(encoder, batch["relation"][side]["langs"], "cpu")
                for side in ("queries", "passages"))
    teacher = (batch["relation"]["queries"]["targets"] @ batch["relation"]["passages"]["targets"].T / 0.05).softmax(-1)
    student = (q @ d.T / 0.05).log_softmax(-1)
    expected = (teacher * (teacher.log() - student)).sum(-1).mean().item()
    assert moved > 0 and moved == pytest.approx(expected, rel=1e-4)


def test_unseen_relation_pairs_leave_the_training_languages_to_each_other(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    texts = source_texts(["train"], None, load_parallel_qa("demo", LANGS), None, 4, 0, "anchor_text")
    replay = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=4), 512, seed=0, anchor=False,
                                relation_temperature=0.05, seen=frozenset({"en", "de"}))
    pairs = {tuple(replay.batch(step)["relation"][side]["langs"][0] for side in ("queries", "passages"))
             for step in range(40)}
    assert pairs == {("en", "sw"), ("de", "sw"), ("sw", "en"), ("sw", "de")}
    with pytest.raises(DataError, match=r"relation_pairs unseen: every replay language \(de, en, sw\) is a "
                                        r"training language"):
        AnchorReplay.build(encoder, texts, AnchorArgs(), 512, seed=0, anchor=False, relation_temperature=0.05,
                           seen=frozenset(LANGS))


def test_a_relational_pivot_is_on_one_side_of_every_pair(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    texts = source_texts(["train"], None, load_parallel_qa("demo", LANGS), None, 4, 0, "anchor_text")
    replay = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=4), 512, seed=0, anchor=False,
                                relation_temperature=0.05, relation_pivot=frozenset({"en"}))
    pairs = {tuple(replay.batch(step)["relation"][side]["langs"][0] for side in ("queries", "passages"))
             for step in range(40)}
    assert pairs == {("en", "de"), ("en", "sw"), ("de", "en"), ("sw", "en")}
    for pivot in ({"yo"}, set(LANGS)):
        with pytest.raises(DataError, match=r"relation_pivot .*: expected replay languages, with another replay "
                                            r"language beside them \(replay languages: "):
            AnchorReplay.build(encoder, texts, AnchorArgs(), 512, seed=0, anchor=False, relation_temperature=0.05,
                               relation_pivot=frozenset(pivot))


def test_mined_relation_pairs_rank_each_querys_nearest_passage(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    texts = source_texts(["train"], None, load_parallel_qa("demo", LANGS), None, 12, 0, "anchor_text")
    mined = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=8), 512, seed=0, anchor=False,
                               relation_temperature=0.05, mined=True)
    plain = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=8), 512, seed=0, anchor=False,
                               relation_temperature=0.05)
    count, every = mined.texts_count, [t for docs in texts.values() for t in docs]
    hits = {"mined": 0, "plain": 0}
    for step in range(10):
        for name, replay in (("mined", mined), ("plain", plain)):
            relation = replay.batch(step)["relation"]
            queries, passages = relation["queries"], relation["passages"]
            assert len(queries["langs"]) == len(torch.unique(passages["targets"], dim=0)) == 4
            pool = [i for i, lang in enumerate(replay.langs[:count]) if lang == passages["langs"][0]]
            nearest = (queries["targets"] @ replay.targets[[count + i for i in pool]].T).argmax(-1)
            picked = {every[i] for i in pool if any(torch.equal(replay.targets[count + i], t)
                                                    for t in passages["targets"])}
            found = sum(every[pool[j]] in picked for j in nearest.tolist())
            assert name == "plain" or found == 4  # every query's nearest passage of its language is there
            hits[name] += found
    assert hits["plain"] < hits["mined"] == 40


def test_a_pivot_anchor_holds_only_the_pivot_languages_texts_in_place(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    texts = source_texts(["train"], None, load_parallel_qa("demo", LANGS), None, 4, 0, "anchor_text")
    everyone = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=6), 512, seed=0,
                                  relation_temperature=0.05)
    pivot = AnchorReplay.build(encoder, texts, AnchorArgs(anchor_batch_size=6), 512, seed=0,
                               relation_temperature=0.05, pivot=frozenset({"en"}))
    drawn = [pivot.batch(step) for step in range(10)]
    assert all(batch["langs"] == ["en"] * 4 for batch in drawn)  # the pivot's 4 texts, not 6
    assert {lang for batch in drawn for side in ("queries", "passages")
            for lang in batch["relation"][side]["langs"]} == set(LANGS)  # the relational anchor: every language
    assert everyone.batch(1)["langs"] != ["en"] * 6
    with pytest.raises(DataError, match=r"anchor_pivot: no replay text in yo \(replay languages: "):
        AnchorReplay.build(encoder, texts, AnchorArgs(), 512, seed=0, pivot=frozenset({"yo"}))


def test_the_relational_anchor_is_blind_to_a_rotation_of_the_whole_space():
    queries, passages = torch.nn.functional.normalize(torch.randn(2, 5, 16), dim=-1)
    rotation = torch.linalg.qr(torch.randn(16, 16))[0]
    assert relation_loss(queries @ rotation, passages @ rotation, queries, passages, 0.05).item() < 1e-5
    assert relation_loss(queries, passages.roll(1, 0), queries, passages, 0.05).item() > 0.1


def test_fine_tuning_with_the_relational_anchor_keeps_the_starting_rankings(tiny_model_dir, tmp_path):
    relation = dict(anchor_text=["train"], anchor_batch_size=8, anchor_texts_per_language=6)
    plain = train(config(tiny_model_dir, tmp_path / "plain", max_steps=24))
    kept = train(config(tiny_model_dir, tmp_path / "kept", max_steps=24, relation_weight=50.0, **relation))
    log = [json.loads(line) for line in (kept / "train_log.jsonl").read_text().splitlines()]
    assert all(r["relation_loss"] >= 0 and "anchor_loss" not in r for r in log)
    # the replay texts training drew (the config's seed), in batches it did not draw
    texts = source_texts(["train"], None, load_parallel_qa("demo", LANGS), None, 6, 42, "anchor_text")
    replay = AnchorReplay.build(Encoder.from_pretrained(str(tiny_model_dir)), texts, AnchorArgs(anchor_batch_size=8),
                                512, seed=0, anchor=False, relation_temperature=0.05)

    def divergence(model_dir) -> float:
        encoder = Encoder.from_pretrained(str(model_dir)).eval()
        with torch.no_grad():
            return sum(replay.relation_loss(encoder, replay.batch(step), "cpu").item() for step in range(20))

    assert divergence(kept) < 0.7 * divergence(plain), (divergence(kept), divergence(plain))


def test_joint_mlm_trains_its_head_and_leaves_it_out_of_the_saved_model(tiny_model_dir, tmp_path, caplog):
    caplog.set_level("INFO", logger="hf_hybrid")
    run = train(config(tiny_model_dir, tmp_path / "mlm", mlm_weight=1.0, mlm_text=["train"], mlm_batch_size=4,
                       mlm_max_length=32, mlm_head_steps=5))
    assert "new head fitted in 5 steps" in caplog.text
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert all(r["mlm_loss"] > 0 for r in log)
    saved = load_file(str(run / "model.safetensors"))
    assert not any("mlm_head" in k or "predictions" in k for k in saved)
    assert Encoder.from_pretrained(str(run)).encode(["hello"]).shape == (1, 32)


class Stopped(Exception):
    pass


def test_a_resumed_run_with_anchor_and_mlm_ends_where_the_uninterrupted_one_does(tiny_model_dir, tmp_path,
                                                                                 monkeypatch):
    import hf_hybrid.training.hybrid as hybrid

    extra = dict(anchor_weight=5.0, anchor_text=["train"], anchor_batch_size=4, mlm_weight=0.5, mlm_text=["train"],
                 mlm_batch_size=4, mlm_max_length=32, mlm_head_steps=2, max_steps=6, save_steps=3, logging_steps=1)
    whole = train(config(tiny_model_dir, tmp_path / "whole", **extra))
    save = hybrid.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise Stopped

    monkeypatch.setattr(hybrid, "save_checkpoint", save_then_stop)
    with pytest.raises(Stopped):
        train(config(tiny_model_dir, tmp_path / "cut", **extra))
    monkeypatch.setattr(hybrid, "save_checkpoint", save)
    resumed = train(config(tiny_model_dir, tmp_path / "cut", resume=True, **extra))
    expected, got = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert max((expected[k] - got[k]).abs().max().item() for k in expected) == 0.0

    def log(out):
        return [(r["step"], r["anchor_loss"], r["mlm_loss"])
                for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]

    assert log(resumed) == log(whole)


def test_replay_text_overlapping_an_evaluation_benchmark_is_dropped(tmp_path):
    (tmp_path / "yo.txt").write_text(
        "Ilé ìwé wa tóbi gan an ni ìlú Ibadan àti gbogbo agbègbè rẹ̀ lónìí\nọ̀rọ̀ mìíràn tí kò sí nínú ìdánwò\n",
        encoding="utf-8")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"group_id": "g1", "lang": "yo", "query": "Níbo ni?", "passage":
                                 "Ilé ìwé wa tóbi gan an ni ìlú Ibadan àti gbogbo agbègbè rẹ̀"}) + "\n"
                     + json.dumps({"group_id": "g1", "lang": "en", "query": "Where?", "passage": "Our school."})
                     + "\n", encoding="utf-8")
    source = str(tmp_path / "{lang}.txt")
    kept = source_texts([source], ["yo"], None, None, 10, 0, "anchor_text")
    assert len(kept["yo"]) == 2
    kept = source_texts([source], ["yo"], None, [str(bench)], 10, 0, "anchor_text")
    assert kept == {"yo": ["ọ̀rọ̀ mìíràn tí kò sí nínú ìdánwò"]}


@pytest.mark.parametrize("kw, message", [
    ({"anchor_weight": -1.0}, "anchor_weight must be at least 0, got -1.0"),
    ({"mlm_weight": -0.5}, "mlm_weight must be at least 0, got -0.5"),
    ({"anchor_weight": 1.0}, "anchor_weight 1.0 needs --anchor_text"),
    ({"relation_weight": -2.0}, "relation_weight must be at least 0, got -2.0"),
    ({"relation_weight": 1.0}, "relation_weight 1.0 needs --anchor_text"),
    ({"relation_pairs": "some"}, "relation_pairs: expected one of all, unseen, mined, got 'some'"),
    ({"mlm_weight": 1.0}, "mlm_weight 1.0 needs --mlm_text"),
    ({"relation_pivot": ["en"]}, r"relation_pivot \['en'\]: expected one or more replay languages, with "
                                 "--relation_weight above 0"),
    ({"anchor_prompts": ["document"]}, "anchor_prompts: expected query and/or passage, got document"),
    ({"anchor_pivot": ["en"]}, r"anchor_pivot \['en'\]: expected one or more replay languages, with --anchor_weight "
                               "above 0"),
])
def test_bad_weights_are_refused(tiny_model_dir, tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        config(tiny_model_dir, tmp_path, **kw)


def test_a_language_without_replay_text_is_one_error(tiny_model_dir, tmp_path):
    (tmp_path / "hau.txt").write_text("Wannan rubutu ne na gwaji\n", encoding="utf-8")
    cfg = config(tiny_model_dir, tmp_path / "run", anchor_weight=1.0, anchor_text=[str(tmp_path / "{lang}.txt")],
                 anchor_languages=["hau", "yor"])
    with pytest.raises(DataError, match=r"--anchor_text: no text in language 'yo' in .*\{lang\}\.txt"):
        train(cfg)


def test_benchmarks_without_the_language_exclude_nothing_and_raise_nothing():
    from conftest import shared_data

    xquad_r, sib = shared_data("xquad-r"), shared_data("sib-200")
    news = shared_data("masakhanews")
    texts = source_texts([str(news)], ["yo"], None, [str(sib), str(xquad_r)], 20, 0, "anchor_text")
    assert len(texts["yo"]) == 20  # XQuAD-R has no Yoruba: nothing to keep apart there, and no error
