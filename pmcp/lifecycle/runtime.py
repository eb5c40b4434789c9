"""How the server runs: the compose stack (default) or a hardened systemd unit (``--runtime systemd``).

Chosen once, at install, and recorded in state.json (``config.runtime``); every later command asks the
install's runtime (``of(paths)``) for what differs: the server's own verify rows, its services for
``status``, the ``logs`` command, and how ``update``/``rollback`` replace a running server. Everything
else -- Proxmox identity, agent account, secrets, firewall, clients, the verify session over TLS -- is
the same code for both. Switching an install between runtimes is refused with the way to do it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmcp import record as statefile
from pmcp.errors import UsageError
from pmcp.paths import InstallPaths
from pmcp.stack import render
from pmcp.steps import StepError

if TYPE_CHECKING:
    from pmcp.lifecycle.converge import Options
    from pmcp.lifecycle.run import Report
    from pmcp.lifecycle.update import Outcome
    from pmcp.lifecycle.verify import Row, Target

RUNTIMES = ("compose", "systemd")


def name_of(paths: InstallPaths) -> str:
    """The runtime the install at these paths was made with (compose for installs older than the choice)."""
    if not paths.state_file.exists():
        return "compose"
    return str((statefile.load(paths).get("config") or {}).get("runtime") or "compose")


def refuse_switch(paths: InstallPaths, wanted: str) -> None:
    """An install keeps its runtime: going from one to the other is an uninstall and an install."""
    have = name_of(paths) if paths.state_file.exists() else wanted
    if have != wanted:
        raise UsageError(
            f"the install at {paths.prefix} runs the server with {have}, not {wanted}",
            fix=f"pmcp uninstall --prefix {paths.prefix}, then pmcp install --runtime {wanted} "
            "(the audit log and backups are kept; clients need the new CA and token)",
        )


class Compose:
    """The compose stack behind Caddy (pmcp.stack, pmcp.lifecycle.converge/switch)."""

    name = "compose"

    def server_rows(self, t: Target) -> list[Row]:
        from pmcp.lifecycle import verify

        return [*verify.check_containers(t), verify.check_container_ids(t), *verify.check_images(t)]

    def health(self, t: Target) -> dict[str, Any]:
        import json
        import urllib.request

        url = f"http://127.0.0.1:{t.config.server_port}/health"
        with urllib.request.urlopen(url, timeout=15) as resp:  # the server's port: loopback only
            return dict(json.loads(resp.read()))

    def update(self, opts: Options, report: Report | None) -> Outcome:
        from pmcp.lifecycle.update import compose_update

        return compose_update(opts, report)

    def rollback(self, opts: Options, to: str | None, report: Report | None) -> Outcome:
        from pmcp.lifecycle.update import compose_rollback

        return compose_rollback(opts, to, report)


class Systemd:
    """The server run from the pmcp file under a hardened unit, terminating TLS itself (stack.systemd)."""

    name = "systemd"

    def server_rows(self, t: Target) -> list[Row]:
        from pmcp.lifecycle.verify import FAIL, PASS, Row
        from pmcp.stack import systemd as sd

        names = sd.Names(t.project)
        slot = sd.recorded_slot(t.paths)
        unit = names.instance(slot)
        rows = []
        for u in (names.socket, unit):
            ok = sd.active(u)
            rows.append(Row(f"{u} running", PASS if ok else FAIL, "active" if ok else "not active",
                            "" if ok else f"journalctl -u {u} -n 50; pmcp install"))  # fmt: skip
        pid = sd.show(unit, "MainPID").get("MainPID", "0")
        problems = hardening_problems(pid)
        rows.append(
            Row("server hardening", FAIL, "; ".join(problems), "re-run pmcp install (the unit is rewritten)")
            if problems
            else Row(
                "server hardening",
                PASS,
                f"pid {pid}: its own non-root account, no capabilities, "
                "no_new_privs, seccomp filter, read-only system",
            )
        )
        from pmcp.lifecycle.verify import check_container_ids

        return [*rows, check_container_ids(t, own_account=names.account)]

    def health(self, t: Target) -> dict[str, Any]:
        from pmcp.stack import systemd as sd

        return sd.health(t.paths, t.config, timeout=15)

    def update(self, opts: Options, report: Report | None) -> Outcome:
        return _systemd_run("update", opts, None, report)

    def rollback(self, opts: Options, to: str | None, report: Report | None) -> Outcome:
        return _systemd_run("rollback", opts, to, report)


def hardening_problems(pid: str) -> list[str]:
    """What the kernel says about the running server (not what the unit file asks): its uid, capability
    sets, no_new_privs, seccomp mode, and that /usr is read-only in its mount namespace."""
    if not pid.isdigit() or pid == "0":
        return ["the server is not running"]
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        mounts = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError as exc:
        return [f"cannot read /proc/{pid}: {exc.strerror}"]
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    get = {k: v.strip() for k, v in fields.items()}
    problems = []
    uid = get.get("Uid", "0").split()[0]
    if uid == "0":
        problems.append("runs as root")
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        if int(get.get(cap, "1"), 16):
            problems.append(f"{cap} {get.get(cap)}")
    if get.get("NoNewPrivs") != "1":
        problems.append("no_new_privs not set")
    if get.get("Seccomp") != "2":
        problems.append("no seccomp filter")
    root_ro = any(line.split()[4] == "/" and " ro," in f" {line.split()[5]}," for line in mounts.splitlines())
    usr_ro = any(
        line.split()[4] == "/usr" and line.split()[5].startswith("ro") for line in mounts.splitlines()
    )
    if not (root_ro or usr_ro):
        problems.append("the system is writable (ProtectSystem=strict not in effect)")
    return problems


def get(name: str) -> Compose | Systemd:
    if name not in RUNTIMES:
        raise UsageError(f"unknown runtime {name!r}", fix=f"--runtime one of {', '.join(RUNTIMES)}")
    return Systemd() if name == "systemd" else Compose()


def of(paths: InstallPaths) -> Compose | Systemd:
    return get(name_of(paths))


# --- status and logs ------------------------------------------------------------------------------------


def systemd_services(paths: InstallPaths, data: dict[str, Any]) -> tuple[dict[str, Any], bool, str]:
    """``pmcp status``'s services for the systemd runtime (the socket and the live instance), whether it
    answers, and what it runs: the live slot's copy of the pmcp file (no image is involved)."""
    from pmcp.stack import systemd as sd

    names = sd.Names(data.get("project") or "")
    slot = sd.recorded_slot(paths)
    cfg = render.StackConfig.from_dict(data.get("config") or {})
    digest = sd.slot_digest(names, slot)
    services: dict[str, Any] = {}
    for unit in (names.socket, names.instance(slot)):
        p = sd.show(unit, "ActiveState", "SubState", "NRestarts", "MainPID")
        services[unit] = {
            "status": f"{p.get('ActiveState', '?')}/{p.get('SubState', '?')}",
            "health": "",
            "image": f"slot {slot}: {digest[:12]}" if unit.endswith("service") else "",
            "restarts": int(p.get("NRestarts") or 0),
        }
    try:
        sd.health(paths, cfg, timeout=5)
        healthy = True
    except (OSError, ValueError):
        healthy = False
    services[names.instance(slot)]["health"] = "healthy" if healthy else "unhealthy"
    services[names.socket]["health"] = "-"
    server = f"the pmcp file {names.slot_dir(slot) / 'pmcp'} (slot {slot}, sha256 {digest[:12] or '?'})"
    return services, healthy, server


