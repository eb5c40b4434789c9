"""`pmcp demo --stack`: the real install (real Docker, compose, Caddy, image) against the simulator.

The simulator runs as one more service of the same compose project (same image, `pmcp sim serve`), so
the server reaches it as it would reach Proxmox, and the installer's pvesh is `pmcp sim pvesh` against
its published port. No OS account is touched unless --agent-user is given. `--down` is uninstall.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmcp.files import atomic_write
from pmcp.lifecycle.install import InstallOptions, install
from pmcp.outcome import Result
from pmcp.paths import InstallPaths
from pmcp.stack.render import SimService
from pmcp.steps import StepResult

DEMO_HTTPS_PORT = 9443
DEMO_SERVER_PORT = 9080
DEMO_SIM_PORT = 9006


def default_prefix() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pmcp" / "demo-stack"


def demo_options(
    prefix: str | Path | None,
    mode: str = "read-only",
    agent_user: str | None = None,
    guests: int = 20,
    *,
    https_port: int = DEMO_HTTPS_PORT,
    server_port: int = DEMO_SERVER_PORT,
    sim_port: int = DEMO_SIM_PORT,
    health_timeout: float = 180.0,
    approval: str = "confirm",
    runtime: str = "compose",
) -> InstallOptions:
    return InstallOptions(
        prefix=str(prefix or default_prefix()),
        mode=mode,
        approval=approval,
        agent_user=agent_user,
        https_port=https_port,
        http_port=0,
        server_port=server_port,
        sim=SimService(port=sim_port, guests=guests),
        host_checks=False,
        public_names=["localhost", "127.0.0.1"],
        proxmox_ca=None,
        health_timeout=health_timeout,
        runtime=runtime,
    )


def demo_stack(
    prefix: str | None,
    down: bool,
    mode: str,
    agent_user: str | None,
    json_info: str | None,
    guests: int,
    report: Callable[[StepResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
    **ports: Any,
) -> Result:
    """Bring the demo stack up (or --down); the CLI renders the Result."""
    opts = demo_options(prefix, mode, agent_user, guests, **ports)
    paths = InstallPaths.at(opts.prefix)
    say = progress or (lambda _line: None)
    if down:
        from pmcp.lifecycle.uninstall import installed, uninstall

        if not installed(paths.prefix):
            return Result(
                "demo",
                data={"prefix": str(paths.prefix), "installed": False},
                text=[f"no demo stack at {paths.prefix}: nothing to remove (nothing was changed)"],
            )
        run = uninstall(paths.prefix, purge=True, report=report)
        return Result.of_run("demo", run, data={"prefix": str(paths.prefix)})
    say(f"pmcp demo stack in {paths.prefix} (the first run builds the image: a minute or two)")
    result = install(opts, report=report, kind="demo")
    res = Result.of_run("demo", result.run, transcript=result.transcript)
    res.data = {"url": result.url, "prefix": str(paths.prefix), "ca_file": result.ca_file}
    if not result.ok:
        return res
    from pmcp import authtokens

    tokens = authtokens.load(paths.client_tokens)
    token = tokens.get("default") or next(iter(tokens.values()), "")
    if json_info:
        info = {"url": result.url, "token": token, "ca_file": result.ca_file, "prefix": str(paths.prefix)}
        atomic_write(Path(json_info), json.dumps(info, indent=2) + "\n", 0o600)
    res.text = [
        f"\nThe MCP server is up {'under systemd' if opts.runtime == 'systemd' else 'behind Caddy'} "
        f"at {result.url}",
        f"  token:   in {paths.client_tokens} (NAME:TOKEN)",
        f"  CA:      {result.ca_file}",
        f"  connect: see {paths.clients_dir}/claude-code.sh (uses $PMCP_TOKEN), or",
        f"           pmcp client-config --prefix {paths.prefix}",
        f"  stop:    pmcp demo --stack --down --prefix {paths.prefix}",
    ]
    return res
