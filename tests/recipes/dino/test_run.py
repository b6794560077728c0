"""phase5_big_run.py in this process: logged schedules, resume, replan, bad input, NaN stop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import DINO_SMALL, FASHION, needs_data, read_rows

from lrsched.adoption import from_description
from lrsched.recipes.common.checkpoint import latest_checkpoint, load_checkpoint
from lrsched.recipes.dino.flags import PROGRAM_ID
from lrsched.recipes.dino.main import main

pytestmark = needs_data


def run(out: Path, *extra: str) -> int:
    return main([*DINO_SMALL, "--output-dir", str(out), *extra])


def run_stopped_at(step: int, out: Path, *extra: str) -> int:
    """``run`` that stops as if SIGTERM arrived once ``step`` steps are done (the program's test hook)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LRSCHED_STOP_AT_STEP", str(step))
        return run(out, *extra)


def plan_schedules(out: Path) -> dict[str, object]:
    plan = json.loads((out / "plan.json").read_text())
    return {k: from_description(plan[k]["schedule"]) for k in ("lr", "weight_decay", "momentum", "teacher_temp")}


def test_every_logged_value_is_the_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run(out, "--max-steps", "12", "--warmup-steps", "4", "--warmup-teacher-temp-steps", "6") == 0
    assert "learning rate:" in capsys.readouterr().out  # the plan is printed before training
    schedules = plan_schedules(out)
    rows = read_rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(12))
    assert list(rows[0])[:7] == ["step", "lr", "weight_decay", "momentum", "teacher_temp", "loss", "images_per_s"]
    for r in rows:
        t = int(r["step"])
        for name, col in (("lr", "lr"), ("weight_decay", "weight_decay"), ("momentum", "momentum")):
            assert float(r[col]) == pytest.approx(schedules[name](t), rel=1e-12, abs=1e-15), (name, t)  # type: ignore[operator]
        assert float(r["teacher_temp"]) == pytest.approx(schedules["teacher_temp"](t), rel=1e-12)  # type: ignore[operator]
        assert math.isfinite(float(r["loss"])) and float(r["images_per_s"]) > 0
        assert int(r["last_layer_frozen"]) == (t < 4)
    assert float(rows[0]["lr"]) == 0.0 and float(rows[4]["lr"]) == pytest.approx(5e-4)
    assert float(rows[0]["teacher_temp"]) == pytest.approx(0.04) and float(rows[6]["teacher_temp"]) == 0.07
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("knn_top1", "knn_top1_at_init", "knn_top1_raw_pixels"):
        assert 0.1 <= metrics[key] <= 1.0
    assert (out / "curves.png").stat().st_size > 10_000
    assert json.loads((out / "args.json").read_text())["max_steps"] == 12  # JSON types, not strings
    state = load_checkpoint(latest_checkpoint(out / "checkpoints") or Path("missing"), PROGRAM_ID)
    assert state["step"] == 12 and set(state["flags"]) >= {"lr", "preset", "seed"}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(latest_checkpoint(out / "checkpoints") or Path("missing"), PROGRAM_ID)
    return {**{f"s.{k}": v for k, v in state["student"].items()}, **{f"t.{k}": v for k, v in state["teacher"].items()}}


