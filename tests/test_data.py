import json

import pytest
from conftest import shared_data
from datasets import Dataset

from hf_hybrid.data.parallel_qa import (
    DEMO_LANGUAGES,
    load_columns,
    load_demo,
    load_parallel_qa,
    load_xquad,
    load_xquad_r,
    make_parallel_qa,
    xquad_r_candidates,
)
from hf_hybrid.data.splits import holdout_articles, split_by_article
from hf_hybrid.errors import DataError, UnknownLanguageError
from hf_hybrid.languages import normalize_lang


def test_language_convention():
    assert [normalize_lang(c) for c in ["en", "eng", "swh_Latn", "hau", "HAU", "arb_Arab", "pcm", "zho_Hans"]] == \
        ["en", "en", "sw", "ha", "ha", "ar", "pcm", "zh"]
    with pytest.raises(UnknownLanguageError, match="unknown language code 'xx'"):
        normalize_lang("xx")


def test_demo_sample():
    demo = load_demo()
    assert sorted(set(demo["lang"])) == sorted(DEMO_LANGUAGES)
    assert len(demo) == 60 * len(DEMO_LANGUAGES)
    assert len(set(demo["article_id"])) == 12
    assert len(load_parallel_qa("demo", ["en", "sw"])) == 120


def test_xquad_r_real_data():
    path = shared_data("xquad-r")
    rows = load_xquad_r(path)
    assert len(set(rows["lang"])) == 11 and len(set(rows["group_id"])) == 1190
    candidates = xquad_r_candidates(path)
    assert min(len(c) for c in candidates.values()) == 852 and max(len(c) for c in candidates.values()) == 1276
    # every answer sentence is one of its language's candidates
    en = rows.filter(lambda r: r["lang"] == "en")
    assert set(en["passage"]) <= set(candidates["en"])


def test_xquad_real_data():
    rows = load_xquad(shared_data("xquad"), ["en", "ro"])
    assert len(rows) == 2 * 1190 and len(set(rows["article_id"])) == 48


def test_split_by_article_is_leak_free():
    rows = load_demo(["en", "de"])
    folds = [split_by_article(rows, 2, f) for f in (0, 1)]
    for train, test in folds:
        assert not set(train["article_id"]) & set(test["article_id"])
        assert not set(train["group_id"]) & set(test["group_id"])
    assert set(folds[0][1]["group_id"]) | set(folds[1][1]["group_id"]) == set(rows["group_id"])
    rest, held = holdout_articles(rows, 0.25, seed=1)
    assert len(set(held["article_id"])) == 3 and not set(rest["article_id"]) & set(held["article_id"])


def row(group, lang, **kw):
    return {"group_id": group, "lang": lang, "query": f"q {group}", "passage": f"p {group}", **kw}


def test_bad_rows():
    with pytest.raises(UnknownLanguageError, match="'xx'"):
        make_parallel_qa([row("g", "xx")])
    with pytest.raises(DataError, match="group 'g2' has no row in language.* de"):
        make_parallel_qa([row("g1", "en"), row("g1", "de"), row("g2", "en")])
    with pytest.raises(DataError, match="no rows"):
        make_parallel_qa([])
    with pytest.raises(DataError, match="empty 'query'"):
        make_parallel_qa([row("g", "en", query=" ")])


def test_files_and_formats(tmp_path):
    bad = tmp_path / "xquad.en.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="malformed JSON at line 1"):
        load_xquad(tmp_path)
    lines = tmp_path / "rows.jsonl"
    lines.write_text(json.dumps(row("g", "en")) + "\n{oops\n")
    with pytest.raises(DataError, match="rows.jsonl:2: malformed JSON"):
        load_parallel_qa(str(lines))
    with pytest.raises(DataError, match="not found"):
        load_parallel_qa(str(tmp_path / "absent.jsonl"))
    wide = Dataset.from_list([{"id": "g1", "query_en": "q", "passage_en": "p", "query_sw": "sq", "passage_sw": "sp"}])
    rows = load_columns(wide, group_column="id")
    assert sorted(rows["lang"]) == ["en", "sw"] and set(rows["group_id"]) == {"g1"}


def test_unreachable_hub(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="cannot load dataset 'nobody/no-such-dataset'"):
        load_parallel_qa("nobody/no-such-dataset")


