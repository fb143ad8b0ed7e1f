"""Local data files and `save_to_disk` folders -> a datasets.Dataset, or one DataError line that names the
file and says what the caller expected in it (`datasets` itself answers a bad file with a long traceback)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from hf_hybrid.errors import DataError

# the `datasets` builder that reads each data file type
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
FILE_KINDS = {".jsonl": "JSON Lines", ".json": "JSON", ".csv": "CSV", ".parquet": "Parquet"}
NO_ROWS = 'corresponds to no data'  # how `datasets` says that a file has a header or a shape but no row


def describe(value) -> str:
    """What a value is, for an error message: "a number (5)", "a list", ..."""
    if isinstance(value, bool):
        return f"true/false ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return {list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost error: the reason, not `datasets`' "An error occurred"."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def _quiet():
    """No progress bar nor log line of `datasets` while it reads a local file: a bad file ends in one line."""
    verbosity, bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def read_file(path: Path, expected: str) -> Dataset:
    """A .jsonl/.json/.csv/.parquet file as a Dataset of at least one row; `expected` ends each error."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.suffix not in FILE_BUILDERS:
        raise DataError(f"{path}: unsupported file type (expected .jsonl, .json, .csv or .parquet)")
    kind = FILE_KINDS[path.suffix]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected {expected}")
    try:
        with _quiet():
            ds = load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path), split="train")
    except Exception as err:  # noqa: BLE001 (`datasets`, pandas and pyarrow raise many types; one line suffices)
        if NO_ROWS in str(err):
            raise DataError(f"{path}: no rows; expected {expected}") from None
        raise DataError(f"{path}: not a readable {kind} file ({_root_cause(err)}); expected {expected}") from None
    if len(ds) == 0:
        raise DataError(f"{path}: no rows; expected {expected}")
    return ds


def read_saved(path: Path, expected: str, split: str = "train") -> Dataset:
    """A `save_to_disk` folder (a Dataset, or a DatasetDict and its `split`) of at least one row."""
    if (path / "state.json").is_file() and not list(path.glob("*.arrow")):
        raise DataError(f"{path}: a saved dataset with no rows; expected {expected}")
    try:
        ds = load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 (`datasets` and pyarrow raise many types; one line suffices)
        raise DataError(f"{path}: not a readable save_to_disk folder ({_root_cause(err)}); "
                        f"expected {expected}") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: a saved DatasetDict without a {split!r} split (it has {', '.join(ds)})")
        ds = ds[split]
    if len(ds) == 0:
        raise DataError(f"{path}: a saved dataset with no rows; expected {expected}")
    return ds
