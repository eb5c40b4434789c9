"""The auto-update schedule: a systemd timer where systemd runs, else ``/etc/cron.d/pmcp``.

Both run ``pmcp update --quiet`` at 04:17 (daily, or Sundays for weekly), so the admin is mailed (cron)
or sees a failed unit (systemd) only when something went wrong. A systemd timer is preferred because it
catches up a run missed while the host was off (``Persistent=true``) and spreads hosts over half an hour
(``RandomizedDelaySec``). It is a Step, so ``pmcp install --auto-update`` plans, applies and undoes it
like any other change; every path and the ``systemctl`` command are injectable for tests.

Root runs the scheduled file unattended, so it must be one nobody else can change: the file and every
directory above it root-owned and not group/other-writable. Otherwise install refuses, with the
``install -o root -m 0755`` command that makes such a copy.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pmcp.files import unsafe_component
from pmcp.host.files import atomic_write
from pmcp.host.run import CommandError, run
from pmcp.steps import Plan, StepError

FREQUENCIES = ("daily", "weekly", "off")
UNIT = "pmcp-update"
SYSTEMD_DIR = Path("/etc/systemd/system")
CRON_FILE = Path("/etc/cron.d/pmcp")
SYSTEMD_RUNNING = Path("/run/systemd/system")
DEFAULT_EXE = Path("/usr/local/sbin/pmcp")
PATH_LINE = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Runner = Callable[[Sequence[str]], None]


def current_executable() -> Path:
    """The pmcp file that is running (the shiv zipapp), so the schedule runs the file the admin copied."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 and argv0.is_file() and argv0.suffix != ".py":
        return argv0.resolve()
    found = shutil.which("pmcp")
    return Path(found).resolve() if found else DEFAULT_EXE


def systemd_running(marker: Path = SYSTEMD_RUNNING) -> bool:
    """sd_booted(3): systemd is PID 1 exactly when this directory exists."""
    return marker.is_dir()


def _systemctl(argv: Sequence[str]) -> None:
    try:
        res = run(["systemctl", *argv], timeout=60)
    except CommandError as exc:
        raise StepError(f"systemctl failed: {exc.message}", fix="check `systemctl status`") from exc
    if not res.ok:
        raise StepError(
            f"`systemctl {' '.join(argv)}` failed: {res.text[:300]}",
            fix=f"run `systemctl status {UNIT}.timer` to see why",
        )


def command_line(exe: Path, prefix: Path) -> str:
    return shlex.join([str(exe), "update", "--quiet", "--prefix", str(prefix)])


def cron_text(frequency: str, exe: Path, prefix: Path) -> str:
    when = "17 4 * * *" if frequency == "daily" else "17 4 * * 0"
    return (
        "# Installed by `pmcp install --auto-update`; `pmcp install --auto-update off` removes it.\n"
        "# cron mails the output: `--quiet` prints only errors, so a mail means trouble.\n"
        "SHELL=/bin/sh\n"
        f"{PATH_LINE}\n"
        f"{when} root {command_line(exe, prefix)}\n"
    )


def service_text(exe: Path, prefix: Path) -> str:
    return (
        "[Unit]\n"
        "Description=Update the pmcp MCP stack (zero-downtime, rolls back on failure)\n"
        "After=docker.service network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"Environment={PATH_LINE}\n"
        f"ExecStart={command_line(exe, prefix)}\n"
    )


