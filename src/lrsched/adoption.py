"""How a schedule is described in a checkpoint, and the one rule by which a resumed run adopts it.

``describe``/``from_description`` turn a schedule (``Schedule`` or ``Replanned``) into plain
JSON-able data and back; ``differences`` lists what changed between two descriptions. ``adopt``
is the one rule for resuming any scheduled value (an LR, a weight decay, a momentum, a
temperature) from what was saved: the same target continues the saved schedule, another is
refused (``ScheduleMismatch``) or, when asked, replanned from the saved step without a jump.
Only the standard library is used: no torch.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Literal

from lrsched.errors import ScheduleError, ScheduleMismatch
from lrsched.schedules import AnySchedule, Replanned, Schedule, replan


def describe(schedule: AnySchedule) -> dict[str, Any]:
    """Plain, JSON-able data that ``from_description`` turns back into an equal schedule."""
    if isinstance(schedule, Replanned):
        return {
            "type": "Replanned",
            "before": describe(schedule.before),
            "t0": schedule.t0,
            "after": describe(schedule.after),
        }
    return {"type": "Schedule", **asdict(schedule)}


def _replanned(data: dict[str, Any]) -> Replanned:
    before, t0 = from_description(data["before"]), data["t0"]
    if "after" in data:
        after = from_description(data["after"])
        if not isinstance(after, Schedule):
            raise TypeError("after must be a Schedule")
        return Replanned(before, t0, after)
    # the form saved before re-warms existed: a cosine from before(t0) to final at total
    v0, total, final = before(t0), data["total"], data["final"]
    if total is None:
        return Replanned(before, t0, Schedule("constant", base=v0))
    return Replanned(before, t0, Schedule("cosine", base=v0, final=final, total=total - t0))


def from_description(data: dict[str, Any]) -> AnySchedule:
    """Inverse of ``describe``; raises ``ScheduleError`` on anything else.

    Also reads the older ``Replanned`` form (``total`` and ``final`` instead of ``after``).
    """
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Replanned":
            return _replanned(data)
        if kind == "Schedule":
            names = {f.name for f in fields(Schedule)}
            kwargs = {k: v for k, v in data.items() if k in names}
            if kwargs.get("shape") != "cosine_restarts":
                kwargs.pop("cycles", None)  # saved before cycles were refused for other shapes
            return Schedule(**kwargs)
    except (KeyError, TypeError) as err:
        raise ScheduleError(f"description={data!r}: not a schedule description ({err})") from None
    raise ScheduleError(f"description={data!r}: not a schedule description")


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two descriptions, e.g. ``total: 1000 -> 2000``."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


OnMismatch = Literal["error", "replan"]


def adopt(target: AnySchedule, state: dict[str, Any], on_mismatch: OnMismatch = "error") -> AnySchedule:
    """The one rule for resuming any scheduled value (an LR, a weight decay, a momentum, a temperature).

    ``state`` is what was saved: ``step``, the ``schedule`` followed (possibly an earlier replan)
    and the ``target`` the run was asked for (states older than targets: the schedule is its target).

    - the same target: the saved schedule, so a resume never jumps and an earlier replan continues;
    - another target: ``ScheduleMismatch`` listing the differences, or with ``on_mismatch="replan"``
      the saved schedule up to the saved step, then ``replan`` towards ``target`` (which may raise
      ``ScheduleError`` when no jump-free replan exists).
    """
    saved = from_description(state["schedule"])
    saved_target = describe(from_description(state.get("target", state["schedule"])))
    if saved_target == describe(target):
        return saved
    if on_mismatch != "replan" or not isinstance(target, Schedule):  # only a plain target can be replanned to
        changes = differences(saved_target, describe(target))
        raise ScheduleMismatch(
            f"the checkpoint's schedule differs ({'; '.join(changes)}); build the scheduler with "
            'on_mismatch="replan" to continue from the saved step without a jump',
            changes,
        )
    return replan(saved, int(state["step"]), target)


def replan_note(adopted: AnySchedule, step: int) -> str | None:
    """What a replan adopted at ``step`` does, in words (``None`` when nothing was replanned there)."""
    if isinstance(adopted, Replanned) and adopted.t0 == step:
        return adopted.summary()
    return None
