"""The click command tree. Thin: parse, call the lifecycle or the server, render.

Imports of anything heavy (docker, requests, the MCP SDK, pydantic, uvicorn) happen inside the
commands that need them, so ``pmcp --help`` stays as fast as click itself.
"""

from __future__ import annotations

import json
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
@click.option(
    "--mode",
    type=click.Choice(["read-only", "operator", "admin"]),
    default="read-only",
    show_default=True,
    help="What the MCP server may do on Proxmox (the role of its API token).",
)
@click.option("--pool", metavar="NAME", help="Limit the token to one resource pool (default: all of /).")
@click.option(
    "--agent-user",
    default="claude-user",
    show_default=True,
    help="The agent's OS account to contain (skipped with a notice when absent; '' to skip).",
)
@click.option(
    "--edit-shared-sudoers",
    is_flag=True,
    help="Let pmcp also take the agent out of /etc/sudoers and of sudo rules other accounts share "
    "(backed up; uninstall restores them). Without it, install refuses and names each line.",
)
@click.option("--rotate-token", is_flag=True, help="Replace the Proxmox API token even if it still works.")
@click.option("--domain", metavar="NAME", help="Public DNS name: Caddy gets a certificate by ACME.")
@click.option(
    "--acme-ca",
    metavar="URL",
    help="ACME directory (https) for --domain instead of Let's Encrypt, e.g. your step-ca.",
)
@click.option(
    "--acme-ca-root",
    type=click.Path(dir_okay=False, exists=True),
    help="PEM root(s) of that private ACME CA, trusted by Caddy and verify.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Your certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), help="Its private key (PEM).")
@click.option("--https-port", default=443, show_default=True, type=int, help="Port Caddy serves HTTPS on.")
@click.option("--http-port", default=80, show_default=True, help="HTTP port (redirect, ACME), 0: none.")
@click.option("--server-port", default=8080, show_default=True, type=int, help="Server port on 127.0.0.1.")
@click.option(
    "--allow-from",
    metavar="CIDR",
    help="Only this IPv4 CIDR may reach the HTTPS port (pve-firewall + DOCKER-USER); published on IPv4 only.",
)
@click.option(
    "--images",
    "--bundle",
    "images",
    type=click.Path(dir_okay=False, exists=True),
    help="Load images from this archive (pmcp bundle or docker save, gzip).",
)
@click.option("--monitoring", is_flag=True, help="Also run Prometheus (127.0.0.1:9090).")
@click.option(
    "--auto-update",
    type=click.Choice(["daily", "weekly", "off"]),
    help="Run `pmcp update --quiet` on a schedule (systemd timer, else /etc/cron.d/pmcp); off removes it.",
)
@click.option(
    "--protect",
    metavar="VMIDS",
    help="Guests the agent may never touch (e.g. 100,105; '' clears): PMCP_PROTECTED and a NoAccess ACL "
    "for the token. Guests tagged pmcp-protected get one too. Default: what the last install recorded.",
)
@click.option("--node", metavar="NAME", help="This Proxmox node's name (default: detected).")
@click.option(
    "--proxmox-trust",
    type=click.Choice(["auto", "pve-ca", "system", "pin"]),
    default="auto",
    show_default=True,
    help="How the server trusts port 8006: the host's CA, the system store (public ACME), or a pin.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; also implied when there is no TTY.")
@json_option
def install(prefix: str, dry_run: bool, yes: bool, as_json: bool, **options: object) -> None:
    """Set up the MCP stack on this Proxmox host, verified, in one command.

    Preflight checks, a least-privilege Proxmox identity (user, role, privilege-separated token), a
    contained agent OS account, the container image, the compose stack behind Caddy with TLS,
    the firewall rule, client configuration and a final verification. Re-running it changes nothing
    that is already right.
    """
    from pmcp.lifecycle.install import InstallOptions, step_line
    from pmcp.lifecycle.install import install as run_install

    opts = InstallOptions(prefix=prefix, **options)  # type: ignore[arg-type]
    opts.agent_user = opts.agent_user or None
    if not (yes or dry_run or as_json) and sys.stdin.isatty():
        click.confirm(f"Install pmcp into {prefix} on this host?", abort=True, default=True)

    def report(r: object) -> None:
        if not as_json:
            click.echo(step_line(r))  # type: ignore[arg-type]

    result = run_install(opts, dry_run=dry_run, report=report)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif result.ok and not dry_run:
        click.echo(f"\nMCP endpoint: {result.url}\nclient token: {result.token_file}")
        if result.ca_file:
            click.echo(f"Caddy root CA: {result.ca_file}")
        click.echo(f"connect a client: pmcp client-config --prefix {prefix}")
    sys.exit(0 if result.ok else 1)


lock_timeout_option = click.option(
    "--lock-timeout",
    default=60.0,
    show_default=True,
    type=float,
    metavar="SECONDS",
    help="How long to wait for another pmcp run on this host to finish.",
)
keep_option = click.option(
    "--keep", default=5, show_default=True, type=click.IntRange(min=1), help="Backups to keep."
)
grace_option = click.option(
    "--grace",
    default=10.0,
    show_default=True,
    type=float,
    metavar="SECONDS",
    help="After the switch, how long the new server must stay healthy before the old one is stopped.",
)


def _render_lifecycle(outcome: object, quiet: bool, as_json: bool) -> None:
    """Print an update/rollback Outcome: JSON, quiet (errors only, for cron mail) or one line a phase."""
    import json

    out = outcome.to_dict()  # type: ignore[attr-defined]
    if as_json:
        click.echo(json.dumps(out, indent=2))
    elif not quiet:
        for step in out["steps"]:
            line = f"[{step['status']}] {step['name']}"
            if step.get("changes"):
                line += ": " + "; ".join(step["changes"])
            click.echo(line)
            for note in step.get("notes", []):
                click.echo(f"    {note}")
        click.echo(out["summary"] or ("ok" if out["ok"] else "failed"))
    if not out["ok"] and not as_json:
        click.echo(f"pmcp {out['kind']} failed: {out['error']}", err=True)
        if out.get("detail"):
            click.echo("\n".join("    " + line for line in out["detail"].splitlines()), err=True)
        if out.get("fix"):
            click.echo(f"fix: {out['fix']}", err=True)
        if out.get("transcript"):
            click.echo(f"transcript: {out['transcript']}", err=True)


@main.command()
@prefix_option
@click.option("--check", is_flag=True, help="Exit 0 when an update is due, 3 when current (1 on error).")
@click.option("--force", is_flag=True, help="Run the whole update path even when current.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors (for cron).")
@keep_option
@click.option(
    "--bundle", type=click.Path(dir_okay=False, exists=True), help="Load the images from this pmcp bundle."
)
@lock_timeout_option
@grace_option
@json_option
def update(
    prefix: str,
    check: bool,
    force: bool,
    quiet: bool,
    keep: int,
    bundle: str | None,
    lock_timeout: float,
    grace: float,
    as_json: bool,
) -> None:
    """Converge the installed stack to this file's version, with no failed client request.

    Safe from cron: locked, backed up, and the old server keeps serving when anything fails. A
    transcript of every run goes to /var/log/pmcp/update-<timestamp>.log.
    """
    from pmcp.lifecycle import update as upd
    from pmcp.steps import StepError

    opts = upd.Options(prefix, force=force, keep=keep, bundle=bundle, lock_timeout=lock_timeout, grace=grace)
    if check:
        try:
            res = upd.check(opts)
        except StepError as exc:
            message = f"{exc.message} (fix: {exc.fix})" if exc.fix else exc.message
            raise click.ClickException(message) from None
        if as_json:
            import json

            click.echo(json.dumps(res.to_dict(), indent=2))
        elif not quiet:
            click.echo(("update due: " if res.due else "") + res.summary)
        sys.exit(upd.EXIT_DUE if res.due else upd.EXIT_CURRENT)
    outcome = upd.update(opts)
    _render_lifecycle(outcome, quiet, as_json)
    sys.exit(0 if outcome.ok else 1)


@main.command()
@prefix_option
@json_option
def status(prefix: str, as_json: bool) -> None:
    """Show services, health, versions, URL, token age and the last update."""
    from pmcp.lifecycle.status import render_text
    from pmcp.lifecycle.status import status as get_status
    from pmcp.steps import StepError

    try:
        st = get_status(prefix)
    except StepError as exc:
        raise click.ClickException(f"{exc.message} (fix: {exc.fix})") from None
    click.echo(json.dumps(st, indent=2) if as_json else render_text(st))
    sys.exit(0 if st["healthy"] else 1)


@main.command()
@prefix_option
@json_option
def verify(prefix: str, as_json: bool) -> None:
    """Prove the install works: a real MCP session through the proxy, and the security checks."""
    from pmcp.lifecycle.verify import run_verify
    from pmcp.steps import StepError

    try:
        report = run_verify(prefix)
    except StepError as exc:
        raise click.ClickException(f"{exc.message} (fix: {exc.fix})") from None
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    sys.exit(0 if report.ok else 1)


@main.command()
@prefix_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default=100, show_default=True, help="Lines to show from the end.")
@click.argument("service", required=False)
def logs(prefix: str, follow: bool, tail: int, service: str | None) -> None:
    """Show the stack's logs (all services, or one: mcp-server, caddy, prometheus)."""
    from pmcp.lifecycle.logs import logs as show_logs
    from pmcp.steps import StepError

    try:
        sys.exit(show_logs(prefix, follow, tail, service))
    except StepError as exc:
        raise click.ClickException(f"{exc.message} (fix: {exc.fix})") from None


