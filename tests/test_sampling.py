from collections import Counter

import pytest

from hf_hybrid.data.parallel_qa import make_parallel_qa
from hf_hybrid.errors import DataError
from hf_hybrid.sampling import SAMPLERS, HybridBatchSampler, make_sampler

LANGS = ["ar", "de", "en", "es", "sw"]


def parallel_rows(n_groups=200, langs=LANGS):
    return make_parallel_qa([
        {"group_id": f"g{g}", "lang": lang, "query": f"q{g} {lang}", "passage": f"p{g} {lang}",
         "article_id": f"a{g // 5}"}
        for g in range(n_groups) for lang in langs
    ])


def batch_langs(ds, batch):
    return [(ds[q]["lang"], ds[p]["lang"]) for q, p in batch]


@pytest.fixture(scope="module")
def rows():
    return parallel_rows()


def test_hybrid_statistics(rows):
    alpha = 0.3
    sampler = HybridBatchSampler(rows, batch_size=16, alpha=alpha, seed=1)
    langs, groups = rows["lang"], rows["group_id"]
    mono = total = 0
    pairs_seen, mono_langs = Counter(), Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len(batch) == 16
            batch_groups = [groups[q] for q, _ in batch]
            assert len(set(batch_groups)) == 16, "a group twice in one batch"
            assert all(groups[q] == groups[p] for q, p in batch), "query and passage of different groups"
            pairs = [(langs[q], langs[p]) for q, p in batch]
            total += 1
            if all(q == p for q, p in pairs):
                assert len(set(pairs)) == 1, "a monolingual batch mixes languages"
                mono += 1
                mono_langs[pairs[0][0]] += 1
            else:
                assert all(q != p for q, p in pairs), "a cross-lingual batch holds a same-language pair"
                pairs_seen.update(pairs)
    assert total == 40 * (200 // 16)
    assert abs(mono / total - alpha) < 0.06
    assert set(mono_langs) == set(LANGS)
    assert set(pairs_seen) == {(x, y) for x in LANGS for y in LANGS if x != y}


def test_deterministic_for_seed_and_epoch(rows):
    a = HybridBatchSampler(rows, batch_size=8, seed=3)
    b = HybridBatchSampler(rows, batch_size=8, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_resume_skips_done_batches(rows):
    full = HybridBatchSampler(rows, batch_size=8, seed=3)
    full.set_epoch(1)
    resumed = HybridBatchSampler(rows, batch_size=8, seed=3)
    resumed.set_epoch(1, start_batch=5)
    assert list(resumed) == list(full)[5:]


def test_distributed_ranks_share_batch_type_and_split_groups(rows):
    ranks = [HybridBatchSampler(rows, batch_size=8, alpha=0.5, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(0)
    assert len(ranks[0]) == len(ranks[1]) == 200 // 16
    for b0, b1 in zip(*ranks, strict=True):
        l0, l1 = batch_langs(rows, b0), batch_langs(rows, b1)
        mono0, mono1 = all(q == p for q, p in l0), all(q == p for q, p in l1)
        assert mono0 == mono1
        if mono0:
            assert l0[0] == l1[0]
        assert not {rows[q]["group_id"] for q, _ in b0} & {rows[q]["group_id"] for q, _ in b1}


def test_baselines(rows):
    def all_pairs(name):
        s = make_sampler(name, rows, batch_size=20, seed=0)
        return [pair for epoch in range(5) for batch in (s.set_epoch(epoch) or s) for pair in batch_langs(rows, batch)]

    assert all(q == p for q, p in all_pairs("x-x"))
    assert all(q != p for q, p in all_pairs("x-y"))
    assert set(all_pairs("en-en")) == {("en", "en")}
    random_pairs = all_pairs("random")
    assert any(q == p for q, p in random_pairs) and any(q != p for q, p in random_pairs)
    assert set(SAMPLERS) == {"hybrid", "x-x", "x-y", "en-en", "random"}


def test_bad_input(rows):
    with pytest.raises(ValueError, match="alpha must be in"):
        HybridBatchSampler(rows, batch_size=8, alpha=1.5)
    with pytest.raises(DataError, match="larger than the number of groups"):
        HybridBatchSampler(rows, batch_size=150, num_replicas=2)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("nope", rows, 8)
    with pytest.raises(DataError, match="needs English"):
        make_sampler("en-en", parallel_rows(20, ["de", "fr"]), 4)
    with pytest.raises(DataError, match="at least 2 languages"):
        HybridBatchSampler(parallel_rows(20, ["de"]), batch_size=4)