def test_an_mlqa_folder_loads_the_questions_present_in_every_language(tmp_path):
    from hf_hybrid.data.parallel_qa import folder_kind
    from hf_hybrid.evaluation.mteb_tasks import MLQARParallelRetrieval

    def squad(lang, ids):
        qas = [{"id": i, "question": f"{lang} question {i}", "answers": [{"answer_start": 0, "text": "x"}]}
               for i in ids]
        return {"data": [{"title": "T", "paragraphs": [{"context": f"{lang} context {i}", "qas": [qa]}
                                                       for i, qa in zip(ids, qas, strict=True)]}]}

    for lang, ids in (("en", "abc"), ("de", "ac"), ("es", "abc")):
        (tmp_path / f"test-context-{lang}-question-{lang}.json").write_text(json.dumps(squad(lang, list(ids))))
    (tmp_path / "test-context-en-question-de.json").write_text(json.dumps(squad("de", ["a"])))  # not read
    (tmp_path / "dev-context-en-question-en.json").write_text(json.dumps(squad("en", ["d"])))  # test is read
    assert folder_kind(tmp_path) == "mlqa"
    rows = load_parallel_qa(str(tmp_path))
    assert sorted(set(rows["lang"])) == ["de", "en", "es"] and sorted(set(rows["group_id"])) == ["a", "c"]
    assert sorted(set(load_parallel_qa(str(tmp_path), ["en", "es"])["group_id"])) == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"no test-context-\{lang\}-question-\{lang\}.json file for language\(s\) hi "
                                        r"\(found de, en, es\)"):
        load_parallel_qa(str(tmp_path), ["en", "hi"])
    task = MLQARParallelRetrieval(data=str(tmp_path), languages=["en", "de", "es"])
    task.load_data()  # the MTEB task reads the MLQA files at `data`, as its description says
    assert task.benchmark.languages == ["de", "en", "es"] and len(task.benchmark.candidates["de"]) == 2
    for path in tmp_path.glob("test-context-*-question-*.json"):
        if path.name != "test-context-en-question-de.json":
            path.unlink()
    assert set(load_parallel_qa(str(tmp_path))["group_id"]) == {"d"}  # a cross-lingual test file alone: dev is read


def test_saved_dataset_folder_is_not_taken_for_xquad_r(tmp_path):
    from hf_hybrid.data.benchmark import load_benchmark

    load_demo(["en", "sw"]).save_to_disk(str(tmp_path / "saved"))
    assert len(load_parallel_qa(str(tmp_path / "saved"))) == 120
    bench = load_benchmark(str(tmp_path / "saved"))
    assert bench.languages == ["en", "sw"] and len(bench.candidates["en"]) == 60


def test_wrong_typed_rows():
    with pytest.raises(DataError, match="rows.jsonl: row 2: 'query' is a number \\(5\\); expected text"):
        make_parallel_qa([row("g", "en"), row("g", "de", query=5)], source="rows.jsonl")
    with pytest.raises(DataError, match="row 1: 'passage' is a list; expected text"):
        make_parallel_qa([row("g", "en", passage=["a"])])
    with pytest.raises(DataError, match="row 1: 'lang' is true/false \\(True\\); expected text"):
        make_parallel_qa([row("g", True)])
    with pytest.raises(DataError, match="row 1: 'hard_negatives' is a str; expected a list of texts"):
        make_parallel_qa([row("g", "en", hard_negatives="one")])
    with pytest.raises(DataError, match="row 1 is a str; expected an object with group_id, lang, query, passage"):
        make_parallel_qa(["g en q p"])
    assert make_parallel_qa([row(7, "en")])["group_id"] == ["7"]  # a numeric group id is an id


def test_squad_files_of_another_shape(tmp_path):
    for name, content, message in [
        ("xquad.en.json", "[]", "expected SQuAD JSON with a non-empty 'data' list"),
        ("xquad.en.json", '{"data": [{"title": "T"}]}', "article 0 is not in SQuAD's shape"),
        ("xquad.en.json", '{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1"}]}]}]}',
         "article 0 is not in SQuAD's shape"),
    ]:
        (tmp_path / name).write_text(content)
        with pytest.raises(DataError, match=message):
            load_parallel_qa(str(tmp_path))


def test_bad_dapt_text_sources(tmp_path):
    from hf_hybrid.data.text import load_texts

    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,lang\n")
    (tmp_path / "malformed.json").write_text('{"text": ')
    (tmp_path / "numbers.jsonl").write_text('{"text": 5, "lang": "sw"}\n')
    (tmp_path / "corrupt.parquet").write_text("not parquet")
    Dataset.from_dict({"body": ["a text"]}).to_parquet(str(tmp_path / "columns.parquet"))
    Dataset.from_dict({"text": []}).save_to_disk(str(tmp_path / "saved-empty"))
    (tmp_path / "folder").mkdir()
    expected = "expected a 'text' column, and a 'lang' column unless the file holds one language"
    for name, message in [("empty.csv", f"empty file; {expected}"), ("header.csv", f"no rows; {expected}"),
                          ("malformed.json", "not a readable JSON file"),
                          ("numbers.jsonl", "row 1: 'text' is a number \\(5\\); expected text"),
                          ("corrupt.parquet", "not a readable Parquet file"),
                          ("columns.parquet", "expected a 'text' column \\(found body\\)"),
                          ("saved-empty", "a saved dataset with no rows"),
                          ("folder", "not a MasakhaNEWS folder .* nor a save_to_disk folder")]:
        with pytest.raises(DataError, match=f"{tmp_path / name}: {message}"):
            load_texts(str(tmp_path / name), "sw")
    Dataset.from_dict({"text": ["a text", "un texte"], "lang": ["sw", "fr"]}).save_to_disk(str(tmp_path / "ok"))
    assert load_texts(str(tmp_path / "ok"), "sw") == ["a text"]