@main.command()
@prefix_option
@click.option("--dry-run", is_flag=True, help="Print what would be removed and change nothing.")
@click.option("--purge", is_flag=True, help="Also delete backups and the audit log.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@json_option
def uninstall(prefix: str, dry_run: bool, purge: bool, yes: bool, as_json: bool) -> None:
    """Undo every install step in reverse; keeps backups and the audit log unless --purge."""
    from pmcp.lifecycle.install import step_line
    from pmcp.lifecycle.uninstall import uninstall as run_uninstall

    if not (yes or dry_run or as_json) and sys.stdin.isatty():
        what = "everything, backups and audit log too" if purge else "the stack (backups and audit log stay)"
        click.confirm(f"Remove pmcp from {prefix}: {what}?", abort=True, default=False)

    def report(r: object) -> None:
        if not as_json:
            click.echo(step_line(r))  # type: ignore[arg-type]

    result = run_uninstall(prefix, purge=purge, dry_run=dry_run, report=report)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    sys.exit(0 if result.ok else 1)


@main.command()
@prefix_option
@click.option("--to", "to", metavar="TIMESTAMP", help="Backup to return to (default: the latest).")
@click.option("--list", "list_only", is_flag=True, help="List the backups and exit.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors.")
@keep_option
@lock_timeout_option
@grace_option
@json_option
def rollback(
    prefix: str,
    to: str | None,
    list_only: bool,
    quiet: bool,
    keep: int,
    lock_timeout: float,
    grace: float,
    as_json: bool,
) -> None:
    """Return to a backup's configuration and image, with the same zero-downtime switch."""
    from pmcp.lifecycle import update as upd

    if list_only:
        import json

        from pmcp import backup
        from pmcp.paths import InstallPaths

        found = backup.list_backups(InstallPaths.at(prefix))
        if as_json:
            click.echo(json.dumps([b.to_dict() for b in found], indent=2))
        for b in [] if as_json else found:
            click.echo(f"{b.timestamp}  {b.images.get('mcp-server', '?')[:19]}  {b.reason}")
        if not found and not as_json:
            click.echo(f"no backups in {InstallPaths.at(prefix).backups_dir}", err=True)
        return
    opts = upd.Options(prefix, keep=keep, lock_timeout=lock_timeout, grace=grace)
    outcome = upd.rollback(opts, to)
    _render_lifecycle(outcome, quiet, as_json)
    sys.exit(0 if outcome.ok else 1)


@main.command("client-config")
@prefix_option
@click.option(
    "--client",
    type=click.Choice(["claude-code", "claude-desktop", "cursor", "vscode", "codex", "windsurf", "all"]),
    default="claude-code",
    show_default=True,
    help="Which AI client to configure.",
)
@click.option("--name", default="pmcp", show_default=True, help="The server's name in the client.")
@click.option("--url", help="The MCP endpoint (default: the URL Caddy serves, from the install's state).")
@click.option("--show-token", is_flag=True, help="Put the literal token in the output (else a reference).")
@click.option("--token-name", metavar="NAME", help="Which client token to use (default: the only one).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to FILE instead of stdout (an existing client config file is merged, not replaced).",
)
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False),
    help="Export Caddy's root certificate to FILE; the output says how each client trusts it.",
)
@click.option("--new-token", metavar="NAME", help="Add a named client token (shown once, or put in -o FILE).")
@click.option("--revoke", metavar="NAME", help="Remove a client token (the server needs no restart).")
@json_option
def client_config(
    prefix: str,
    client: str,
    name: str,
    url: str | None,
    show_token: bool,
    token_name: str | None,
    output: str | None,
    ca_cert: str | None,
    new_token: str | None,
    revoke: str | None,
    as_json: bool,
) -> None:
    """Print the configuration that connects an AI client to this server.

    Without --show-token the token is referenced (PMCP_TOKEN, a VS Code prompt), never printed.
    """
    import json

    from pmcp import clients

    try:
        if revoke:
            message = clients.revoke_token(prefix, revoke)
            click.echo(json.dumps({"revoked": revoke, "message": message}) if as_json else message)
            return
        prepared = clients.prepare(
            prefix,
            client,
            name=name,
            url=url,
            token_name=token_name,
            show_token=show_token or bool(new_token and output),
            ca_cert=ca_cert,
            new_token=new_token,
        )
        if output:
            path, secret = clients.write_output(prepared, output, as_json)
            click.echo(f"Wrote {path} (mode {'0600' if secret else '0644'}).", err=True)
            if not as_json:
                for cfg in prepared.configs:
                    for note in cfg.notes:
                        click.echo(f"- {note}", err=True)
            return
    except clients.ClientConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(prepared.to_dict(), indent=2))
        return
    if prepared.new_token:
        click.echo(f"New client token {prepared.token_name!r} (shown once): {prepared.new_token}\n")
    if prepared.ca_file:
        click.echo(f"Exported Caddy's root certificate to {prepared.ca_file}.\n")
    click.echo(clients.render_text(prepared.configs), nl=False)


