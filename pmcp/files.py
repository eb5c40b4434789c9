"""Atomic file writes, the one way pmcp writes a file a reader may be looking at.

A reader (sudo, dockerd, Caddy, the server) sees the old file or the new one, never half of one. The
temporary file lives in the target's own directory (rename is atomic only within one file system), its
mode and owner are set before any byte is written (a secret is never readable by others, not even
briefly), and its name starts with '.' and contains '.', so sudo's ``@includedir`` ignores it if a run is
interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(
    path: Path,
    data: str | bytes,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    validate: Callable[[Path], None] | None = None,
) -> None:
    """Write ``data`` to ``path`` with ``mode`` (and ``owner`` when root); ``validate(tmp)`` may refuse it."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        if owner and os.geteuid() == 0:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if validate is not None:
            validate(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_json(path: Path, data: Any, mode: int = 0o600) -> None:
    """Pretty, sorted JSON (diffable in backups), written atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)