def timer_text(frequency: str) -> str:
    when = "*-*-* 04:17:00" if frequency == "daily" else "Sun *-*-* 04:17:00"
    return (
        "[Unit]\n"
        "Description=Scheduled pmcp update\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={when}\n"
        "RandomizedDelaySec=30m\n"
        "Persistent=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


@dataclass
class AutoUpdateStep:
    """Install, replace or remove the auto-update schedule (``frequency`` daily|weekly|off)."""

    frequency: str
    prefix: Path
    exe: Path = field(default_factory=current_executable)
    systemd: bool | None = None
    systemd_dir: Path = SYSTEMD_DIR
    cron_file: Path = CRON_FILE
    systemctl: Runner = _systemctl
    name: str = "auto-update schedule"

    def __post_init__(self) -> None:
        if self.frequency not in FREQUENCIES:
            raise StepError(
                f"unknown --auto-update {self.frequency!r}", fix=f"use one of: {', '.join(FREQUENCIES)}"
            )
        if self.systemd is None:
            self.systemd = systemd_running()
        self._previous: dict[Path, str | None] = {}

    @property
    def service_file(self) -> Path:
        return self.systemd_dir / f"{UNIT}.service"

    @property
    def timer_file(self) -> Path:
        return self.systemd_dir / f"{UNIT}.timer"

    def wanted(self) -> dict[Path, str | None]:
        """Every file this step manages and the content it should have (None: absent)."""
        files: dict[Path, str | None] = {self.cron_file: None, self.service_file: None, self.timer_file: None}
        if self.frequency == "off":
            return files
        if self.systemd:
            files[self.service_file] = service_text(self.exe, self.prefix)
            files[self.timer_file] = timer_text(self.frequency)
        else:
            files[self.cron_file] = cron_text(self.frequency, self.exe, self.prefix)
        return files

    def _refuse_unsafe_exe(self) -> None:
        """Root will run ``exe`` unattended, every night: only a file nobody but root can change. The
        file install was started from may be the agent's (a download in its home, /tmp): refused."""
        if self.frequency == "off":
            return
        found = unsafe_component(self.exe)
        if found is None and self.exe.exists() and not self.exe.is_file():
            found = (self.exe, f"{self.exe} is not a regular file")
        if found:
            raise StepError(
                f"the auto-update would run {self.exe} as root, but {found[1]}",
                fix=f"install -o root -g root -m 0755 {self.exe} {DEFAULT_EXE} && "
                f"{DEFAULT_EXE} install --auto-update {self.frequency} ...  (the same options)",
            )

    def check(self) -> Plan:
        self._refuse_unsafe_exe()
        plan = Plan()
        for path, text in self.wanted().items():
            current = _read(path)
            if text is None and current is not None:
                plan.changes.append(f"remove {path}")
            elif text is not None and current != text:
                plan.changes.append(f"{'write' if current is None else 'update'} {path}")
        if self.frequency != "off":
            how = f"systemd timer {UNIT}.timer" if self.systemd else f"cron ({self.cron_file})"
            plan.notes.append(f"`pmcp update --quiet` runs {self.frequency} at 04:17 via {how}")
        return plan

    def apply(self) -> None:
        self._refuse_unsafe_exe()
        wanted = self.wanted()
        self._previous = {path: _read(path) for path in wanted}
        timer_was = self._previous[self.timer_file] is not None
        if timer_was and wanted[self.timer_file] is None:
            with contextlib.suppress(StepError):
                self.systemctl(["disable", "--now", f"{UNIT}.timer"])
        for path, text in wanted.items():
            _put(path, text)
        if self.systemd and (timer_was or wanted[self.timer_file] is not None):
            self.systemctl(["daemon-reload"])
        if wanted[self.timer_file] is not None:
            self.systemctl(["enable", "--now", f"{UNIT}.timer"])

    def undo(self) -> None:
        """Back to the files as they were before apply (or, with no apply in this run, remove them)."""
        previous = self._previous or dict.fromkeys(self.wanted())
        had_timer = previous.get(self.timer_file) is not None
        if not had_timer and self.timer_file.exists():
            with contextlib.suppress(StepError):
                self.systemctl(["disable", "--now", f"{UNIT}.timer"])
        for path, text in previous.items():
            _put(path, text)
        if self.systemd:
            self.systemctl(["daemon-reload"])
            if had_timer:
                self.systemctl(["enable", "--now", f"{UNIT}.timer"])


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _put(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
        return
    if _read(path) == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, mode=0o644)


def scheduled_exe(systemd_dir: Path = SYSTEMD_DIR, cron_file: Path = CRON_FILE) -> Path | None:
    """The pmcp file the installed schedule runs as root (None: no schedule)."""
    service = _read(systemd_dir / f"{UNIT}.service") or ""
    for line in service.splitlines():
        if line.startswith("ExecStart="):
            return Path(shlex.split(line.removeprefix("ExecStart="))[0])
    for line in (_read(cron_file) or "").splitlines():
        parts = line.split()
        if len(parts) > 6 and not line.startswith("#") and parts[5] == "root":
            return Path(shlex.split(" ".join(parts[6:]))[0])
    return None


def current(systemd_dir: Path = SYSTEMD_DIR, cron_file: Path = CRON_FILE) -> str:
    """What is installed now: "daily", "weekly" or "off" (for `pmcp status`)."""
    for text in (_read(systemd_dir / f"{UNIT}.timer"), _read(cron_file)):
        if text:
            return "weekly" if ("Sun " in text or "* * 0 root" in text) else "daily"
    return "off"
