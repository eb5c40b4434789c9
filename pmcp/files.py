"""Atomic file writes, the one way pmcp writes a file a reader may be looking at.

A reader (sudo, dockerd, Caddy, the server) sees the old file or the new one, never half of one. The
temporary file lives in the target's own directory (rename is atomic only within one file system), its
mode and owner are set before any byte is written (a secret is never readable by others, not even
briefly), and its name starts with '.' and contains '.', so sudo's ``@includedir`` ignores it if a run is
interrupted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import ssl
import stat
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


class UnsafeFile(OSError):
    """A file root was asked to read is not what it should be (a symlink, not a regular file, too big)."""


def read_no_follow(base: Path, rel: str | Path, max_bytes: int) -> bytes:
    """Read ``base/rel`` without following a symlink on any component below ``base``, as a regular file
    with one link, at most ``max_bytes``.

    For files a container (or any other account) can write: root must not be turned into a copier of
    /etc/pve/priv/authkey.key by a symlink. ``base`` itself must be trusted (the root-owned prefix); each
    component is opened with openat(O_NOFOLLOW) relative to the one before, so a swap between a check and
    the open cannot redirect it; O_NONBLOCK keeps a FIFO from hanging the read.
    """
    parts = Path(rel).parts
    if not parts or any(p in ("", ".", "..") or "/" in p for p in parts) or Path(rel).is_absolute():
        raise ValueError(f"not a plain relative path: {rel}")
    where = Path(base) / rel
    dflags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(base, dflags)
        try:
            for part in parts[:-1]:
                nfd = os.open(part, dflags, dir_fd=fd)
                os.close(fd)
                fd = nfd
            ffd = os.open(
                parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=fd
            )
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFile(exc.errno, f"{where}: a symbolic link or not a directory on the way") from None
        raise
    try:
        st = os.fstat(ffd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EINVAL, f"{where} is not a regular file")
        if st.st_nlink != 1:
            raise UnsafeFile(errno.EMLINK, f"{where} has {st.st_nlink} hard links")
        if st.st_size > max_bytes:
            raise UnsafeFile(errno.EFBIG, f"{where} is {st.st_size} bytes, more than {max_bytes}")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(ffd, max_bytes + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise UnsafeFile(errno.EFBIG, f"{where} grew past {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(ffd)


MAX_CERT_BYTES = 64 * 1024
_PEM_CERTS = re.compile(
    r"\s*(?:-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\s*)+"
)


def read_certificate(base: Path, rel: str | Path) -> str:
    """A PEM certificate (or chain) from a file a container writes: read as ``read_no_follow`` does, and
    only certificates in it (no key, no other text), each one parsed by OpenSSL."""
    raw = read_no_follow(base, rel, MAX_CERT_BYTES)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise UnsafeFile(errno.EINVAL, f"{Path(base) / rel} is not a PEM certificate") from None
    if not _PEM_CERTS.fullmatch(text):
        raise UnsafeFile(errno.EINVAL, f"{Path(base) / rel} is not a PEM certificate (only certificates)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        raise UnsafeFile(errno.EINVAL, f"{Path(base) / rel} does not parse as a certificate: {exc}") from None
    return text


def fix_owner_mode(path: Path, mode: int, owner: tuple[int, int] | None = None) -> None:
    """chmod (and chown when root) a regular file or directory without following a symlink: opened with
    O_NOFOLLOW, changed through the descriptor (fchmod/fchown), so a symlink planted in its place makes
    this fail instead of handing its target to someone else."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(
                exc.errno, f"{path} is a symbolic link: not changing its owner or mode"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise UnsafeFile(errno.EINVAL, f"{path} is not a regular file or directory")
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EMLINK, f"{path} has {st.st_nlink} hard links: not changing it")
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def unsafe_path(path: Path) -> str:
    """Why root must not trust ``path`` (a directory or file root will run or read), or ''."""
    found = unsafe_component(path)
    return found[1] if found else ""


def path_fix(path: Path) -> str:
    """The command that makes ``path`` trustworthy for root, or '' when it already is."""
    found = unsafe_component(path)
    return f"chown root:root {found[0]} && chmod go-w {found[0]}" if found else ""


def unsafe_component(path: Path) -> tuple[Path, str] | None:
    """The first component of ``path`` root must not trust, and why (None: every one is safe).

    Every existing component from / down must be owned by root and not writable by group or others,
    except that a sticky directory (/tmp) may be world-writable: nobody else can rename root's entry in
    it. The last component gets no such exception. The path is checked as written (a symlink on the way
    sits in a directory that must be safe too) and as resolved (what it points to).
    """
    written = Path(os.path.abspath(path))
    return _chain_problem(written) or _chain_problem(Path(os.path.realpath(written)))


def _chain_problem(path: Path) -> tuple[Path, str] | None:
    chain = [*reversed(path.parents), path]
    for i, p in enumerate(chain):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None  # the rest will be created by root
        if st.st_uid != 0:
            return p, f"{p} is owned by uid {st.st_uid}, not root"
        if stat.S_ISLNK(st.st_mode):
            continue  # a link's own mode means nothing; its directory is checked, its target separately
        writable = st.st_mode & 0o022
        sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if writable and (i == len(chain) - 1 or not sticky):
            who = "group and others" if writable == 0o022 else "its group" if writable & 0o020 else "others"
            return p, f"{p} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks (the pmcp file, bundle images, backed-up files)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
