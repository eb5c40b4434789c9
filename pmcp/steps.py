"""Steps and the one runner that owns dry-run, idempotency, rollback of a failed step and reporting.

A Step changes one thing on the host. ``check()`` says what would change (an empty Plan means "already
right"), ``apply()`` makes the change, ``undo()`` reverts it. Install, update and uninstall are lists of
steps; no step prints, the runner records and the CLI renders.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pmcp.errors import StepError

__all__ = ["Plan", "RunResult", "Step", "StepError", "StepResult", "Together", "run_steps", "undo_steps"]


@dataclass
class Plan:
    """What a step would change, in words a user understands; empty means nothing to do."""

    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return bool(self.changes)


class Step(Protocol):
    name: str

    def check(self) -> Plan: ...

    def apply(self) -> None: ...

    def undo(self) -> None: ...


@dataclass
class StepResult:
    name: str
    status: str  # "ok" (already right), "changed", "planned", "failed", "skipped", "undone"
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    fix: str = ""
    detail: str = ""
    seconds: float = 0.0
    exit_code: int | None = None  # the failing StepError's exit code (pmcp.errors.ExitCode)
    trace: str = ""  # an unexpected exception's traceback: for the transcript, never shown or in --json

    def to_dict(self) -> dict[str, Any]:
        hidden = ("exit_code", "trace")
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in hidden and (v not in ("", [], None) or k in ("name", "status"))
        }

    @classmethod
    def from_error(cls, name: str, exc: BaseException, changes: list[str] | None = None) -> StepResult:
        """A failed step from its exception: a StepError's message, fix and detail; else the type and
        message, with the traceback kept for the transcript only."""
        if isinstance(exc, StepError):
            return cls(name, "failed", list(changes or []), error=exc.message, fix=exc.fix,
                       detail=exc.detail, exit_code=exc.exit_code)  # fmt: skip
        return cls(
            name,
            "failed",
            list(changes or []),
            error=f"{type(exc).__name__}: {exc}",
            fix="this is a bug in pmcp: report it with the transcript",
            trace="".join(traceback.format_exception(exc)),
        )


@dataclass
class RunResult:
    steps: list[StepResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.status == "changed" for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "steps": [s.to_dict() for s in self.steps],
        }


Reporter = Callable[[StepResult], None]


class Together:
    """Branches of steps that run side by side, each branch in its order: an install waits on Proxmox
    (identity) and on Docker (containers) at once. Declared order is branch by branch; results are
    reported in that order whichever finishes first, and a failure leaves the host as running the same
    steps one after another would have: what a branch applied that is declared after the failed step is
    undone, newest first (the failed step's own partial change is undone as always). Steps share no
    state across branches but state.json (pmcp.record serialises its updates). A dry run checks the
    steps one after another, in declared order."""

    def __init__(self, *branches: list[Step]) -> None:
        self.branches = [list(b) for b in branches if b]
        self.name = " + ".join(s.name for b in self.branches for s in b)

    @property
    def steps(self) -> list[Step]:
        return [s for b in self.branches for s in b]

    # A Together in a step list is also undone as its steps (uninstall: reversed declared order).
    def check(self) -> Plan:
        raise TypeError("run a Together with run_steps")

    def apply(self) -> None:
        raise TypeError("run a Together with run_steps")

    def undo(self) -> None:
        for step in reversed(self.steps):
            step.undo()


def flat(steps: Iterable[Step]) -> list[Step]:
    """The steps of a list with its Together groups spelled out, in declared order."""
    out: list[Step] = []
    for step in steps:
        out += step.steps if isinstance(step, Together) else [step]
    return out


def run_steps(steps: Iterable[Step], *, dry_run: bool = False, report: Reporter | None = None) -> RunResult:
    """Run steps in order; stop at the first failure after undoing that step's partial change.

    Steps before the failing one stay applied: they are each complete and correct on their own, and a
    re-run finds them already right. In dry-run mode nothing is applied and every step reports its plan.
    A Together runs its branches side by side (see there).
    """
    result = RunResult(dry_run=dry_run)
    for step in flat(steps) if dry_run else steps:
        if isinstance(step, Together):
            if not _run_together(step, result, report):
                break
            continue
        res, interrupt = _run_one(step, dry_run)
        _finish(result, res, None, report)
        if interrupt is not None:
            raise interrupt
        if res.status == "failed":
            break
    return result


def _run_one(step: Step, dry_run: bool) -> tuple[StepResult, BaseException | None]:
    """check, then apply when needed; a failure undoes the step's partial change. An interrupt (Ctrl-C)
    fails the step after that undo and comes back to be raised once the result is reported."""
    started = time.monotonic()
    interrupt: BaseException | None = None
    try:
        plan = step.check()
    except Exception as exc:  # a check that crashes fails its step, with the reason, not a traceback
        res = StepResult.from_error(step.name, exc)
        res.seconds = round(time.monotonic() - started, 3)
        return res, None
    if not plan.needed:
        res = StepResult(step.name, "ok", notes=plan.notes)
    elif dry_run:
        res = StepResult(step.name, "planned", plan.changes, plan.notes)
    else:
        try:
            step.apply()
            res = StepResult(step.name, "changed", plan.changes, plan.notes)
        except BaseException as exc:  # KeyboardInterrupt too: never leave a half-applied step behind
            res = _failed(step, plan, exc)
            if not isinstance(exc, Exception):
                interrupt = exc
    res.seconds = round(time.monotonic() - started, 3)
    return res, interrupt


def _run_together(group: Together, result: RunResult, report: Reporter | None) -> bool:
    """Run the group's branches in threads; report in declared order; on a failure, undo what was
    applied after the failed step in declared order. False when a step failed."""
    import queue
    import threading

    order = group.steps
    done: dict[int, StepResult] = {}  # declared index -> result
    finished_at: dict[int, float] = {}
    events: queue.Queue[tuple[int, StepResult] | None] = queue.Queue()
    stop = threading.Event()
    index = {id(s): i for i, s in enumerate(order)}

    def branch(steps: list[Step]) -> None:
        try:
            for step in steps:
                if stop.is_set():
                    return
                res, _ = _run_one(step, dry_run=False)  # only the main thread gets Ctrl-C
                if res.status == "failed":
                    stop.set()
                events.put((index[id(step)], res))
        finally:
            events.put(None)

    threads = [threading.Thread(target=branch, args=(b,), daemon=True) for b in group.branches]
    for t in threads:
        t.start()
    running, cursor = len(threads), 0
    interrupt: BaseException | None = None
    while running:
        try:
            item = events.get()
            if item is None:
                running -= 1
                continue
            i, res = item
            done[i] = res
            finished_at[i] = time.monotonic()
            # stream what the declared order allows: a reported step is never undone later (it is declared
            # before any step still running, so before any that can fail)
            while cursor in done and not stop.is_set():
                _finish(result, done[cursor], None, report, beside(group, order[cursor]))
                cursor += 1
        except BaseException as exc:  # Ctrl-C, or a reporter that raised: the branches stop after their
            stop.set()  # current step, what was not reported is undone, then it is raised
            interrupt = interrupt or exc
            if result.steps and cursor in done and result.steps[-1] is done[cursor]:
                cursor += 1  # reported when the reporter raised: complete, kept
    failed = [i for i in sorted(done) if done[i].status == "failed"]
    if failed or interrupt:
        late = [i for i in done if (i > failed[0] if failed else i >= cursor) and done[i].status == "changed"]
        why = f"{order[failed[0]].name} failed beside it" if failed else "interrupted"
        for i in sorted(late, key=lambda i: finished_at[i], reverse=True):
            res = done[i]
            try:
                order[i].undo()
                res.status = "undone"
                res.notes.append(f"undone: {why}")
            except Exception as exc:
                res.notes.append(f"undo ({why}) also failed: {exc}")
    for i in range(cursor, len(order)):
        if i in done:
            _finish(result, done[i], None, report, beside(group, order[i]))
    if interrupt is not None:
        raise interrupt
    return not failed


def beside(group: Together, step: Step) -> str:
    """The note a step of a group gets: which steps ran at the same time as it."""
    for b in group.branches:
        if step in b:
            others = [s.name for other in group.branches if other is not b for s in other]
            return f"ran beside {', '.join(others)}" if step is b[0] else ""
    return ""


def _failed(step: Step, plan: Plan, exc: BaseException) -> StepResult:
    res = StepResult.from_error(step.name, exc, plan.changes)
    try:
        step.undo()
        res.notes.append("the partial change of this step was undone")
    except Exception as undo_exc:
        res.notes.append(f"undo of this step also failed: {undo_exc}")
    return res


def _finish(
    result: RunResult, res: StepResult, started: float | None, report: Reporter | None, note: str = ""
) -> None:
    if started is not None:
        res.seconds = round(time.monotonic() - started, 3)
    if note:
        res.notes.append(note)
    result.steps.append(res)
    if report:
        report(res)


def undo_steps(steps: Iterable[Step], *, dry_run: bool = False, report: Reporter | None = None) -> RunResult:
    """Undo steps in reverse order (uninstall): keep going past failures, report each one."""
    result = RunResult(dry_run=dry_run)
    for step in reversed(flat(steps)):
        started = time.monotonic()
        if dry_run:
            _finish(result, StepResult(step.name, "planned", [f"undo {step.name}"]), started, report)
            continue
        try:
            step.undo()
            _finish(result, StepResult(step.name, "undone"), started, report)
        except Exception as exc:
            _finish(result, StepResult.from_error(step.name, exc), started, report)
    return result
