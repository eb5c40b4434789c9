"""`pmcp update` and `pmcp rollback`: converge the running stack with no failed client request.

Cron runs this unattended, so every run: takes the host lock, recovers what a killed run left behind,
validates the new compose configuration, backs the configuration up (``backups/<ts>/``, rotated), gets
the image, then switches servers through a standby (see ``switch.py``): the old version keeps serving
until the new one has passed its health check and a real MCP call, and for a grace period afterwards
it stays ready to take the traffic back. Any failure puts the previous configuration and version back
and exits non-zero with the reason and the log tail, printed and in the transcript.

The install's steps are reused, not repeated: the stack's StackContext, FilesStep (rendering) and
ImageStep (build/load) from ``pmcp.stack.steps``; the compose project and options come from state.json.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from pmcp import __version__
from pmcp import backup as backups
from pmcp import record as statefile
from pmcp.lifecycle.converge import (
    Install,
    Options,
    backup_phase,
    backup_state,
    converge,
    files_step,
    load_install,
    previous_version,
    reasons_due,
    recover,
    rotate,
    validate_files,
)
from pmcp.lifecycle.lock import HostLock
from pmcp.lifecycle.recovery import compose_processes
from pmcp.lifecycle.run import Recorder, Report, begin, utc_now
from pmcp.lifecycle.switch import SERVICE
from pmcp.lifecycle.transcript import Redactor, Transcript, prune
from pmcp.paths import InstallPaths
from pmcp.stack import engine, render
from pmcp.steps import Plan, StepError, StepResult

__all__ = [
    "EXIT_CURRENT",
    "EXIT_DUE",
    "Options",
    "Outcome",
    "check",
    "compose_processes",
    "previous_version",
    "rollback",
    "update",
]

EXIT_DUE = 0


EXIT_CURRENT = 3


@dataclass
class Outcome:
    """What a run did; ``to_dict`` is the --json output, ``steps`` the phases in order."""

    kind: str
    ok: bool = True
    changed: bool = False
    due: bool = False
    reasons: list[str] = field(default_factory=list)
    summary: str = ""
    from_image: str = ""
    to_image: str = ""
    backup: str = ""
    transcript: str = ""
    steps: list[StepResult] = field(default_factory=list)
    error: str = ""
    fix: str = ""
    detail: str = ""
    exit_code: int = 0  # the error's (pmcp.errors.ExitCode); 0 when ok

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "steps"}
        out["steps"] = [s.to_dict() for s in self.steps]
        return out


def check(opts: Options) -> Outcome:
    """`pmcp update --check`: due (exit 0) or current (exit 3); reads only, takes no lock."""
    paths = InstallPaths.at(opts.prefix)
    out = Outcome("check")
    from pmcp.lifecycle import runtime

    if runtime.name_of(paths) == "systemd":
        from pmcp.lifecycle.converge import desired_config
        from pmcp.stack import systemd as sd

        state = statefile.load(paths)
        cfg = desired_config(state)
        out.from_image = sd.slot_digest(sd.Names(state["project"]), sd.recorded_slot(paths))[:12]
        out.to_image = cfg.digest[:12]
        out.reasons, notes = runtime.systemd_due(paths, state, cfg, opts.force)
        out.due = bool(out.reasons) or opts.force
        out.summary = (
            "; ".join(out.reasons) if out.due else "; ".join([f"current ({out.from_image})", *notes])
        )
        return out
    inst = load_install(paths, None, opts, Redactor())
    out.reasons, notes = reasons_due(inst, opts.force)
    out.due = bool(out.reasons) or opts.force
    out.to_image = inst.ctx.config.mcp_image
    out.from_image = inst.state["config"].get("mcp_image", "")
    out.summary = "; ".join(out.reasons) if out.due else "; ".join([f"current ({out.from_image})", *notes])
    return out


def _finish(inst: Install | None, out: Outcome, t: Transcript) -> Outcome:
    out.transcript = str(t.path)
    if inst is not None:
        with contextlib.suppress(Exception):
            statefile.update(
                inst.paths,
                last_update={
                    "kind": out.kind,
                    "at": utc_now(),
                    "result": "ok" if out.ok else "failed",
                    "changed": out.changed,
                    "from": out.from_image,
                    "to": out.to_image,
                    "backup": out.backup,
                    "summary": out.summary,
                    "transcript": out.transcript,
                },
            )
    t.finish(out.ok, out.summary)
    with contextlib.suppress(OSError):
        prune(out.kind, directory=t.path.parent)
    return out


def _fail(out: Outcome, exc: StepError) -> None:
    out.ok = False
    out.error, out.fix, out.detail, out.exit_code = exc.message, exc.fix, exc.detail, int(exc.exit_code)
    out.summary = exc.message


def _fail_unexpected(out: Outcome, exc: BaseException, t: Any) -> None:
    """What no step expected: an Exception fails the run with its type (the traceback is in the
    transcript); an interrupt (Ctrl-C) ends the transcript and goes on up."""
    if not isinstance(exc, Exception):
        t.finish(False, "interrupted")
        raise exc
    _fail(out, StepError(f"{type(exc).__name__}: {exc}", fix="see the transcript"))


def update(opts: Options, report: Report | None = None) -> Outcome:
    """Converge the server to this pmcp file, the way its runtime replaces a server (compose: the switch
    through a standby; systemd: the hand-over between two slots); never leaves a broken server behind."""
    from pmcp.lifecycle import runtime

    return runtime.of(InstallPaths.at(opts.prefix)).update(opts, report)


def rollback(opts: Options, to: str | None = None, report: Report | None = None) -> Outcome:
    """Back to the previous version (a backup's configuration and image, or the other systemd slot)."""
    from pmcp.lifecycle import runtime

    return runtime.of(InstallPaths.at(opts.prefix)).rollback(opts, to, report)


def compose_update(opts: Options, report: Report | None = None) -> Outcome:
    """Converge the stack to this pmcp file; never leaves a broken server behind."""
    paths, redact, t = begin("update", opts.prefix, opts.log_dir)
    out = Outcome("update")
    rec = Recorder(out, t, report)
    inst: Install | None = None
    try:
        with HostLock(opts.lock_file, opts.lock_timeout, "pmcp update"):
            inst = load_install(paths, None, opts, redact)
            out.from_image = inst.state["config"].get("mcp_image", "")
            out.to_image = inst.ctx.config.mcp_image
            recover(inst, rec, opts.drain)
            _deny_protected(inst, rec)
            out.reasons, notes = reasons_due(inst, opts.force)
            out.due = bool(out.reasons)
            for n in notes:
                rec.note(n)
            if not out.reasons and not opts.force:
                out.summary = f"current: {out.from_image}" + (f" ({notes[0]})" if notes else "")
                return _finish(inst, out, t)
            _update_run(inst, rec, out, opts)
    except StepError as exc:
        _fail(out, exc)
    except BaseException as exc:
        t.line(f"interrupted: {type(exc).__name__}: {exc}")
        _fail_unexpected(out, exc, t)
    return _finish(inst, out, t)


def _deny_protected(inst: Install, rec: Recorder) -> None:
    """Every run, due or not: a guest protected since the last install (tagged pmcp-protected, say) gets its
    NoAccess ACL, so `--auto-update` picks a tag up within a day. It only narrows the token (granting and
    removing are `pmcp install`'s, with the plan shown); when Proxmox cannot be asked it warns and goes on."""
    ident = inst.state.get("identity") or {}
    if not ident.get("token_id"):
        return
    from pmcp.host.pve import ProxmoxIdentity
    from pmcp.host.run import Pvesh
    from pmcp.lifecycle.install import InstallOptions, protected_list

    opts = InstallOptions.from_dict(inst.state.get("options") or {})
    env = {**os.environ, **ident["pvesh_env"]} if ident.get("pvesh_env") else None
    userid, _, tokenid = str(ident["token_id"]).partition("!")
    step = ProxmoxIdentity(
        Pvesh(ident.get("pvesh"), env=env),
        inst.ctx.config.mode,
        inst.paths,
        pool=ident.get("pool"),
        userid=userid,
        tokenid=tokenid,
        protected=protected_list(opts),
    )
    try:
        denied = step.deny_protected()
    except StepError as exc:
        rec.note(f"warning: protected guests not converged ({exc.message}); pmcp install does it")
        return
    if denied:
        with rec.phase("protected guests", "NoAccess for newly protected guests") as notes:
            notes.extend(denied)


def _update_run(inst: Install, rec: Recorder, out: Outcome, opts: Options) -> None:
    paths, ctx = inst.paths, inst.ctx
    fstep = files_step(inst)
    with rec.phase("validate", "compose config -q on the new configuration"):
        files = fstep.wanted_files()
        validate_files(inst, files)
    point = backup_phase(rec, inst, out, f"update {out.from_image} -> {out.to_image}")
    from pmcp.stack.steps import ImageStep, ensure_audit_key

    image_step = ImageStep(ctx, remove_on_undo=False)
    with rec.phase("image", f"{ctx.config.mcp_image}") as notes:
        plan: Plan = image_step.check()
        notes.extend(plan.changes or ["present"])
        if plan.needed:
            image_step.apply()

    def write_desired() -> list[str]:
        render.ensure_dirs(paths, ctx.config.uid, ctx.config.gid)
        ensure_audit_key(paths, ctx.config.gid)  # installs made before the audit chain
        written = render.write(paths, fstep.wanted_files())
        statefile.update(
            paths,
            config=ctx.config.to_dict(),
            project=ctx.project,
            mcp_image=ctx.config.mcp_image,
            version=__version__,
            update_skip=None,
        )
        return written

    converge(inst, rec, opts, point, write_desired)
    out.changed = True
    out.summary = f"updated to {out.to_image}"
    rotate(paths, rec, opts.keep)


def compose_rollback(opts: Options, to: str | None = None, report: Report | None = None) -> Outcome:
    """Back to a backup's configuration and image, through the same switch."""
    paths, redact, t = begin("rollback", opts.prefix, opts.log_dir)
    out = Outcome("rollback")
    rec = Recorder(out, t, report)
    inst: Install | None = None
    try:
        with HostLock(opts.lock_file, opts.lock_timeout, "pmcp rollback"):
            inst = load_install(paths, None, opts, redact)
            recover(inst, rec, opts.drain)
            target = backups.get(paths, to) if to else previous_version(paths, inst.state)
            cfg = render.StackConfig.from_dict(backup_state(target)["config"])
            inst = load_install(paths, cfg, opts, redact)
            out.from_image = inst.state["config"].get("mcp_image", "")
            out.to_image = cfg.mcp_image
            _rollback_run(inst, rec, out, opts, target)
    except StepError as exc:
        _fail(out, exc)
    except (OSError, ValueError, KeyError) as exc:
        _fail(
            out, StepError(f"cannot read the backup: {exc}", fix=f"choose another one in {paths.backups_dir}")
        )
    except BaseException as exc:
        _fail_unexpected(out, exc, t)
    return _finish(inst, out, t)


def _rollback_run(inst: Install, rec: Recorder, out: Outcome, opts: Options, target: backups.Backup) -> None:
    paths, ctx = inst.paths, inst.ctx
    with rec.phase("image", f"{ctx.config.mcp_image} present") as notes:
        c = ctx.docker
        if not engine.image_present(c, ctx.config.mcp_image):
            wanted = target.images.get(SERVICE)
            if not wanted or not engine.image_present(c, wanted):
                raise StepError(
                    f"the image of backup {target.timestamp} ({ctx.config.mcp_image}) is gone from this host",
                    fix="run that version's pmcp file with `pmcp update --force` instead",
                )
            repo, _, tag = ctx.config.mcp_image.rpartition(":")
            c.images.get(wanted).tag(repo, tag)
            notes.append(f"re-tagged {wanted[:19]} as {ctx.config.mcp_image}")
    point = backup_phase(rec, inst, out, f"rollback to {target.timestamp}")
    changed_secrets = backups.changed_secrets(paths, target)
    if changed_secrets:
        rec.note(f"secrets changed since the backup and are kept as they are: {', '.join(changed_secrets)}")

    def write_desired() -> list[str]:
        backups.restore(paths, target.timestamp)
        statefile.update(paths, update_skip=out.from_image if out.from_image != out.to_image else None)
        return sorted(target.files)

    converge(inst, rec, opts, point, write_desired)
    out.changed = True
    out.summary = f"rolled back to backup {target.timestamp} ({out.to_image})"
    rotate(paths, rec, opts.keep)
