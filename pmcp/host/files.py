"""Directories of the host steps: secrets dirs with a forced mode, and where undo records live.

Files are written with ``pmcp.files.atomic_write`` (re-exported here for the host steps).
"""

from __future__ import annotations

from pathlib import Path

from pmcp.files import atomic_write, fix_owner_mode
from pmcp.paths import InstallPaths

__all__ = ["atomic_write", "ensure_dir", "fix_owner_mode", "host_state_dir"]


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` (and parents) and force its mode: secrets directories must not stay group-readable."""
    path.mkdir(parents=True, exist_ok=True)
    fix_owner_mode(path, mode)  # never through a symlink


def host_state_dir(paths: InstallPaths) -> Path:
    """Where host steps keep what they changed (sudoers backups, manifests), for undo by `pmcp uninstall`.

    Not under ``paths.backups_dir``: that directory holds only `pmcp update` backups, and its rotation
    deletes anything else there.
    """
    return paths.prefix / "host-state"
