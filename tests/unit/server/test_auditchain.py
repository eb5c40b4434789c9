"""The audit log's HMAC chain as the server writes it: restarts, several server processes, a log cut
while a server runs, a torn line, records from before the chain, and a refused call through the SDK."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import anyio
import pytest

from pmcp.server.audit import AuditLog
from pmcp.server.auditchain import Verifier, read_key

KEY = b"k" * 64


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_the_chain_goes_on_after_a_restart_and_carries_approval(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, key=KEY)
    cid = first.intent("claude", "stop_guest", "destructive", {"vmid": 100}, approval={"by": "alice"})
    first.outcome(cid, "claude", "stop_guest", "ok", extra={"snapshot": "pmcp-auto-1"})
    again = AuditLog(path, key=KEY)  # a restart, or the new server of an update
    again.intent("claude", "start_guest", "change", {"vmid": 100})
    recs = records(path)
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert recs[0]["approval"] == {"by": "alice"} and recs[1]["snapshot"] == "pmcp-auto-1"
    v = again.verify()
    assert v.ok and v.records == 3, v.problem
    with pytest.raises(ValueError, match="mac"):
        again.intent("claude", "start_guest", "change", {}, extra={"mac": "0" * 64})


def test_a_key_made_for_a_server_without_one_is_private(tmp_path: Path) -> None:
    AuditLog(tmp_path / "audit.jsonl").intent("claude", "start_guest", "change", {"vmid": 100})
    key = tmp_path / ".audit-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(read_key(key)) == 64
    assert key.read_text().strip() not in (tmp_path / "audit.jsonl").read_text()
    assert Verifier(read_key(key)).verify(tmp_path).ok


def test_two_server_processes_writing_one_log_keep_one_chain(tmp_path: Path) -> None:
    """During an update the old (or standby) and the new server both append: each write holds the flock
    and reads the chain's end again when the other wrote, so the chain stays one, across rotations."""
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path, key=KEY, file_bytes=3000, max_bytes=10 * 1024**2, min_free=0) for _ in range(2)]

    def calls(log: AuditLog, n: int) -> None:
        for i in range(n):
            log.outcome(
                log.intent("claude", "start_guest", "change", {"vmid": i}), "claude", "start_guest", "ok"
            )

    threads = [threading.Thread(target=calls, args=(log, 25)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    v = Verifier(KEY).verify(tmp_path)  # all of it (audit_status reads the newest files only)
    assert v.ok, v.problem
    assert v.records - (len(v.files) - 1) == 100  # every record, plus one checkpoint per rotation
    assert len(v.files) > 2


def test_a_log_cut_while_the_server_runs_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, key=KEY)
    for i in range(5):
        log.intent("claude", "start_guest", "change", {"vmid": i})
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))  # whole lines cut from the end: the chain alone still holds
    assert Verifier(KEY).verify(tmp_path).ok
    v = log.verify()  # the server remembers what it wrote
    assert not v.ok and v.problem.kind == "truncated" and "wrote up to record 5" in v.problem.message
    log.intent("claude", "start_guest", "change", {"vmid": 9})  # and seals what it found into the log
    v = Verifier(KEY).verify(tmp_path)  # so a verifier without that memory names it too
    assert not v.ok and v.problem.kind == "truncated" and v.problem.line == 4
    assert "had written up to record 5" in v.problem.message


def test_a_torn_last_line_is_left_for_verify_to_name(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path, key=KEY).intent("claude", "start_guest", "change", {"vmid": 1})
    with open(path, "ab") as fh:
        fh.write(b'{"seq":2,"time":"2026')  # a crash in the middle of a write
    AuditLog(path, key=KEY).intent("claude", "start_guest", "change", {"vmid": 2})
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == 2  # on a line of its own
    v = Verifier(KEY).verify(tmp_path)
    assert not v.ok and v.problem.line == 2 and v.problem.kind == "edited"


def test_records_from_before_the_chain_are_counted_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"time":"2026-01-01T00:00:00+00:00","phase":"intent"}\n' * 2)  # an older pmcp
    log = AuditLog(path, key=KEY)
    log.intent("claude", "start_guest", "change", {"vmid": 1})
    v = log.verify()
    assert v.ok and v.unchained == 2 and v.records == 1 and v.first_seq == 1
    from pmcp.server.audit import _now

    with open(path, "a") as fh:  # the old server during the update that brings the chain: tolerated
        fh.write(f'{{"time":"{_now()}","phase":"refused","tool":"start_guest"}}\n')
    log.intent("claude", "start_guest", "change", {"vmid": 2})
    v = Verifier(KEY).verify(tmp_path)
    assert v.ok and v.unchained == 3 and "from the old server during the update" in v.summary
    with open(path, "a") as fh:
        fh.write('{"time":"2026-01-02T00:00:00+00:00","phase":"intent"}\n')  # not in that window
    v = Verifier(KEY).verify(tmp_path)
    assert not v.ok and v.problem.kind == "unchained" and v.problem.line == 6


