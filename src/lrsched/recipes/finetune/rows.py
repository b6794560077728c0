"""Rows of train.py's data files: CSV (a header line) or JSONL (one object a line).

Nothing shifts silently: a CSV row whose field count differs from the header's (an unquoted comma
in a text), a header naming a column twice (``text,label,label``, or two names differing only in
surrounding spaces) and a JSON line with a key twice are refused in one line naming the row or
the column. JSON numbers keep their spelling (``JsonNumber``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from lrsched.errors import UsageError


def read_rows(path: Path, flag: str, encoding: str = "utf-8-sig") -> list[dict[str, object]]:
    """Rows of a CSV (header line) or JSONL (one object a line) file; errors name ``flag``.

    ``utf-8-sig`` reads UTF-8 with or without a byte-order mark (Excel writes one)."""
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    try:
        with path.open(encoding=encoding, newline="") as f:
            if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
                return _jsonl_rows(f, path, flag)
            return _csv_rows(f, path, flag)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"{flag} {path}: unreadable ({type(err).__name__}: {str(err)[:120]})") from None


def _csv_rows(lines: Iterable[str], path: Path, flag: str) -> list[dict[str, object]]:
    """Rows of a CSV file under its header. A header naming a column twice (``text,label,label``, or
    ``label`` and ``label `` that differ only in spaces) and a row whose field count differs from the
    header's (an unquoted comma in a text) are refused naming the column or the row: nothing shifts."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return []
    _check_header(header, path, flag)
    rows: list[dict[str, object]] = []
    for fields in reader:
        if not fields:  # a blank line
            continue
        if len(fields) != len(header):
            raise UsageError(
                f"{flag} {path}: row {len(rows) + 1} (line {reader.line_num}) has {len(fields)} fields, the header has "
                f"{len(header)}; quote a field that holds a comma"
            )
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def _check_header(header: list[str], path: Path, flag: str) -> None:
    """Refuse a header that names a column twice, or two that differ only in surrounding spaces."""
    seen: dict[str, int] = {}
    for number, name in enumerate(header, 1):
        key = name.strip()
        if key and key in seen:
            first = header[seen[key] - 1]
            raise UsageError(
                f"{flag} {path}: the header names column {first!r} twice (columns {seen[key]} and {number}: "
                f"{name!r}); give each column its own name"
            )
        seen.setdefault(key, number)


class JsonNumber(str):
    """A number of a JSON line as the file writes it (``1.0`` stays ``1.0``; ``NaN`` is ``NaN``)."""


def _jsonl_rows(lines: Iterable[str], path: Path, flag: str) -> list[dict[str, object]]:
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(
                line,
                parse_int=JsonNumber,
                parse_float=JsonNumber,
                parse_constant=JsonNumber,
                object_pairs_hook=_unique_keys,
            )
        except json.JSONDecodeError as err:
            raise UsageError(f"{flag} {path}: line {number} is not JSON ({err.msg})") from None
        except _DuplicateKey as err:
            raise UsageError(f"{flag} {path}: line {number} names {err.key!r} twice; give each key once") from None
        if not isinstance(row, dict):
            raise UsageError(f"{flag} {path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are all distinct (``json`` alone keeps the last of two equal keys)."""
    row: dict[str, object] = {}
    for key, value in pairs:
        if key in row:
            raise _DuplicateKey(key)
        row[key] = value
    return row
