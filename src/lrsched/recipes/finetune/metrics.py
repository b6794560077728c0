"""Classification metrics from a confusion matrix (rows: true label, columns: prediction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def confusion(true: Sequence[int], pred: Sequence[int], classes: int) -> list[list[int]]:
    """``m[i][j]``: how many examples of label ``i`` were predicted as ``j``."""
    m = [[0] * classes for _ in range(classes)]
    for t, p in zip(true, pred, strict=True):
        m[t][p] += 1
    return m


def accuracy(m: Sequence[Sequence[int]]) -> float:
    total = sum(map(sum, m))
    return sum(m[i][i] for i in range(len(m))) / total if total else 0.0


def macro_f1(m: Sequence[Sequence[int]]) -> float:
    """The unweighted mean over labels of ``F1 = 2 tp / (2 tp + fp + fn)`` (0 for a label never seen
    nor predicted, as scikit-learn's ``zero_division=0``)."""
    k = len(m)
    scores = []
    for i in range(k):
        tp = m[i][i]
        fn = sum(m[i]) - tp
        fp = sum(m[j][i] for j in range(k)) - tp
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return sum(scores) / k if k else 0.0


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent training label."""
    if not eval_labels:
        return 0.0
    top = max(set(train_labels), key=lambda lab: (list(train_labels).count(lab), -lab))
    return sum(1 for lab in eval_labels if lab == top) / len(eval_labels)


BEST_METRICS = ("accuracy", "macro_f1", "loss")
"""What ``--metric_for_best_model`` may name: a key of a validation result."""
DEFAULT_BEST_METRIC = "accuracy"


def greater_is_better(metric: str, given: bool | None = None) -> bool:
    """``--greater_is_better`` as typed, else by the metric: a loss is better lower, a score higher
    (HF ``Trainer``'s rule)."""
    return given if given is not None else not metric.endswith("loss")


def best_key(result: Mapping[str, float], metric: str, greater: bool) -> tuple[float, float]:
    """The order of validations for ``best/``: the metric (negated when lower is better), then the
    tie-break: the lower validation loss (the higher accuracy when the metric is the loss)."""
    primary = result[metric] if greater else -result[metric]
    tie = result["accuracy"] if metric == "loss" else -result["loss"]
    return primary, tie


def is_better(
    candidate: Mapping[str, float], best: Mapping[str, float] | None, metric: str, greater: bool | None = None
) -> bool:
    """Whether validation ``candidate`` replaces ``best``: a higher ``best_key``; on a tie in both
    the later validation wins (it has trained longer for the same result). ``greater``: as
    ``--greater_is_better`` (None: by the metric)."""
    if best is None:
        return True
    up = greater_is_better(metric, greater)
    return best_key(candidate, metric, up) >= best_key(best, metric, up)
