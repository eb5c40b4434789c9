"""Append-only audit log: one JSON line before a change (intent) and one after (outcome).

Each line is flushed and fsynced before the call goes on, so a crash never loses the intent of an
action that reached Proxmox. Arguments are recorded, never secrets (the tools take none, and keys
that look secret are redacted anyway). The files are opened O_APPEND with mode 0600.

The log cannot fill the disk, and never drops the record of a change:
- the active file is rotated at ``file_bytes`` into ``audit-<UTC time>.jsonl.gz`` (gzip: JSON lines
  shrink about 10x); rotated files are never deleted by the server, only by the administrator;
- every ``audit*`` file in the directory counts towards ``max_bytes``, and the file system must keep
  ``min_free`` bytes free. A change whose intent cannot be written within both is refused
  (``AuditUnavailable``); an intent reserves room for its outcome, which is always written;
- records that are not changes (calls refused by the mode) stop at 90 % of the quota and at twice
  ``min_free``, so a flood of refused calls can never use the room kept for changes.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SECRET_WORDS = ("password", "secret", "token", "key")
TAIL_BYTES = 256 * 1024
DEFAULT_MAX_BYTES = 512 * 1024**2
DEFAULT_FILE_BYTES = 32 * 1024**2
DEFAULT_MIN_FREE = 128 * 1024**2
OUTCOME_RESERVE = 1024  # room an intent keeps for its outcome line (detail <= 500 characters)
NOISE_SHARE = 0.9  # records that are not changes stop at this share of the quota


class AuditUnavailable(Exception):
    """The audit log cannot take the record of a change, so the change is refused; the message says why
    and what the administrator does about it."""


@dataclass(frozen=True)
class AuditUsage:
    """How much room the audit log uses and has (for status, verify and the capabilities tool)."""

    directory: str
    used_bytes: int
    max_bytes: int
    free_bytes: int
    min_free_bytes: int
    dropped_records: int = 0

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.used_bytes >= 0.8 * self.max_bytes:
            out.append(
                f"the audit log uses {self.used_bytes // 1024**2} MiB of its {self.max_bytes // 1024**2} MiB "
                f"quota; at the quota changes are refused: archive old audit-*.jsonl.gz files from "
                f"{self.directory} (or raise PMCP_AUDIT_MAX_BYTES)"
            )
        if self.free_bytes < 4 * self.min_free_bytes:
            out.append(
                f"only {self.free_bytes // 1024**2} MiB free on the file system of {self.directory}; below "
                f"{self.min_free_bytes // 1024**2} MiB (PMCP_AUDIT_MIN_FREE) changes are refused"
            )
        return out


def usage_of(directory: Path, max_bytes: int, min_free: int) -> AuditUsage:
    """Measure an audit directory from outside the server (``pmcp status`` and ``verify`` on the host)."""
    try:
        used = sum(_size(p) for p in directory.glob("audit*")) if directory.is_dir() else 0
    except OSError:  # not ours to read (run as root on the host)
        used = 0
    try:
        st = os.statvfs(directory if directory.is_dir() else directory.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = 0
    return AuditUsage(str(directory), used, max_bytes, free, min_free)


class AuditLog:
    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        file_bytes: int = DEFAULT_FILE_BYTES,
        min_free: int = DEFAULT_MIN_FREE,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.file_bytes = file_bytes
        self.min_free = min_free
        self.dropped = 0  # records that are not changes, left out because room was short
        self._lock = threading.Lock()
        self._rotated_bytes = 0
        self._reserved = 0  # room kept for the outcomes of intents written and not yet closed
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(fd)
            self._rotated_bytes = self._measure_rotated()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def usage(self) -> AuditUsage | None:
        if self.path is None:
            return None
        with self._lock:
            used = self._rotated_bytes + _size(self.path)
            free = self._free()
        return AuditUsage(str(self.path.parent), used, self.max_bytes, free, self.min_free, self.dropped)

    def write(
        self, record: dict[str, Any], *, essential: bool = True, reserve: int = 0, outcome: bool = False
    ) -> bool:
        """Append one record. An essential record (a change) raises ``AuditUnavailable`` when it does not
        fit (with ``reserve`` more bytes kept for what must follow it; an ``outcome`` frees one such
        reserve); any other record is left out (counted in ``dropped``) and False is returned."""
        if self.path is None:
            return True
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            current = _size(self.path)
            if current and current + len(line) > self.file_bytes:
                self._rotate()
                current = 0
            used, free = self._rotated_bytes + current + self._reserved, self._free()
            need = len(line) + reserve
            if not essential:
                if used + need > NOISE_SHARE * self.max_bytes or free - need < 2 * self.min_free:
                    self.dropped += 1
                    return False
            elif reserve and (used + need > self.max_bytes or free - need < self.min_free):
                raise AuditUnavailable(self._full_message(used, free))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
                self._reserved = max(0, self._reserved + reserve - (OUTCOME_RESERVE if outcome else 0))
            except OSError as exc:
                raise AuditUnavailable(
                    f"the audit log {self.path} cannot be written ({exc.strerror}), so no change is made; "
                    "the administrator checks the disk and the audit directory"
                ) from None
            finally:
                os.close(fd)
        return True

    def _full_message(self, used: int, free: int) -> str:
        mib = 1024**2
        if used + OUTCOME_RESERVE > self.max_bytes:
            why = f"the audit log reached its quota ({used // mib} of {self.max_bytes // mib} MiB)"
        else:
            why = f"only {free // mib} MiB are free where the audit log is (PMCP_AUDIT_MIN_FREE)"
        return (
            f"refused: {why}, and a change that cannot be audited is not made. The administrator archives "
            f"old audit-*.jsonl.gz files from {self.path.parent if self.path else '?'} or frees disk space "
            "(`pmcp status` shows the audit log's use); read tools keep working"
        )

    def _free(self) -> int:
        assert self.path is not None
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def _measure_rotated(self) -> int:
        assert self.path is not None
        return sum(_size(p) for p in self.path.parent.glob("audit*") if p != self.path)

    def _rotate(self) -> None:
        """Move the active file to ``audit-<time>.jsonl.gz`` (compressed, fsynced) and start a new one."""
        assert self.path is not None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.path.parent / f"audit-{stamp}.jsonl.gz"
        partial = target.with_name("." + target.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
            open(self.path, "rb") as src,
        ):
            shutil.copyfileobj(src, gz, 1024 * 1024)
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
        os.truncate(self.path, 0)
        self._rotated_bytes = self._measure_rotated()

    def intent(
        self, client: str, tool: str, risk: str, arguments: dict[str, Any], address: str | None = None
    ) -> str:
        call_id = uuid.uuid4().hex[:16]
        record = {
            "time": _now(),
            "id": call_id,
            "phase": "intent",
            "client": client,
            "tool": tool,
            "risk": risk,
            "arguments": redact(arguments),
        }
        if address:
            record["address"] = address
        self.write(record, reserve=OUTCOME_RESERVE)
        return call_id

    def outcome(
        self,
        call_id: str,
        client: str,
        tool: str,
        outcome: str,
        upid: str | None = None,
        detail: str | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "time": _now(),
            "id": call_id,
            "phase": "outcome",
            "client": client,
            "tool": tool,
            "outcome": outcome,
        }
        if upid:
            record["upid"] = upid
        if detail:
            record["detail"] = detail[:500]
        self.write(record, outcome=True)

    def refused(
        self, client: str, tool: str, risk: str, arguments: dict[str, Any], reason: str, address: str | None
    ) -> bool:
        """A call the mode refused: nothing changed, so the record is kept only while room is plenty."""
        record = {
            "time": _now(),
            "id": uuid.uuid4().hex[:16],
            "phase": "refused",
            "client": client,
            "tool": tool,
            "risk": risk,
            "arguments": redact(arguments),
            "detail": reason[:300],
        }
        if address:
            record["address"] = address
        return self.write(record, essential=False)

    def recent(self, limit: int = 20, tool: str | None = None) -> list[dict[str, Any]]:
        """The newest records first, read from the end of the file only."""
        if self.path is None or not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            chunk = fh.read()
        lines = chunk.splitlines()
        if size > TAIL_BYTES and lines:
            lines = lines[1:]
        out: list[dict[str, Any]] = []
        for raw in reversed(lines):
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if tool and rec.get("tool") != tool:
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ("<redacted>" if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and len(value) > 300:
        return value[:300] + "…"
    return value


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
