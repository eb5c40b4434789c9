"""Backups: 0700, configuration copied, secrets listed not copied, rotation, restore."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pmcp import backup as bk
from pmcp.paths import InstallPaths
from pmcp.steps import StepError


@pytest.fixture
def paths(tmp_path: Path) -> InstallPaths:
    p = InstallPaths.at(tmp_path / "opt")
    p.prefix.mkdir()
    p.compose_file.write_text("services: {}\n")
    p.caddyfile.write_text(":443 {}\n")
    p.env_file.write_text("PMCP_MODE=read-only\n")
    p.state_file.write_text('{"version": "0.1.0"}\n')
    p.image_dir.mkdir()
    (p.image_dir / "Dockerfile").write_text("FROM python:3.11-slim\n")
    (p.image_dir / "pmcp").write_bytes(b"x" * (2 << 20))
    p.secrets_dir.mkdir()
    p.proxmox_token_secret.write_text("very-secret-value\n")
    p.caddy_data.mkdir()
    return p


def test_backup_contents_and_modes(paths: InstallPaths) -> None:
    b = bk.backup(paths, "update", images={"mcp-server": "sha256:abc"}, versions={"pmcp": "0.1.0"})
    assert b.path.parent == paths.backups_dir
    assert stat.S_IMODE(b.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.backups_dir.stat().st_mode) == 0o700
    assert set(b.files) == {"docker-compose.yml", "Caddyfile", ".env", "state.json", "image/Dockerfile"}
    assert not (b.path / "image" / "pmcp").exists()
    assert not any("very-secret-value" in f.read_text() for f in b.path.rglob("*") if f.is_file())
    assert list(b.secrets) == ["proxmox-token"]
    assert os.fspath(b) == str(b.path)
    again = bk.get(paths)
    assert again.images == {"mcp-server": "sha256:abc"} and again.reason == "update"


def test_rotate_keeps_the_newest(paths: InstallPaths) -> None:
    made = [bk.backup(paths, f"n{i}").timestamp for i in range(7)]
    (paths.backups_dir / "00000000T000000Z").mkdir()  # interrupted: no manifest
    removed = bk.rotate(paths, keep=3)
    assert [b.timestamp for b in bk.list_backups(paths)] == made[-3:]
    assert "00000000T000000Z" in removed and len(removed) == 5


def test_restore_puts_configuration_back_and_leaves_secrets(paths: InstallPaths) -> None:
    first = bk.backup(paths, "before")
    paths.compose_file.write_text("services: {changed: {}}\n")
    paths.proxmox_token_secret.write_text("rotated-secret\n")
    restored = bk.restore(paths, first.timestamp[:12])
    assert restored.timestamp == first.timestamp
    assert paths.compose_file.read_text() == "services: {}\n"
    assert paths.proxmox_token_secret.read_text() == "rotated-secret\n"
    assert bk.changed_secrets(paths, restored) == ["proxmox-token"]


def test_restore_refuses_a_damaged_backup(paths: InstallPaths) -> None:
    b = bk.backup(paths, "x")
    (b.path / "Caddyfile").write_text("tampered")
    with pytest.raises(StepError, match="damaged"):
        bk.restore(paths)
    assert paths.caddyfile.read_text() == ":443 {}\n"


def test_no_backup_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="no backup"):
        bk.get(InstallPaths.at(tmp_path))
