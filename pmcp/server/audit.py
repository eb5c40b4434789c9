"""Append-only audit log: one JSON line before a change (intent) and one after (outcome).

Each line is flushed and fsynced before the call goes on, so a crash never loses the intent of an
action that reached Proxmox. Arguments are recorded, never secrets (the tools take none, and keys
that look secret are redacted anyway). The file is opened O_APPEND with mode 0600.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SECRET_WORDS = ("password", "secret", "token", "key")
TAIL_BYTES = 256 * 1024


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(fd)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def intent(self, client: str, tool: str, risk: str, arguments: dict[str, Any]) -> str:
        call_id = uuid.uuid4().hex[:16]
        self.write(
            {
                "time": _now(),
                "id": call_id,
                "phase": "intent",
                "client": client,
                "tool": tool,
                "risk": risk,
                "arguments": redact(arguments),
            }
        )
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
        self.write(record)

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
