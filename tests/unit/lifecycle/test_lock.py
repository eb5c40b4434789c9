"""The host lock: a second process waits, then fails clearly; a killed holder never leaves it stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pmcp.lifecycle.lock import HostLock, default_lock_path, holder
from pmcp.steps import StepError

HOLD = """
import sys, time
from pmcp.lifecycle.lock import HostLock
with HostLock(sys.argv[1], timeout=5, command="pmcp update"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_times_out_with_who_holds_it(tmp_path: Path) -> None:
    lock = tmp_path / "pmcp.lock"
    proc = _holder(lock, 30)
    try:
        started = time.monotonic()
        with pytest.raises(StepError) as err, HostLock(lock, timeout=0.3):
            pass
        assert 0.25 < time.monotonic() - started < 3
        assert f"pid {proc.pid} (pmcp update, since " in err.value.message
        assert "--lock-timeout" in err.value.fix
    finally:
        proc.kill()
        proc.wait()


def test_waits_for_the_holder_to_finish(tmp_path: Path) -> None:
    lock = tmp_path / "pmcp.lock"
    proc = _holder(lock, 0.5)
    with HostLock(lock, timeout=10) as held:
        assert held.waited > 0.1
        assert holder(lock).startswith(f"pid {os.getpid()} ")
    proc.wait()


def test_kill_9_of_the_holder_releases_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "pmcp.lock"
    proc = _holder(lock, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock.exists()
    with HostLock(lock, timeout=2) as held:
        assert held.waited < 1


def test_nested_in_one_process_does_not_deadlock(tmp_path: Path) -> None:
    lock = tmp_path / "pmcp.lock"
    with HostLock(lock, timeout=0.2), HostLock(lock, timeout=0.2):
        pass
    proc = _holder(lock, 0)
    proc.wait()
    assert proc.returncode == 0


def test_lock_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PMCP_LOCK_FILE", str(tmp_path / "x.lock"))
    assert default_lock_path() == tmp_path / "x.lock"
    monkeypatch.delenv("PMCP_LOCK_FILE")
    assert default_lock_path().name.startswith("pmcp")
