"""train.py's metrics and its choice of best/: --metric_for_best_model, --greater_is_better, the tie-break."""

from __future__ import annotations

from typing import Any

import pytest

from lrsched.recipes.finetune import flags, metrics


def result(step: int, accuracy: float, loss: float, macro_f1: float = 0.5) -> dict[str, Any]:
    return {"step": step, "accuracy": accuracy, "loss": loss, "macro_f1": macro_f1}


def chosen(history: list[dict[str, Any]], metric: str = "accuracy", greater: bool | None = None) -> int:
    """The step of the validation a run keeps in best/, fed one validation at a time as the loop does."""
    best = None
    for r in history:
        if metrics.is_better(r, best, metric, greater):
            best = r
    assert best is not None
    return int(best["step"])


def test_equal_accuracy_goes_to_the_lower_validation_loss() -> None:
    # The run: accuracy 1.0 at every epoch, loss 0.99 then 0.69: the last model is tested.
    history = [result(10, 1.0, 0.99), result(20, 1.0, 0.81), result(30, 1.0, 0.69)]
    assert chosen(history) == 30
    assert chosen([result(10, 1.0, 0.5), result(20, 1.0, 0.69)]) == 10


def test_a_higher_accuracy_wins_over_a_lower_loss() -> None:
    assert chosen([result(10, 0.70, 0.9), result(20, 0.69, 0.5)]) == 10


def test_a_full_tie_goes_to_the_later_validation() -> None:
    assert chosen([result(10, 0.7, 0.8), result(20, 0.7, 0.8)]) == 20


def test_loss_as_the_metric_is_lower_is_better_and_ties_on_accuracy() -> None:
    history = [result(10, 0.6, 0.70), result(20, 0.8, 0.70), result(30, 0.9, 0.75)]
    assert chosen(history, "loss") == 20
    assert chosen(history, "loss", greater=True) == 30


def test_macro_f1_and_greater_is_better_false() -> None:
    history = [result(10, 0.7, 0.8, macro_f1=0.4), result(20, 0.6, 0.9, macro_f1=0.6)]
    assert chosen(history, "macro_f1") == 20
    assert chosen(history, "accuracy", greater=False) == 20


def test_the_flags_default_and_parse() -> None:
    args = flags.parse([])
    assert (args.metric_for_best_model, args.greater_is_better) == ("accuracy", None)
    args = flags.parse(["--metric_for_best_model", "loss", "--greater-is-better", "False"])
    assert (args.metric_for_best_model, args.greater_is_better) == ("loss", False)


@pytest.mark.parametrize("argv", [["--metric_for_best_model", "f1"], ["--greater_is_better", "maybe"]])
def test_bad_values_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        flags.parse(argv)
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_accuracy_and_macro_f1_of_a_confusion_matrix() -> None:
    m = metrics.confusion([0, 0, 1, 1], [0, 1, 1, 1], 2)
    assert m == [[1, 1], [0, 2]]
    assert metrics.accuracy(m) == 0.75
    assert metrics.macro_f1(m) == pytest.approx((2 / 3 + 0.8) / 2)


def test_the_loop_keeps_the_best_by_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """loop.end_epoch follows --metric_for_best_model (the issue's run: accuracy 1.0 each epoch)."""
    from types import SimpleNamespace

    from lrsched.recipes.finetune import loop

    scores = iter([{"loss": 0.99, "accuracy": 1.0, "macro_f1": 1.0}, {"loss": 0.69, "accuracy": 1.0, "macro_f1": 1.0}])
    monkeypatch.setattr(loop, "eval_tokens", lambda *a: None)
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: next(scores))
    args = flags.parse([])
    settings = SimpleNamespace(updates_per_epoch=10, splits=SimpleNamespace(validation=None), args=args)
    run = SimpleNamespace(t=10, settings=settings, history=[], best=None, model=None)
    loop.end_epoch(run)  # type: ignore[arg-type]
    run.t = 20
    loop.end_epoch(run)  # type: ignore[arg-type]
    assert run.best is not None and run.best["step"] == 20 and run.best["loss"] == 0.69
