"""What a killed update was doing: the phase file (``.pmcp-update.json``) and the compose commands a
killed run left running (SIGKILL does not reach children); the next run reads both to recover."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pmcp.files import write_json
from pmcp.lifecycle.run import utc_now
from pmcp.paths import InstallPaths

PHASE_FILE = ".pmcp-update.json"


def phase_path(paths: InstallPaths) -> Path:
    return paths.prefix / PHASE_FILE


def phase_load(paths: InstallPaths) -> dict[str, Any]:
    try:
        data = json.loads(phase_path(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def phase_save(paths: InstallPaths, **data: Any) -> None:
    data = {**phase_load(paths), **data, "pid": os.getpid(), "at": utc_now()}
    write_json(phase_path(paths), data)


def phase_clear(paths: InstallPaths) -> None:
    phase_path(paths).unlink(missing_ok=True)


def compose_processes(project: str) -> list[int]:
    """Compose commands still running for this project: a killed run's child outlives it (SIGKILL
    does not reach children), and a recovery must not race with it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode("utf-8", "replace") for w in argv if w]
        if any("compose" in w for w in words[:3]) and project in words and "-p" in words:
            found.append(int(entry.name))
    return found


def wait_compose(project: str, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while (left := compose_processes(project)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(left)
