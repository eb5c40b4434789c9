"""The one run harness of the commands that change the stack (update, rollback; install and uninstall
open their transcript through it too): a redacted transcript, and each phase recorded as a StepResult
that is reported as it ends and written to the transcript."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmcp.lifecycle.transcript import Redactor, Transcript, open_transcript
from pmcp.paths import InstallPaths
from pmcp.steps import StepError, StepResult

Report = Callable[[StepResult], None]


class Recorder:
    """Each phase becomes a StepResult: reported as it ends and written to the transcript."""

    def __init__(self, outcome: Any, transcript: Transcript | None, report: Report | None) -> None:
        """``outcome``: anything with a ``steps`` list (update's Outcome, a RunResult)."""
        self.outcome = outcome
        self.transcript = transcript
        self.report = report

    def note(self, text: str) -> None:
        if self.transcript:
            self.transcript.line(text)

    @contextlib.contextmanager
    def phase(self, name: str, change: str = "") -> Iterator[list[str]]:
        notes: list[str] = []
        started = time.monotonic()
        res = StepResult(name, "changed", [change] if change else [], notes)
        try:
            yield notes
        except StepError as exc:
            res.status, res.error, res.fix, res.detail = "failed", exc.message, exc.fix, exc.detail
            raise
        except Exception as exc:
            res.status, res.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            res.seconds = round(time.monotonic() - started, 3)
            self.outcome.steps.append(res)
            if self.transcript:
                self.transcript.step(res)
            if self.report:
                self.report(res)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def begin(
    kind: str, prefix: str | Path, log_dir: str | Path | None = None
) -> tuple[InstallPaths, Redactor, Transcript]:
    """Open a run: the install's paths, a redactor that knows its secrets, and the run's transcript
    (in the log directory, else in a private fallback)."""
    paths = InstallPaths.at(prefix)
    redact = Redactor()
    redact.add_install_secrets(paths)
    return paths, redact, open_transcript(kind, log_dir, redact)
