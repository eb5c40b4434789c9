"""`pmcp uninstall`: the install's steps undone in reverse, with the options install recorded.

Stack down, firewall rule removed, sudoers restored from backup, token/ACL/user/role removed in the order
Proxmox needs (the identity step knows it), files removed. Backups and the audit log stay unless --purge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pmcp import record as statefile
from pmcp.lifecycle.install import InstallOptions, build
from pmcp.paths import InstallPaths
from pmcp.steps import RunResult, StepError, StepResult, undo_steps


def recorded_options(prefix: str | Path) -> InstallOptions:
    """The options the install at this prefix ran with (defaults when it never recorded them)."""
    paths = InstallPaths.at(prefix)
    data = statefile.load(paths)
    opts = InstallOptions.from_dict(data["options"]) if data.get("options") else InstallOptions()
    opts.prefix = str(paths.prefix)
    return opts


def installed(prefix: str | Path) -> bool:
    """Whether anything of an install is at this prefix (what uninstall would work from)."""
    paths = InstallPaths.at(prefix)
    return paths.state_file.exists() or paths.compose_file.exists()


def uninstall(
    prefix: str | Path,
    *,
    purge: bool = False,
    dry_run: bool = False,
    report: Callable[[StepResult], None] | None = None,
    options: InstallOptions | None = None,
    keep_images: bool = False,
) -> RunResult:
    from pmcp.lifecycle.lock import HostLock
    from pmcp.lifecycle.run import begin

    paths = InstallPaths.at(prefix)
    opts = options or recorded_options(prefix)
    transcript = begin("uninstall", paths.prefix)[2] if not dry_run else None

    def on_step(r: StepResult) -> None:
        if transcript:
            transcript.step(r)
        if report:
            report(r)

    try:
        with HostLock(command="pmcp uninstall"):
            plan = build(opts, purge=purge, dry_run=True, recorded=True, keep_images=keep_images)
            result = undo_steps(plan.steps, dry_run=dry_run, report=on_step)
    except StepError as exc:
        result = RunResult(dry_run=dry_run)
        result.steps.append(StepResult.from_error("lock", exc))
        on_step(result.steps[-1])
    if transcript:
        transcript.finish(result.ok, "removed" if result.ok else "some steps failed")
    return result
