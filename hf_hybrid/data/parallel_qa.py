"""Sources -> the one record shape (ParallelQA rows); their leak-free splits are in hf_hybrid.data.splits.

A ParallelQA row: group_id (same meaning across languages), lang (see hf_hybrid.languages),
query, passage, article_id (the unit for splits), title, and optionally hard_negatives
(passages in the row's language that look relevant but are not).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from datasets import Dataset, load_dataset

from hf_hybrid.data.files import FILE_BUILDERS, describe, read_file, read_saved
from hf_hybrid.errors import DataError
from hf_hybrid.languages import known_code, mteb_language_code, normalize_lang

DEMO_PATH = Path(__file__).parent / "samples" / "demo_qa.jsonl"
DEMO_LANGUAGES = ("en", "de", "es", "fr", "sw", "id")
FIELDS = ("group_id", "lang", "query", "passage")
EXPECTED = "rows with the texts group_id, lang, query, passage (or query_<lang> and passage_<lang> columns)"


def _check_row(row, n: int, source: str) -> None:
    """Row `n` (from 1) has the four fields as text (a group id may be a number), hard_negatives a list of texts."""
    if not isinstance(row, dict):
        raise DataError(f"{source}: row {n} is {describe(row)}; expected an object with {', '.join(FIELDS)}")
    for key in FIELDS:
        value = row.get(key)
        allowed = (str, int) if key == "group_id" else str
        if value is not None and (isinstance(value, bool) or not isinstance(value, allowed)):
            raise DataError(f"{source}: row {n}: {key!r} is {describe(value)}; expected text")
        if value is None or not str(value).strip():
            raise DataError(f"{source}: row {row.get('group_id', '?')!r} has an empty {key!r}")
    negatives = row.get("hard_negatives")
    if negatives is not None and not (isinstance(negatives, list) and all(isinstance(t, str) for t in negatives)):
        raise DataError(f"{source}: row {n}: 'hard_negatives' is {describe(negatives)}; expected a list of texts")


def make_parallel_qa(rows: list[dict], languages: list[str] | None = None, source: str = "data") -> Dataset:
    """Validate rows into a ParallelQA dataset: codes normalised, no empty text, and every group
    has exactly one row per language (all of `languages`, or all languages seen)."""
    if not rows:
        raise DataError(f"{source}: no rows; expected {EXPECTED}")
    wanted = [normalize_lang(lang) for lang in languages] if languages else None
    by_group: dict[str, dict[str, dict]] = defaultdict(dict)
    for n, row in enumerate(rows, 1):
        _check_row(row, n, source)
        lang = normalize_lang(row["lang"])
        if wanted and lang not in wanted:
            continue
        group = str(row["group_id"])
        if lang in by_group[group]:
            raise DataError(f"{source}: group {group!r} has two rows in language {lang!r}")
        by_group[group][lang] = {
            "group_id": group, "lang": lang, "query": row["query"], "passage": row["passage"],
            "article_id": str(row.get("article_id") or group), "title": str(row.get("title") or ""),
        }
        if row.get("hard_negatives") is not None:
            by_group[group][lang]["hard_negatives"] = row["hard_negatives"]
    all_langs = wanted or sorted({lang for g in by_group.values() for lang in g})
    out = []
    for group, per_lang in by_group.items():
        missing = [lang for lang in all_langs if lang not in per_lang]
        if missing:
            raise DataError(f"{source}: group {group!r} has no row in language(s) {', '.join(missing)}; "
                            f"every group needs all of {', '.join(all_langs)}")
        out.extend(per_lang[lang] for lang in all_langs)
    if not out:
        raise DataError(f"{source}: no rows in languages {', '.join(wanted or [])}")
    if any("hard_negatives" in r for r in out):
        for r in out:
            r.setdefault("hard_negatives", [])
    return Dataset.from_list(out)


def languages_of(ds: Dataset) -> list[str]:
    return sorted(set(ds["lang"]))


def load_demo(languages: list[str] | None = None) -> Dataset:
    """The demo sample shipped with the package: 60 hand-written question/passage groups
    (12 articles) in en, de, es, fr, sw, id. A demo, not a benchmark."""
    return make_parallel_qa(_read_jsonl(DEMO_PATH), languages, source="demo sample")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{n}: malformed JSON line ({err.msg})") from None
    return rows


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno} ({err.msg})") from None


def _files_named(directory: Path, pattern: str) -> dict[str, Path]:
    """The language code as written -> file, for files named by `pattern` with `{lang}` (the same code wherever
    `{lang}` is repeated, as in MLQA's monolingual files)."""
    slot = re.escape("{lang}")
    name = re.compile(re.escape(pattern).replace(slot, "(?P<lang>.+)", 1).replace(slot, "(?P=lang)"))
    matches = ((name.fullmatch(path.name), path) for path in sorted(directory.glob(pattern.replace("{lang}", "*"))))
    return {match["lang"]: path for match, path in matches if match}


def _squad_files(directory: Path, pattern: str, languages: list[str] | None) -> dict[str, Path]:
    """Language -> file, for files named by `pattern` in a directory (`_files_named`), codes normalized."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"directory not found: {directory}")
    found = {normalize_lang(lang): path for lang, path in _files_named(directory, pattern).items()}
    if not found:
        raise DataError(f"{directory}: no files named {pattern}")
    if languages:
        wanted = [normalize_lang(lang) for lang in languages]
        missing = [lang for lang in wanted if lang not in found]
        if missing:
            raise DataError(f"{directory}: no {pattern} file for language(s) {', '.join(missing)} "
                            f"(found {', '.join(sorted(found))})")
        found = {lang: found[lang] for lang in wanted}
    return found


def _is_qa(qa) -> bool:
    answers = qa.get("answers") if isinstance(qa, dict) else None
    return (isinstance(qa, dict) and "id" in qa and isinstance(qa.get("question"), str) and isinstance(answers, list)
            and bool(answers) and all(isinstance(x, dict) and isinstance(x.get("answer_start"), int) for x in answers))


def _squad_articles(path: Path) -> list[dict]:
    """The articles of a SQuAD v1.1 file, each paragraph checked for a context and questions with answers."""
    data = _read_json(path)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list) or not articles:
        raise DataError(f"{path}: expected SQuAD JSON with a non-empty 'data' list")
    for a, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list) or not all(
                isinstance(p, dict) and isinstance(p.get("context"), str) and isinstance(p.get("qas"), list)
                and all(map(_is_qa, p["qas"])) for p in paragraphs):
            raise DataError(f"{path}: article {a} is not in SQuAD's shape (expected paragraphs with a 'context' "
                            "and 'qas': id, question, answers with answer_start)")
    return articles


def load_xquad(directory: str | Path, languages: list[str] | None = None) -> Dataset:
    """XQuAD (`xquad.<lang>.json`, SQuAD v1.1): passage = the whole paragraph, stripped of the surrounding
    whitespace some paragraphs carry (as MTEB strips a document before encoding it)."""
    rows = []
    for lang, path in _squad_files(Path(directory), "xquad.{lang}.json", languages).items():
        for a, article in enumerate(_squad_articles(path)):
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows.append({"group_id": qa["id"], "lang": lang, "query": qa["question"],
                                 "passage": paragraph["context"].strip(), "article_id": f"xquad-{a}",
                                 "title": article.get("title", "")})
    return make_parallel_qa(rows, languages, source=str(directory))


def _sentence_of(paragraph: dict, answer_start: int, path: Path) -> int:
    for i, (start, end) in enumerate(paragraph["sentence_breaks"]):
        if start <= answer_start <= end:
            return i
    raise DataError(f"{path}: answer at {answer_start} lies in no sentence of its paragraph")


def _xquad_r_sentences(paragraph: dict) -> list[str]:
    context = paragraph["context"]
    sentences = paragraph.get("sentences") or [context[s:e] for s, e in paragraph["sentence_breaks"]]
    return [s.strip() for s in sentences]


def load_xquad_r(directory: str | Path, languages: list[str] | None = None) -> Dataset:
    """XQuAD-R (LAReQA, `<lang>.json` with `sentence_breaks`): passage = the answer sentence."""
    rows = []
    for lang, path in _squad_files(Path(directory), "{lang}.json", languages).items():
        for a, article in enumerate(_squad_articles(path)):
            for paragraph in article["paragraphs"]:
                if "sentence_breaks" not in paragraph:
                    raise DataError(f"{path}: paragraph without 'sentence_breaks' (is this XQuAD, not XQuAD-R?)")
                sentences = _xquad_r_sentences(paragraph)
                for qa in paragraph["qas"]:
                    s = _sentence_of(paragraph, qa["answers"][0]["answer_start"], path)
                    rows.append({"group_id": qa["id"], "lang": lang, "query": qa["question"],
                                 "passage": sentences[s], "article_id": f"xquad-{a}",
                                 "title": article.get("title", "")})
    return make_parallel_qa(rows, languages, source=str(directory))


def xquad_r_candidates(directory: str | Path, languages: list[str] | None = None,
                       article_ids: set[str] | None = None, with_articles: bool = False) -> dict[str, list]:
    """Every sentence of every paragraph, per language: LAReQA's candidate pool
    (as (article_id, sentence) pairs with `with_articles`)."""
    pool = {}
    for lang, path in _squad_files(Path(directory), "{lang}.json", languages).items():
        pool[lang] = [
            (f"xquad-{a}", sentence) if with_articles else sentence
            for a, article in enumerate(_squad_articles(path))
            if article_ids is None or f"xquad-{a}" in article_ids
            for paragraph in article["paragraphs"]
            for sentence in _xquad_r_sentences(paragraph)
        ]
    return pool


# FLORES-200 sentences of the MasakhaNEWS languages (Nigerian Pidgin has none), and high-resource ones beside them
FLORES_LOW_RESOURCE = ("hau", "yor", "swh", "som", "amh", "ibo", "xho", "sna", "lin", "lug", "gaz", "run", "tir")
FLORES_HIGH_RESOURCE = ("eng", "fra", "deu", "spa", "zho", "arb")


def flores_folders(directory: str | Path) -> dict[str, Path]:
    """FLORES code (`hau_Latn`) -> folder of SIB-200's TSVs, from the SIB-200 root or its data/annotated."""
    root = Path(directory)
    if (root / "data" / "annotated").is_dir():
        root = root / "data" / "annotated"
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and list(p.glob("*.tsv"))} if root.is_dir() else {}


