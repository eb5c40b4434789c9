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

__all__ = ["Plan", "RunResult", "Step", "StepError", "StepResult", "run_steps", "undo_steps"]


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


def run_steps(steps: Iterable[Step], *, dry_run: bool = False, report: Reporter | None = None) -> RunResult:
    """Run steps in order; stop at the first failure after undoing that step's partial change.

    Steps before the failing one stay applied: they are each complete and correct on their own, and a
    re-run finds them already right. In dry-run mode nothing is applied and every step reports its plan.
    """
    result = RunResult(dry_run=dry_run)
    for step in steps:
        started = time.monotonic()
        try:
            plan = step.check()
        except Exception as exc:  # a check that crashes fails its step, with the reason, not a traceback
            _finish(result, StepResult.from_error(step.name, exc), started, report)
            break
        if not plan.needed:
            _finish(result, StepResult(step.name, "ok", notes=plan.notes), started, report)
            continue
        if dry_run:
            _finish(result, StepResult(step.name, "planned", plan.changes, plan.notes), started, report)
            continue
        try:
            step.apply()
        except BaseException as exc:  # KeyboardInterrupt too: never leave a half-applied step behind
            res = _failed(step, plan, exc)
            _finish(result, res, started, report)
            if not isinstance(exc, Exception):
                raise
            break
        _finish(result, StepResult(step.name, "changed", plan.changes, plan.notes), started, report)
    return result


def _failed(step: Step, plan: Plan, exc: BaseException) -> StepResult:
    res = StepResult.from_error(step.name, exc, plan.changes)
    try:
        step.undo()
        res.notes.append("the partial change of this step was undone")
    except Exception as undo_exc:
        res.notes.append(f"undo of this step also failed: {undo_exc}")
    return res


def _finish(result: RunResult, res: StepResult, started: float, report: Reporter | None) -> None:
    res.seconds = round(time.monotonic() - started, 3)
    result.steps.append(res)
    if report:
        report(res)


def undo_steps(steps: Iterable[Step], *, dry_run: bool = False, report: Reporter | None = None) -> RunResult:
    """Undo steps in reverse order (uninstall): keep going past failures, report each one."""
    result = RunResult(dry_run=dry_run)
    for step in reversed(list(steps)):
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