@main.group()
def bundle() -> None:
    """Air-gapped installs: every image the stack needs, in one verified archive."""


@bundle.command("create")
@click.option("-o", "--output", default="pmcp-bundle.tar.gz", show_default=True, type=click.Path())
@click.option("--monitoring", is_flag=True, help="Also bundle Prometheus (for `install --monitoring`).")
@click.option("--image", "names", multiple=True, metavar="NAME", help="Bundle these instead (repeatable).")
@click.option(
    "--with-mcp-image", is_flag=True, help="Build the MCP image here; bundle it instead of the Python base."
)
@click.option("--no-pull", is_flag=True, help="Use local images only; fail when one is missing.")
@json_option
def bundle_create(
    output: str, monitoring: bool, names: tuple[str, ...], with_mcp_image: bool, no_pull: bool, as_json: bool
) -> None:
    """Save the images the stack needs (Python base, Caddy, …) into one gzip tar with a manifest.

    Takes the images already present locally and pulls only the missing ones. Copy the bundle (and
    the .sha256 beside it) to the air-gapped host, then `pmcp install --bundle FILE`.
    """
    import json
    import os

    from pmcp.stack import bundle as b

    def progress(line: str) -> None:
        click.echo(line, err=True)

    try:
        mcp = b.build_mcp_image(progress) if with_mcp_image else None
        images = list(names) or b.default_images(monitoring, mcp)
        manifest = b.create_bundle(output, images, pull_missing=not no_pull, progress=progress)
    except b.BundleError as exc:
        raise click.ClickException(f"{exc.message}. Fix: {exc.fix}" if exc.fix else exc.message) from None
    size = os.path.getsize(output)
    if as_json:
        doc = {"output": os.path.abspath(output), "size": size, **manifest.to_dict()}
        click.echo(json.dumps(doc, indent=2))
        return
    for e in manifest.images:
        click.echo(f"{e.name}  {e.id[:19]}  {e.size / 1e6:.1f} MB")
    click.echo(f"Wrote {output} ({size / 1e6:.1f} MB, sha256 in {output}.sha256).")
    click.echo(f"On the air-gapped host: pmcp bundle verify {output} && pmcp install --bundle {output}")