def _flores_folder(folders: dict[str, Path], code: str) -> Path:
    """A FLORES code as given, or the folder of one of our codes in its usual script (zh -> zho_Hans)."""
    if code in folders:
        return folders[code]
    lang = normalize_lang(code)
    matches = [name for name in folders if known_code(name) == lang]
    if len(matches) > 1:  # several scripts: the usual one
        script = mteb_language_code(lang).split("-")[1]
        matches = [m for m in matches if m.endswith(f"_{script}")] or matches
    if not matches:
        raise DataError(f"no FLORES/SIB-200 folder for language {code!r}")
    return folders[matches[0]]


def load_flores(directory: str | Path, languages: list[str] | None = None,
                splits: tuple[str, ...] = ("train", "dev", "test")) -> Dataset:
    """FLORES-200 sentences from SIB-200 (`<lang_Script>/<split>.tsv`: index_id, category, text), parallel by
    `index_id`: query = passage = the sentence (a sentence retrieves its translations). Default languages:
    the MasakhaNEWS low-resource set and a few high-resource ones."""
    folders = flores_folders(directory)
    if not folders:
        raise DataError(f"{directory}: no SIB-200 language folders (<lang_Script>/test.tsv)")
    rows = []
    for code in languages or (*FLORES_LOW_RESOURCE, *FLORES_HIGH_RESOURCE):
        folder = _flores_folder(folders, code)
        for split in splits:
            path = folder / f"{split}.tsv"
            if not path.is_file():
                raise DataError(f"{path}: missing")
            lines = path.read_text(encoding="utf-8").splitlines()
            header = lines[0].split("\t") if lines else []
            if "index_id" not in header or "text" not in header:
                raise DataError(f"{path}: expected the columns index_id and text")
            i, t = header.index("index_id"), header.index("text")
            for line in lines[1:]:
                cells = line.split("\t")
                group = f"flores-{cells[i]}"
                rows.append({"group_id": group, "lang": code, "query": cells[t], "passage": cells[t],
                             "article_id": group, "title": ""})
    return make_parallel_qa(rows, languages or [*FLORES_LOW_RESOURCE, *FLORES_HIGH_RESOURCE], source=str(directory))


