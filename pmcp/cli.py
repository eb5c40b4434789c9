"""The click command tree. Thin: check the input at the edge, call the lifecycle or the server, and
render the one ``Result`` every command returns (pmcp.outcome), in one place, as text, ``--json`` or
``--quiet``. Exit codes: pmcp.errors.ExitCode (README, "Exit codes").

No input produces a traceback: a bad option is refused with its fix (exit 2), a failure the user can
act on is rendered with its fix, and an unexpected exception prints one line and the path of the
transcript that holds the traceback (exit 70).

Imports of anything heavy (docker, requests, the MCP SDK, pydantic, uvicorn) happen inside the
commands that need them, so ``pmcp --help`` stays as fast as click itself.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pmcp import DEFAULT_PREFIX, __version__, inputs
from pmcp.errors import ExitCode, NotReady, PmcpError, UsageError

MODES = list(inputs.MODES)

if TYPE_CHECKING:  # imported by the code that runs a command, not by `pmcp --help` (a test checks)
    from pmcp.outcome import Result
    from pmcp.steps import StepResult


# --- the one renderer --------------------------------------------------------------------------------


class Output:
    """How one command talks: live step lines and progress in text mode, nothing else until the end."""

    def __init__(self, command: str, as_json: bool = False, quiet: bool = False) -> None:
        self.command = command
        self.json = as_json
        self.quiet = quiet

    @property
    def text(self) -> bool:
        return not (self.json or self.quiet)

    def step(self, r: StepResult) -> None:
        """A step as it ends (a run_steps reporter)."""
        from pmcp.outcome import step_line

        if self.text:
            click.echo(step_line(r))

    def progress(self, line: str) -> None:
        """Progress of a long phase: on stderr, so stdout stays the result."""
        if self.text:
            click.echo(line, err=True)

    def result(self, **kw: Any) -> Result:
        from pmcp.outcome import Result

        return Result(self.command, **kw)


def render(res: Result, as_json: bool, quiet: bool) -> None:
    """Print a Result: the JSON envelope on stdout, or its text; an error always on stderr."""
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))
    elif not quiet:
        for line in res.text:
            click.echo(line)
    if res.error is not None:
        err = res.error
        click.echo(f"pmcp {res.command}: error: {err.message}".replace("pmcp : ", "pmcp: "), err=True)
        if not as_json:
            for line in err.detail.splitlines()[-30:]:
                click.echo(f"    {line}", err=True)
        if err.fix:
            click.echo(f"  fix: {err.fix}", err=True)
        if res.transcript:
            click.echo(f"  transcript: {res.transcript}", err=True)


def crashed(command: str, exc: BaseException) -> Result:
    """An exception nobody expected: one line for the user, the traceback into a transcript."""
    import traceback

    from pmcp.outcome import Result

    path = ""
    try:
        from pmcp.lifecycle.transcript import open_transcript

        t = open_transcript("crash")
        t.line(f"pmcp {command} {' '.join(sys.argv[1:])}")
        t.line("".join(traceback.format_exception(exc)))
        t.finish(False, f"{type(exc).__name__} (a bug)")
        path = str(t.path)
    except Exception:  # no place to write: the one line must still come out
        pass
    first = (str(exc).splitlines() or [""])[0][:200]
    err = PmcpError(
        f"unexpected {type(exc).__name__}: {first}" if first else f"unexpected {type(exc).__name__}",
        fix="this is a bug in pmcp: please report it with the transcript"
        + ("" if path else " (none could be written: run with PMCP_LOG_DIR=DIR)"),
        exit_code=ExitCode.INTERNAL,
    )
    return Result.failed(command, err, transcript=path)


def _command_name(ctx: click.Context | None) -> str:
    return " ".join(ctx.command_path.split()[1:]) if ctx else ""


def outcome(fn: Callable[..., Result | None]) -> Callable[..., None]:
    """Make a click callback a pmcp command: adds --json and --quiet, turns whatever happens into one
    Result, renders it, exits with its code. ``fn(out, **options)`` returns the Result (None: it has
    rendered itself, e.g. the demo, which prints when ready and then serves)."""

    @functools.wraps(fn)
    def wrapper(**kw: Any) -> None:
        from pmcp.outcome import Result

        ctx = click.get_current_context()
        out = Output(_command_name(ctx), kw.pop("as_json", False), kw.pop("quiet", False))
        try:
            res = fn(out, **kw)
        except PmcpError as exc:
            res = Result.failed(out.command, exc)
        except click.Abort:
            res = Result.failed(out.command, PmcpError("aborted: nothing was changed"))
        except KeyboardInterrupt:
            res = Result.failed(
                out.command,
                PmcpError("interrupted", fix="run it again: each step is safe to repeat",
                          exit_code=ExitCode.INTERRUPTED),
            )  # fmt: skip
        except (SystemExit, click.exceptions.Exit):
            raise
        except PermissionError as exc:  # not a bug: a file only root (or its owner) may read or write
            where = exc.filename or "a file"
            res = Result.failed(
                out.command,
                NotReady(f"permission denied: {where}", fix=f"run as root: sudo pmcp {out.command} ..."),
            )
        except Exception as exc:
            res = crashed(out.command, exc)
        if res is None:
            ctx.exit(0)
        render(res, out.json, out.quiet)
        ctx.exit(res.code)

    wrapper = click.option("--quiet", "-q", is_flag=True, help="Print only errors (for cron).")(wrapper)
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON result (also on failure).")(
        wrapper
    )


def _failed(command: str, err: PmcpError) -> Result:
    from pmcp.outcome import Result

    return Result.failed(command, err)


class PmcpGroup(click.Group):
    """The root group: click's own errors (unknown option, bad number, missing argument) and a bad
    value refused by a check take the same way out as every other failure."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        extra.pop("standalone_mode", None)
        try:
            code = super().main(argv, "pmcp", standalone_mode=False, **extra)  # one name, also in tests
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "pmcp"
            res = _failed(
                _command_name(exc.ctx), UsageError(exc.format_message(), fix=f"see `{where} --help`")
            )
            code = self._render(res, argv)
        except click.ClickException as exc:
            res = _failed("", PmcpError(exc.format_message(), exit_code=exc.exit_code))
            code = self._render(res, argv)
        except click.Abort:
            code = self._render(_failed("", PmcpError("aborted: nothing was changed")), argv)
        except PmcpError as exc:  # a check in a parameter type
            code = self._render(_failed(getattr(exc, "command", ""), exc), argv)
        except KeyboardInterrupt:
            code = ExitCode.INTERRUPTED
        except Exception as exc:
            code = self._render(crashed(" ".join(a for a in argv[:1] if not a.startswith("-")), exc), argv)
        sys.exit(code or 0)

    @staticmethod
    def _render(res: Result, argv: list[str]) -> int:
        render(res, "--json" in argv, "--quiet" in argv or "-q" in argv)
        return res.code


