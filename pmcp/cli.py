"""The click command tree. Thin: parse, call the lifecycle or the server, render.

Imports of anything heavy (docker, requests, the MCP SDK, pydantic, uvicorn) happen inside the
commands that need them, so ``pmcp --help`` stays as fast as click itself.
"""

from __future__ import annotations

import sys

import click

from pmcp import __version__

DEFAULT_PREFIX = "/opt/proxmox-mcp"


class NotImplementedYet(click.ClickException):
    """A command that is not built yet: exit 2 and say so, never pretend to succeed."""

    exit_code = 2

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: not implemented yet")


prefix_option = click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Install directory of the stack.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON result.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="pmcp")
def main() -> None:
    """Install, run and keep up to date a least-privilege MCP server for Proxmox VE.

    Copy this one file onto a Proxmox host and run `pmcp install`. Try it anywhere with
    `pmcp demo`: the real server against a built-in Proxmox simulator.
    """


@main.command()
@prefix_option
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; also implied when there is no TTY.")
@json_option
def install(prefix: str, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Set up the MCP stack on this Proxmox host, verified, in one command.

    Preflight checks, a least-privilege Proxmox identity (user, role, privilege-separated token), a
    contained agent OS account, the container image, the compose stack behind Caddy with TLS,
    the firewall rule, client configuration and a final verification. Re-running it changes nothing
    that is already right.
    """
    raise NotImplementedYet("pmcp install")


@main.command()
@prefix_option
@click.option("--check", is_flag=True, help="Exit 0 when an update is due, 3 when current.")
@click.option("--force", is_flag=True, help="Run the whole update path even when current.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors (for cron).")
def update(prefix: str, check: bool, force: bool, quiet: bool) -> None:
    """Converge the installed stack to this file's version, with no failed client request.

    Safe from cron: locked, backed up, and the old server keeps serving when anything fails.
    """
    raise NotImplementedYet("pmcp update")


@main.command()
@prefix_option
@json_option
def status(prefix: str, as_json: bool) -> None:
    """Show services, health, versions, URL, token age and the last update."""
    raise NotImplementedYet("pmcp status")


@main.command()
@prefix_option
@json_option
def verify(prefix: str, as_json: bool) -> None:
    """Prove the install works: a real MCP session through the proxy, and the security checks."""
    raise NotImplementedYet("pmcp verify")


@main.command()
@prefix_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default=100, show_default=True, help="Lines to show from the end.")
@click.argument("service", required=False)
def logs(prefix: str, follow: bool, tail: int, service: str | None) -> None:
    """Show the stack's logs (all services, or one: mcp-server, caddy, prometheus)."""
    raise NotImplementedYet("pmcp logs")


@main.command()
@prefix_option
@click.option("--dry-run", is_flag=True, help="Print what would be removed and change nothing.")
@click.option("--purge", is_flag=True, help="Also delete backups and the audit log.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@json_option
def uninstall(prefix: str, dry_run: bool, purge: bool, yes: bool, as_json: bool) -> None:
    """Undo every install step in reverse; keeps backups and the audit log unless --purge."""
    raise NotImplementedYet("pmcp uninstall")


@main.command()
@prefix_option
@click.option("--to", "to", metavar="TIMESTAMP", help="Backup to return to (default: the latest).")
def rollback(prefix: str, to: str | None) -> None:
    """Return to a backup's configuration and image, with the same zero-downtime switch."""
    raise NotImplementedYet("pmcp rollback")


@main.command("client-config")
@prefix_option
@click.option(
    "--client",
    type=click.Choice(["claude-code", "claude-desktop", "cursor", "vscode", "codex", "windsurf", "all"]),
    default="claude-code",
    show_default=True,
    help="Which AI client to configure.",
)
def client_config(prefix: str, client: str) -> None:
    """Print the configuration that connects an AI client to this server."""
    raise NotImplementedYet("pmcp client-config")


@main.group()
def bundle() -> None:
    """Air-gapped installs: every image the stack needs, in one verified archive."""


@bundle.command("create")
@click.option("-o", "--output", default="pmcp-bundle.tar.gz", show_default=True, type=click.Path())
def bundle_create(output: str) -> None:
    """Save the images the stack needs (Python base, Caddy, …) into one gzip tar with a manifest."""
    raise NotImplementedYet("pmcp bundle create")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run the MCP server (Streamable HTTP at /mcp), configured from PMCP_* and PROXMOX_* variables."""
    raise NotImplementedYet("pmcp serve")


@main.command()
@click.option("--port", default=8080, show_default=True, type=int, help="Port of the MCP server.")
def demo(port: int) -> None:
    """Run the real MCP server against the built-in Proxmox simulator, and show how to connect."""
    raise NotImplementedYet("pmcp demo")


@main.group()
def sim() -> None:
    """The built-in Proxmox VE API simulator (for the demo, the tests and the benchmarks)."""


@sim.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8006, show_default=True, type=int)
def sim_serve(host: str, port: int) -> None:
    """Serve a simulated Proxmox VE API at /api2/json."""
    raise NotImplementedYet("pmcp sim serve")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