def load_mlqa(directory: str | Path, languages: list[str] | None = None, split: str | None = None) -> Dataset:
    """MLQA (`<split>-context-<l>-question-<l>.json`, split `test`, else `dev`): the monolingual files of each
    language (default: every one in the folder), grouped by MLQA's shared question ids; passage = the paragraph."""
    directory = Path(directory)
    split = split or ("test" if _files_named(directory, "test-context-{lang}-question-{lang}.json") else "dev")
    files = _squad_files(directory, f"{split}-context-{{lang}}-question-{{lang}}.json", languages)
    languages = list(files)
    rows = []
    for lang in languages:
        for a, article in enumerate(_squad_articles(files[lang])):
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows.append({"group_id": qa["id"], "lang": lang, "query": qa["question"],
                                 "passage": paragraph["context"], "article_id": article.get("title") or f"mlqa-{a}",
                                 "title": article.get("title", "")})
    groups = defaultdict(set)
    for row in rows:
        groups[row["group_id"]].add(row["lang"])
    # MLQA is parallel only in part: keep the questions present in every requested language.
    complete = {g for g, langs in groups.items() if len(langs) == len(languages)}
    if not complete:
        raise DataError(f"{directory}: no MLQA question is present in all of {', '.join(languages)}")
    return make_parallel_qa([r for r in rows if r["group_id"] in complete], languages, source=str(directory))