class Checked(click.ParamType):
    """A click type that runs one of pmcp.inputs' checks; the refusal names the option and the fix."""

    def __init__(self, check: Callable[[Any], Any], name: str = "text", base: type = str) -> None:
        self.check = check
        self.name = name
        self.base = base

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str) or self.base is str:
            raw = value
        else:
            try:
                raw = self.base(value)
            except ValueError:
                self.fail(f"{value!r} is not a {self.name}", param, ctx)
        try:
            return self.check(raw)
        except UsageError as exc:
            opt = (
                (param.opts[-1] if param.opts and param.param_type_name == "option" else None)
                if param
                else None
            )
            label = opt or (param.human_readable_name if param else "")
            err = UsageError(f"{label} {value}: {exc.message}" if label else exc.message, fix=exc.fix)
            err.command = _command_name(ctx)  # type: ignore[attr-defined]
            raise err from None


def port_type(allow_zero: bool = False, zero_means: str = "none") -> Checked:
    from pmcp import inputs

    return Checked(lambda v: inputs.port(v, allow_zero=allow_zero, zero_means=zero_means), "port", int)


def _lazy(name: str, **kw: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        from pmcp import inputs

        return getattr(inputs, name)(value, **kw)

    return check


SECONDS = Checked(_lazy("non_negative"), "number", float)


def require_root(what: str) -> None:
    """Commands that change the host say so first, before any other check can bury it."""
    if os.geteuid() != 0:
        raise NotReady(
            f"pmcp {what} changes this host and must run as root",
            fix=f"sudo pmcp {what} ... (or run it in a root shell)",
        )


def tty() -> bool:
    return sys.stdin.isatty()


prefix_option = click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    type=Checked(_lazy("absolute_dir"), "directory"),
    help="Install directory of the stack.",
)


@click.group(
    cls=PmcpGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, "-V", "--version", prog_name="pmcp")
def main() -> None:
    """Install, run and keep up to date a least-privilege MCP server for Proxmox VE.

    Copy this one file onto a Proxmox host and run `pmcp install`. Try it anywhere with
    `pmcp demo`: the real server against a built-in Proxmox simulator.

    Every command takes --json (one JSON result, on failure too) and --quiet. Exit codes: 0 ok,
    1 failed, 2 bad option, 3 no update due (update --check), 4 host not ready (root, preflight,
    nothing installed, another run), 70 a bug (the transcript has the traceback), 130 interrupted.
    """


