"""Transcripts: 0600, every line redacted, the last result readable back for `pmcp status`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pmcp import authtokens
from pmcp.lifecycle.transcript import Redactor, Transcript, last_result, prune, transcripts
from pmcp.paths import InstallPaths
from pmcp.steps import StepResult

SECRET = "3f1c9a0e-7d2b-4c55-9e61-aa0b1c2d3e4f"


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"Authorization: PVEAPIToken=pmcp@pve!mcp={SECRET}", SECRET),
        ("Authorization: Bearer abcDEF123456_-xyz", "abcDEF123456_-xyz"),
        ('{"name": "t", "value": "s3cr3t-value-here"}', "s3cr3t-value-here"),
        ("token=hunter2hunter2 rest", "hunter2hunter2"),
        ("PASSWORD: opensesame99", "opensesame99"),
    ],
)
def test_patterns_are_masked(text: str, leak: str) -> None:
    out = Redactor()(text)
    assert leak not in out
    assert "***" in out


def test_registered_values_masked_anywhere_and_labels_kept() -> None:
    r = Redactor([SECRET])
    out = r(f"curl failed for {SECRET}; PROXMOX_TOKEN_ID=pmcp@pve!mcp")
    assert SECRET not in out
    assert "PROXMOX_TOKEN_ID=pmcp@pve!mcp" in out


def test_transcript_file_mode_redaction_and_result(tmp_path: Path) -> None:
    paths = InstallPaths.at(tmp_path / "install")
    paths.secrets_dir.mkdir(parents=True)
    paths.proxmox_token_secret.write_text(SECRET + "\n")
    client = authtokens.add(paths.client_tokens, "claude")
    r = Redactor()
    r.add_install_secrets(paths)
    logs = tmp_path / "logs"
    with Transcript("update", logs, r) as t:
        t.line(f"token secret is {SECRET} and client {client}")
        t.step(StepResult("switch", "failed", error=f"401 with Bearer {client}", fix="run x", detail="a\nb"))
        t.finish(False, "health check failed")
    assert stat.S_IMODE(t.path.stat().st_mode) == 0o600
    body = t.path.read_text()
    assert SECRET not in body and client not in body
    assert "[failed] switch" in body and "fix: run x" in body
    assert t.path.name.startswith("update-") and t.path.name.endswith("Z.log")
    last = last_result("update", logs)
    assert last is not None
    assert last["result"] == "failed" and last["summary"] == "health check failed"


def test_interrupted_run_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMCP_LOG_DIR", str(tmp_path))
    with pytest.raises(KeyboardInterrupt), Transcript("update"):
        raise KeyboardInterrupt
    assert last_result("update") == last_result("update", tmp_path)
    last = last_result("update")
    assert last is not None and last["result"] == "failed"
    assert last_result("install", tmp_path) is None


def test_two_transcripts_in_one_second_do_not_clash(tmp_path: Path) -> None:
    a, b = Transcript("update", tmp_path), Transcript("update", tmp_path)
    a.close()
    b.close()
    assert a.path != b.path


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    made = []
    for _ in range(4):
        t = Transcript("update", tmp_path)
        t.finish(True)
        made.append(t.path)
    Transcript("install", tmp_path).close()
    assert prune("update", 2, tmp_path) == made[:2]
    assert transcripts("update", tmp_path) == made[2:]
    assert len(transcripts("install", tmp_path)) == 1
