"""Atomic file writes: a reader (sudo, dockerd, the server) sees the old file or the new one, never half.

The temporary file lives in the target's own directory (rename is atomic only within one file system) and its
name starts with '.' and contains '.', so sudo's ``@includedir`` ignores it if we are interrupted.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pmcp.paths import InstallPaths


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` (and parents) and force its mode: secrets directories must not stay group-readable."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)


def atomic_write(
    path: Path,
    data: str | bytes,
    mode: int = 0o600,
    validate: Callable[[Path], None] | None = None,
) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; ``validate(tmp)`` may raise to refuse the content.

    The mode is set before any byte is written, so a secret is never readable by others, not even briefly.
    """
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if validate is not None:
            validate(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def host_state_dir(paths: InstallPaths) -> Path:
    """Where host steps keep what they changed (sudoers backups, manifests), for undo by `pmcp uninstall`.

    Not under ``paths.backups_dir``: that directory holds only `pmcp update` backups, and its rotation
    deletes anything else there.
    """
    return paths.prefix / "host-state"
