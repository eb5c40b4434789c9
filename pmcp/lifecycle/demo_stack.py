"""`pmcp demo --stack`: the real install (real Docker, compose, Caddy, image) against the simulator.

The simulator runs as one more service of the same compose project (same image, `pmcp sim serve`), so
the server reaches it as it would reach Proxmox, and the installer's pvesh is `pmcp sim pvesh` against
its published port. No OS account is touched unless --agent-user is given. `--down` is uninstall.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from pmcp.lifecycle.install import InstallOptions, install
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
) -> InstallOptions:
    return InstallOptions(
        prefix=str(prefix or default_prefix()),
        mode=mode,
        agent_user=agent_user,
        https_port=https_port,
        http_port=0,
        server_port=server_port,
        sim=SimService(port=sim_port, guests=guests),
        host_checks=False,
        public_names=["localhost", "127.0.0.1"],
        proxmox_ca=None,
        health_timeout=health_timeout,
    )


def _echo_step(as_json: bool) -> Any:
    from pmcp.lifecycle.install import step_line

    def report(r: StepResult) -> None:
        if not as_json:
            click.echo(step_line(r), err=True)

    return report


def demo_stack(
    prefix: str | None,
    down: bool,
    mode: str,
    agent_user: str | None,
    json_info: str | None,
    guests: int,
    as_json: bool,
    **ports: Any,
) -> int:
    """Bring the demo stack up (or --down); returns the exit code."""
    opts = demo_options(prefix, mode, agent_user, guests, **ports)
    paths = InstallPaths.at(opts.prefix)
    if down:
        from pmcp.lifecycle.uninstall import uninstall

        if not paths.prefix.exists():
            click.echo(f"no demo stack at {paths.prefix}: nothing to remove", err=True)
            return 0
        res = uninstall(paths.prefix, purge=True, report=_echo_step(as_json))
        if as_json:
            click.echo(json.dumps(res.to_dict(), indent=2))
        return 0 if res.ok else 1
    if not as_json:
        click.echo(f"pmcp demo stack in {paths.prefix}", err=True)
    result = install(opts, report=_echo_step(as_json), kind="demo")
    token = ""
    if result.ok:
        from pmcp import authtokens

        tokens = authtokens.load(paths.client_tokens)
        token = tokens.get("default") or next(iter(tokens.values()), "")
    if json_info and result.ok:
        info = {"url": result.url, "token": token, "ca_file": result.ca_file, "prefix": str(paths.prefix)}
        fd = os.open(json_info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        click.echo(
            f"\nThe MCP server is up behind Caddy at {result.url}\n"
            f"  token:   in {paths.client_tokens} (NAME:TOKEN)\n"
            f"  CA:      {result.ca_file}\n"
            f"  connect: see {paths.clients_dir}/claude-code.sh (uses $PMCP_TOKEN), or\n"
            f"           pmcp client-config --prefix {paths.prefix}\n"
            f"  stop:    pmcp demo --stack --down --prefix {paths.prefix}"
        )
    return 0 if result.ok else 1
