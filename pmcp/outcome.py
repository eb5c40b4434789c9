"""One outcome per command: the ``Result`` every command returns, whatever it did.

``pmcp.cli`` renders it in one place, as text, as the ``--json`` envelope (the same keys on success
and on failure, for every command) or not at all under ``--quiet`` (errors still go to stderr):

    {"ok": bool, "command": "install", "changed": bool, "steps": [StepResult...],
     "error": {"message", "fix", "detail"} | null, "data": {...}, "transcript": path | null}

``text`` is what the text renderer prints on success (never part of the envelope: ``data`` is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pmcp.errors import ExitCode, PmcpError
from pmcp.steps import RunResult, StepResult


@dataclass
class Result:
    command: str
    ok: bool = True
    changed: bool = False
    steps: list[StepResult] = field(default_factory=list)
    error: PmcpError | None = None
    data: dict[str, Any] = field(default_factory=dict)
    transcript: str = ""
    text: list[str] = field(default_factory=list)
    exit_code: int | None = None  # when ok and still not 0 (`update --check`: 3, current)

    @classmethod
    def failed(cls, command: str, error: PmcpError, **kw: Any) -> Result:
        return cls(command, ok=False, error=error, **kw)

    @classmethod
    def of_run(cls, command: str, run: RunResult, **kw: Any) -> Result:
        """A step run's outcome: the first failed step is the command's error."""
        res = cls(command, ok=run.ok, changed=run.changed, steps=list(run.steps), **kw)
        failed = next((s for s in run.steps if s.status == "failed"), None)
        if failed is not None and res.error is None:
            res.error = PmcpError(
                f"{failed.name}: {failed.error}" if failed.error else f"{failed.name} failed",
                fix=failed.fix,
                detail=failed.detail,
                exit_code=failed.exit_code or ExitCode.FAILED,
            )
        return res

    @property
    def code(self) -> int:
        if self.exit_code is not None:
            return self.exit_code
        if self.ok:
            return ExitCode.OK
        return int(self.error.exit_code) if self.error else ExitCode.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "command": self.command,
            "changed": self.changed,
            "steps": [s.to_dict() for s in self.steps],
            "error": self.error.to_dict() if self.error else None,
            "data": self.data,
            "transcript": self.transcript or None,
            "exit_code": self.code,
        }


_MARKS = {
    "ok": "already right",
    "changed": "changed",
    "planned": "would change",
    "failed": "FAILED",
    "skipped": "skipped",
    "undone": "removed",
}


def step_line(r: StepResult) -> str:
    """One step as the CLI prints it: name, status, what changed, and for a failure the fix and details."""
    lines = [f"{r.name:<18} {_MARKS.get(r.status, r.status)}"]
    lines += [f"    - {c}" for c in r.changes]
    lines += [f"    note: {n}" for n in r.notes]
    if r.error:
        lines.append(f"    error: {r.error}")
    if r.fix:
        lines.append(f"    fix:   {r.fix}")
    lines += [f"      {d}" for d in r.detail.splitlines()[-30:]]
    return "\n".join(lines)
