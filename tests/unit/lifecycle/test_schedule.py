"""The auto-update schedule: systemd timer or cron file, idempotent, removable, undoable."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from pmcp.lifecycle import schedule
from pmcp.lifecycle.schedule import AutoUpdateStep
from pmcp.steps import StepError, run_steps

EXE = Path("/usr/local/sbin/pmcp")


class Systemctl:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> None:
        self.calls.append(list(argv))


def _step(tmp_path: Path, frequency: str, systemd: bool, ctl: Systemctl | None = None) -> AutoUpdateStep:
    return AutoUpdateStep(
        frequency,
        prefix=Path("/opt/proxmox-mcp"),
        exe=EXE,
        systemd=systemd,
        systemd_dir=tmp_path / "systemd",
        cron_file=tmp_path / "cron.d" / "pmcp",
        systemctl=ctl or Systemctl(),
    )


def test_cron_file_when_no_systemd(tmp_path: Path) -> None:
    step = _step(tmp_path, "daily", systemd=False)
    assert run_steps([step]).steps[0].status == "changed"
    text = step.cron_file.read_text()
    assert "17 4 * * * root /usr/local/sbin/pmcp update --quiet --prefix /opt/proxmox-mcp\n" in text
    assert text.endswith("\n") and "PATH=" in text
    assert step.cron_file.stat().st_mode & 0o777 == 0o644
    assert run_steps([_step(tmp_path, "daily", systemd=False)]).steps[0].status == "ok"
    assert schedule.current(tmp_path / "systemd", step.cron_file) == "daily"
    run_steps([_step(tmp_path, "weekly", systemd=False)])
    assert "17 4 * * 0 root" in step.cron_file.read_text()
    assert schedule.current(tmp_path / "systemd", step.cron_file) == "weekly"
    run_steps([_step(tmp_path, "off", systemd=False)])
    assert not step.cron_file.exists()
    assert schedule.current(tmp_path / "systemd", step.cron_file) == "off"


def test_systemd_timer_enabled_and_removed(tmp_path: Path) -> None:
    ctl = Systemctl()
    step = _step(tmp_path, "weekly", systemd=True, ctl=ctl)
    run_steps([step])
    assert "OnCalendar=Sun *-*-* 04:17:00" in step.timer_file.read_text()
    assert "Persistent=true" in step.timer_file.read_text()
    assert "ExecStart=/usr/local/sbin/pmcp update --quiet --prefix /opt/proxmox-mcp" in (
        step.service_file.read_text()
    )
    assert ctl.calls == [["daemon-reload"], ["enable", "--now", "pmcp-update.timer"]]
    assert not step.cron_file.exists()
    ctl.calls.clear()
    off = _step(tmp_path, "off", systemd=True, ctl=ctl)
    assert off.check().changes == [f"remove {step.service_file}", f"remove {step.timer_file}"]
    run_steps([off])
    assert ctl.calls[0] == ["disable", "--now", "pmcp-update.timer"]
    assert not step.timer_file.exists() and not step.service_file.exists()


def test_switching_from_cron_to_systemd_removes_the_cron_file(tmp_path: Path) -> None:
    run_steps([_step(tmp_path, "daily", systemd=False)])
    step = _step(tmp_path, "daily", systemd=True)
    run_steps([step])
    assert not step.cron_file.exists() and step.timer_file.exists()


def test_failed_enable_is_undone(tmp_path: Path) -> None:
    class Failing(Systemctl):
        def __call__(self, argv: Sequence[str]) -> None:
            super().__call__(argv)
            if argv[0] == "enable":
                raise StepError("systemctl enable failed")

    ctl = Failing()
    res = run_steps([_step(tmp_path, "daily", systemd=True, ctl=ctl)])
    assert res.steps[0].status == "failed"
    assert not (tmp_path / "systemd" / "pmcp-update.timer").exists()
    assert ctl.calls[-1] == ["daemon-reload"]


def test_unknown_frequency_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="hourly"):
        _step(tmp_path, "hourly", systemd=False)


def test_systemd_detection(tmp_path: Path) -> None:
    assert not schedule.systemd_running(tmp_path / "nope")
    (tmp_path / "sd").mkdir()
    assert schedule.systemd_running(tmp_path / "sd")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (files owned by another uid)")
def test_a_file_the_agent_can_change_is_never_scheduled(tmp_path: Path) -> None:
    """Before: the unit ran whatever file install was started from, e.g. one in the agent's home."""
    home = tmp_path / "home"
    home.mkdir()
    exe = home / "pmcp"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    os.chown(home, 12345, 12345)  # the agent's directory: it can swap the file
    step = AutoUpdateStep(
        "daily",
        prefix=Path("/opt/x"),
        exe=exe,
        systemd=False,
        cron_file=tmp_path / "cron",
        systemd_dir=tmp_path,
    )
    result = run_steps([step])
    assert not result.ok and not (tmp_path / "cron").exists()
    assert f"{home} is owned by uid 12345" in result.steps[0].error
    assert f"install -o root -g root -m 0755 {exe} /usr/local/sbin/pmcp" in result.steps[0].fix

    os.chown(home, 0, 0)
    exe.chmod(0o775)  # root's, but group-writable
    assert "writable by its group" in run_steps([step]).steps[0].error
    os.chown(exe, 12345, 0)
    exe.chmod(0o755)
    assert "owned by uid 12345" in run_steps([step]).steps[0].error
    os.chown(exe, 0, 0)
    assert run_steps([step]).ok  # root-owned 0755 in root-owned directories
    assert schedule.scheduled_exe(tmp_path, tmp_path / "cron") == exe
