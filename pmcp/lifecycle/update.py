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
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmcp import __version__
from pmcp import backup as backups
from pmcp import record as statefile
from pmcp.errors import NotReady
from pmcp.files import write_json
from pmcp.lifecycle.lock import DEFAULT_TIMEOUT, HostLock
from pmcp.lifecycle.switch import SERVICE, UPSTREAM_FILE, Switch
from pmcp.lifecycle.transcript import Redactor, Transcript, open_transcript, prune
from pmcp.paths import InstallPaths
from pmcp.stack import engine, images, render
from pmcp.steps import Plan, StepError, StepResult

EXIT_DUE = 0
EXIT_CURRENT = 3
PHASE_FILE = ".pmcp-update.json"
NOT_RECREATED = ("pve-sim",)  # the demo's simulator plays Proxmox: an update does not restart "Proxmox"

Report = Callable[[StepResult], None]


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


class _Recorder:
    """Each phase becomes a StepResult: reported as it ends and written to the transcript."""

    def __init__(self, outcome: Outcome, transcript: Transcript | None, report: Report | None) -> None:
        self.outcome = outcome
        self.transcript = transcript
        self.report = report

    def note(self, text: str) -> None:
        if self.transcript:
            self.transcript.line(text)

    @contextlib.contextmanager
    def phase(self, name: str, change: str = "") -> Iterator[list[str]]:
        notes: list[str] = []
        started = time.monotonic()
        res = StepResult(name, "changed", [change] if change else [], notes)
        try:
            yield notes
        except StepError as exc:
            res.status, res.error, res.fix, res.detail = "failed", exc.message, exc.fix, exc.detail
            raise
        except Exception as exc:
            res.status, res.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            res.seconds = round(time.monotonic() - started, 3)
            self.outcome.steps.append(res)
            if self.transcript:
                self.transcript.step(res)
            if self.report:
                self.report(res)


# --- the phase file: what a killed run was doing ---------------------------------------------------


def _phase_path(paths: InstallPaths) -> Path:
    return paths.prefix / PHASE_FILE


