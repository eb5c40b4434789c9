"""The audit log file and the token store, on real files."""

from __future__ import annotations

import json
import os
import stat

import pytest

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


def test_audit_rotates_into_gzip_and_never_deletes(tmp_path):
    import gzip

    log = AuditLog(tmp_path / "audit.jsonl", file_bytes=4096, max_bytes=10 * 1024**2, min_free=0)
    for i in range(200):
        cid = log.intent("claude", "start_guest", "change", {"vmid": 100 + i})
        log.outcome(cid, "claude", "start_guest", "ok")
    rotated = sorted(tmp_path.glob("audit-*.jsonl.gz"))
    assert len(rotated) >= 10
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in rotated)
    lines = [x for p in rotated for x in gzip.decompress(p.read_bytes()).splitlines()]
    lines += (tmp_path / "audit.jsonl").read_bytes().splitlines()
    vmids = [json.loads(x)["arguments"]["vmid"] for x in lines if json.loads(x)["phase"] == "intent"]
    assert vmids == list(range(100, 300))  # every record kept, in order
    assert (tmp_path / "audit.jsonl").stat().st_size <= 4096


def test_audit_quota_refuses_changes_but_keeps_every_outcome(tmp_path):
    from pmcp.server.audit import AuditUnavailable

    log = AuditLog(tmp_path / "audit.jsonl", file_bytes=10**9, max_bytes=64 * 1024, min_free=0)
    open_calls = [log.intent("claude", "start_guest", "change", {"vmid": 100 + i}) for i in range(5)]
    written = 0
    with pytest.raises(AuditUnavailable, match="quota"):
        while True:
            cid = log.intent("claude", "set_guest_config", "change", {"vmid": 100, "n": written})
            log.outcome(cid, "claude", "set_guest_config", "ok", detail="x" * 500)
            written += 1
    assert written > 50
    assert log.refused("mallory", "stop_guest", "destructive", {}, "mode", None) is False  # noise stopped
    for cid in open_calls:  # calls already under way still record their outcome: room was reserved
        log.outcome(cid, "claude", "start_guest", "ok", detail="y" * 500)
    records = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {r["id"] for r in records if r["phase"] == "outcome"} >= set(open_calls)
    usage = log.usage()
    assert usage is not None and usage.used_bytes <= 64 * 1024
    assert any("quota" in w for w in usage.warnings)


def test_refused_calls_stop_before_the_room_kept_for_changes(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", file_bytes=10**9, max_bytes=32 * 1024, min_free=0)
    while log.refused("mallory", "stop_guest", "destructive", {"vmid": 100}, "mode", "192.0.2.1"):
        pass
    assert log.dropped == 1
    assert (tmp_path / "audit.jsonl").stat().st_size <= 0.9 * 32 * 1024
    cid = log.intent("claude", "start_guest", "change", {"vmid": 100})  # a change still fits
    log.outcome(cid, "claude", "start_guest", "ok")


def test_a_change_is_refused_when_the_disk_is_short_and_reads_go_on(make_server, sim):
    import anyio

    from .conftest import connect

    vmid = next(int(v) for v, g in sorted(sim.state.world["guests"].items()) if g["type"] == "lxc")
    before = sim.state.guest(vmid)["config"].get("description")

    async def go(served):
        async with connect(served) as client:
            change = await client.call_tool("set_guest_config", {"vmid": vmid, "description": "nope"})
            read = await client.call_tool("guest_info", {"vmid": vmid})
            return change, read

    with make_server(audit_min_free=2**62) as served:  # more than any disk has free
        change, read = anyio.run(go, served)
        assert served.audit_path.read_text() == ""
    assert change.is_error and "PMCP_AUDIT_MIN_FREE" in change.content[0].text
    assert not read.is_error
    assert sim.state.guest(vmid)["config"].get("description") == before
