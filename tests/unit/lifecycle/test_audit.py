"""`pmcp audit verify` and `export` on a real audit log: the exit code and the message naming the first
edited, missing, reordered or cut record by file and line, across rotations and archived files."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from pmcp.cli import main
from pmcp.paths import InstallPaths
from pmcp.server.audit import AuditLog


def make_log(prefix: Path, calls: int = 60, file_bytes: int = 4096) -> AuditLog:
    """An install's audit dir and key, with ``calls`` change calls (intent + outcome) written by the server's
    own AuditLog, small files so that it rotates."""
    paths = InstallPaths.at(prefix)
    paths.secrets_dir.mkdir(parents=True)
    paths.audit_key.write_text(secrets.token_hex(32) + "\n")
    key = paths.audit_key.read_bytes().strip()
    log = AuditLog(paths.audit_log, key=key, file_bytes=file_bytes, max_bytes=64 * 1024**2, min_free=0)
    for i in range(calls):
        cid = log.intent("claude", "start_guest", "change", {"vmid": 100 + i})
        log.outcome(cid, "claude", "start_guest", "ok")
    return log


def verify(prefix: Path) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["audit", "verify", "--prefix", str(prefix), "--json"])
    return result.exit_code, json.loads(result.stdout)


def rotated(prefix: Path) -> list[Path]:
    return sorted((prefix / "audit").glob("audit-*.jsonl.gz"))


def rewrite(path: Path, edit) -> None:
    """Apply ``edit(lines) -> lines`` to a plain or gzip audit file, keeping what it is."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    data = b"".join(edit(raw.splitlines(keepends=True)))
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = tmp_path_factory.mktemp("audit") / "pmcp"
    make_log(made)  # 120 fsynced records: written once, copied for each test
    return made


