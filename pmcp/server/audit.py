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
  ``min_free``, so a flood of refused calls can never use the room kept for changes; how many were
  left out is sealed into the next record (``dropped``).

Every record is sealed into an HMAC chain (pmcp.server.auditchain: ``seq`` and ``mac``), which runs on
across rotations (a checkpoint record opens each new file) and restarts (the next server reads the
last record). Several server processes write the same log during an update (old, standby and new), so
each write holds an flock on the active file and re-reads the chain's end when another wrote since.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import logging
import os
import secrets
import shutil
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmcp.server import auditchain

log = logging.getLogger("pmcp.audit")

SECRET_WORDS = ("password", "secret", "token", "key")
TAIL_BYTES = 256 * 1024
DEFAULT_MAX_BYTES = 512 * 1024**2
DEFAULT_FILE_BYTES = 32 * 1024**2
DEFAULT_MIN_FREE = 128 * 1024**2
OUTCOME_RESERVE = 1024  # room an intent keeps for its outcome line (detail <= 500 characters)
NOISE_SHARE = 0.9  # records that are not changes stop at this share of the quota
SEAL_BYTES = 120  # what sealing adds to a record's JSON: seq, mac and the dropped count
RESERVED_KEYS = auditchain.RESERVED
STATUS_FILES = 4  # rotated files audit_status reads (32 MiB each; bench_audit: seconds cold, then cached)
FALLBACK_KEY = ".audit-key"  # beside the log when no key file is configured (demo, a hand-run server)


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
        key: bytes | None = None,
    ) -> None:
        """``key``: the chain's HMAC key (install: secrets/audit-key); without one, a key made once in
        ``.audit-key`` beside the log (0600) is used, which anyone who can rewrite the log can read."""
        self.path = path
        self.max_bytes = max_bytes
        self.file_bytes = file_bytes
        self.min_free = min_free
        self.dropped = 0  # records that are not changes, left out because room was short
        self._lock = threading.Lock()
        self._rotated_bytes = 0
        self._reserved = 0  # room kept for the outcomes of intents written and not yet closed
        self._key = key or b""
        self._seq, self._mac = 0, auditchain.GENESIS  # the chain's last record
        self._written = 0  # the last seq this process wrote (a log ending before it was cut)
        self._torn = False  # the active file ends inside a line (a crash, or an edit)
        self._seen: tuple[int, int] | None = None  # (inode, size) of the active file after our write
        self._drops = 0  # left out since the last record written
        self._verify_lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(fd)
            if not key:
                self._key = _fallback_key(path.parent / FALLBACK_KEY)
            self._rotated_bytes = self._measure_rotated()
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # not while another server is halfway through a write
                st = os.fstat(fd)
                self._seq, self._mac, self._torn = auditchain.head_of(path.parent)
                self._seen = (st.st_ino, st.st_size)
            finally:
                os.close(fd)
        self._verifier = auditchain.Verifier(self._key)

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
        """Append one sealed record. An essential record (a change) raises ``AuditUnavailable`` when it
        does not fit (with ``reserve`` more bytes kept for what must follow it; an ``outcome`` frees one
        such reserve); any other record is left out (counted in ``dropped`` and in the chain) and False
        is returned."""
        if self.path is None:
            return True
        if RESERVED_KEYS & record.keys():
            raise ValueError(f"audit records may not set {sorted(RESERVED_KEYS & record.keys())}")
        payload = json.dumps(record, separators=(",", ":"), default=str).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other server processes of this install (an update)
                current = self._sync(fd)
                size = len(payload) + SEAL_BYTES
                if current and current + size > self.file_bytes:
                    current = self._rotate(fd)
                used, free = self._rotated_bytes + current + self._reserved, self._free()
                need = size + reserve
                if not essential:
                    if used + need > NOISE_SHARE * self.max_bytes or free - need < 2 * self.min_free:
                        self.dropped += 1
                        self._drops += 1
                        return False
                elif reserve and (used + need > self.max_bytes or free - need < self.min_free):
                    raise AuditUnavailable(self._full_message(used, free))
                if self._drops:
                    payload = (
                        payload[:-1] + (b"," if len(payload) > 2 else b"") + b'"dropped":%d}' % self._drops
                    )
                self._append(fd, current, payload)
                self._drops = 0
                self._reserved = max(0, self._reserved + reserve - (OUTCOME_RESERVE if outcome else 0))
            finally:
                os.close(fd)  # releases the flock
        return True

    def _sync(self, fd: int) -> int:
        """The active file's size; when another process wrote (or cut) it since our last write, re-read
        the chain's end. A log that now ends before what this process wrote was cut: that is sealed
        into the log (a ``cut`` record), so verification names it even though the chain goes on."""
        assert self.path is not None
        st = os.fstat(fd)
        if self._seen != (st.st_ino, st.st_size):
            if self._seen is not None:
                self._seq, self._mac, self._torn = auditchain.head_of(self.path.parent)
                self._rotated_bytes = self._measure_rotated()
            self._seen = (st.st_ino, st.st_size)
            if self._seq < self._written:
                cut = {"time": _now(), "phase": "cut", "had_written": self._written}
                self._append(fd, st.st_size, json.dumps(cut, separators=(",", ":")).encode())
                self._written = self._seq
        assert self._seen is not None
        return self._seen[1]

    def _append(self, fd: int, current: int, payload: bytes) -> None:
        """Seal ``payload`` as the chain's next record and append it, fsynced; a failed or short write is
        cut back off, so the file never keeps half a line."""
        seq = self._seq + 1
        line, mac = auditchain.sealed_line(self._key, self._mac, seq, payload)
        if self._torn:
            line = b"\n" + line  # the last line was cut short: this record starts on a line of its own
        try:
            if os.write(fd, line) != len(line):
                raise OSError(28, "short write (disk full?)")
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, current)
            raise AuditUnavailable(
                f"the audit log {self.path} cannot be written ({exc.strerror}), so no change is made; "
                "the administrator checks the disk and the audit directory"
            ) from None
        self._seq, self._mac, self._torn = seq, mac, False
        self._written = seq
        self._seen = (self._seen[0] if self._seen else os.fstat(fd).st_ino, current + len(line))

    def verify(self) -> auditchain.Verification:
        """Verify the log's newest part (the active file and ``STATUS_FILES`` rotated ones; those it
        proved before are not read again), with what this process wrote last as a witness against a cut
        end."""
        if self.path is None:
            return auditchain.Verification()
        with self._lock:
            witness = (self._written, self._mac) if self._written else None
        with self._verify_lock:  # one at a time: they share what was proved of the rotated files
            return self._verifier.verify(self.path.parent, witness, newest=STATUS_FILES)

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

    def _rotate(self, fd: int) -> int:
        """Move the active file to ``audit-<time>.jsonl.gz`` (compressed, fsynced), start it anew with a
        checkpoint record (the previous record's MAC and the file it follows), return its new size."""
        assert self.path is not None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.path.parent / f"audit-{stamp}.jsonl.gz"
        partial = target.with_name("." + target.name + ".part")
        part = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with (
            os.fdopen(part, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
            open(self.path, "rb") as src,
        ):
            shutil.copyfileobj(src, gz, 1024 * 1024)
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
        os.ftruncate(fd, 0)
        self._rotated_bytes = self._measure_rotated()
        self._torn = False
        self._seen = (os.fstat(fd).st_ino, 0)
        checkpoint = {"time": _now(), "phase": "checkpoint", "follows": target.name, "prev_mac": self._mac}
        self._append(fd, 0, json.dumps(checkpoint, separators=(",", ":")).encode())
        return self._seen[1]

    def intent(
        self,
        client: str,
        tool: str,
        risk: str,
        arguments: dict[str, Any],
        address: str | None = None,
        *,
        approval: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """The record written before a change. ``approval``: who approved it and how (free-form, as
        the caller has it); ``extra``: more fields, any name but ``seq``, ``mac`` and ``dropped``."""
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
        _add(record, approval, extra)
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
        *,
        approval: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """``approval``: who approved and how (pmcp.server.approval: by person/model, how
        elicitation/confirm); ``extra``: e.g. ``undo``, the safety snapshot taken first."""
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
        _add(record, approval, extra)
        self.write(record, outcome=True)

    def refused(
        self,
        client: str,
        tool: str,
        risk: str,
        arguments: dict[str, Any],
        reason: str,
        address: str | None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """A call the mode refused: nothing changed, so the record is kept only while room is plenty
        (one left out is counted in the next record's ``dropped``)."""
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
        _add(record, None, extra)
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


def _add(record: dict[str, Any], approval: Any, extra: Mapping[str, Any] | None) -> None:
    if approval is not None:
        record["approval"] = redact(approval)
    for name, value in (extra or {}).items():
        if name in RESERVED_KEYS or name in record:
            raise ValueError(f"audit field {name!r} is the chain's or already set")
        record[name] = redact(value)


def _fallback_key(path: Path) -> bytes:
    """A key made once (0600) beside the log, for a server run without PMCP_AUDIT_KEY_FILE."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.warning("audit log key made at %s: set PMCP_AUDIT_KEY_FILE to keep it apart from the log", path)
    return auditchain.read_key(path)


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
