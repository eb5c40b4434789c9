"""The step runner: dry-run changes nothing, re-runs are no-ops, a failed step is undone and stops the run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from pmcp.steps import Plan, StepError, Together, run_steps, undo_steps


@dataclass
class FileStep:
    """A real step on a real dict-backed 'host', with an optional failure half-way through apply()."""

    name: str
    host: dict
    key: str
    value: str
    fail_after_write: bool = False
    undone: list = field(default_factory=list)

    def check(self) -> Plan:
        if self.host.get(self.key) == self.value:
            return Plan()
        return Plan([f"set {self.key} to {self.value}"])

    def apply(self) -> None:
        self._before = self.host.get(self.key)
        self.host[self.key] = self.value
        if self.fail_after_write:
            raise StepError(f"could not finish {self.key}", fix=f"pmcp fix {self.key}")

    def undo(self) -> None:
        if getattr(self, "_before", None) is None:
            self.host.pop(self.key, None)
        else:
            self.host[self.key] = self._before
        self.undone.append(self.key)


def test_dry_run_plans_every_step_and_changes_nothing() -> None:
    host: dict = {}
    steps = [FileStep("a", host, "a", "1"), FileStep("b", host, "b", "2")]
    result = run_steps(steps, dry_run=True)
    assert host == {}
    assert [s.status for s in result.steps] == ["planned", "planned"]
    assert result.steps[0].changes == ["set a to 1"]


def test_second_run_reports_already_right() -> None:
    host: dict = {}
    steps = [FileStep("a", host, "a", "1"), FileStep("b", host, "b", "2")]
    first = run_steps(steps)
    second = run_steps(steps)
    assert first.changed and [s.status for s in first.steps] == ["changed", "changed"]
    assert not second.changed and [s.status for s in second.steps] == ["ok", "ok"]


def test_failure_undoes_the_partial_step_and_stops() -> None:
    host: dict = {}
    later = FileStep("c", host, "c", "3")
    steps = [FileStep("a", host, "a", "1"), FileStep("b", host, "b", "2", fail_after_write=True), later]
    result = run_steps(steps)
    assert not result.ok
    failed = result.steps[-1]
    assert failed.name == "b" and failed.status == "failed"
    assert failed.fix == "pmcp fix b"
    assert host == {"a": "1"}, "the failed step's partial write must be undone, earlier steps kept"
    assert "c" not in host and len(result.steps) == 2


def test_check_error_stops_before_apply() -> None:
    class Refuses:
        name = "preflight"

        def check(self) -> Plan:
            raise StepError("not root", fix="sudo pmcp install")

        def apply(self) -> None:  # pragma: no cover - must not run
            raise AssertionError("apply after a failed check")

        def undo(self) -> None:  # pragma: no cover
            pass

    result = run_steps([Refuses()])
    assert result.to_dict()["steps"][0] == {
        "name": "preflight",
        "status": "failed",
        "error": "not root",
        "fix": "sudo pmcp install",
        "seconds": pytest.approx(result.steps[0].seconds),
    }


def test_undo_steps_runs_in_reverse() -> None:
    host: dict = {}
    a, b = FileStep("a", host, "a", "1"), FileStep("b", host, "b", "2")
    run_steps([a, b])
    order: list[str] = []
    a.undone = order
    b.undone = order
    result = undo_steps([a, b])
    assert order == ["b", "a"] and host == {}
    assert [s.status for s in result.steps] == ["undone", "undone"]


@dataclass
class GatedStep(FileStep):
    """A FileStep whose apply waits for ``gate`` (another branch's step) and then opens ``opens``."""

    gate: threading.Event | None = None
    opens: threading.Event | None = None

    def apply(self) -> None:
        if self.gate is not None:
            assert self.gate.wait(10), "the other branch never ran"
        try:
            super().apply()
        finally:
            if self.opens is not None:
                self.opens.set()


def test_together_reports_in_declared_order_whichever_finishes_first() -> None:
    host: dict = {}
    b_done = threading.Event()
    a = GatedStep("a", host, "a", "1", gate=b_done)  # finishes after b
    b = GatedStep("b", host, "b", "2", opens=b_done)
    reported: list[str] = []
    result = run_steps(
        [Together([a], [b]), FileStep("c", host, "c", "3")], report=lambda r: reported.append(r.name)
    )
    assert reported == ["a", "b", "c"] and [s.status for s in result.steps] == ["changed"] * 3
    assert host == {"a": "1", "b": "2", "c": "3"}
    assert "ran beside b" in result.steps[0].notes and "ran beside a" in result.steps[1].notes
    again = run_steps([Together([a], [b])])
    assert [s.status for s in again.steps] == ["ok", "ok"]  # idempotent, as one after the other


def test_together_failure_undoes_what_the_other_branch_applied_after_it() -> None:
    """The failed step is declared first: the other branch's finished change is undone, so the host is
    as the same steps one after another would have left it; nothing after the group runs."""
    host: dict = {}
    b_done = threading.Event()
    a = GatedStep("a", host, "a", "1", fail_after_write=True, gate=b_done)
    b = GatedStep("b", host, "b", "2", opens=b_done)
    later = FileStep("c", host, "c", "3")
    result = run_steps([Together([a], [b]), later])
    assert not result.ok and host == {}
    assert [(s.name, s.status) for s in result.steps] == [("a", "failed"), ("b", "undone")]
    assert "undone: a failed beside it" in result.steps[1].notes
    assert a.undone == ["a"] and b.undone == ["b"]


def test_together_failure_keeps_what_is_declared_before_it() -> None:
    host: dict = {}
    b_done = threading.Event()
    a = GatedStep("a", host, "a", "1", gate=b_done)
    b = GatedStep("b", host, "b", "2", fail_after_write=True, opens=b_done)
    result = run_steps([Together([a], [b])])
    assert [(s.name, s.status) for s in result.steps] == [("a", "changed"), ("b", "failed")]
    assert host == {"a": "1"} and a.undone == []


def test_together_dry_run_and_undo_go_one_step_at_a_time() -> None:
    host: dict = {}
    group = Together(
        [FileStep("a", host, "a", "1"), FileStep("b", host, "b", "2")], [FileStep("c", host, "c", "3")]
    )
    plan = run_steps([group], dry_run=True)
    assert [(s.name, s.status) for s in plan.steps] == [("a", "planned"), ("b", "planned"), ("c", "planned")]
    assert host == {}
    run_steps([group])
    removed = undo_steps([group])
    assert [s.name for s in removed.steps] == ["c", "b", "a"] and host == {}


def test_together_interrupted_keeps_what_was_reported_and_undoes_the_rest() -> None:
    """Ctrl-C while a branch still works (here raised by the reporter, as test_install does): the other
    branch's step finishes, is undone, and the interrupt reaches the caller."""
    host: dict = {}
    reported = threading.Event()
    a = FileStep("a", host, "a", "1")
    b = GatedStep("b", host, "b", "2", gate=reported)

    def report(r) -> None:  # type: ignore[no-untyped-def]
        if r.name == "a":
            reported.set()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_steps([Together([a], [b])], report=report)
    assert host == {"a": "1"} and b.undone == ["b"]