@pytest.fixture
def prefix(written: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(written, tmp_path / "pmcp")
    return tmp_path / "pmcp"


def test_a_whole_log_verifies_across_rotations(prefix: Path) -> None:
    code, doc = verify(prefix)
    data = doc["data"]
    assert code == 0 and doc["ok"] and doc["error"] is None
    assert len(rotated(prefix)) >= 3 and data["files"][-1] == "audit.jsonl"
    checkpoints = len(rotated(prefix))  # each rotation opens the next file with one
    assert data["records"] == 120 + checkpoints and data["first_seq"] == 1 and data["archived"] == 0
    assert data["last_seq"] == data["records"] and data["problem"] is None


def test_an_edited_line_is_named(prefix: Path) -> None:
    active = prefix / "audit" / "audit.jsonl"
    lines = active.read_bytes().splitlines(keepends=True)
    target = next(i for i, x in enumerate(lines) if b'"phase":"intent"' in x)
    rewrite(
        active,
        lambda ls: [x.replace(b'"vmid":1', b'"vmid":9') if i == target else x for i, x in enumerate(ls)],
    )
    code, doc = verify(prefix)
    assert code == 1 and not doc["ok"]
    assert doc["data"]["problem"]["kind"] == "edited"
    assert f"line {target + 1} of audit.jsonl" in doc["error"]["message"]
    assert "does not match its MAC" in doc["error"]["message"] and "pmcp audit export" in doc["error"]["fix"]


def test_a_deleted_line_is_named(prefix: Path) -> None:
    rewrite(prefix / "audit" / "audit.jsonl", lambda ls: ls[:2] + ls[3:])
    code, doc = verify(prefix)
    assert code == 1 and doc["data"]["problem"]["kind"] == "missing"
    assert "missing before line 3 of audit.jsonl" in doc["error"]["message"]


def test_two_reordered_lines_are_named(prefix: Path) -> None:
    rewrite(prefix / "audit" / "audit.jsonl", lambda ls: [ls[0], ls[2], ls[1], *ls[3:]])
    code, doc = verify(prefix)
    assert code == 1 and doc["data"]["problem"]["kind"] == "reordered"
    assert "line 2 of audit.jsonl" in doc["error"]["message"] and "is at line 3" in doc["error"]["message"]


def test_a_cut_last_line_is_named(prefix: Path) -> None:
    active = prefix / "audit" / "audit.jsonl"
    n = len(active.read_bytes().splitlines())
    os.truncate(active, active.stat().st_size - 20)
    code, doc = verify(prefix)
    assert code == 1 and doc["data"]["problem"]["kind"] == "truncated"
    assert f"line {n} of audit.jsonl is cut short" in doc["error"]["message"]


def test_an_edit_inside_a_rotated_file_is_named(prefix: Path) -> None:
    second = rotated(prefix)[1]
    rewrite(second, lambda ls: [ls[0], ls[1].replace(b'"ok"', b'"failed"'), *ls[2:]])
    code, doc = verify(prefix)
    assert code == 1 and f"line 2 of {second.name}" in doc["error"]["message"]


def test_a_cut_rotated_file_is_named(prefix: Path) -> None:
    second = rotated(prefix)[1]
    second.write_bytes(second.read_bytes()[:-30])  # the gzip stream loses its end
    code, doc = verify(prefix)
    assert code == 1 and doc["data"]["problem"]["kind"] == "truncated"
    assert second.name in doc["error"]["message"]


def test_whole_lines_cut_from_a_rotated_file_break_the_next_checkpoint(prefix: Path) -> None:
    second = rotated(prefix)[1]
    rewrite(second, lambda ls: ls[:-2])
    code, doc = verify(prefix)
    assert code == 1 and doc["data"]["problem"]["kind"] == "missing"
    assert f"before line 1 of {rotated(prefix)[2].name}" in doc["error"]["message"]


def test_archived_oldest_files_still_verify_and_a_missing_middle_one_does_not(prefix: Path) -> None:
    """Rotated files are never deleted by the server (at its quota it refuses changes); the administrator
    archives the oldest: the next file's checkpoint vouches for where the chain now starts."""
    files = rotated(prefix)
    for old in files[:2]:
        old.unlink()
    code, doc = verify(prefix)
    assert code == 0, doc["error"]
    assert doc["data"]["archived"] == doc["data"]["first_seq"] - 1 > 0
    files[3].unlink()
    code, doc = verify(prefix)
    assert code == 1 and doc["data"]["problem"]["kind"] == "missing"
    assert f"before line 1 of {files[4].name}" in doc["error"]["message"]


def test_lines_cut_from_the_head_of_the_oldest_file_are_named(prefix: Path) -> None:
    for old in rotated(prefix)[:2]:
        old.unlink()
    rewrite(rotated(prefix)[0], lambda ls: ls[1:])  # its checkpoint goes
    code, doc = verify(prefix)
    assert code == 1 and doc["data"]["problem"]["kind"] == "missing"
    assert f"line 1 of {rotated(prefix)[0].name}" in doc["error"]["message"]


def test_export_writes_the_sealed_records_and_verify_reads_them(prefix: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    result = CliRunner().invoke(main, ["audit", "export", "--prefix", str(prefix), "-o", str(out), "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["data"]["records"] == doc["data"]["verification"]["records"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    records = [json.loads(x) for x in out.read_bytes().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)) and all(
        "mac" in r for r in records
    )
    later = CliRunner().invoke(main, ["audit", "export", "--prefix", str(prefix), "--since", "1d"])
    assert later.exit_code == 0 and later.stdout.encode() == out.read_bytes()  # to stdout, nothing else
    none = CliRunner().invoke(main, ["audit", "export", "--prefix", str(prefix), "--since", "2999-01-01"])
    assert none.exit_code == 0 and none.stdout == ""
    bad = CliRunner().invoke(main, ["audit", "export", "--prefix", str(prefix), "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since" in bad.stderr
    mixed = CliRunner().invoke(main, ["audit", "export", "--prefix", str(prefix), "--json"])
    assert mixed.exit_code == 2 and json.loads(mixed.stdout)["error"]["fix"] == "add -o FILE"


def test_export_of_a_broken_log_writes_it_and_fails(prefix: Path, tmp_path: Path) -> None:
    rewrite(prefix / "audit" / "audit.jsonl", lambda ls: ls[:2] + ls[3:])
    out = tmp_path / "export.jsonl"
    result = CliRunner().invoke(main, ["audit", "export", "--prefix", str(prefix), "-o", str(out)])
    assert result.exit_code == 1 and " records written, but record " in result.stderr
    assert "missing before line 3 of audit.jsonl" in result.stderr and out.exists()


def test_verify_without_a_key_or_a_log_says_what_to_do(tmp_path: Path) -> None:
    code, doc = verify(tmp_path / "none")
    assert code == 4 and "no audit log" in doc["error"]["message"]
    (tmp_path / "inst" / "audit").mkdir(parents=True)
    code, doc = verify(tmp_path / "inst")
    assert code == 4 and "no audit key" in doc["error"]["message"] and "pmcp update" in doc["error"]["fix"]


def test_the_newest_part_is_checked_quickly_and_the_cli_reads_all(prefix: Path) -> None:
    """`pmcp verify` and `audit_status` read the newest files only (a full log takes minutes); `pmcp audit
    verify` reads every file, with progress on stderr."""
    from pmcp.lifecycle import audit

    first = rotated(prefix)[0]
    rewrite(first, lambda ls: [ls[0], ls[1].replace(b'"ok"', b'"failed"'), *ls[2:]])
    part = audit.verify(prefix, newest=2)
    assert part.ok and part.skipped == len(rotated(prefix)) - 2 and part.files[-1] == "audit.jsonl"
    assert "not read here" in part.summary
    result = CliRunner().invoke(main, ["audit", "verify", "--prefix", str(prefix)])
    assert result.exit_code == 1 and f"line 2 of {first.name}" in result.stderr
    assert f"verifying {first.name}" in result.stderr
