"""Reading and writing record files: JSON arrays, JSON Lines and parquet.

Every reader here turns a file into a stream of plain dicts and reports every problem
(missing file, unreadable bytes, malformed JSON, not a table of records) as an
`InputError` naming the file (and the line, for JSON Lines), never a traceback.

    for rec in iter_records("eval_50.json"): ...
    with JsonArrayWriter(path) as w: w.write({"input": ...})
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rememr1.errors import InputError

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"data file not found: {path}")
    if path.is_dir():
        raise InputError(f"expected a data file, got a directory: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"data file is not readable: {path}")


def detect_format(path: str | os.PathLike) -> str:
    """'parquet', 'jsonl' or 'json', from the suffix, else from the first bytes."""
    p = Path(path)
    _check_file(p)
    suffix = p.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror or e}") from None
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"  # one object per line; a single pretty-printed object also works
    if suffix == ".json":
        return "json"
    raise InputError(f"{p}: not a JSON, JSON Lines or parquet file (first bytes {head[:16]!r})")


def iter_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON array, JSON Lines or parquet file as dicts."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "parquet":
        yield from _iter_parquet(p)
    elif fmt == "jsonl":
        yield from _iter_jsonl(p)
    else:
        yield from _iter_json_array(p)


def _iter_json_array(p: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(p, encoding="utf-8-sig") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror or e}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a JSON array of records, found {type(data).__name__}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise InputError(f"{p}: record {i} is a {type(rec).__name__}, expected an object")
        yield rec


def _iter_jsonl(p: Path) -> Iterator[dict[str, Any]]:
    try:
        f = open(p, encoding="utf-8-sig")
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror or e}") from None
    with f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    if lineno == 1:
                        # Perhaps one pretty-printed object rather than JSON Lines.
                        yield from _iter_json_array(p)
                        return
                    raise InputError(f"{p}: malformed JSON on line {lineno}: {e.msg}") from None
                if not isinstance(rec, dict):
                    raise InputError(
                        f"{p}: line {lineno} is a {type(rec).__name__}, expected an object"
                    )
                yield rec
        except UnicodeDecodeError as e:
            raise InputError(f"{p}: not UTF-8 text near line {lineno + 1} ({e.reason})") from None


def _iter_parquet(p: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
        for batch in pf.iter_batches(batch_size=64):
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{p}: cannot read parquet: {e}") from None


def field_names(rec: dict[str, Any]) -> str:
    """The record's field names for error messages."""
    names = sorted(rec)
    return ", ".join(names) if names else "(no fields)"


class JsonArrayWriter:
    """Write a JSON array one record at a time (so huge files never sit in memory).

    Records may be dicts (serialised here) or strings already holding one JSON object.
    The file is written under a temporary name and renamed on a clean close, so an
    interrupted run never leaves a truncated file that looks complete.
    """

    def __init__(self, path: str | os.PathLike, *, indent: int | None = None):
        self.path = Path(path)
        self.indent = indent
        self.count = 0
        self._tmp = self.path.with_name(self.path.name + ".part")
        self._f = None

    def __enter__(self) -> JsonArrayWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self._tmp, "w", encoding="utf-8")
        self._f.write("[")
        return self

    def write(self, rec: dict[str, Any] | str) -> None:
        assert self._f is not None, "use JsonArrayWriter as a context manager"
        text = rec if isinstance(rec, str) else json.dumps(rec, ensure_ascii=False, indent=self.indent)
        self._f.write(",\n" if self.count else "\n")
        self._f.write(text)
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._f is not None
        if exc_type is None:
            self._f.write("\n]\n" if self.count else "]\n")
            self._f.close()
            os.replace(self._tmp, self.path)
        else:
            self._f.close()
            self._tmp.unlink(missing_ok=True)
