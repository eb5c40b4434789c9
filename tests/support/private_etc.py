"""Run a test body with a private copy of /etc, in its own mount namespace: real sudo, visudo, useradd and
gpasswd, and never the test machine's own accounts or sudoers.

How: fork; the child calls unshare(CLONE_NEWNS), makes every mount private (nothing propagates back),
bind-mounts a copy of /etc (3 MB, copied in ~30 ms) over /etc, runs the body and sends its result or its
traceback back through a pipe. sudo, visudo and the NSS `files` backend read /etc on each call, so inside
the child they all see the copy; the namespace dies with the child and the parent removes the copy.
Needs root (CAP_SYS_ADMIN) and util-linux `mount`; without them the test is skipped with the reason.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.support.accounts import missing_prerequisite

T = TypeVar("T")
CLONE_NEWNS = 0x00020000


def _enter(copy: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
    subprocess.run(["mount", "--bind", copy, "/etc"], check=True, capture_output=True)


def _copy_etc(copy: str) -> None:
    """cp -a /etc, tolerating files that vanish while it copies (other tests' lock files, e.g.
    /etc/passwd.lock while useradd runs elsewhere on this machine)."""
    res = subprocess.run(["cp", "-a", "/etc", copy], capture_output=True, text=True)
    errors = [e for e in res.stderr.splitlines() if e.strip()]
    if res.returncode != 0 and not all("No such file or directory" in e for e in errors):
        raise RuntimeError(f"cannot copy /etc: {res.stderr[-500:]}")
    for needed in ("passwd", "group", "shadow", "sudoers"):
        if not os.path.exists(os.path.join(copy, needed)):
            raise RuntimeError(f"cannot copy /etc: {needed} missing in the copy ({res.stderr[-300:]})")


def in_private_etc(body: Callable[..., T], *args: Any) -> T:
    """``body(*args)`` in a child process that sees a private, writable copy of /etc; its return value
    (picklable) comes back, its failure fails the calling test with the child's traceback."""
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    if not shutil.which("mount"):
        pytest.skip("needs util-linux mount")
    base = tempfile.mkdtemp(prefix="pmcp-etc-")
    copy = os.path.join(base, "etc")
    try:
        _copy_etc(copy)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            os.close(r)
            try:
                _enter(copy)
                outcome: tuple[str, Any] = ("ok", body(*args))
            except BaseException as exc:
                outcome = ("error", "".join(traceback.format_exception(exc)))
            try:
                payload = pickle.dumps(outcome)
            except Exception as exc:
                payload = pickle.dumps(("error", f"result not picklable: {exc}"))
            with os.fdopen(w, "wb") as fh:
                fh.write(payload)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            pytest.fail(f"the private-/etc child died (wait status {status})", pytrace=False)
        kind, value = pickle.loads(data)
        if kind == "error":
            pytest.fail("in the private /etc:\n" + value, pytrace=False)
        return value  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(base, ignore_errors=True)