def _phase_load(paths: InstallPaths) -> dict[str, Any]:
    try:
        data = json.loads(_phase_path(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _phase_save(paths: InstallPaths, **data: Any) -> None:
    data = {**_phase_load(paths), **data, "pid": os.getpid(), "at": _now()}
    write_json(_phase_path(paths), data)


def _phase_clear(paths: InstallPaths) -> None:
    _phase_path(paths).unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what the stack should be -----------------------------------------------------------------------


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
class _Install:
    paths: InstallPaths
    state: dict[str, Any]
    ctx: Any  # pmcp.stack.steps.StackContext
    switch: Switch


def _load(paths: InstallPaths, cfg: render.StackConfig | None, opts: Options, redact: Redactor) -> _Install:
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
    return _Install(paths, state, ctx, sw)


def _backup_phase(rec: Any, inst: _Install, out: Any, reason: str) -> backups.Backup:
    """Back up the configuration, the running image ids and the versions before any change."""
    with rec.phase("backup", f"configuration -> {inst.paths.backups_dir}") as notes:
        point = backups.backup(
            inst.paths,
            reason,
            images=_running_images(inst),
            versions={"pmcp": __version__, "server_image": out.from_image},
        )
        out.backup = point.timestamp
        notes.append(f"backup {point.timestamp}")
    return point


def _files_step(inst: _Install) -> Any:
    from pmcp.stack.steps import FilesStep

    return FilesStep(inst.ctx)


def reasons_due(inst: _Install, force: bool = False) -> tuple[list[str], list[str]]:
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
        files = _files_step(inst).check()
        if files.needed:
            reasons.append("configuration files differ from this version's templates")
    phase = _phase_load(inst.paths)
    if phase or _helpers_left(inst):
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


def check(opts: Options) -> Outcome:
    """`pmcp update --check`: due (exit 0) or current (exit 3); reads only, takes no lock."""
    paths = InstallPaths.at(opts.prefix)
    out = Outcome("check")
    inst = _load(paths, None, opts, Redactor())
    out.reasons, notes = reasons_due(inst, opts.force)
    out.due = bool(out.reasons) or opts.force
    out.to_image = inst.ctx.config.mcp_image
    out.from_image = inst.state["config"].get("mcp_image", "")
    out.summary = "; ".join(out.reasons) if out.due else "; ".join([f"current ({out.from_image})", *notes])
    return out


# --- the run ---------------------------------------------------------------------------------------


def _running_images(inst: _Install) -> dict[str, str]:
    return {svc: st.image for svc, st in engine.states(inst.ctx.docker, inst.ctx.project).items()}


def _compose_up_server(inst: _Install) -> Any:
    inst.ctx.compose().run("up", "-d", "--no-deps", "--force-recreate", SERVICE)
    server = inst.switch.server()
    if server is None:
        raise StepError(f"compose did not create {SERVICE}", fix="pmcp logs")
    return server


def _helpers_left(inst: _Install) -> bool:
    return any(inst.switch.helper(role) is not None for role in ("standby", "candidate"))


def compose_processes(project: str) -> list[int]:
    """Compose commands still running for this project: a killed run's child outlives it (SIGKILL
    does not reach children), and a recovery must not race with it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode("utf-8", "replace") for w in argv if w]
        if any("compose" in w for w in words[:3]) and project in words and "-p" in words:
            found.append(int(entry.name))
    return found


def _wait_compose(project: str, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while (left := compose_processes(project)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(left)


def _recover(inst: _Install, rec: _Recorder, drain: float) -> None:
    """Finish what a killed run left: candidate and standby containers, half-written configuration."""
    sw, paths = inst.switch, inst.paths
    phase = _phase_load(paths)
    if not phase and not _helpers_left(inst):
        return
    with rec.phase("recover", f"finish an interrupted run ({phase.get('phase', 'unknown phase')})") as notes:
        if compose_processes(inst.ctx.project):
            notes.append("waited for the killed run's compose command to finish")
            if _wait_compose(inst.ctx.project):
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
            server = _compose_up_server(inst)
            notes.append(f"{SERVICE}: " + sw.check(server, SERVICE))
        if sw.remove("standby", drain):
            notes.append("standby drained and removed")
        _phase_clear(paths)
        inst.state = statefile.load(paths)


def _validate(inst: _Install, files: dict[str, render.FileSpec]) -> None:
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


def _watch(inst: _Install, server: Any, grace: float) -> str:
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


def _back_out(inst: _Install, rec: _Recorder, restore_point: backups.Backup, drain: float) -> None:
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
            server = _compose_up_server(inst)
            notes.append(f"{SERVICE} (previous version): " + sw.check(server, SERVICE))
        except StepError as exc:
            if sw.healthy(sw.helper("standby")):
                exc.message += "; the standby (previous version) keeps serving"
                exc.fix = "run `pmcp update` again to finish the recovery"
            raise
        if sw.remove("standby", drain):
            notes.append("standby drained and removed")
        _phase_clear(inst.paths)


def _back_out_after(
    inst: _Install, rec: _Recorder, restore_point: backups.Backup, exc: BaseException, drain: float
) -> None:
    try:
        _back_out(inst, rec, restore_point, drain)
    except StepError as again:
        if isinstance(exc, StepError):
            exc.detail = "\n".join(x for x in (exc.detail, f"back out also failed: {again.message}") if x)
            exc.fix = again.fix or exc.fix


def _converge(
    inst: _Install,
    rec: _Recorder,
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
    _phase_save(paths, phase="files", backup=restore_point.timestamp)
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
                _phase_save(paths, phase="standby")
                standby = sw.start_standby(server)
                notes.append("standby: " + sw.check(standby, "standby"))
    except Exception:
        sw.remove("candidate", drain=0)
        sw.remove("standby", drain=0)
        with contextlib.suppress(StepError, OSError):
            backups.restore(paths, restore_point.timestamp)
        _phase_clear(paths)
        raise
    try:
        with rec.phase("switch", f"{SERVICE} recreated from {ctx.config.mcp_image}") as notes:
            _phase_save(paths, phase="new-server")
            old = sw.server()
            if old is not None and sw.healthy(sw.helper("standby")):
                notes.append("previous server: " + sw.drain(old, opts.drain))
            server = _compose_up_server(inst)
            notes.append(f"{SERVICE}: " + sw.check(server, "new"))
        with rec.phase("grace", f"the new server must stay healthy for {opts.grace:g}s") as notes:
            _phase_save(paths, phase="grace")
            notes.append("through caddy: " + _watch(inst, server, opts.grace))
    except Exception as exc:
        _back_out_after(inst, rec, restore_point, exc, opts.drain)
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
    _phase_clear(paths)


def _begin(kind: str, opts: Options) -> tuple[InstallPaths, Redactor, Transcript]:
    paths = InstallPaths.at(opts.prefix)
    redact = Redactor()
    redact.add_install_secrets(paths)
    return paths, redact, open_transcript(kind, opts.log_dir, redact)


def _finish(inst: _Install | None, out: Outcome, t: Transcript) -> Outcome:
    out.transcript = str(t.path)
    if inst is not None:
        with contextlib.suppress(Exception):
            statefile.update(
                inst.paths,
                last_update={
                    "kind": out.kind,
                    "at": _now(),
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


def update(opts: Options, report: Report | None = None) -> Outcome:
    """Converge the stack to this pmcp file; never leaves a broken server behind."""
    paths, redact, t = _begin("update", opts)
    out = Outcome("update")
    rec = _Recorder(out, t, report)
    inst: _Install | None = None
    try:
        with HostLock(opts.lock_file, opts.lock_timeout, "pmcp update"):
            inst = _load(paths, None, opts, redact)
            out.from_image = inst.state["config"].get("mcp_image", "")
            out.to_image = inst.ctx.config.mcp_image
            _recover(inst, rec, opts.drain)
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
        if isinstance(exc, Exception):
            _fail(out, StepError(f"{type(exc).__name__}: {exc}", fix="see the transcript"))
        else:
            t.finish(False, "interrupted")
            raise
    return _finish(inst, out, t)


def _deny_protected(inst: _Install, rec: _Recorder) -> None:
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


def _rotate(paths: InstallPaths, rec: _Recorder, keep: int) -> None:
    """After success only: a failed run keeps every backup it might need to go back to."""
    with rec.phase("rotate backups", f"keep the newest {keep}") as notes:
        removed = backups.rotate(paths, keep)
        notes.append(f"removed: {', '.join(removed)}" if removed else "nothing to remove")


def _update_run(inst: _Install, rec: _Recorder, out: Outcome, opts: Options) -> None:
    paths, ctx = inst.paths, inst.ctx
    files_step = _files_step(inst)
    with rec.phase("validate", "compose config -q on the new configuration"):
        files = files_step.wanted_files()
        _validate(inst, files)
    point = _backup_phase(rec, inst, out, f"update {out.from_image} -> {out.to_image}")
    from pmcp.stack.steps import ImageStep

    image_step = ImageStep(ctx, remove_on_undo=False)
    with rec.phase("image", f"{ctx.config.mcp_image}") as notes:
        plan: Plan = image_step.check()
        notes.extend(plan.changes or ["present"])
        if plan.needed:
            image_step.apply()

    def write_desired() -> list[str]:
        render.ensure_dirs(paths, ctx.config.uid, ctx.config.gid)
        written = render.write(paths, files_step.wanted_files())
        statefile.update(
            paths,
            config=ctx.config.to_dict(),
            project=ctx.project,
            mcp_image=ctx.config.mcp_image,
            version=__version__,
            update_skip=None,
        )
        return written

    _converge(inst, rec, opts, point, write_desired)
    out.changed = True
    out.summary = f"updated to {out.to_image}"
    _rotate(paths, rec, opts.keep)


def _backup_state(b: backups.Backup) -> dict[str, Any]:
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
            if _backup_state(b)["config"].get("mcp_image") != current:
                return b
    return found[-1]


def rollback(opts: Options, to: str | None = None, report: Report | None = None) -> Outcome:
    """Back to a backup's configuration and image, through the same switch."""
    paths, redact, t = _begin("rollback", opts)
    out = Outcome("rollback")
    rec = _Recorder(out, t, report)
    inst: _Install | None = None
    try:
        with HostLock(opts.lock_file, opts.lock_timeout, "pmcp rollback"):
            inst = _load(paths, None, opts, redact)
            _recover(inst, rec, opts.drain)
            target = backups.get(paths, to) if to else previous_version(paths, inst.state)
            cfg = render.StackConfig.from_dict(_backup_state(target)["config"])
            inst = _load(paths, cfg, opts, redact)
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
        if isinstance(exc, Exception):
            _fail(out, StepError(f"{type(exc).__name__}: {exc}", fix="see the transcript"))
        else:
            t.finish(False, "interrupted")
            raise
    return _finish(inst, out, t)


def _rollback_run(
    inst: _Install, rec: _Recorder, out: Outcome, opts: Options, target: backups.Backup
) -> None:
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
    point = _backup_phase(rec, inst, out, f"rollback to {target.timestamp}")
    changed_secrets = backups.changed_secrets(paths, target)
    if changed_secrets:
        rec.note(f"secrets changed since the backup and are kept as they are: {', '.join(changed_secrets)}")

    def write_desired() -> list[str]:
        backups.restore(paths, target.timestamp)
        statefile.update(paths, update_skip=out.from_image if out.from_image != out.to_image else None)
        return sorted(target.files)

    _converge(inst, rec, opts, point, write_desired)
    out.changed = True
    out.summary = f"rolled back to backup {target.timestamp} ({out.to_image})"
    _rotate(paths, rec, opts.keep)