def test_interrupt_and_resume_reproduces_the_run_bitwise(tmp_path: Path) -> None:
    flags = ["--max-steps", "10", "--warmup-steps", "3", "--save-every", "0"]
    assert run(tmp_path / "whole", *flags) == 0
    assert run_stopped_at(6, tmp_path / "split", *flags) == 0
    assert len(read_rows(tmp_path / "split" / "log.csv")) == 6
    assert run(tmp_path / "split", *flags, "--resume", "latest") == 0
    whole, split = read_rows(tmp_path / "whole" / "log.csv"), read_rows(tmp_path / "split" / "log.csv")
    assert [r["lr"] for r in whole] == [r["lr"] for r in split]
    assert [r["loss"] for r in whole] == [r["loss"] for r in split]
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_open_ended_stop_then_replan_decays_without_a_jump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "open"
    assert run_stopped_at(8, out, "--warmup-steps", "3", "--lr", "1e-3", "--min-lr", "1e-5") == 0
    rows = read_rows(out / "log.csv")
    assert [float(r["lr"]) for r in rows[3:]] == [pytest.approx(1e-3)] * 5  # held after warm-up
    assert {r["momentum"] for r in rows} == {"0.996"}  # every schedule held when open-ended
    capsys.readouterr()
    # a new horizon without --replan: exit 2, the differences listed, nothing changed
    before = (out / "log.csv").read_bytes()
    changed = ("--warmup-steps", "3", "--lr", "1e-3", "--min-lr", "1e-5", "--max-steps", "14", "--resume", "latest")
    assert run(out, *changed) == 2
    msg = capsys.readouterr().err.strip()
    assert len(msg.splitlines()) == 1 and "lr.total: None -> 14" in msg and "--replan" in msg
    assert (out / "log.csv").read_bytes() == before
    flags = ["--warmup-steps", "3", "--lr", "1e-3", "--min-lr", "1e-5", "--max-steps", "14"]
    assert run(out, *flags, "--resume", "latest", "--replan") == 0
    lrs = [float(r["lr"]) for r in read_rows(out / "log.csv")]
    assert len(lrs) == 14
    for t in range(8, 14):  # docs/design.md section 5: cosine from lr(t0) to min_lr over [t0, T]
        expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * (t - 8) / (14 - 8)))
        assert lrs[t] == pytest.approx(expected, rel=1e-9)
    assert lrs[8] == pytest.approx(lrs[7])  # no jump
    plan = json.loads((out / "plan.json").read_text())
    assert plan["replanned_at"] == 8 and plan["lr"]["schedule"]["type"] == "Replanned"
    momentum = [float(r["momentum"]) for r in read_rows(out / "log.csv")]
    assert momentum[8] == pytest.approx(0.996) and momentum[13] > momentum[9] > 0.996  # replanned too


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--max-steps", "5", "--warmup-steps", "5"], "--warmup-steps 5: must be less than --max-steps 5"),
        (["--min-lr", "1", "--lr", "0.1"], "--min-lr 1"),
        (["--layer-decay", "1.5"], "--layer-decay"),
        (["--preset", "huge"], "--preset"),
        (["--data-dir", "/nonexistent/images"], "--data-dir /nonexistent/images: no such directory"),
        (["--resume", "/nonexistent/step.pt"], "--resume /nonexistent/step.pt: no such checkpoint file"),
        (["--resume", "latest"], "--resume latest: needs --output-dir"),
        (
            ["--max-steps", "10", "--warmup-steps", "2", "--warmup-teacher-temp-steps", "10"],
            "--warmup-teacher-temp-steps 10",
        ),
        (["--global-size", "2"], "--global-size 2: must be at least the patch size"),
        (["--batch-size", "100000"], "--batch-size 100000"),
        (["--local-crops", "1000000"], "--local-crops 1000000 --out-dim 2048 (--preset tiny): a step needs at least"),
        (["--batch-size", "60000", "--local-crops", "6"], "--batch-size 60000 --local-crops 6"),
        (["--out-dim", "100000000"], "--out-dim 100000000 (--preset tiny): a step needs at least"),
        (["--lr", "1e300"], "--lr 1e+300: must be at most 1e+36"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    args = argv if "latest" in argv else [*argv, "--output-dir", str(out)]
    assert main(args) == 2
    msg = capsys.readouterr().err.strip()
    assert len(msg.splitlines()) == 1 and needle in msg and msg.startswith("phase5_big_run.py: error:")
    assert not out.exists()


def test_foreign_or_truncated_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": 1, "program": "train.py"}, foreign)
    for path, needle in ((bad, "not a loadable checkpoint"), (foreign, "a checkpoint of 'train.py'")):
        assert main([*DINO_SMALL, "--resume", str(path), "--output-dir", str(tmp_path / "out")]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_existing_run_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.csv").write_text("precious\n")
    assert run(out, "--max-steps", "3", "--warmup-steps", "1") == 2
    assert "holds files of a run without run.json (log.csv" in capsys.readouterr().err
    assert (out / "log.csv").read_text() == "precious\n"


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nan"
    monkeypatch.setenv("LRSCHED_INJECT_NAN_AT_STEP", "5")
    code = run(out, "--max-steps", "10", "--warmup-steps", "2", "--save-every", "4")
    assert code == 3
    err = capsys.readouterr().err
    assert "non-finite loss (nan) at step 5" in err and "step-00000004.pt" in err
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-00000004.pt"]
    state = load_checkpoint(out / "checkpoints" / ckpts[0], PROGRAM_ID)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["student"].values())
    assert json.loads((out / "metrics.json").read_text())["status"].startswith("non-finite loss")


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    from PIL import Image

    from lrsched.recipes.dino.data import load_fashion_mnist

    train, _ = load_fashion_mnist(FASHION)
    for i in range(60):
        label = int(train.labels[i])
        folder = tmp_path / "images" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.images[i, 0].numpy()).convert("RGB").save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert run(out, "--data-dir", str(tmp_path / "images"), "--max-steps", "3", "--warmup-steps", "1") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["knn_top1"] is not None and len(read_rows(out / "log.csv")) == 3


