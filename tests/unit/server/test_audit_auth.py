"""The audit log file and the token store, on real files."""

from __future__ import annotations

import json
import os
import stat

from pmcp import authtokens
from pmcp.server.audit import AuditLog
from pmcp.server.auth import TokenStore


def test_audit_appends_intent_and_outcome(tmp_path):
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cid = log.intent("claude", "start_guest", "change", {"vmid": 100, "password": "hunter2"})
    log.outcome(cid, "claude", "start_guest", "ok", upid="UPID:x")
    AuditLog(path).intent("cursor", "stop_guest", "destructive", {"vmid": 101})  # survives a restart
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["phase"] for r in lines] == ["intent", "outcome", "intent"]
    assert lines[0]["client"] == "claude" and lines[0]["arguments"]["vmid"] == 100
    assert "hunter2" not in path.read_text()
    assert lines[1]["upid"] == "UPID:x" and lines[1]["id"] == cid
    recent = AuditLog(path).recent(2)
    assert [r["tool"] for r in recent] == ["stop_guest", "start_guest"]
    assert AuditLog(path).recent(10, tool="stop_guest")[0]["client"] == "cursor"


def test_token_store_reloads_on_change(tmp_path):
    path = tmp_path / "tokens"
    first = authtokens.add(path, "claude")
    store = TokenStore(path)
    assert store.match(first) == "claude"
    assert store.match(first + "x") is None
    assert store.match("") is None
    second = authtokens.add(path, "cursor")
    assert store.match(second) == "cursor"
    authtokens.revoke(path, "claude")
    assert store.match(first) is None
    path.unlink()
    assert store.match(second) is None
