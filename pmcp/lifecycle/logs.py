"""`pmcp logs [-f]`: the stack's logs through compose, passed straight to the terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pmcp import record as statefile
from pmcp.errors import NotReady
from pmcp.paths import InstallPaths
from pmcp.stack.compose import Compose, project_name
from pmcp.steps import StepError

SERVICES = ("mcp-server", "caddy", "prometheus", "pve-sim")


def logs(prefix: str | Path, follow: bool = False, tail: int = 100, service: str | None = None) -> int:
    paths = InstallPaths.at(prefix)
    from pmcp.lifecycle import runtime

    if runtime.name_of(paths) == "systemd":  # the journal of the server's units
        project = statefile.load(paths).get("project") or project_name(paths.prefix)
        try:
            return subprocess.call(runtime.journal_argv(project, follow, tail, service))
        except KeyboardInterrupt:
            return 0
    if not paths.compose_file.exists():
        raise NotReady(f"no pmcp install at {paths.prefix}", fix="pmcp install (or --prefix DIR)")
    if service and service not in SERVICES:
        raise StepError(f"unknown service {service!r}", fix=f"one of: {', '.join(SERVICES)}")
    project = statefile.load(paths).get("project") or project_name(paths.prefix)
    argv = Compose(paths, project, ["monitoring"]).logs_argv(follow, tail, service)
    try:
        return subprocess.call(argv, cwd=paths.prefix)
    except KeyboardInterrupt:
        return 0