def test_bf16_runs_on_cpu(tmp_path: Path) -> None:
    """--bf16 runs on any CPU (bf16 where native, else fp32 with a line in the plan: test_device.py)."""
    out = tmp_path / "bf16"
    assert run(out, "--bf16", "--max-steps", "2", "--warmup-steps", "1", "--batch-size", "4") == 0
    assert all(math.isfinite(float(r["loss"])) for r in read_rows(out / "log.csv"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .dino_helpers import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("photos"), 80, classes=4, sizes=(40, 90))


def test_folder_run_streams_with_workers_and_resumes_bitwise_with_any_worker_count(
    tmp_path: Path, photos: Path
) -> None:
    flags = ["--data-dir", str(photos), "--max-steps", "8", "--warmup-steps", "2", "--save-every", "0"]
    assert run(tmp_path / "whole", *flags, "--workers", "2") == 0
    assert run_stopped_at(4, tmp_path / "split", *flags, "--workers", "2") == 0
    assert run(tmp_path / "split", *flags, "--workers", "0", "--resume", "latest") == 0
    whole, split = read_rows(tmp_path / "whole" / "log.csv"), read_rows(tmp_path / "split" / "log.csv")
    assert [r["loss"] for r in whole] == [r["loss"] for r in split]
    assert all(float(r["data_wait_s"]) >= 0 for r in whole)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    index = (tmp_path / "whole" / "data_index.tsv").read_text().splitlines()
    assert len(index) == 1 + 80 and index[1] == "0\tclass0/img0000000.jpg"
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert 0 <= metrics["data_wait_fraction"] < 1 and metrics["knn_top1"] is not None


def test_a_changed_folder_is_refused_on_resume_unless_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .dino_helpers import make_image_folder

    images = make_image_folder(tmp_path / "images", 30, classes=2, sizes=(40, 60))
    flags = ["--data-dir", str(images), "--max-steps", "6", "--warmup-steps", "1", "--workers", "0"]
    out = tmp_path / "run"
    assert run_stopped_at(2, out, *flags) == 0
    make_image_folder(images, 31, classes=2, sizes=(40, 60))  # one image more
    log_before = (out / "log.csv").read_text()
    capsys.readouterr()
    assert run(out, *flags, "--resume", "latest") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"phase5_big_run.py: error: --data-dir {images}: not the data of the checkpoint (files 30 -> 31); "
        "pass --accept-data-change to continue on the data as it is now"
    )
    assert (out / "log.csv").read_text() == log_before
    assert run(out, *flags, "--resume", "latest", "--accept-data-change") == 0
    assert len(read_rows(out / "log.csv")) == 6
    assert len((out / "data_index.tsv").read_text().splitlines()) == 1 + 31


def test_unlabelled_folder_trains_and_says_why_knn_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .dino_helpers import make_image_folder

    images = make_image_folder(tmp_path / "images", 20, classes=0, sizes=(40, 60))
    out = tmp_path / "run"
    assert run(out, "--data-dir", str(images), "--max-steps", "2", "--warmup-steps", "1", "--workers", "0") == 0
    assert "note: k-NN evaluation skipped: no class sub-folders (no labels)" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["knn_top1"] is None


def test_lr_ref_batch_scales_the_peak_by_the_global_batch_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run(out, "--lr", "1e-3", "--lr-ref-batch", "64", "--max-steps", "3", "--warmup-steps", "1") == 0
    plan = json.loads((out / "plan.json").read_text())["lr"]
    assert plan["base_lr"] == pytest.approx(1e-3 * 16 / 64)
    assert plan["sources"]["peak"] == "--lr 0.001 x 16/64 (global batch / --lr-ref-batch)"
    assert float(read_rows(out / "log.csv")[1]["lr"]) == pytest.approx(2.5e-4)


def test_a_resume_keeps_what_defines_the_run_and_records_what_it_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--max-steps", "6", "--warmup-steps", "1", "--workers", "0"]
    assert run_stopped_at(2, out, *flags) == 0
    capsys.readouterr()
    for changed in (["--batch-size", "8"], ["--seed", "1"], ["--local-crops", "3"], ["--koleo-weight", "0.1"]):
        assert run(out, *flags, "--resume", "latest", *changed) == 2
        err = capsys.readouterr().err.strip()
        assert f"these flags cannot change on resume: {changed[0]} " in err and len(err.splitlines()) == 1
    assert run(out, *flags, "--resume", "latest", "--eval-every", "3", "--workers", "1") == 0
    changed_flags = json.loads((out / "plan.json").read_text())["changed_on_resume"]
    assert changed_flags == {"eval_every": ["0", "3"], "workers": ["0", "1"]}


