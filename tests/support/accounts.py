"""Real OS accounts for tests of the agent-account containment: created with useradd, always removed after.

Needs root, useradd/userdel/groupadd and sudo/visudo (CI installs `sudo`); tests skip cleanly without them.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUDOERS_DIR = Path("/etc/sudoers.d")


def missing_prerequisite() -> str:
    """Why real-account tests cannot run here, or '' when they can."""
    if os.geteuid() != 0:
        return "needs root (creates a real OS account and sudoers drop-ins)"
    for tool in ("useradd", "userdel", "groupadd", "gpasswd", "visudo", "sudo", "runuser"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            return f"needs {tool} (apt-get install sudo passwd util-linux)"
    if not SUDOERS_DIR.is_dir():
        return f"needs {SUDOERS_DIR} included by /etc/sudoers"
    return ""


@dataclass
class Account:
    name: str
    groups: list[str]
    created_groups: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def sudoers_file(self, name: str, text: str) -> Path:
        """A drop-in (0440, root) that the test owns and that is removed afterwards."""
        path = SUDOERS_DIR / name
        assert not path.exists(), f"refusing to overwrite {path}"
        path.write_text(text)
        os.chmod(path, 0o440)
        self.files.append(path)
        return path


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def temp_account(groups: tuple[str, ...] = ("docker",)) -> Iterator[Account]:
    """A fresh account `pmcpt-XXXXXX` (no home, no password) in ``groups`` (created when missing)."""
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    name = "pmcpt-" + secrets.token_hex(3)
    acct = Account(name, list(groups))
    try:
        for g in groups:
            try:
                grp.getgrnam(g)
            except KeyError:
                _run("groupadd", "--system", g)
                acct.created_groups.append(g)
        _run("useradd", "--no-create-home", "--shell", "/bin/bash", "--user-group", name)
        for g in groups:
            _run("gpasswd", "-a", name, g)
        yield acct
    finally:
        for path in acct.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for path in SUDOERS_DIR.glob(f"*{name}*"):
            path.unlink()
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            subprocess.run(["userdel", name], capture_output=True, check=False)
        with contextlib.suppress(KeyError):
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], capture_output=True, check=False)
        for g in acct.created_groups:
            subprocess.run(["groupdel", g], capture_output=True, check=False)