runtime_option = click.option(
    "--runtime",
    type=click.Choice(["compose", "systemd"]),
    default="compose",
    show_default=True,
    help="How the server runs: the compose stack behind Caddy (Docker), or a hardened systemd unit "
    "terminating TLS itself (no Docker). Chosen at the first install.",
)


@main.command()
@prefix_option
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="read-only",
    show_default=True,
    help="What the MCP server may do on Proxmox (the role of its API token).",
)
@click.option(
    "--approval",
    type=click.Choice(["confirm", "elicit"]),
    help="Destructive calls are approved by the person through the client (MCP elicitation); where a "
    "client cannot ask them: confirm = the model's confirm=true (default), elicit = refused. A re-run "
    "without it keeps the recorded choice.",
)
@click.option(
    "--approval-scope",
    type=click.Choice(["destructive", "changes"]),
    help="Which calls need approval: destructive ones and those that create or consume resources "
    "(default), or every change. A re-run without it keeps the recorded choice.",
)
@click.option(
    "--pool",
    metavar="NAME",
    type=Checked(_lazy("pool"), "pool name"),
    help="Limit the token to one resource pool (default: all of /).",
)
@click.option(
    "--agent-user",
    default="claude-user",
    show_default=True,
    help="The agent's OS account to contain (the default is skipped with a notice when absent; '' to skip).",
)
@click.option(
    "--edit-shared-sudoers",
    is_flag=True,
    help="Let pmcp also take the agent out of /etc/sudoers and of sudo rules other accounts share "
    "(backed up; uninstall restores them). Without it, install refuses and names each line.",
)
@click.option("--rotate-token", is_flag=True, help="Replace the Proxmox API token even if it still works.")
@click.option(
    "--domain",
    metavar="NAME",
    # syntax only here; a single-label name is allowed or refused by InstallOptions, which knows --acme-ca
    type=Checked(_lazy("dns_name", single_label=True), "DNS name"),
    help="Public DNS name: Caddy gets a certificate by ACME.",
)
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
@click.option(
    "--https-port", default=443, show_default=True, type=port_type(), help="Port Caddy serves HTTPS on."
)
@click.option(
    "--http-port",
    default=80,
    show_default=True,
    type=port_type(allow_zero=True),
    help="HTTP port (redirect, ACME), 0: none.",
)
@click.option(
    "--server-port", default=8080, show_default=True, type=port_type(), help="Server port on 127.0.0.1."
)
@click.option(
    "--allow-from",
    metavar="CIDR",
    type=Checked(_lazy("cidr"), "IPv4 network"),
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
@click.option(
    "--node",
    metavar="NAME",
    type=Checked(_lazy("node"), "node name"),
    help="This Proxmox node's name (default: detected).",
)
@click.option(
    "--proxmox-trust",
    type=click.Choice(["auto", "pve-ca", "system", "pin"]),
    default="auto",
    show_default=True,
    help="How the server trusts port 8006: the host's CA, the system store (public ACME), or a pin.",
)
@runtime_option
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; also implied when there is no TTY.")
@outcome
def install(out: Output, prefix: str, dry_run: bool, yes: bool, **options: Any) -> Result:
    """Set up the MCP stack on this Proxmox host, verified, in one command.

    Preflight checks, a least-privilege Proxmox identity (user, role, privilege-separated token), a
    contained agent OS account, the container image, the compose stack behind Caddy with TLS,
    the firewall rule, client configuration and a final verification. Re-running it changes nothing
    that is already right.
    """
    from pmcp import inputs
    from pmcp.lifecycle.install import InstallOptions, check_host
    from pmcp.lifecycle.install import install as run_install
    from pmcp.outcome import Result

    ctx = click.get_current_context()
    opts = InstallOptions(prefix=str(prefix), **options)
    named = ctx.get_parameter_source("agent_user") is not click.core.ParameterSource.DEFAULT
    opts.agent_user = inputs.agent_user(opts.agent_user, must_exist=named) if opts.agent_user else None
    opts.validate()
    require_root("install")
    opts.prefix = str(inputs.writable_dir(str(prefix)))
    if not (yes or dry_run or out.json or out.quiet) and tty():
        check_host(opts)  # every blocking problem before the question, not after the answer
        click.confirm(f"Install pmcp into {prefix} on this host?", abort=True, default=True)
    result = run_install(opts, dry_run=dry_run, report=out.step)
    res = Result.of_run("install", result.run, transcript=result.transcript)
    res.data = {
        k: v for k, v in result.to_dict().items() if k not in ("ok", "changed", "steps", "transcript")
    }
    if result.ok and not dry_run:
        res.text = [
            f"\nMCP endpoint: {result.url}",
            f"client token: {result.token_file}",
            *([f"Caddy root CA: {result.ca_file}"] if result.ca_file else []),
            f"connect a client: pmcp client-config --prefix {prefix}",
        ]
    elif result.ok:
        res.text = ["\ndry run: nothing was changed"]
    return res


lock_timeout_option = click.option(
    "--lock-timeout",
    default=60.0,
    show_default=True,
    type=SECONDS,
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
    type=SECONDS,
    metavar="SECONDS",
    help="After the switch, how long the new server must stay healthy before the old one is stopped.",
)


def _lifecycle_result(command: str, o: Any) -> Result:
    """An update/rollback Outcome as the one Result."""
    from pmcp.outcome import Result

    envelope = ("ok", "changed", "steps", "transcript", "error", "fix", "detail", "exit_code")
    data = {k: v for k, v in o.to_dict().items() if k not in envelope}
    res = Result(command, ok=o.ok, changed=o.changed, steps=list(o.steps), data=data, transcript=o.transcript)
    if not o.ok:
        res.error = PmcpError(o.error or f"{command} failed", o.fix, o.detail, exit_code=o.exit_code or 1)
    else:
        res.text = [o.summary or "ok"]
    return res


@main.command()
@prefix_option
@click.option("--check", is_flag=True, help="Exit 0 when an update is due, 3 when current (other: error).")
@click.option("--force", is_flag=True, help="Run the whole update path even when current.")
@keep_option
@click.option(
    "--bundle", type=click.Path(dir_okay=False, exists=True), help="Load the images from this pmcp bundle."
)
@lock_timeout_option
@grace_option
@outcome
def update(
    out: Output,
    prefix: str,
    check: bool,
    force: bool,
    keep: int,
    bundle: str | None,
    lock_timeout: float,
    grace: float,
) -> Result:
    """Converge the installed stack to this file's version, with no failed client request.

    Safe from cron: locked, backed up, and the old server keeps serving when anything fails. A
    transcript of every run goes to /var/log/pmcp/update-<timestamp>.log.
    """
    from pmcp.lifecycle import update as upd

    opts = upd.Options(prefix, force=force, keep=keep, bundle=bundle, lock_timeout=lock_timeout, grace=grace)
    if check:
        res = upd.check(opts)
        return out.result(
            data={k: res.to_dict()[k] for k in ("due", "reasons", "summary", "from_image", "to_image")},
            text=[("update due: " if res.due else "") + res.summary],
            exit_code=upd.EXIT_DUE if res.due else upd.EXIT_CURRENT,
        )
    require_root("update")
    return _lifecycle_result("update", upd.update(opts, report=out.step))


@main.command()
@prefix_option
@outcome
def status(out: Output, prefix: str) -> Result:
    """Show services, health, versions, URL, token age and the last update."""
    from pmcp.lifecycle.status import render_text
    from pmcp.lifecycle.status import status as get_status

    st = get_status(prefix)
    res = out.result(ok=bool(st["healthy"]), data=st, text=[render_text(st)])
    if not res.ok:
        res.error = PmcpError(
            "the MCP server is not running and healthy", fix="pmcp logs mcp-server; pmcp verify"
        )
    return res


@main.command()
@prefix_option
@outcome
def verify(out: Output, prefix: str) -> Result:
    """Prove the install works: a real MCP session through the proxy, and the security checks."""
    from pmcp.lifecycle.verify import FAIL, run_verify

    report = run_verify(prefix)
    res = out.result(ok=report.ok, data=report.to_dict(), text=[report.table()])
    failed = [r for r in report.rows if r.result == FAIL]
    if failed:
        res.error = PmcpError(
            f"{len(failed)} check(s) failed: {', '.join(r.check for r in failed)}",
            fix=failed[0].fix or "see the table above",
        )
    return res


@main.command()
@prefix_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option(
    "--tail", default=100, show_default=True, type=click.IntRange(min=0), help="Lines to show from the end."
)
@click.argument(
    "service", required=False, type=click.Choice(["mcp-server", "caddy", "prometheus", "pve-sim"])
)
@outcome
def logs(out: Output, prefix: str, follow: bool, tail: int, service: str | None) -> Result:
    """Show the stack's logs (all services, or one: mcp-server, caddy, prometheus)."""
    from pmcp.lifecycle.logs import logs as show_logs

    code = show_logs(prefix, follow, tail, service)
    if code:
        return out.result(ok=False, error=PmcpError(f"compose logs exited {code}", fix="pmcp status"))
    return out.result()


@main.group()
def audit() -> None:
    """Prove the audit log whole (HMAC chain) or export it for a log system."""


@audit.command("verify")
@prefix_option
@outcome
def audit_verify(out: Output, prefix: str) -> Result:
    """Verify the audit log's HMAC chain: exit 0 when whole, 1 naming the first edited, missing,
    reordered or cut record by file and line."""
    from pmcp.lifecycle import audit as audit_log

    v = audit_log.verify(prefix, progress=out.progress)
    res = out.result(ok=v.ok, data=v.to_dict(), text=[v.summary])  # type: ignore[attr-defined]
    res.error = audit_log.broken(v)
    return res


@audit.command("export")
@prefix_option
@click.option(
    "--since",
    type=Checked(_lazy("since"), "time"),
    help="Only records from then on: 2026-01-31, 2026-01-31T12:00:00Z, or an age such as 7d or 24h.",
)
@click.option(
    "-o",
    "--output",
    type=Checked(_lazy("new_file"), "file"),
    help="Write the JSON lines to this file (0600) instead of stdout.",
)
@outcome
def audit_export(out: Output, prefix: str, since: Any, output: Any) -> Result:
    """Write the audit records as JSON lines, as sealed (seq, mac), oldest first, for a log system;
    exits 1 (after writing) when the log does not verify."""
    from pmcp.lifecycle import audit as audit_log

    if output is None and out.json:
        raise UsageError("--json prints the result on stdout, so the records need -o FILE", fix="add -o FILE")
    count, v = audit_log.export(prefix, since, output)
    where = str(output) if output else "stdout"
    data = {"records": count, "output": where, "verification": v.to_dict()}  # type: ignore[attr-defined]
    text = [f"{count} records written to {where}"] if output else []  # stdout holds the records
    res = out.result(ok=v.ok, data=data, text=text)  # type: ignore[attr-defined]
    res.error = audit_log.broken(v)
    if res.error:
        res.error.message = f"{count} records written, but {res.error.message}"
    return res


@main.command()
@prefix_option
@click.option("--dry-run", is_flag=True, help="Print what would be removed and change nothing.")
@click.option("--purge", is_flag=True, help="Also delete backups and the audit log.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@outcome
def uninstall(out: Output, prefix: str, dry_run: bool, purge: bool, yes: bool) -> Result:
    """Undo every install step in reverse; keeps backups and the audit log unless --purge."""
    from pmcp.lifecycle.uninstall import installed
    from pmcp.lifecycle.uninstall import uninstall as run_uninstall
    from pmcp.outcome import Result

    require_root("uninstall")
    if not installed(prefix):
        return out.result(
            data={"prefix": str(prefix), "installed": False},
            text=[f"nothing to remove: no pmcp install at {prefix} (nothing was changed)"],
        )
    if not (yes or dry_run or out.json or out.quiet) and tty():
        what = "everything, backups and audit log too" if purge else "the stack (backups and audit log stay)"
        click.confirm(f"Remove pmcp from {prefix}: {what}?", abort=True, default=False)
    run = run_uninstall(prefix, purge=purge, dry_run=dry_run, report=out.step)
    res = Result.of_run("uninstall", run, data={"prefix": str(prefix), "dry_run": dry_run})
    res.text = (
        ["\ndry run: nothing was changed" if dry_run else f"\npmcp removed from {prefix}"] if run.ok else []
    )
    return res


@main.command()
@prefix_option
@click.option("--to", "to", metavar="TIMESTAMP", help="Backup to return to (default: the latest).")
@click.option("--list", "list_only", is_flag=True, help="List the backups and exit.")
@keep_option
@lock_timeout_option
@grace_option
@outcome
def rollback(
    out: Output,
    prefix: str,
    to: str | None,
    list_only: bool,
    keep: int,
    lock_timeout: float,
    grace: float,
) -> Result:
    """Return to a backup's configuration and image, with the same zero-downtime switch."""
    from pmcp.lifecycle import update as upd

    if list_only:
        from pmcp import backup
        from pmcp.paths import InstallPaths

        found = backup.list_backups(InstallPaths.at(prefix))
        lines = [f"{b.timestamp}  {b.images.get('mcp-server', '?')[:19]}  {b.reason}" for b in found]
        return out.result(
            data={"backups": [b.to_dict() for b in found]},
            text=lines or [f"no backups in {InstallPaths.at(prefix).backups_dir}"],
        )
    require_root("rollback")
    opts = upd.Options(prefix, keep=keep, lock_timeout=lock_timeout, grace=grace)
    return _lifecycle_result("rollback", upd.rollback(opts, to, report=out.step))


@main.command("client-config")
@prefix_option
@click.option(
    "--client",
    type=click.Choice(["claude-code", "claude-desktop", "cursor", "vscode", "codex", "windsurf", "all"]),
    default="claude-code",
    show_default=True,
    help="Which AI client to configure.",
)
@click.option(
    "--name",
    default="pmcp",
    show_default=True,
    type=Checked(_lazy("name", what="server name"), "name"),
    help="The server's name in the client.",
)
@click.option(
    "--url",
    type=Checked(_lazy("url"), "URL"),
    help="The MCP endpoint (default: the URL Caddy serves, from the install's state).",
)
@click.option("--show-token", is_flag=True, help="Put the literal token in the output (else a reference).")
@click.option(
    "--token-name",
    metavar="NAME",
    type=Checked(_lazy("name", what="token name"), "name"),
    help="Which client token to use (default: the only one).",
)
@click.option(
    "-o",
    "--output",
    type=Checked(_lazy("new_file", make_dirs=True), "file"),
    help="Write to FILE instead of stdout (an existing client config file is merged, not replaced).",
)
@click.option(
    "--ca-cert",
    type=Checked(_lazy("new_file"), "file"),
    help="Export the server's root certificate (Caddy's; pmcp's own under --runtime systemd) to FILE; the "
    "output says how each client trusts it.",
)
@click.option(
    "--new-token",
    metavar="NAME",
    type=Checked(_lazy("name", what="token name"), "name"),
    help="Add a named client token (shown once, or put in -o FILE).",
)
@click.option(
    "--revoke",
    metavar="NAME",
    type=Checked(_lazy("name", what="token name"), "name"),
    help="Remove a client token (the server needs no restart).",
)
@click.option(
    "--mode",
    "token_mode",
    type=Checked(_lazy("client_mode"), "mode"),
    help="With --new-token/--token-name: this client's mode (read-only, operator, admin; at most the "
    "install's).",
)
@click.option(
    "--scope",
    metavar="tag:T,pool:P",
    type=Checked(_lazy("client_scope"), "scope"),
    help="With --new-token/--token-name: the guests this client sees and touches (any listed tag or "
    "pool); '' removes it.",
)
@click.option(
    "--budget",
    type=Checked(_lazy("client_budget"), "number", int),
    help="With --new-token/--token-name: destructive actions per hour (default: the server's, 10).",
)
@outcome
def client_config(
    out: Output,
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
    token_mode: str | None,
    scope: str | None,
    budget: int | None,
) -> Result:
    """Print the configuration that connects an AI client to this server.

    Without --show-token the token is referenced (PMCP_TOKEN, a VS Code prompt), never printed.
    A token can be limited below the install: --mode, --scope (Proxmox tags and pools), --budget.
    """
    from pmcp import clients

    limits = clients.LimitOptions(token_mode, scope, budget)
    if revoke and limits.given:
        raise UsageError(
            "--revoke removes a token; --mode, --scope and --budget set a token's limits",
            fix=f"run them separately: --revoke {revoke}, or --token-name {revoke} --mode …",
        )
    if revoke:
        message = clients.revoke_token(prefix, revoke)
        return out.result(changed=True, data={"revoked": revoke, "message": message}, text=[message])
    prepared = clients.prepare(
        prefix,
        client,
        name=name,
        url=url,
        token_name=token_name,
        show_token=show_token or bool(new_token and output),
        ca_cert=str(ca_cert) if ca_cert else None,
        new_token=new_token,
        limits=limits,
    )
    if output:
        path, secret = clients.write_output(prepared, str(output), out.json)
        mode = "0600" if secret else "0644"
        if not out.quiet:  # on stderr: stdout stays empty (or the JSON result) when the output is a file
            click.echo(f"Wrote {path} (mode {mode}).", err=True)
            for note in [] if out.json else [n for cfg in prepared.configs for n in cfg.notes]:
                click.echo(f"- {note}", err=True)
        return out.result(
            changed=True,
            data={"output": str(path), "mode": mode, "token_name": prepared.token_name}
            | ({"limits": prepared.limits} if prepared.limits is not None else {}),
        )
    text = []
    if prepared.new_token:
        text.append(f"New client token {prepared.token_name!r} (shown once): {prepared.new_token}\n")
    if prepared.limits is not None:
        text.append(f"Limits of {prepared.token_name!r}: {clients.describe_limits(prepared.limits)}\n")
    if prepared.ca_file:
        text.append(f"Exported Caddy's root certificate to {prepared.ca_file}.\n")
    text.append(clients.render_text(prepared.configs).rstrip("\n"))
    return out.result(
        changed=bool(prepared.new_token or prepared.ca_file or prepared.limits is not None),
        data=prepared.to_dict(),
        text=text,
    )


@main.group()
def bundle() -> None:
    """Air-gapped installs: every image the stack needs, in one verified archive."""


@bundle.command("create")
@click.option(
    "-o",
    "--output",
    default="pmcp-bundle.tar.gz",
    show_default=True,
    type=Checked(_lazy("new_file"), "file"),
)
@click.option("--monitoring", is_flag=True, help="Also bundle Prometheus (for `install --monitoring`).")
@click.option("--image", "names", multiple=True, metavar="NAME", help="Bundle these instead (repeatable).")
@click.option(
    "--with-mcp-image", is_flag=True, help="Build the MCP image here; bundle it instead of the Python base."
)
@click.option("--no-pull", is_flag=True, help="Use local images only; fail when one is missing.")
@outcome
def bundle_create(
    out: Output, output: Any, monitoring: bool, names: tuple[str, ...], with_mcp_image: bool, no_pull: bool
) -> Result:
    """Save the images the stack needs (Python base, Caddy, …) into one gzip tar with a manifest.

    Takes the images already present locally and pulls only the missing ones. Copy the bundle (and
    the .sha256 beside it) to the air-gapped host, then `pmcp install --bundle FILE`.
    """
    from pmcp.stack import bundle as b

    output = str(output)
    mcp = b.build_mcp_image(out.progress) if with_mcp_image else None
    images = list(names) or b.default_images(monitoring, mcp)
    manifest = b.create_bundle(output, images, pull_missing=not no_pull, progress=out.progress)
    size = os.path.getsize(output)
    text = [f"{e.name}  {e.id[:19]}  {e.size / 1e6:.1f} MB" for e in manifest.images]
    text += [
        f"Wrote {output} ({size / 1e6:.1f} MB, sha256 in {output}.sha256).",
        f"On the air-gapped host: pmcp bundle verify {output} && pmcp install --bundle {output}",
    ]
    data = {"output": os.path.abspath(output), "size": size, **manifest.to_dict()}
    return out.result(changed=True, data=data, text=text)


@bundle.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@outcome
def bundle_verify(out: Output, file: str) -> Result:
    """Check a bundle's structure and every image's sha256; changes nothing."""
    from pmcp.stack import bundle as b

    manifest = b.verify_bundle(file, progress=out.progress)
    text = [f"ok  {e.name}  {e.id[:19]}  {e.size / 1e6:.1f} MB" for e in manifest.images]
    text.append(f"{file}: {len(manifest.images)} images, every checksum matches.")
    return out.result(data=manifest.to_dict(), text=text)


@bundle.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@outcome
def bundle_load(out: Output, file: str) -> Result:
    """Verify a bundle, then load its images into the local Docker engine (no network needed)."""
    from pmcp.stack import bundle as b

    loaded = b.load_bundle(file, progress=out.progress)
    return out.result(changed=bool(loaded), data={"loaded": loaded}, text=[f"loaded {n}" for n in loaded])


def _free(host: str, port: int, fix: str) -> None:
    """A taken port is said before a server tries it (and fails with a raw errno and a traceback)."""
    from pmcp.host.preflight import port_free

    if port and not port_free(host, port):
        raise NotReady(f"port {port} on {host} is already in use", fix=fix)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=port_type(), help="Port to listen on.")
@outcome
def serve(out: Output, host: str, port: int) -> Result:
    """Run the MCP server (Streamable HTTP at /mcp), configured from PMCP_* and PROXMOX_* variables.

    Refuses a non-loopback address unless PMCP_AUTH_TOKEN_FILE holds client tokens.
    """
    from pmcp.server.config import ConfigError
    from pmcp.server.serve import listen_fd
    from pmcp.server.serve import serve as run_server

    try:
        if listen_fd() is None:  # else systemd's socket unit listens for it (--runtime systemd)
            _free(host, port, "stop what listens there (ss -ltnp), or choose another --port")
    except OSError as exc:
        raise UsageError(
            f"--host {host}: {exc.strerror or exc}", fix="an address of this host, e.g. 127.0.0.1"
        ) from None
    try:
        run_server(host, port)
    except ConfigError as exc:
        raise UsageError(str(exc), fix="set the PMCP_* and PROXMOX_* variables (README: More)") from None
    return out.result()


@main.command()
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=port_type(allow_zero=True, zero_means="any free port"),
    help="MCP server port (0: any free).",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="admin",
    show_default=True,
    help="Policy mode to rehearse (admin: nothing real is at stake).",
)
@click.option(
    "--approval",
    type=click.Choice(["confirm", "elicit"]),
    default="confirm",
    show_default=True,
    help="Where the client cannot ask its person (MCP elicitation): confirm=true, or refuse.",
)
@click.option(
    "--guests", default=50, show_default=True, type=click.IntRange(1, 20000), help="Simulated guests."
)
@click.option(
    "--json-info",
    type=Checked(_lazy("new_file"), "file"),
    help='Write {"url", "token"} to FILE (0600).',
)
@click.option("--stack", is_flag=True, help="Run the demo as the full compose stack (Docker, Caddy).")
@click.option("--down", is_flag=True, help="Stop and remove a demo stack started with --stack.")
@click.option(
    "--prefix",
    default="/var/lib/pmcp-demo",
    show_default=True,
    type=Checked(_lazy("absolute_dir"), "directory"),
    help="Install directory of the demo stack (--stack/--down).",
)
@click.option("--agent-user", help="OS account for the agent in the demo stack (--stack).")
@runtime_option
@outcome
def demo(
    out: Output,
    port: int,
    mode: str,
    approval: str,
    guests: int,
    json_info: Any,
    stack: bool,
    down: bool,
    prefix: Any,
    agent_user: str | None,
    runtime: str,
) -> Result | None:
    """Run the real MCP server against the built-in Proxmox simulator, and show how to connect."""
    json_info = str(json_info) if json_info else None
    if stack or down:
        from pmcp import inputs
        from pmcp.lifecycle.demo_stack import demo_stack

        if agent_user:
            inputs.agent_user(agent_user, must_exist=True)
        require_root("demo --stack")
        if not down:
            inputs.writable_dir(str(prefix))
        return demo_stack(
            prefix=str(prefix),
            down=down,
            mode=mode,
            approval=approval,
            agent_user=agent_user,
            json_info=json_info,
            guests=guests,
            report=out.step,
            progress=out.progress,
            runtime=runtime,
        )
    _free(
        "127.0.0.1",
        port,
        "another port: pmcp demo --port N (make demo PORT=N), or --port 0 for any free one",
    )
    out.progress("pmcp demo: starting the simulator and the MCP server ...")
    from pmcp.demo import run_demo
    from pmcp.server.config import ConfigError

    def ready(info: Any) -> None:
        if out.json:
            data = {"url": info.url, "token": info.token, "sim_url": info.sim_url,
                    "audit_log": info.audit_log, "proof": info.proof}  # fmt: skip
            render(out.result(data=data), True, False)

    try:
        run_demo(
            port=port,
            mode=mode,
            approval=approval,
            guests=guests,
            json_info=json_info,
            echo=click.echo if out.text else (lambda _line: None),
            on_ready=ready,
        )
    except ConfigError as exc:
        raise NotReady(str(exc), fix="pmcp demo --port 0 (any free port)") from None
    return None


