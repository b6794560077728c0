"""phase5's collapse monitor, what metrics.json records as used, the resume line and --recipe."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import DINO_SMALL, FASHION, needs_data

from lrsched.recipes.dino import collapse, flags
from lrsched.recipes.dino.curves import build_figure
from lrsched.recipes.dino.main import main


def run(out: Path, *extra: str) -> int:
    return main([*DINO_SMALL, "--output-dir", str(out), *extra])


# --- the two signals, with the figures docs/phase5.md and bench/results/dino_knn.md report ---------


def test_entropy_near_log_k_is_a_collapse() -> None:
    found = collapse.entropy_signal(150, 5.34, 256)  # the run: 5.34 of log(256) = 5.55
    assert found is not None and found["step"] == 150 and "step 150" in found["text"] and "log(256)" in found["text"]
    assert collapse.entropy_signal(6000, 0.70, 512) is None  # a healthy run's teacher (dino_knn.md)
    assert collapse.entropy_signal(10, 0.949 * math.log(512), 512) is None


def test_knn_at_chance_is_a_collapse() -> None:
    found = collapse.knn_signal(1000, 0.11, 10)
    assert found is not None and found["signal"] == "knn_top1" and "step 1000" in found["text"]
    assert collapse.knn_signal(1000, 0.36, 10) is None  # the collapsed-without-warm-up runs were above chance
    assert collapse.knn_signal(1000, 0.0, 1) is None  # one class: no chance level to compare with


def fake_run(warmup: int, out_dim: int = 64, labels: torch.Tensor | None = None) -> Any:
    schedules = SimpleNamespace(
        lr=SimpleNamespace(schedule=SimpleNamespace(warmup=warmup)), teacher_temp=SimpleNamespace(warmup=0)
    )
    data = SimpleNamespace(knn_train=None if labels is None else SimpleNamespace(labels=labels))
    settings = SimpleNamespace(schedules=schedules, preset=SimpleNamespace(out_dim=out_dim), data=data)
    return SimpleNamespace(settings=settings, metrics={}, t=0, world=SimpleNamespace(is_main=True))


def test_the_monitor_waits_for_the_warmup_and_warns_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collapse, "ENTROPY_WINDOW", 3)
    fake = fake_run(warmup=5)
    fired = []
    for t in range(1, 12):
        fake.t = t
        fired.append(collapse.watch(fake, {"teacher_entropy": math.log(64)}))
    assert fired == [""] * 8 + ["teacher_entropy", "", ""]
    lines = [line for line in capsys.readouterr().out.splitlines() if "collapse" in line]
    assert lines == [fake.metrics["collapse"]["text"]] and fake.metrics["collapse"]["step"] == 9


def test_the_monitor_reads_each_new_knn_point(capsys: pytest.CaptureFixture[str]) -> None:
    fake = fake_run(warmup=0, labels=torch.arange(10).repeat(3))
    fake.metrics["knn_history"] = [[100, 0.6]]
    collapse.watch(fake)
    assert "collapse" not in fake.metrics
    fake.metrics["knn_history"].append([200, 0.1])
    assert collapse.watch(fake) == "knn_top1"
    assert collapse.watch(fake) == ""
    assert fake.metrics["collapse"]["step"] == 200 and capsys.readouterr().out.count("collapse at step 200") == 1


# --- the program ----------------------------------------------------------------------------------


@needs_data
def test_a_uniform_teacher_warns_once_in_console_metrics_log_and_curves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collapse, "ENTROPY_WINDOW", 1)
    out = tmp_path / "run"
    hot = ("--teacher-temp", "1000", "--warmup-teacher-temp", "1000", "--warmup-teacher-temp-steps", "0")
    assert run(out, "--max-steps", "4", "--warmup-steps", "1", "--no-knn", *hot) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if "collapse" in line]
    assert len(printed) == 1 and "collapse at step 3" in printed[0], printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["collapse"]["step"] == 3 and metrics["collapse"]["signal"] == "teacher_entropy"
    with (out / "log.csv").open(newline="") as fh:
        logged = {row["step"]: row["collapse"] for row in csv.DictReader(fh)}
    assert logged == {"0": "", "1": "", "2": "teacher_entropy", "3": ""}  # a row is the update from its step
    fig = build_figure(out, metrics)
    assert fig is not None
    for ax in fig.axes:
        assert [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_color() == "tab:red"] == [3]


@needs_data
def test_metrics_json_records_the_knn_images_used(tmp_path: Path) -> None:
    from PIL import Image

    from lrsched.recipes.dino.data import load_fashion_mnist

    train, _ = load_fashion_mnist(FASHION)
    for i in range(40):
        folder = tmp_path / "images" / f"class{int(train.labels[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.images[i, 0].numpy()).convert("RGB").save(folder / f"{i}.png")
    out = tmp_path / "run"
    knn = ("--knn-train-samples", "10000", "--knn-test-samples", "2000")
    assert run(out, "--data-dir", str(tmp_path / "images"), "--max-steps", "2", "--warmup-steps", "1", *knn) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    used = metrics["knn_train_samples"], metrics["knn_test_samples"]
    assert used[0] + used[1] == 40 and 0 < used[1] < used[0] < 40, used  # every 10th file is the k-NN test set


@needs_data
def test_a_resume_says_so_in_one_line_and_a_replan_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    base = ("--warmup-steps", "1", "--no-knn")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LRSCHED_STOP_AT_STEP", "2")
        assert run(out, "--max-steps", "4", *base) == 0
    assert "resume from" not in capsys.readouterr().out
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LRSCHED_STOP_AT_STEP", "3")
        assert run(out, "--max-steps", "4", *base, "--resume", "latest") == 0
    printed = capsys.readouterr().out
    assert [ln for ln in printed.splitlines() if ln.startswith("resume")] == ["resume from step 2 of 4"]
    assert "note 00" not in printed
    assert run(out, "--max-steps", "6", *base, "--resume", "latest", "--replan") == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resume")]
    assert lines == ["resume from step 3 of 6, replanned at 3"]


def test_the_cpu_recipe_is_one_flag_and_typed_flags_win() -> None:
    makefile = (Path(__file__).resolve().parents[3] / "Makefile").read_text()
    assert "--recipe cpu-demo" in makefile
    args = flags.parse(["--recipe", "cpu-demo"])
    expected = {"preset": "micro", "max_steps": 6000, "warmup_steps": 500, "batch_size": 48, "local_crops": 2}
    expected |= {"lr": 2e-3, "out_dim": 512, "warmup_teacher_temp": 0.04, "teacher_temp": 0.04}
    expected |= {"momentum_teacher": 0.99, "koleo_weight": 0.1, "eval_every": 1000, "save_every": 1000, "workers": 0}
    assert {k: getattr(args, k) for k in expected} == expected
    assert float(args.decay_ratio) == 0.2
    assert flags.parse(["--max-steps", "300", "--recipe", "cpu-demo"]).max_steps == 300
