"""The one error base and the exit codes the CLI maps errors to (README, "Exit codes").

Every failure a user can meet carries three things: what went wrong (``message``), the command or
change that fixes it (``fix``) and, when useful, the evidence (``detail``: log lines, a command's
output). The CLI renders them the same way for every command, as text or in the ``--json`` envelope,
and exits with the error's ``exit_code``. Nothing here imports anything of pmcp: every layer may use it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a script or cron can rely on; documented in README.md."""

    OK = 0
    FAILED = 1  # the command ran and something failed: a step, a check, an update (details in the output)
    USAGE = 2  # a bad option or argument: nothing was done
    CURRENT = 3  # `pmcp update --check`: no update is due
    NOT_READY = 4  # this host cannot run it now: not root, preflight failed, nothing installed, locked
    INTERNAL = 70  # a bug in pmcp (EX_SOFTWARE): one line on screen, the traceback in the transcript
    INTERRUPTED = 130  # Ctrl-C


class PmcpError(Exception):
    """A failure the user can act on: what failed, the fix, the evidence, and the exit code it means."""

    exit_code: int = ExitCode.FAILED

    def __init__(self, message: str, fix: str = "", detail: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.detail = detail
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        return {"message": self.message, "fix": self.fix, "detail": self.detail}


class StepError(PmcpError):
    """A step (or a command's phase) failed in a way the user can fix."""


class UsageError(StepError):
    """A bad option or argument, refused before anything is done."""

    exit_code = ExitCode.USAGE


class NotReady(StepError):
    """The host or the install is not in a state this command can work from (root, preflight, lock)."""

    exit_code = ExitCode.NOT_READY