def test_replan_to_a_new_peak_rewarms_says_so_and_refuses_a_jump_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "open"
    assert run_stopped_at(4, out, "--lr", "1e-3", "--warmup-steps", "2", "--workers", "0") == 0
    capsys.readouterr()
    new = ["--lr", "2e-3", "--max-steps", "12", "--replan", "--resume", "latest", "--workers", "0"]
    assert run(out, *new, "--warmup-steps", "0") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("phase5_big_run.py: error: --replan at step 4: lr: --warmup-steps 0: re-warming from 0.001")
    assert len(err.splitlines()) == 1
    assert run(out, *new, "--warmup-steps", "2") == 0
    assert "note: --replan from step 4: 0.001 -> 0.002 linearly by step 6" in capsys.readouterr().out
    lrs = [float(r["lr"]) for r in read_rows(out / "log.csv")]
    assert lrs[3] == lrs[4] == pytest.approx(1e-3) and lrs[5] == pytest.approx(1.5e-3) and lrs[6] == pytest.approx(2e-3)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_belongs_to_one_run_and_another_runs_checkpoint_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--max-steps", "6", "--warmup-steps", "1", "--workers", "0", "--save-every", "2"]
    assert run(tmp_path / "a", *flags) == 0
    assert run_stopped_at(3, tmp_path / "b", *flags) == 0
    before = _files(tmp_path / "b")
    capsys.readouterr()
    other = tmp_path / "a" / "checkpoints" / "step-00000002.pt"
    assert run(tmp_path / "b", *flags, "--resume", str(other)) == 2
    err = capsys.readouterr().err.strip()
    run_a = json.loads((tmp_path / "a" / "run.json").read_text())["id"]
    run_b = json.loads((tmp_path / "b" / "run.json").read_text())["id"]
    assert f"a checkpoint of run {run_a}" in err and f"holds another, run {run_b}" in err
    assert len(err.splitlines()) == 1 and _files(tmp_path / "b") == before
    assert run(tmp_path / "b", *flags) == 2  # a fresh start into a run with checkpoints: refused too
    assert "pass --resume latest to continue it" in capsys.readouterr().err and _files(tmp_path / "b") == before


def test_a_run_that_died_before_its_first_checkpoint_is_no_dead_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--max-steps", "4", "--warmup-steps", "1", "--workers", "0"]
    monkeypatch.setenv("LRSCHED_INJECT_NAN_AT_STEP", "0")
    assert run(out, *flags) == 3  # stopped before any checkpoint
    monkeypatch.delenv("LRSCHED_INJECT_NAN_AT_STEP")
    capsys.readouterr()
    assert run(out, *flags, "--resume", "latest") == 2
    assert "stopped before its first checkpoint; start it again without --resume" in capsys.readouterr().err
    assert run(out, *flags) == 0  # a fresh start in the same folder
    assert len(read_rows(out / "log.csv")) == 4


def test_resuming_from_an_older_checkpoint_sets_the_abandoned_future_aside(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = [
        "--max-steps",
        "8",
        "--warmup-steps",
        "1",
        "--workers",
        "0",
        "--save-every",
        "2",
        "--keep-checkpoints",
        "9",
    ]
    assert run(out, *flags) == 0
    assert run_stopped_at(5, out, *flags, "--resume", str(out / "checkpoints" / "step-00000004.pt")) == 0
    assert latest_checkpoint(out / "checkpoints") == out / "checkpoints" / "step-00000005.pt"
    aside = sorted(p.name for p in (out / "checkpoints").glob("abandoned-after-step-00000004/*.pt"))
    assert aside == ["step-00000006.pt", "step-00000008.pt"]
    assert [int(r["step"]) for r in read_rows(out / "log.csv")] == list(range(5))
    assert json.loads((out / "metrics.json").read_text())["status"] == "stopped at step 5"


def test_a_full_disk_is_one_line_exit_1_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from lrsched.recipes.common import checkpoint

    real, calls = checkpoint.save_checkpoint, []

    def full_after_first(*args: object, **kw: object) -> Path:
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint, "save_checkpoint", full_after_first)
    out = tmp_path / "run"
    assert run(out, "--max-steps", "6", "--warmup-steps", "1", "--workers", "0", "--save-every", "2") == 1
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if "phase5_big_run.py:" in line]  # besides the progress bar
    assert "Traceback" not in stderr and len(err) == 1
    assert err[0].startswith("phase5_big_run.py: error: no space left on the device;")
    assert f"the newest checkpoint {out / 'checkpoints' / 'step-00000002.pt'} is intact" in err[0]
    assert load_checkpoint(out / "checkpoints" / "step-00000002.pt", PROGRAM_ID)["step"] == 2
