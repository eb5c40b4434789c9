"""One pmcp run at a time on a host: an ``flock`` on a lock file, with a bounded wait.

The lock is per host, not per install prefix: every run touches the same Docker engine, Proxmox
identity and sudoers, so two runs on different prefixes can still collide. ``flock`` is released by the
kernel when the holding process dies (even on ``kill -9``), so a killed run never leaves a stale lock;
the pid, command and start time written into the file are only there to say who is holding it.

Path: ``$PMCP_LOCK_FILE`` if set, else ``/run/pmcp.lock`` (falling back to the temp dir when ``/run``
is not writable, i.e. not root).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pmcp.errors import NotReady

DEFAULT_LOCK_FILE = Path("/run/pmcp.lock")
DEFAULT_TIMEOUT = 60.0
_POLL = 0.05

# Nested HostLock blocks on the same path in one process (install calling update steps, say) must not
# deadlock on themselves: flock conflicts between two open() of the same file, even in one process.
_held: dict[Path, int] = {}
_held_guard = threading.Lock()


def default_lock_path() -> Path:
    env = os.environ.get("PMCP_LOCK_FILE")
    if env:
        return Path(env)
    if os.access(DEFAULT_LOCK_FILE.parent, os.W_OK):
        return DEFAULT_LOCK_FILE
    return Path(tempfile.gettempdir()) / f"pmcp-{os.getuid()}.lock"


def holder(path: str | Path | None = None) -> str:
    """Who wrote the lock file last ("pid N (command, since T)"), or "" when unknown."""
    try:
        lines = Path(path or default_lock_path()).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    if len(lines) < 3 or not lines[0].strip().isdigit():
        return ""
    return f"pid {lines[0].strip()} ({lines[1].strip()}, since {lines[2].strip()})"


class HostLock:
    """Context manager holding the host lock; waits up to ``timeout`` seconds, then raises StepError."""

    def __init__(
        self, path: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT, command: str = "pmcp"
    ) -> None:
        self.path = Path(path) if path else default_lock_path()
        self.timeout = timeout
        self.command = command
        self._fd: int | None = None
        self.waited = 0.0

    def acquire(self) -> None:
        key = self.path.resolve()
        with _held_guard:
            if key in _held:
                _held[key] += 1
                return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        started = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - started >= self.timeout:
                        raise self._busy() from None
                    time.sleep(_POLL)
        except BaseException:
            os.close(fd)
            raise
        self.waited = time.monotonic() - started
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{self.command}\n{since}\n".encode(), 0)
        self._fd = fd
        with _held_guard:
            _held[key] = 1

    def _busy(self) -> NotReady:
        who = holder(self.path) or "another process"
        return NotReady(
            f"another pmcp run is changing this host: {who}; waited {self.timeout:g}s for it",
            fix="let it finish and run again (or wait longer with --lock-timeout SECONDS); the lock is "
            "released automatically when that process exits, so there is nothing to delete",
            detail=f"lock file: {self.path}",
        )

    def release(self) -> None:
        key = self.path.resolve()
        with _held_guard:
            count = _held.get(key, 0)
            if count > 1:
                _held[key] = count - 1
                return
            _held.pop(key, None)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
