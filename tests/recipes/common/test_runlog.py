"""recipes/common/runlog.py: one flushed CSV row per step, cut back to the step on resume."""

from __future__ import annotations

import json
from pathlib import Path

from lrsched.recipes.common.runlog import RunLog, read_log, write_json


def test_rows_are_readable_while_the_run_is_going(tmp_path: Path) -> None:
    log = RunLog(tmp_path, ["step", "lr"])
    log.write({"step": 0, "lr": 0.5, "extra": "ignored"})
    assert read_log(tmp_path / "log.csv") == [{"step": "0", "lr": "0.5"}]
    log.close()


def test_resume_drops_the_rows_from_the_resumed_step_on(tmp_path: Path) -> None:
    log = RunLog(tmp_path, ["step", "lr"])
    for step in range(5):
        log.write({"step": step, "lr": step / 10})
    log.close()
    resumed = RunLog(tmp_path, ["step", "lr"], resume_step=3)
    resumed.write({"step": 3, "lr": 9.0})
    resumed.close()
    assert [(r["step"], r["lr"]) for r in read_log(tmp_path / "log.csv")] == [
        ("0", "0.0"),
        ("1", "0.1"),
        ("2", "0.2"),
        ("3", "9.0"),
    ]


def test_write_json_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})
    write_json(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_long_log_is_read_thinned_to_a_bounded_number_of_rows(tmp_path: Path) -> None:
    from lrsched.recipes.common.runlog import read_log_thinned

    log = RunLog(tmp_path, ["step", "lr"])
    for t in range(1001):
        log.write({"step": t, "lr": t / 1000})
    log.close()
    rows = read_log_thinned(tmp_path / "log.csv", max_rows=100)
    steps = [int(r["step"]) for r in rows]
    assert steps[:3] == [0, 16, 32] and steps[-1] == 1000 and len(rows) <= 101
    assert steps == sorted(set(steps))
    assert [int(r["step"]) for r in read_log_thinned(tmp_path / "log.csv", max_rows=5000)] == list(range(1001))