@main.group()
def sim() -> None:
    """The built-in Proxmox VE API simulator (for the demo, the tests and the benchmarks)."""


@sim.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8006, show_default=True, type=port_type(allow_zero=True, zero_means="any free port"),
    help="Port to listen on.",
)  # fmt: skip
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 100), help="Cluster nodes.")
@click.option("--guests", default=50, show_default=True, type=click.IntRange(0, 100000), help="VMs + CTs.")
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same cluster.")
@click.option("--task-seconds", default=1.0, show_default=True, type=SECONDS, help="How long each task runs.")
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
@outcome
def sim_serve(
    out: Output,
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
) -> Result:
    """Serve a simulated Proxmox VE API at /api2/json (root credential: PMCP_SIM_ROOT_TOKEN)."""
    from pmcp.sim.run import serve as run_sim

    try:
        run_sim(
            host, port, nodes, guests, seed, task_seconds, tls, state_file, tls_dir, tls_names, verbose,
            pve_version=int(pve_version), tls_ca_key_usage=tls_ca_keyusage, tls_custom_name=tls_custom_cert,
            local_addrs=local_addrs, firewall=firewall,
        )  # fmt: skip
    except (OSError, ValueError, RuntimeError) as exc:
        raise NotReady(
            f"cannot start the simulator: {exc}", fix="another --port, or check --tls-dir/--state"
        ) from None
    return out.result()