def journal_argv(project: str, follow: bool, tail: int, service: str | None) -> list[str]:
    """``pmcp logs`` for the systemd runtime: the journal of the server's instances (and the socket)."""
    from pmcp.stack import systemd as sd

    names = sd.Names(project)
    units = [names.sim] if service == "pve-sim" else [f"{project}@*.service", names.socket]
    argv = ["journalctl", "--no-pager", "-n", str(tail), *(a for u in units for a in ("-u", u))]
    return [*argv, "-f"] if follow else argv


# --- update and rollback: a hand-over between the two slots -------------------------------------------


def _systemd_run(kind: str, opts: Options, to: str | None, report: Report | None) -> Outcome:
    """update: the recorded options rendered for this file; due when the file or configuration differs from
    what the live slot runs. rollback: the other slot, as the last update left it. Either way the next
    server starts beside the live one and takes over (pmcp.stack.systemd.handover): no refused connection,
    and a new server that fails to start or answer leaves the old one serving."""
    import contextlib

    from pmcp import __version__
    from pmcp.lifecycle.converge import desired_config
    from pmcp.lifecycle.lock import HostLock
    from pmcp.lifecycle.run import Recorder, begin, utc_now
    from pmcp.lifecycle.update import Outcome, _fail, _fail_unexpected
    from pmcp.stack import systemd as sd

    paths, _redact, t = begin(kind, opts.prefix, opts.log_dir)
    out = Outcome(kind)
    rec = Recorder(out, t, report)
    try:
        with HostLock(opts.lock_file, opts.lock_timeout, f"pmcp {kind}"):
            state = statefile.load(paths)
            if not state.get("config") or not state.get("project"):
                from pmcp.errors import NotReady

                raise NotReady(
                    f"no pmcp install at {paths.prefix}", fix="pmcp install (or give its --prefix)"
                )
            names = sd.Names(state["project"])
            live = sd.recorded_slot(paths)
            slots = (state.get("systemd") or {}).get("slots") or {}
            out.from_image = f"pmcp {sd.slot_digest(names, live)[:12]} (slot {live})"
            if kind == "update":
                cfg = desired_config(state)
                out.to_image = f"pmcp {cfg.digest[:12]}"
                reasons, notes_due = systemd_due(paths, state, cfg, opts.force)
                out.reasons, out.due = reasons, bool(reasons)
                for n in notes_due:
                    rec.note(n)
                if not reasons and not opts.force:
                    out.summary = f"current: {out.from_image}" + (f" ({notes_due[0]})" if notes_due else "")
                    return _finish(paths, out, t)
                target, prepare = sd.other(live), True
            else:
                target = to or sd.other(live)
                if target not in sd.SLOTS or target not in slots or not sd.slot_digest(names, target):
                    raise StepError(
                        f"nothing to roll back to: slot {target} holds no earlier version",
                        fix="roll back by running the earlier pmcp file's `pmcp update --force`",
                    )
                cfg = render.StackConfig.from_dict(slots[target]["config"])
                prepare = False
                out.to_image = f"pmcp {sd.slot_digest(names, target)[:12]} (slot {target})"
            renew = sd.CertificateStep(paths, cfg)
            if due := renew.check().changes:  # renewed before the hand-over: the next server starts with it
                with rec.phase("certificate", "; ".join(due)):
                    renew.apply()
            with rec.phase("hand-over", f"slot {live} -> {target}") as notes:
                new = sd.handover(
                    paths, cfg, names, live, prepare=prepare, timeout=opts.health_timeout, to=target
                )
                notes.append(f"{names.instance(new)} serves; {names.instance(live)} drained and stopped")
            sd.record_slot(paths, cfg, names, new)
            rolled_from = sd.slot_digest(names, live) if not prepare else None  # cron will not re-apply it
            statefile.update(
                paths,
                config=cfg.to_dict(),
                version=__version__ if prepare else state.get("version"),
                update_skip=rolled_from,
            )
            out.changed = True
            out.summary = f"{'updated to' if prepare else 'rolled back to'} {out.to_image}"
    except StepError as exc:
        _fail(out, exc)
    except BaseException as exc:
        _fail_unexpected(out, exc, t)
    result = "ok" if out.ok else "failed"
    last = {"kind": kind, "at": utc_now(), "result": result, "changed": out.changed, "summary": out.summary}
    with contextlib.suppress(Exception):
        statefile.update(paths, last_update=last)
    return _finish(paths, out, t)


