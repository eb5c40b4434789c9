"""The step runner: dry-run changes nothing, re-runs are no-ops, a failed step is undone and stops the run."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pmcp.steps import Plan, StepError, run_steps, undo_steps


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