@sim.command(
    "pvesh",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sim_pvesh(args: tuple[str, ...]) -> None:
    """Proxmox's pvesh against the simulator: pvesh get|create|set|delete PATH [--k v ...].

    Talks as root to PMCP_SIM_URL (default http://127.0.0.1:8006) with PMCP_SIM_ROOT_TOKEN. It answers
    as pvesh does (its own --output-format json, exit codes and messages), so it takes no --json.
    """
    from pmcp.sim.pvesh import run_pvesh

    sys.exit(run_pvesh(list(args)))


@sim.command("pveversion")
@click.option("--verbose", "-v", is_flag=True, help="List the package versions too.")
@outcome
def sim_pveversion(out: Output, verbose: bool) -> Result:
    """Answer like Proxmox's pveversion (PMCP_SIM_PVE_VERSION overrides the version)."""
    from pmcp.sim.pvesh import pveversion_text

    text = pveversion_text(verbose).rstrip("\n")
    return out.result(data={"pveversion": text}, text=[text])


@sim.command("routes")
@outcome
def sim_routes(out: Output) -> Result:
    """Every method and path the simulator serves."""
    from pmcp.sim.routes import all_routes

    served = all_routes()
    return out.result(
        data={"routes": [{"method": m, "path": p} for m, p in served]},
        text=[f"{method:6} {path}" for method, path in served],
    )


if __name__ == "__main__":  # pragma: no cover
    main()
