"""`pmcp audit verify` and `pmcp audit export`: prove the audit log whole, and hand it to a log system.

Both read the install's audit directory with its key (``secrets/audit-key``), which only root (and the
server's group) may read; the chain itself is pmcp.server.auditchain's, the same code the server's
``audit_status`` tool runs. Export writes the records byte for byte as the server sealed them (JSON
lines, with ``seq`` and ``mac``), so a copy kept elsewhere can be verified again later and compared with
the host's log: it is the witness for what the chain cannot see alone (whole files archived from the
oldest end, records cut from the end while no server was running).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from pmcp.errors import NotReady, PmcpError, UsageError
from pmcp.paths import InstallPaths


class AuditBroken(PmcpError):
    """The audit log does not verify: the message names the first edited, missing, reordered or cut
    record by file and line."""


def _key(paths: InstallPaths) -> bytes:
    from pmcp.server import auditchain

    key_file = paths.audit_key
    if not key_file.exists() and (paths.audit_dir / ".audit-key").exists():
        key_file = paths.audit_dir / ".audit-key"  # a server run without PMCP_AUDIT_KEY_FILE
    try:
        return auditchain.read_key(key_file)
    except PermissionError:
        raise NotReady(
            f"{key_file} (the audit log's key) is readable by root only",
            fix="run it as root: sudo pmcp audit ...",
        ) from None
    except FileNotFoundError:
        raise NotReady(
            f"no audit key at {key_file}, so the log cannot be verified",
            fix="pmcp install (or pmcp update) creates it; with another install dir, pass --prefix DIR",
        ) from None
    except ValueError as exc:
        raise PmcpError(
            f"the audit key is not usable: {exc}",
            fix=f"restore {key_file} from a backup (a new key cannot verify records sealed with the old one)",
        ) from None


def _open(prefix: str | Path) -> tuple[InstallPaths, bytes]:
    paths = InstallPaths.at(prefix)
    if not paths.audit_dir.is_dir():
        if paths.prefix.is_dir() and not os.access(paths.prefix, os.X_OK):
            raise NotReady(f"{paths.prefix} is readable by root only", fix="sudo pmcp audit ...")
        raise NotReady(f"no audit log at {paths.audit_dir}", fix="pmcp install (or --prefix DIR)")
    if not os.access(paths.audit_dir, os.R_OK | os.X_OK):
        raise NotReady(
            f"{paths.audit_dir} is readable by root only", fix="run it as root: sudo pmcp audit ..."
        )
    return paths, _key(paths)


def verify(
    prefix: str | Path, newest: int | None = None, progress: Callable[[str], None] | None = None
) -> object:
    """Verify the log (all of it, or its ``newest`` rotated files and the active one); returns a
    pmcp.server.auditchain.Verification (``ok`` or its ``problem``)."""
    from pmcp.server import auditchain

    paths, key = _open(prefix)
    report = (lambda name: progress(f"verifying {name}")) if progress else None
    return auditchain.Verifier(key).verify(paths.audit_dir, newest=newest, on_file=report)


def broken(v: object) -> AuditBroken | None:
    """The error a failed verification is, with what the administrator does about it."""
    problem = getattr(v, "problem", None)
    if problem is None:
        return None
    return AuditBroken(
        problem.message,
        fix=(
            f"keep the files as they are (evidence) and compare {problem.file} with your exported copy "
            "(pmcp audit export) or a backup; records from that line on cannot be trusted"
        ),
    )


def export(prefix: str | Path, since: datetime | None, out: Path | None) -> tuple[int, object]:
    """Write the records (as sealed, oldest first; those at or after ``since``) as JSON lines to
    ``out`` (0600, replaced atomically) or to stdout; returns (records written, verification)."""
    import sys

    from pmcp.server import auditchain

    paths, key = _open(prefix)
    verification = auditchain.Verifier(key).verify(paths.audit_dir)
    files = auditchain.log_files(paths.audit_dir)
    if out is None:
        return _write(files, since, sys.stdout.buffer), verification
    partial = out.with_name(f".{out.name}.part")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}", fix="-o another file") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            count = _write(files, since, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count, verification


def _write(files: list[Path], since: datetime | None, fh: object) -> int:
    count = 0
    for line in _records(files):
        if since is not None:
            when = _time(line)
            if when is None or when < since:
                continue
        fh.write(line if line.endswith(b"\n") else line + b"\n")  # type: ignore[attr-defined]
        count += 1
    return count


def _records(files: list[Path]) -> Iterator[bytes]:
    from pmcp.server import auditchain

    for path in files:
        try:
            yield from auditchain.lines_of(path)
        except auditchain.Damaged:
            continue  # verification names it; the lines before the damage are exported


def _time(line: bytes) -> datetime | None:
    try:
        value = json.loads(line).get("time")
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None