def test_refused_calls_left_out_for_room_are_counted_in_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", key=KEY, file_bytes=10**9, max_bytes=32 * 1024, min_free=0)
    while log.refused("mallory", "stop_guest", "destructive", {"vmid": 100}, "mode", None):
        pass
    log.refused("mallory", "stop_guest", "destructive", {"vmid": 100}, "mode", None)
    log.intent("claude", "start_guest", "change", {"vmid": 100})  # a change still fits, and says so
    assert records(tmp_path / "audit.jsonl")[-1]["dropped"] == 2
    v = log.verify()
    assert v.ok and v.dropped == 2 and "2 refused-call records were left out" in v.summary


def test_a_refused_call_is_in_the_audit_and_the_log_verifies(make_server, sim) -> None:
    """Through the SDK: a call the mode refuses is recorded (sealed), a protected guest's refusal carries its
    reason, and capabilities verify_audit=true (a read) says the log verifies, then names the line an edit
    broke."""
    from pmcp.server.config import Mode

    from .conftest import connect

    vmid = next(int(v) for v, g in sorted(sim.state.world["guests"].items()) if g["type"] == "lxc")

    async def go(served):
        async with connect(served) as client:
            refused = await client.call_tool("guest_power", {"action": "stop", "vmid": vmid, "confirm": True})
            status = await client.call_tool("capabilities", {"verify_audit": True})
            lines = served.audit_path.read_bytes().splitlines(keepends=True)
            served.audit_path.write_bytes(lines[0].replace(b'"destructive"', b'"change"'))
            broken = await client.call_tool("capabilities", {"verify_audit": True})
            return refused, status, broken

    with make_server(mode=Mode.OPERATOR) as served:
        refused, status, broken = anyio.run(go, served)
    assert refused.is_error and "PMCP_MODE=admin" in refused.content[0].text
    status_of, broken_of = (
        status.structured_content["audit_status"],
        broken.structured_content["audit_status"],
    )
    assert status_of["verified"] is True and status_of["records"] == 1
    rec = json.loads(served.audit_path.read_bytes().splitlines()[0].replace(b'"change"', b'"destructive"'))
    assert rec["phase"] == "refused" and rec["tool"] == "guest_power" and rec["seq"] == 1
    assert broken_of["verified"] is False
    assert broken_of["breaks_at"]["line"] == 1 and "does not verify" in broken.content[0].text


def test_a_protected_guest_refusal_is_sealed_with_its_reason(make_server, sim) -> None:
    from .conftest import connect

    vmid = next(int(v) for v, g in sorted(sim.state.world["guests"].items()) if g["type"] == "lxc")

    async def go(served):
        async with connect(served) as client:
            return await client.call_tool("guest_power", {"action": "start", "vmid": vmid})

    with make_server(protected=frozenset({vmid})) as served:
        result = anyio.run(go, served)
        recs = records(served.audit_path)
        v = Verifier(read_key(served.audit_path.parent / ".audit-key")).verify(served.audit_path.parent)
    assert result.is_error and v.ok
    assert [r["phase"] for r in recs] == ["intent", "outcome"] and recs[1]["outcome"] == "refused"
    assert "PMCP_PROTECTED" in recs[1]["detail"]
    assert os.environ.get("PMCP_AUDIT_KEY_FILE") is None


def test_verifying_while_a_server_writes_and_rotates_sees_no_false_break(tmp_path: Path) -> None:
    """Rotated files are read without the lock, the active one under it: a verification racing writes and
    rotations never sees half a line or a file mid-rotation."""
    log = AuditLog(tmp_path / "audit.jsonl", key=KEY, file_bytes=2000, max_bytes=10 * 1024**2, min_free=0)
    done = threading.Event()

    def writer() -> None:
        for i in range(150):
            log.outcome(
                log.intent("claude", "start_guest", "change", {"vmid": i}), "claude", "start_guest", "ok"
            )
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    verifier, results = Verifier(KEY), []
    while not done.is_set():
        results.append(verifier.verify(tmp_path))
    thread.join()
    results.append(verifier.verify(tmp_path))
    assert len(results) > 3 and all(v.ok for v in results), [v.problem for v in results if not v.ok]
    assert results[-1].records - (len(results[-1].files) - 1) == 300
