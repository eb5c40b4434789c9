"""The zero-downtime switch itself, shared by update and rollback: what the stack should be, why an
update is due, recovery of a killed run, validation, the candidate / standby / switch / grace / drain
choreography (see switch.py and ARCHITECTURE.md) and the way back when anything fails."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmcp import __version__
from pmcp import backup as backups
from pmcp import record as statefile
from pmcp.errors import NotReady
from pmcp.lifecycle.lock import DEFAULT_TIMEOUT
from pmcp.lifecycle.recovery import compose_processes, phase_clear, phase_load, phase_save, wait_compose
from pmcp.lifecycle.run import Recorder
from pmcp.lifecycle.switch import SERVICE, UPSTREAM_FILE, Switch
from pmcp.lifecycle.transcript import Redactor
from pmcp.paths import InstallPaths
from pmcp.stack import engine, images, render
from pmcp.steps import StepError

NOT_RECREATED = ("pve-sim",)  # the demo's simulator plays Proxmox: an update does not restart "Proxmox"


@dataclass
class Options:
    prefix: str | Path
    force: bool = False
    keep: int = backups.DEFAULT_KEEP
    bundle: str | None = None
    lock_timeout: float = DEFAULT_TIMEOUT
    grace: float = 10.0
    drain: float = 30.0
    health_timeout: float = 180.0
    lock_file: str | Path | None = None
    log_dir: str | Path | None = None


def desired_config(state: dict[str, Any]) -> render.StackConfig:
    """What install would render now for the recorded options, with this pmcp file's image: the very
    function install uses (so "current" means the same thing to both)."""
    from pmcp.lifecycle.install import InstallOptions, stack_config

    if state.get("options"):
        return stack_config(InstallOptions.from_dict(state["options"]), existing=state["config"])
    cfg = render.StackConfig.from_dict(state["config"])  # an install that recorded no options
    self_file = engine.self_file()
    if self_file is not None:
        cfg.digest = engine.file_digest(self_file)
        build = images.build_id(cfg.digest, cfg.base_image, render.template_text("Dockerfile"))
        cfg.mcp_image = images.mcp_image(__version__, build)
    return cfg


@dataclass
class Install:
    paths: InstallPaths
    state: dict[str, Any]
    ctx: Any  # pmcp.stack.steps.StackContext
    switch: Switch


def load_install(
    paths: InstallPaths, cfg: render.StackConfig | None, opts: Options, redact: Redactor
) -> Install:
    from pmcp.stack.steps import StackContext

    try:
        state = statefile.load(paths)
    except ValueError as exc:
        raise StepError(str(exc), fix=f"restore {paths.state_file} from {paths.backups_dir}") from exc
    if not state.get("config") or not state.get("project") or not paths.compose_file.exists():
        raise NotReady(f"no pmcp install at {paths.prefix}", fix="pmcp install (or give its --prefix)")
    config = cfg or desired_config(state)
    ctx = StackContext(
        paths,
        config,
        state["project"],
        images_archive=opts.bundle,
        health_timeout=opts.health_timeout,
        redact=redact,
    )
    sw = Switch(paths, state["project"], ctx.docker, redact, opts.health_timeout)
    return Install(paths, state, ctx, sw)


def backup_phase(rec: Any, inst: Install, out: Any, reason: str) -> backups.Backup:
    """Back up the configuration, the running image ids and the versions before any change."""
    with rec.phase("backup", f"configuration -> {inst.paths.backups_dir}") as notes:
        point = backups.backup(
            inst.paths,
            reason,
            images=running_images(inst),
            versions={"pmcp": __version__, "server_image": out.from_image},
        )
        out.backup = point.timestamp
        notes.append(f"backup {point.timestamp}")
    return point


def files_step(inst: Install) -> Any:
    from pmcp.stack.steps import FilesStep

    return FilesStep(inst.ctx)


def reasons_due(inst: Install, force: bool = False) -> tuple[list[str], list[str]]:
    """Why an update is due (empty: current), and notes."""
    reasons: list[str] = []
    notes: list[str] = []
    cfg, recorded = inst.ctx.config, inst.state["config"]
    changed = [k for k, v in cfg.to_dict().items() if recorded.get(k) != v]
    if "mcp_image" in changed:
        reasons.append(f"server image {recorded.get('mcp_image') or '?'} -> {cfg.mcp_image}")
    others = [k for k in changed if k not in ("mcp_image", "digest")]
    if others:
        reasons.append(f"options changed: {', '.join(sorted(others))}")
    if not reasons:
        files = files_step(inst).check()
        if files.needed:
            reasons.append("configuration files differ from this version's templates")
    phase = phase_load(inst.paths)
    if phase or helpers_left(inst):
        where = f" (phase {phase.get('phase')})" if phase else ""
        reasons.append(f"an interrupted update is to be finished{where}")
    server = inst.switch.server()
    if not inst.switch.healthy(server):
        reasons.append(f"{SERVICE} is not running and healthy")
    else:
        want = engine.image_present(inst.ctx.docker, cfg.mcp_image)
        if want and server.attrs.get("Image") != want and not any("server image" in r for r in reasons):
            reasons.append(f"{SERVICE} does not run {cfg.mcp_image}")
    skip = inst.state.get("update_skip")
    if skip and skip == cfg.mcp_image and not force:
        notes.append(f"{cfg.mcp_image} was rolled back from; `pmcp update --force` applies it anyway")
        reasons = [r for r in reasons if "server image" not in r and "does not run" not in r]
    return reasons, notes


def running_images(inst: Install) -> dict[str, str]:
    return {svc: st.image for svc, st in engine.states(inst.ctx.docker, inst.ctx.project).items()}


def compose_up_server(inst: Install) -> Any:
    inst.ctx.compose().run("up", "-d", "--no-deps", "--force-recreate", SERVICE)
    server = inst.switch.server()
    if server is None:
        raise StepError(f"compose did not create {SERVICE}", fix="pmcp logs")
    return server


def helpers_left(inst: Install) -> bool:
    return any(inst.switch.helper(role) is not None for role in ("standby", "candidate"))


def recover(inst: Install, rec: Recorder, drain: float) -> None:
    """Finish what a killed run left: candidate and standby containers, half-written configuration."""
    sw, paths = inst.switch, inst.paths
    phase = phase_load(paths)
    if not phase and not helpers_left(inst):
        return
    with rec.phase("recover", f"finish an interrupted run ({phase.get('phase', 'unknown phase')})") as notes:
        if compose_processes(inst.ctx.project):
            notes.append("waited for the killed run's compose command to finish")
            if wait_compose(inst.ctx.project):
                raise StepError(
                    "a compose command of the interrupted run is still running",
                    fix=f"wait for it (ps -ef | grep {inst.ctx.project}), then run again",
                )
        if sw.remove("candidate", drain=0):
            notes.append("leftover candidate removed")
        server = sw.server()
        server_ok = False
        if server is not None and server.status == "running":  # perhaps still starting: check waits
            try:
                notes.append(f"{SERVICE}: " + sw.check(server, SERVICE))
                server_ok = True
            except StepError as exc:
                notes.append(f"{SERVICE} fails its check: {exc.message}")
        if not server_ok:
            if phase.get("backup"):
                backups.restore(paths, phase["backup"])
                notes.append(f"configuration restored from backup {phase['backup']}")
            server = compose_up_server(inst)
            notes.append(f"{SERVICE}: " + sw.check(server, SERVICE))
        if sw.remove("standby", drain):
            notes.append("standby drained and removed")
        phase_clear(paths)
        inst.state = statefile.load(paths)


def validate_files(inst: Install, files: dict[str, render.FileSpec]) -> None:
    """`compose config -q` on the new files, in a scratch dir, before anything changes."""
    from pmcp.stack.compose import Compose

    scratch = inst.paths.prefix / ".next"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        for rel, spec in files.items():
            target = scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(spec.content)
        Compose(InstallPaths.at(scratch), inst.ctx.project, ["monitoring"]).config_check()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def watch(inst: Install, server: Any, grace: float) -> str:
    """The grace period: the new server must stay healthy, and answer through Caddy at the end."""
    from pmcp.lifecycle import verify

    deadline = time.monotonic() + grace
    restarts = None
    while True:
        server.reload()
        st = engine.state_of(server)
        restarts = st.restarts if restarts is None else restarts
        if st.failed or st.restarts > restarts:
            raise StepError(
                f"the new server turned unhealthy within the grace period ({st.status}, health {st.health})",
                fix="the previous version serves again; read the log lines below",
                detail=inst.ctx.redact(engine.log_tail(server)),
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.01)))
    target = verify.load_target(inst.paths.prefix)
    for _ in range(3):  # one transient network error must not roll a good server back
        row = verify.check_mcp(target)
        if row.result == verify.PASS:
            break
        time.sleep(0.5)
    if row.result != verify.PASS:
        raise StepError(
            f"the new server does not answer through Caddy: {row.detail}",
            fix="the previous version serves again; read the log lines below",
            detail=inst.ctx.redact(engine.log_tail(server)),
        )
    return row.detail


def back_out(inst: Install, rec: Recorder, restore_point: backups.Backup, drain: float) -> None:
    """After a failure: previous configuration and version back as mcp-server, helpers removed.

    While the standby (previous version) is up it carries the traffic: the failed new server is stopped
    first, so from then on every connection goes to the standby.
    """
    sw, compose = inst.switch, inst.ctx.compose()
    with rec.phase("back out", f"return to the configuration of backup {restore_point.timestamp}") as notes:
        sw.remove("candidate", drain=0)
        standby, failed = sw.helper("standby"), sw.server()
        if sw.healthy(standby):
            if failed is not None:
                sw.drain(failed, min(drain, 5.0))
            compose.run("stop", "-t", str(int(drain)), SERVICE, check=False)
            notes.append("the failed server is stopped: the standby (previous version) serves")
        backups.restore(inst.paths, restore_point.timestamp)
        notes.append(f"configuration restored from backup {restore_point.timestamp}")
        try:
            server = compose_up_server(inst)
            notes.append(f"{SERVICE} (previous version): " + sw.check(server, SERVICE))
        except StepError as exc:
            if sw.healthy(sw.helper("standby")):
                exc.message += "; the standby (previous version) keeps serving"
                exc.fix = "run `pmcp update` again to finish the recovery"
            raise
        if sw.remove("standby", drain):
            notes.append("standby drained and removed")
        phase_clear(inst.paths)


def back_out_after(
    inst: Install, rec: Recorder, restore_point: backups.Backup, exc: BaseException, drain: float
) -> None:
    try:
        back_out(inst, rec, restore_point, drain)
    except StepError as again:
        if isinstance(exc, StepError):
            exc.detail = "\n".join(x for x in (exc.detail, f"back out also failed: {again.message}") if x)
            exc.fix = again.fix or exc.fix


def converge(
    inst: Install,
    rec: Recorder,
    opts: Options,
    restore_point: backups.Backup,
    write_desired: Callable[[], list[str]],
) -> None:
    """The switch itself; ``write_desired`` puts the new configuration files in place."""
    from pmcp.stack.steps import fingerprints

    sw, paths, ctx = inst.switch, inst.paths, inst.ctx
    upstream = paths.prefix / UPSTREAM_FILE
    if not upstream.exists() or upstream.read_text(encoding="utf-8") != render.upstream_text():
        with rec.phase(
            "caddy upstream", f"{UPSTREAM_FILE}: no upstream keep-alive, retried dials (one reload)"
        ):
            sw.ensure_upstream()
    phase_save(paths, phase="files", backup=restore_point.timestamp)
    try:
        with rec.phase(
            "candidate", f"start and check {ctx.config.mcp_image} beside the running server"
        ) as notes:
            written = write_desired()
            if written:
                notes.append("files written: " + ", ".join(written))
            candidate = sw.start_candidate(ctx.compose())
            notes.append("candidate: " + sw.check(candidate, "candidate"))
            sw.remove("candidate", drain=0)
        server = sw.server()
        if sw.healthy(server):
            with rec.phase("standby", "a copy of the running version shares the traffic") as notes:
                phase_save(paths, phase="standby")
                standby = sw.start_standby(server)
                notes.append("standby: " + sw.check(standby, "standby"))
    except Exception:
        sw.remove("candidate", drain=0)
        sw.remove("standby", drain=0)
        with contextlib.suppress(StepError, OSError):
            backups.restore(paths, restore_point.timestamp)
        phase_clear(paths)
        raise
    try:
        with rec.phase("switch", f"{SERVICE} recreated from {ctx.config.mcp_image}") as notes:
            phase_save(paths, phase="new-server")
            old = sw.server()
            if old is not None and sw.healthy(sw.helper("standby")):
                notes.append("previous server: " + sw.drain(old, opts.drain))
            server = compose_up_server(inst)
            notes.append(f"{SERVICE}: " + sw.check(server, "new"))
        with rec.phase("grace", f"the new server must stay healthy for {opts.grace:g}s") as notes:
            phase_save(paths, phase="grace")
            notes.append("through caddy: " + watch(inst, server, opts.grace))
    except Exception as exc:
        back_out_after(inst, rec, restore_point, exc, opts.drain)
        raise
    if sw.helper("standby") is not None:
        with rec.phase("drain", "the previous version finishes its requests and stops"):
            sw.remove("standby", opts.drain)
    others = [s for s in ctx.services if s not in (SERVICE, *NOT_RECREATED)]
    with rec.phase("other services", f"converge {', '.join(others)}") as notes:
        now, recorded = fingerprints(paths, ctx), inst.state.get("stack_fingerprints", {})
        compose = ctx.compose()
        compose.run("up", "-d", "--no-deps", *others)
        if recorded and now["caddy"] != recorded.get("caddy"):
            compose.up("caddy", recreate=True)
            notes.append("the Caddyfile changed: caddy was recreated (connections re-established)")
        engine.wait_healthy(ctx.docker, ctx.project, others, opts.health_timeout, ctx.redact)
        statefile.update(paths, stack_fingerprints=now)
    phase_clear(paths)


def rotate(paths: InstallPaths, rec: Recorder, keep: int) -> None:
    """After success only: a failed run keeps every backup it might need to go back to."""
    with rec.phase("rotate backups", f"keep the newest {keep}") as notes:
        removed = backups.rotate(paths, keep)
        notes.append(f"removed: {', '.join(removed)}" if removed else "nothing to remove")


def backup_state(b: backups.Backup) -> dict[str, Any]:
    data = json.loads((b.path / "state.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data.get("config"):
        raise ValueError(f"backup {b.timestamp} has no stack configuration in its state.json")
    return data


def previous_version(paths: InstallPaths, state: dict[str, Any]) -> backups.Backup:
    """The newest backup whose server image differs from the running one (the version before this one);
    the newest backup when every backup has the same image (a configuration-only rollback)."""
    found = backups.list_backups(paths)
    if not found:
        return backups.get(paths)
    current = state.get("config", {}).get("mcp_image")
    for b in reversed(found):
        with contextlib.suppress(OSError, ValueError):
            if backup_state(b)["config"].get("mcp_image") != current:
                return b
    return found[-1]