def systemd_due(
    paths: InstallPaths, state: dict[str, Any], cfg: render.StackConfig, force: bool = False
) -> tuple[list[str], list[str]]:
    """Why an update is due for the systemd runtime (empty: current), and notes: this file differs from the
    live slot's, or the configuration or units do, or the server is down, or its certificate is due for
    renewal (30 days left; an ACME certificate lives 90). A file that was rolled back from
    is not due again unless forced (as the compose runtime's update_skip)."""
    from pmcp.stack import systemd as sd

    names, live = sd.Names(state["project"]), sd.recorded_slot(paths)
    running = sd.slot_digest(names, live)
    reasons, notes = [], []
    if cfg.digest and cfg.digest != running:
        if state.get("update_skip") == cfg.digest and not force:
            notes.append(
                f"pmcp {cfg.digest[:12]} was rolled back from; `pmcp update --force` applies it anyway"
            )
        else:
            reasons.append(f"pmcp file {running[:12]} -> {cfg.digest[:12]}")
    if not sd._same(names.slot_dir(live) / "server.env", sd.server_env(cfg)):
        reasons.append("configuration differs from this version's")
    if any(not sd._same(p, text) for p, text in sd.unit_files(cfg, names, paths, live).items()):
        reasons.append("unit files differ from this version's")
    if not sd.active(names.instance(live)):
        reasons.append(f"{names.instance(live)} is not running")
    reasons += [f"certificate: {c}" for c in sd.CertificateStep(paths, cfg).check().changes]
    return reasons, notes


def _finish(paths: InstallPaths, out: Outcome, t: Any) -> Outcome:
    out.transcript = str(t.path)
    t.finish(out.ok, out.summary)
    return out


__all__ = ["RUNTIMES", "Compose", "Systemd", "get", "name_of", "of", "refuse_switch"]