@bundle.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def bundle_verify(file: str, as_json: bool) -> None:
    """Check a bundle's structure and every image's sha256; changes nothing."""
    import json

    from pmcp.stack import bundle as b

    try:
        manifest = b.verify_bundle(file, progress=None if as_json else lambda m: click.echo(m, err=True))
    except b.BundleError as exc:
        raise click.ClickException(f"{exc.message}. Fix: {exc.fix}" if exc.fix else exc.message) from None
    if as_json:
        click.echo(json.dumps({"ok": True, **manifest.to_dict()}, indent=2))
        return
    for e in manifest.images:
        click.echo(f"ok  {e.name}  {e.id[:19]}  {e.size / 1e6:.1f} MB")
    click.echo(f"{file}: {len(manifest.images)} images, every checksum matches.")


@bundle.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
def bundle_load(file: str) -> None:
    """Verify a bundle, then load its images into the local Docker engine (no network needed)."""
    from pmcp.stack import bundle as b

    try:
        loaded = b.load_bundle(file, progress=lambda m: click.echo(m, err=True))
    except b.BundleError as exc:
        raise click.ClickException(f"{exc.message}. Fix: {exc.fix}" if exc.fix else exc.message) from None
    for name in loaded:
        click.echo(f"loaded {name}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run the MCP server (Streamable HTTP at /mcp), configured from PMCP_* and PROXMOX_* variables.

    Refuses a non-loopback address unless PMCP_AUTH_TOKEN_FILE holds client tokens.
    """
    from pmcp.server.config import ConfigError
    from pmcp.server.serve import serve as run_server

    try:
        run_server(host, port)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--port", default=8080, show_default=True, type=int, help="MCP server port (0: any free).")
@click.option(
    "--mode",
    type=click.Choice(["read-only", "operator", "admin"]),
    default="admin",
    show_default=True,
    help="Policy mode to rehearse (admin: nothing real is at stake).",
)
@click.option(
    "--guests", default=50, show_default=True, type=click.IntRange(1, 20000), help="Simulated guests."
)
@click.option("--json-info", type=click.Path(dir_okay=False), help='Write {"url", "token"} to FILE (0600).')
@click.option("--stack", is_flag=True, help="Run the demo as the full compose stack (Docker, Caddy).")
@click.option("--down", is_flag=True, help="Stop and remove a demo stack started with --stack.")
@click.option(
    "--prefix",
    default="/var/lib/pmcp-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Install directory of the demo stack (--stack/--down).",
)
@click.option("--agent-user", help="OS account for the agent in the demo stack (--stack).")
def demo(
    port: int,
    mode: str,
    guests: int,
    json_info: str | None,
    stack: bool,
    down: bool,
    prefix: str,
    agent_user: str | None,
) -> None:
    """Run the real MCP server against the built-in Proxmox simulator, and show how to connect."""
    if stack or down:
        from pmcp.lifecycle.demo_stack import demo_stack

        code = demo_stack(
            prefix=prefix,
            down=down,
            mode=mode,
            agent_user=agent_user,
            json_info=json_info,
            guests=guests,
            as_json=False,
        )
        if code:
            sys.exit(code)
        return
    from pmcp.demo import run_demo
    from pmcp.server.config import ConfigError

    try:
        run_demo(port=port, mode=mode, guests=guests, json_info=json_info, echo=click.echo)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def sim() -> None:
    """The built-in Proxmox VE API simulator (for the demo, the tests and the benchmarks)."""


@sim.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8006, show_default=True, type=int, help="Port to listen on.")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 100), help="Cluster nodes.")
@click.option("--guests", default=50, show_default=True, type=click.IntRange(0, 100000), help="VMs + CTs.")
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same cluster.")
@click.option("--task-seconds", default=1.0, show_default=True, type=float, help="How long each task runs.")
@click.option("--tls", is_flag=True, help="Serve HTTPS with a generated CA (clients verify with it).")
@click.option("--tls-dir", type=click.Path(file_okay=False), help="Where the CA and certificate live.")
@click.option("--tls-name", "tls_names", multiple=True, help="Extra host name or IP for the certificate.")
@click.option(
    "--tls-ca-keyusage",
    is_flag=True,
    help="Give the CA keyUsage, as CAs made since Proxmox fixed bug 6701 (default: none, as most hosts).",
)
@click.option(
    "--tls-custom-cert",
    metavar="NAME",
    help="Also serve a custom/ACME-style certificate for NAME only (pveproxy-ssl.pem), as pveproxy does.",
)
@click.option(
    "--local-addr",
    "local_addrs",
    multiple=True,
    help="A source address that counts as the node itself for the firewall ('gateway': the default gateway).",
)
@click.option("--firewall", is_flag=True, help="Start with the Proxmox firewall on (a fresh state only).")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), help="Persist state in this file.")
@click.option(
    "--pve-version",
    type=click.Choice(["9", "8"]),
    default="9",
    show_default=True,
    help="Proxmox VE major version.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log every request.")
def sim_serve(
    host: str,
    port: int,
    nodes: int,
    guests: int,
    seed: int,
    task_seconds: float,
    tls: bool,
    tls_dir: str | None,
    tls_names: tuple[str, ...],
    tls_ca_keyusage: bool,
    tls_custom_cert: str | None,
    local_addrs: tuple[str, ...],
    firewall: bool,
    state_file: str | None,
    pve_version: str,
    verbose: bool,
) -> None:
    """Serve a simulated Proxmox VE API at /api2/json (root credential: PMCP_SIM_ROOT_TOKEN)."""
    from pmcp.sim.run import serve as run_sim

    try:
        run_sim(
            host, port, nodes, guests, seed, task_seconds, tls, state_file, tls_dir, tls_names, verbose,
            pve_version=int(pve_version), tls_ca_key_usage=tls_ca_keyusage, tls_custom_name=tls_custom_cert,
            local_addrs=local_addrs, firewall=firewall,
        )  # fmt: skip
    except (OSError, ValueError, RuntimeError) as exc:
        raise click.ClickException(f"cannot start the simulator: {exc}") from None


@sim.command(
    "pvesh",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sim_pvesh(args: tuple[str, ...]) -> None:
    """Proxmox's pvesh against the simulator: pvesh get|create|set|delete PATH [--k v ...].

    Talks as root to PMCP_SIM_URL (default http://127.0.0.1:8006) with PMCP_SIM_ROOT_TOKEN.
    """
    from pmcp.sim.pvesh import run_pvesh

    sys.exit(run_pvesh(list(args)))


@sim.command("pveversion")
@click.option("--verbose", "-v", is_flag=True, help="List the package versions too.")
def sim_pveversion(verbose: bool) -> None:
    """Answer like Proxmox's pveversion (PMCP_SIM_PVE_VERSION overrides the version)."""
    from pmcp.sim.pvesh import pveversion_text

    click.echo(pveversion_text(verbose))


@sim.command("routes")
@json_option
def sim_routes(as_json: bool) -> None:
    """Every method and path the simulator serves."""
    import json

    from pmcp.sim.routes import all_routes

    served = all_routes()
    if as_json:
        click.echo(json.dumps([{"method": m, "path": p} for m, p in served], indent=1))
    else:
        for method, path in served:
            click.echo(f"{method:6} {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