def load_columns(dataset: Dataset, languages: list[str] | None = None, source: str = "dataset",
                 group_column: str = "group_id", lang_column: str = "lang", query_column: str = "query",
                 passage_column: str = "passage") -> Dataset:
    """A datasets.Dataset in either shape: long (one row per group and language, columns named
    by the arguments) or wide (`query_<lang>` / `passage_<lang>` columns, one row per group)."""
    names = set(dataset.column_names)
    if {group_column, lang_column, query_column, passage_column} <= names:
        rows = [{"group_id": r[group_column], "lang": r[lang_column], "query": r[query_column],
                 "passage": r[passage_column], "article_id": r.get("article_id"), "title": r.get("title"),
                 "hard_negatives": r.get("hard_negatives")}
                for r in dataset]
        return make_parallel_qa(rows, languages, source=source)
    wide_langs = sorted(c[len("query_"):] for c in names if c.startswith("query_") and f"passage_{c[6:]}" in names)
    if not wide_langs:
        raise DataError(f"{source}: expected columns {group_column}, {lang_column}, {query_column}, {passage_column} "
                        f"or query_<lang>/passage_<lang> pairs; found {', '.join(sorted(names))}")
    rows = []
    for i, r in enumerate(dataset):
        group = str(r.get(group_column, i))
        for lang in wide_langs:
            rows.append({"group_id": group, "lang": lang, "query": r[f"query_{lang}"], "passage": r[f"passage_{lang}"],
                         "article_id": r.get("article_id"), "title": r.get("title")})
    return make_parallel_qa(rows, languages, source=source)


def folder_kind(path: Path) -> str | None:
    """"xquad" (xquad.<lang>.json), "saved" (save_to_disk), "repo" (a dataset repo folder with parquet
    files and a card, as `hf-hybrid data export parallel-qa` writes), "flores" (SIB-200's
    <lang_Script>/*.tsv), "mlqa" (<split>-context-<l>-question-<l>.json), "xquad-r" (<lang>.json), or None."""
    if list(path.glob("xquad.*.json")):
        return "xquad"
    if any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return "saved"
    if (path / "README.md").is_file() and list(path.glob("*/*.parquet")):
        return "repo"
    if flores_folders(path):
        return "flores"
    if list(path.glob("*-context-*-question-*.json")):
        return "mlqa"
    if list(path.glob("*.json")):
        return "xquad-r"
    return None


def is_hub_id(source: str) -> bool:
    return source.count("/") == 1 and not Path(source).exists()


def _load_repo(source: str, split: str, where: str) -> Dataset:
    """A Hub dataset or a dataset repo folder, through its card's configs."""
    try:
        return load_dataset(source, split=split)
    except Exception as err:  # noqa: BLE001 (the Hub and `datasets` raise many types; one line is what the user needs)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"cannot load dataset {source!r} {where}: {reason}") from None


def load_parallel_qa(source: str, languages: list[str] | None = None, split: str = "train",
                     flores_splits: list[str] | None = None) -> Dataset:
    """One entry point: `demo`, an XQuAD, XQuAD-R or MLQA folder, a SIB-200/FLORES folder (its `flores_splits`,
    default all), a .jsonl/.json/.csv/.parquet file, a folder saved with `save_to_disk`, or a Hub dataset id."""
    if flores_splits and not (Path(source).is_dir() and folder_kind(Path(source)) == "flores"):
        raise DataError(f"flores_splits applies to a SIB-200/FLORES folder, not {source!r}")
    if source == "demo":
        return load_demo(languages)
    path = Path(source)
    if path.is_dir():
        kind = folder_kind(path)
        if kind == "xquad":
            return load_xquad(path, languages)
        if kind == "saved":
            return load_columns(read_saved(path, EXPECTED, split), languages, source=source)
        if kind == "xquad-r":
            return load_xquad_r(path, languages)
        if kind == "flores":
            return load_flores(path, languages, tuple(flores_splits or ("train", "dev", "test")))
        if kind == "mlqa":
            return load_mlqa(path, languages)
        if kind == "repo":
            return load_columns(_load_repo(source, split, "from its folder"), languages, source=source)
        raise DataError(f"{path}: not an XQuAD/XQuAD-R/MLQA folder nor a saved dataset")
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DataError(f"file not found: {path}")
        return make_parallel_qa(_read_jsonl(path), languages, source=source)
    if path.suffix in FILE_BUILDERS:
        return load_columns(read_file(path, EXPECTED), languages, source=source)
    if is_hub_id(source):
        return load_columns(_load_repo(source, split, "from the Hub"), languages, source=source)
    raise DataError(f"data source not found: {source!r} (expected 'demo', a folder, a file or a Hub dataset id)")
