"""Backups of an install's configuration before every change, for ``pmcp rollback``.

A backup is ``<prefix>/backups/<UTC timestamp>/`` (0700) holding copies of the configuration files
(compose file, Caddyfile, ``.env``, ``state.json``, the image's Dockerfile and any other top-level file
of the install dir) and a ``manifest.json`` with the running image ids and versions. Secrets are NOT
copied: they are never changed by an update, so they stay in place and the manifest only lists their
names and sha256 (rollback can then tell whether a secret changed since). Copies of the pmcp file and
data directories (caddy-data, audit) are never part of a backup: they are not configuration and survive
in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmcp import __version__
from pmcp.files import fix_owner_mode, sha256_file, write_json
from pmcp.paths import InstallPaths
from pmcp.steps import StepError

MANIFEST = "manifest.json"
DEFAULT_KEEP = 5
_MAX_FILE = 1 << 20  # configuration is small; anything bigger at the top level is not configuration
_SKIP = {".pmcp.lock", ".pmcp-update.json"}  # the lock, and the phase of a running update


@dataclass
class Backup:
    timestamp: str
    path: Path
    reason: str = ""
    version: str = ""
    files: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "path": str(self.path),
            "reason": self.reason,
            "version": self.version,
            "files": self.files,
            "secrets": self.secrets,
            "images": self.images,
            "versions": self.versions,
            "extra": self.extra,
        }


def config_files(paths: InstallPaths) -> list[Path]:
    """The files a backup copies, relative to the prefix."""
    found: list[Path] = []
    if paths.prefix.is_dir():
        for p in sorted(paths.prefix.iterdir()):
            wanted = p.is_file() and not p.is_symlink() and p.name not in _SKIP
            temporary = p.name.startswith(".tmp") or p.name.endswith(".tmp")
            if wanted and not temporary and p.stat().st_size <= _MAX_FILE:
                found.append(p.relative_to(paths.prefix))
    dockerfile = paths.image_dir / "Dockerfile"
    if dockerfile.is_file():
        found.append(dockerfile.relative_to(paths.prefix))
    return found


def secret_hashes(paths: InstallPaths) -> dict[str, str]:
    if not paths.secrets_dir.is_dir():
        return {}
    return {p.name: sha256_file(p) for p in sorted(paths.secrets_dir.iterdir()) if p.is_file()}


def _new_dir(paths: InstallPaths) -> tuple[str, Path]:
    paths.backups_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fix_owner_mode(paths.backups_dir, 0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = stamp, 1
    while True:
        target = paths.backups_dir / name
        try:
            target.mkdir(mode=0o700)
            os.chmod(target, 0o700)
            return name, target
        except FileExistsError:
            n += 1
            name = f"{stamp}-{n:02d}"


def backup(
    paths: InstallPaths,
    reason: str,
    *,
    images: dict[str, str] | None = None,
    versions: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Backup:
    """Copy the configuration into a new backup directory and write its manifest (written last, so a
    directory without a manifest is an interrupted backup and is ignored)."""
    name, target = _new_dir(paths)
    files: dict[str, str] = {}
    try:
        for rel in config_files(paths):
            src = paths.prefix / rel
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copy2(src, dst)
            os.chmod(dst, 0o600)
            files[str(rel)] = sha256_file(dst)
        b = Backup(
            timestamp=name,
            path=target,
            reason=reason,
            version=__version__,
            files=files,
            secrets=secret_hashes(paths),
            images=dict(images or {}),
            versions=dict(versions or {}),
            extra=dict(extra or {}),
        )
        write_json(target / MANIFEST, b.to_dict())
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise StepError(
            f"could not back up {paths.prefix}: {exc}",
            fix=f"free some space or fix the permissions of {paths.backups_dir}, then run again",
        ) from exc
    return b


def _load(path: Path) -> Backup | None:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Backup(
        timestamp=path.name,
        path=path,
        reason=data.get("reason", ""),
        version=data.get("version", ""),
        files=data.get("files", {}),
        secrets=data.get("secrets", {}),
        images=data.get("images", {}),
        versions=data.get("versions", {}),
        extra=data.get("extra", {}),
    )


def list_backups(paths: InstallPaths) -> list[Backup]:
    """Complete backups, oldest first."""
    if not paths.backups_dir.is_dir():
        return []
    found = [_load(p) for p in sorted(paths.backups_dir.iterdir()) if p.is_dir()]
    return [b for b in found if b is not None]


def get(paths: InstallPaths, timestamp: str | None = None) -> Backup:
    """A backup by timestamp (or unique prefix of one), or the latest."""
    backups = list_backups(paths)
    if not backups:
        raise StepError(
            f"no backup in {paths.backups_dir}",
            fix="there is nothing to roll back to; backups are made by `pmcp update`",
        )
    if timestamp is None:
        return backups[-1]
    matches = [b for b in backups if b.timestamp == timestamp] or [
        b for b in backups if b.timestamp.startswith(timestamp)
    ]
    if len(matches) != 1:
        known = ", ".join(b.timestamp for b in backups)
        what = "no" if not matches else "more than one"
        raise StepError(f"{what} backup matches {timestamp!r}", fix=f"use one of: {known}")
    return matches[0]


def rotate(paths: InstallPaths, keep: int = DEFAULT_KEEP) -> list[str]:
    """Delete all but the newest ``keep`` backups (and interrupted ones); return the removed timestamps."""
    if not paths.backups_dir.is_dir():
        return []
    keep = max(keep, 1)
    complete = {b.timestamp for b in list_backups(paths)}
    dirs = sorted(p for p in paths.backups_dir.iterdir() if p.is_dir())
    kept = sorted(complete)[-keep:]
    removed: list[str] = []
    for p in dirs:
        if p.name not in kept:
            shutil.rmtree(p)
            removed.append(p.name)
    return removed


def restore(paths: InstallPaths, timestamp: str | None = None) -> Backup:
    """Put a backup's configuration files back in place, atomically per file; secrets are left alone."""
    b = get(paths, timestamp)
    for rel, digest in b.files.items():
        src = b.path / rel
        if not src.is_file() or sha256_file(src) != digest:
            raise StepError(
                f"backup {b.timestamp} is damaged: {rel} is missing or changed",
                fix=f"choose another backup with `pmcp rollback --to TIMESTAMP` (see {paths.backups_dir})",
            )
    for rel in b.files:
        src, dst = b.path / rel, paths.prefix / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        mode = dst.stat().st_mode & 0o777 if dst.exists() else 0o644
        if rel in (".env", "state.json"):
            mode = mode or 0o600
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as fh, src.open("rb") as sf:
                shutil.copyfileobj(sf, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return b


def changed_secrets(paths: InstallPaths, b: Backup) -> list[str]:
    """Secrets whose content differs from when the backup was made (rollback keeps the current ones)."""
    now = secret_hashes(paths)
    return sorted(k for k in set(now) | set(b.secrets) if now.get(k) != b.secrets.get(k))
