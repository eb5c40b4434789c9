"""A transcript of one lifecycle run in ``/var/log/pmcp/<kind>-<UTC timestamp>.log``, secrets redacted.

Cron runs are unattended: when something fails at 4 a.m., the transcript is what the admin reads. Every
line passes through a Redactor first, so a secret never reaches the disk even when it shows up inside a
command's output or an error message. The directory comes from ``$PMCP_LOG_DIR`` (tests) or
``pmcp.paths.LOG_DIR``; files are 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pmcp import __version__
from pmcp.paths import LOG_DIR, InstallPaths
from pmcp.steps import RunResult, StepResult

MASK = "***"
_MIN_SECRET = 6

# (pattern, group to mask) pairs: each keeps the label so the line still says what was there.
_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"(PVEAPIToken=[^\s=]+=)([^\s\"',;]+)"),
    re.compile(r"(?i)(\bBearer\s+)([A-Za-z0-9._~+/=-]+)"),
    re.compile(r"(?i)(\"(?:value|secret|token|password|token_secret)\"\s*:\s*\")([^\"]*)"),
    re.compile(r"(?i)(\b(?:password|passwd|secret|token_secret|token)\b\s*[=:]\s*)([^\s\"',;]+)"),
]


class Redactor:
    """Masks registered secret values and secret-looking patterns in any text."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: set[str] = set()
        for value in secrets or []:
            self.add(value)

    def add(self, value: str | None) -> None:
        value = (value or "").strip()
        if len(value) >= _MIN_SECRET:
            self._secrets.add(value)

    def add_install_secrets(self, paths: InstallPaths) -> None:
        """Register the install's Proxmox token secret and every client token (values only)."""
        with contextlib.suppress(OSError):
            self.add(paths.proxmox_token_secret.read_text(encoding="utf-8"))
        try:
            for line in paths.client_tokens.read_text(encoding="utf-8").splitlines():
                _, sep, token = line.strip().partition(":")
                if sep and not line.startswith("#"):
                    self.add(token)
        except OSError:
            pass

    def __call__(self, text: str) -> str:
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + (MASK if m.group(2) else ""), text)
        return text


def log_dir() -> Path:
    return Path(os.environ.get("PMCP_LOG_DIR") or LOG_DIR)


def _stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


class Transcript:
    """An append-only, redacted log of one run (install, update, rollback, uninstall)."""

    def __init__(self, kind: str, directory: str | Path | None = None, redactor: Redactor | None = None):
        self.kind = kind
        self.redact = redactor or Redactor()
        base = Path(directory) if directory else log_dir()
        base.mkdir(parents=True, exist_ok=True, mode=0o750)
        stamp = _stamp()
        path = base / f"{kind}-{stamp}.log"
        n = 1
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:
                n += 1
                path = base / f"{kind}-{stamp}-{n}.log"
        os.fchmod(fd, 0o600)
        self.path = path
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self.line(f"pmcp {__version__} {kind} started, pid {os.getpid()}")

    def secret(self, value: str | None) -> None:
        """Register a secret value: it is masked in every later line."""
        self.redact.add(value)

    def line(self, text: str) -> None:
        """One or more free lines, timestamped, redacted, flushed at once (a killed run keeps its log)."""
        if self._fh.closed:
            return
        now = datetime.now(UTC).strftime("%H:%M:%S")
        for raw in self.redact(str(text)).splitlines() or [""]:
            self._fh.write(f"{now} {raw}\n")
        self._fh.flush()

    def step(self, res: StepResult) -> None:
        """Record a StepResult (usable directly as run_steps' ``report``)."""
        head = f"[{res.status}] {res.name}"
        if res.seconds:
            head += f" ({res.seconds:.2f}s)"
        self.line(head)
        for change in res.changes:
            self.line(f"    change: {change}")
        for note in res.notes:
            self.line(f"    note: {note}")
        if res.error:
            self.line(f"    error: {res.error}")
        if res.fix:
            self.line(f"    fix: {res.fix}")
        if res.detail:
            self.line("    detail:")
            for d in res.detail.splitlines():
                self.line(f"      {d}")
        if res.trace:
            self.line("    traceback (a bug in pmcp):")
            for d in res.trace.splitlines():
                self.line(f"      {d}")

    def finish(self, ok: bool, summary: str = "") -> None:
        """The last line, which ``last_result`` reads back for ``pmcp status``."""
        self.line(f"result: {'ok' if ok else 'failed'}{(' - ' + summary) if summary else ''}")
        self.close()

    def run(self, result: RunResult) -> None:
        for res in result.steps:
            self.step(res)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> Transcript:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not self._fh.closed:
            self.line(f"interrupted: {type(exc).__name__}: {exc}")
            self.finish(False, "interrupted")
        self.close()


def private_fallback_dir() -> Path:
    """``$TMPDIR/pmcp-logs-<uid>``, created 0700 and refused unless it is this user's own directory:
    another user could otherwise pre-create it and read (or replace) the transcripts."""
    path = Path(tempfile.gettempdir()) / f"pmcp-logs-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a private directory of this user")
    return path


def open_transcript(
    kind: str, directory: str | Path | None = None, redactor: Redactor | None = None
) -> Transcript:
    """A transcript in the log directory, else in a private fallback: one written somewhere beats none
    (an unprivileged run cannot write /var/log/pmcp)."""
    try:
        return Transcript(kind, directory, redactor)
    except OSError:
        return Transcript(kind, private_fallback_dir(), redactor)


def transcripts(kind: str, directory: str | Path | None = None) -> list[Path]:
    """Transcripts of a kind, oldest first."""
    base = Path(directory) if directory else log_dir()
    return sorted(base.glob(f"{kind}-*.log"), key=lambda p: (p.stat().st_mtime, p.name))


def prune(kind: str, keep: int = 100, directory: str | Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` transcripts of a kind: a nightly cron run must not fill /var/log."""
    files = transcripts(kind, directory)
    old = files[: max(len(files) - keep, 0)]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def last_result(kind: str, directory: str | Path | None = None) -> dict[str, str] | None:
    """The last run of a kind: {"path", "started", "result", "summary"}; result "unfinished" if none."""
    files = transcripts(kind, directory)
    if not files:
        return None
    path = files[-1]
    result, summary = "unfinished", ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        _, _, body = line.partition(" ")
        if body.startswith("result: "):
            verdict, _, summary = body[len("result: ") :].partition(" - ")
            result = verdict
            break
    started = path.stem[len(kind) + 1 :]
    return {"path": str(path), "started": started, "result": result, "summary": summary}
