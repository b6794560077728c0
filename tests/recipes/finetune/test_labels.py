"""train.py's labels (issues 20, 30): a missing, NaN or infinite label is refused naming its row, equal numbers are one
class, and a class keeps the name the training file gives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsched.errors import UsageError
from lrsched.recipes.finetune import data as D

from .finetune_helpers import TINY, run_train_subprocess
from .test_data import flags


def jsonl(path: Path, labels: list[str]) -> Path:
    """A JSONL file of one text per label; each label is written as given (raw JSON: ``1.0``, ``NaN``)."""
    lines = [f'{{"text": "text number {i}", "label": {label}}}\n' for i, label in enumerate(labels)]
    path.write_text("".join(lines))
    return path


def csv(path: Path, labels: list[str]) -> Path:
    path.write_text("text,label\n" + "".join(f"text number {i},{label}\n" for i, label in enumerate(labels)))
    return path


GOOD = ["0", "1"] * 5
"""Ten rows; the bad label goes in as the 4th row."""


def with_bad(label: str) -> list[str]:
    return [*GOOD[:3], label, *GOOD[3:]]


@pytest.mark.parametrize(
    ("writer", "label", "says"),
    [
        (csv, "NaN", "'label' is NaN (a missing label)"),
        (csv, "nan", "'label' is nan (a missing label)"),
        (csv, "", "lacks 'label' (a missing label)"),
        (jsonl, "NaN", "'label' is NaN (a missing label)"),
        (jsonl, "null", "lacks 'label' (a missing label)"),
        (jsonl, '"NaN"', "'label' is NaN (a missing label)"),
        (jsonl, '" "', "lacks 'label' (a missing label)"),
    ],
)
def test_a_missing_or_nan_label_is_refused_naming_its_row(
    tmp_path: Path, writer: object, label: str, says: str
) -> None:
    suffix = ".csv" if writer is csv else ".jsonl"
    path = writer(tmp_path / f"train{suffix}", with_bad(label))  # type: ignore[operator]
    with pytest.raises(UsageError) as err:
        D.load_splits(flags(train_file=path))
    message = str(err.value)
    assert message.startswith(f"--train_file {path}: row 4") and says in message and "\n" not in message


def test_a_nan_label_in_a_validation_file_is_refused_too(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", GOOD * 2)
    val = csv(tmp_path / "val.csv", ["0", "NaN"])
    with pytest.raises(UsageError, match=rf"^--validation_file {val}: row 2: 'label' is NaN \(a missing label\)"):
        D.load_splits(flags(train_file=train, validation_file=val))


def test_equal_numbers_are_one_class_named_as_the_file_first_writes_it(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", ["1", "0", "1.0", "0.0", "1e0", "2.50", "2.5", "0"] * 3)
    val = csv(tmp_path / "val.csv", ["1.00", "0", "2.5", "+1"])
    s = D.load_splits(flags(train_file=train, validation_file=val))
    assert s.label_names == ["0", "1", "2.50"]
    assert s.validation.labels == [1, 0, 2, 1]
    assert sorted(set(s.train.labels)) == [0, 1, 2]


def test_label_names_are_the_files_spelling_and_sort_as_numbers(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", ["10", "2", "0.50", '"text"'] * 3)
    assert D.load_splits(flags(train_file=train)).label_names == ["0.50", "10", "2", "text"]  # not all numbers
    train = jsonl(tmp_path / "train.jsonl", ["10", "2", "0.50", "-1"] * 3)
    assert D.load_splits(flags(train_file=train)).label_names == ["-1", "0.50", "2", "10"]
    assert D.label_key("1.0") == D.label_key("1") == D.label_key("1e0") == "1" and D.label_key("-0.0") == "0"
    assert D.label_key("1_0") == "1_0" and D.label_key("NaN") is None and D.label_key("inf") == "inf"


def test_an_unknown_validation_label_is_shown_as_the_file_writes_it(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", GOOD * 2)
    val = csv(tmp_path / "val.csv", ["0", "3.0"])
    with pytest.raises(UsageError, match=r"label '3\.0' .*is not among the training labels \['0', '1'\]"):
        D.load_splits(flags(train_file=train, validation_file=val))


def test_train_py_refuses_a_nan_label_in_one_line_exit_2_writing_nothing(tmp_path: Path) -> None:
    train = csv(tmp_path / "train.csv", with_bad("NaN"))
    out = tmp_path / "out"
    proc = run_train_subprocess(["--train_file", str(train), *TINY, "--output_dir", str(out)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"train.py: error: --train_file {train}: row 4: 'label' is NaN (a missing label); give every row one"
    ]
    assert proc.stdout == "" and not out.exists()


def test_json_numbers_as_texts_keep_their_spelling(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(10)))
    path.write_text(path.read_text() + '{"text": 1.50, "label": 1}\n')
    s = D.load_splits(flags(train_file=path))
    assert "1.50" in s.train.texts + s.validation.texts


@pytest.mark.parametrize(
    ("writer", "label"),
    [(csv, "1e1000000"), (csv, "-1E+999"), (csv, "1e-1000000"), (csv, "inf"), (csv, "-Infinity"), (jsonl, "Infinity")],
)
def test_a_label_no_float64_holds_is_refused_naming_its_row(tmp_path: Path, writer: object, label: str) -> None:
    suffix = ".csv" if writer is csv else ".jsonl"
    path = writer(tmp_path / f"train{suffix}", with_bad(label))  # type: ignore[operator]
    with pytest.raises(UsageError) as err:
        D.load_splits(flags(train_file=path))
    assert str(err.value) == (
        f"--train_file {path}: row 4: 'label' is {label}, a number beyond float64's range; "
        "labels that are numbers must be finite"
    )


def test_an_unquoted_comma_in_a_text_is_refused_naming_its_row_not_read_shifted(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        'text,label\n"quoted, fine",0\n' + "".join(f"t{i},{i % 2}\n" for i in range(6)) + "hello, world,1\n"
    )
    with pytest.raises(UsageError) as err:
        D.load_splits(flags(train_file=path))
    assert str(err.value) == (
        f"--train_file {path}: row 8 (line 9) has 3 fields, the header has 2; quote a field that holds a comma"
    )


def test_a_row_with_too_few_fields_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("text,label,source\n" + "".join(f"t{i},{i % 2},web\n" for i in range(6)) + "t9,1\n")
    with pytest.raises(UsageError, match=r"row 7 \(line 8\) has 2 fields, the header has 3"):
        D.load_splits(flags(train_file=path))


@pytest.mark.parametrize("header", ["text,label,label", "text,label,label ", "text, label,label", "label,text,text"])
def test_a_header_naming_a_column_twice_is_refused_naming_the_columns(tmp_path: Path, header: str) -> None:
    path = tmp_path / "train.csv"
    path.write_text(header + "\n" + "".join(f"t{i},{i % 2},{1 - i % 2}\n" for i in range(6)))
    with pytest.raises(UsageError, match=r"the header names column ' ?(label|text)' twice \(columns \d and 3"):
        D.load_splits(flags(train_file=path))


def test_a_json_line_with_a_key_twice_is_refused(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "train.jsonl", GOOD)
    path.write_text(path.read_text() + '{"text": "x", "label": 0, "label": 1}\n')
    with pytest.raises(UsageError, match=r"line 11 names 'label' twice; give each key once"):
        D.load_splits(flags(train_file=path))


def test_blank_lines_and_empty_unused_columns_still_read(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("text,label,,\n" + "".join(f"t{i},{i % 2},,\n\n" for i in range(10)))
    assert D.load_splits(flags(train_file=path)).label_names == ["0", "1"]


def test_train_py_refuses_a_shifted_row_in_one_line_exit_2_writing_nothing(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(8)) + "a, b,1\n")
    out = tmp_path / "out"
    proc = run_train_subprocess(["--train_file", str(train), *TINY, "--output_dir", str(out)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"train.py: error: --train_file {train}: row 9 (line 10) has 3 fields, the header has 2; "
        "quote a field that holds a comma"
    ]
    assert proc.stdout == "" and not out.exists()
