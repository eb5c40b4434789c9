"""The stack's install steps: secrets, files, image, simulator (demo only), stack. Each is a Step
(check/apply/undo) so install, demo and uninstall are just orderings of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmcp import authtokens
from pmcp import record as statefile
from pmcp.files import UnsafeFile, atomic_write, fix_owner_mode
from pmcp.paths import InstallPaths
from pmcp.stack import engine, render
from pmcp.stack.compose import Compose
from pmcp.steps import Plan, StepError

FIRST_CLIENT = "default"
SYSTEMD_FILES = (".env", "pve-root-ca.pem", "tls/cert.pem", "tls/key.pem")  # what the systemd runtime keeps
SERVER_SERVICES = ["mcp-server", "caddy"]


def _redact_noop(text: str) -> str:
    return text


@dataclass
class StackContext:
    """What the stack steps share: paths, config, compose runner, engine client (made on first use)."""

    paths: InstallPaths
    config: render.StackConfig
    project: str
    images_archive: str | None = None
    health_timeout: float = 180.0
    redact: Callable[[str], str] = _redact_noop
    # services whose containers ContainersStep created in this run and that no compose run touched since:
    # the stack step starts them through the engine instead of another `compose up`
    created: set[str] = field(default_factory=set)
    _client: Any = field(default=None, repr=False)

    @property
    def docker(self) -> Any:
        if self._client is None:
            self._client = engine.client()
        return self._client

    def compose(self, *, all_profiles: bool = False) -> Compose:
        profiles = ["monitoring"] if (self.config.monitoring or all_profiles) else []
        return Compose(self.paths, self.project, profiles)

    @property
    def services(self) -> list[str]:
        out = list(SERVER_SERVICES)
        if self.config.monitoring:
            out.append("prometheus")
        if self.config.sim:
            out.append("pve-sim")
        return out


PROMETHEUS_CLIENT = "prometheus"  # the name older installs gave the scrape token in client-tokens


def prometheus_token_file(paths: InstallPaths) -> Path:
    """The bare bearer token Prometheus scrapes /metrics with. The server reads it as
    PMCP_METRICS_TOKEN_FILE and accepts it on /metrics only: it is not a client token, so the
    secret Prometheus' container holds cannot call a tool."""
    return paths.secrets_dir / "prometheus-token"


def _secret_files(paths: InstallPaths) -> list[Path]:
    return [paths.proxmox_token_secret, paths.client_tokens, prometheus_token_file(paths), paths.audit_key]


def ensure_audit_key(paths: InstallPaths, gid: int) -> bool:
    """The audit log's HMAC key (pmcp.server.auditchain), made once and never replaced: a new key could
    not verify what the old one sealed. Install and update both call it (an install made before the
    chain gets its key from `pmcp update`). True when it was created."""
    import secrets as random

    if os.path.lexists(paths.audit_key):
        return False
    owner, mode = render.secret_owner(gid)
    atomic_write(paths.audit_key, random.token_hex(32) + "\n", mode, owner)
    return True


class SecretsStep:
    """A first client token, and every secret root's, 0640, readable by the containers' group (as root)."""

    name = "secrets"

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self._created_tokens = False

    def _wrong_owner(self) -> list[Path]:
        owner, mode = render.secret_owner(self.ctx.config.gid)
        if owner is None:
            return []
        out = []
        for p in _secret_files(self.ctx.paths):
            with contextlib.suppress(FileNotFoundError):
                st = p.lstat()  # a symlink is never "right": apply refuses it
                if (st.st_uid, st.st_gid) != owner or st.st_mode & 0o777 != mode:
                    out.append(p)
        return out

    def check(self) -> Plan:
        plan = Plan()
        tokens = self.ctx.paths.client_tokens
        if not tokens.exists() or not authtokens.load(tokens):
            plan.changes.append(f"create a client bearer token {FIRST_CLIENT!r} in {tokens} (0600)")
        if self._prometheus_missing():
            plan.changes.append(
                f"create a /metrics-only token for Prometheus in {prometheus_token_file(self.ctx.paths)}"
            )
        if self._scrape_is_client():
            plan.changes.append(
                f"remove the client token {PROMETHEUS_CLIENT!r} (older installs): Prometheus' token reads "
                "/metrics only"
            )
        if not os.path.lexists(self.ctx.paths.audit_key):
            plan.changes.append(f"create the audit log's HMAC key in {self.ctx.paths.audit_key}")
        for p in self._wrong_owner():
            plan.changes.append(
                f"make {p} root's, 0640, readable by the containers' group {self.ctx.config.gid}"
            )
        return plan

    def _prometheus_missing(self) -> bool:
        if not self.ctx.config.monitoring:
            return False
        try:
            return len(prometheus_token_file(self.ctx.paths).read_text().strip()) < 16
        except OSError:
            return True

    def _scrape_is_client(self) -> bool:
        """An older install's scrape token is also a full client token: the one install made, with the
        same value as the scrape file (a client the admin named "prometheus" is left alone)."""
        try:
            scrape = prometheus_token_file(self.ctx.paths).read_text().strip()
            return (
                bool(scrape)
                and authtokens.load(self.ctx.paths.client_tokens).get(PROMETHEUS_CLIENT) == scrape
            )
        except (OSError, authtokens.TokenFileError):
            return False

    def apply(self) -> None:
        tokens = self.ctx.paths.client_tokens
        render.ensure_dirs(self.ctx.paths, self.ctx.config.uid, self.ctx.config.gid)
        if not tokens.exists() or not authtokens.load(tokens):
            authtokens.save(tokens, {FIRST_CLIENT: authtokens.new_token()})
            self._created_tokens = True
        if self._scrape_is_client():
            authtokens.revoke(tokens, PROMETHEUS_CLIENT)
        if self._prometheus_missing():
            atomic_write(prometheus_token_file(self.ctx.paths), authtokens.new_token().encode(), 0o600)
        ensure_audit_key(self.ctx.paths, self.ctx.config.gid)
        owner, mode = render.secret_owner(self.ctx.config.gid)
        if owner is not None:
            for p in _secret_files(self.ctx.paths):
                if os.path.lexists(p):
                    try:
                        fix_owner_mode(p, mode, owner)  # through an O_NOFOLLOW descriptor
                    except UnsafeFile as exc:
                        raise StepError(
                            f"refusing to change the owner of {p}: {exc.strerror}",
                            fix=f"rm {p} && pmcp install   (a new secret is created)",
                        ) from None

    def undo(self) -> None:
        if self._created_tokens:
            self.ctx.paths.client_tokens.unlink(missing_ok=True)


class FilesStep:
    """Render the templates into the install dir; back up what is replaced; leave unchanged files alone."""

    name = "files"

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self._written: list[str] = []
        self._backup_dir: Path | None = None
        self._started = False

    def wanted_files(self) -> dict[str, render.FileSpec]:
        upstream = self.ctx.paths.prefix / "caddy.d" / "upstream.caddy"
        files = render.render(
            self.ctx.config, upstream=None if upstream.exists() else render.UPSTREAM_DEFAULT
        )
        ca = self.ctx.config.proxmox_ca
        if self.ctx.config.proxmox_ca_pem:  # what install chose to trust on 8006 (pmcp.host.pvecert)
            files["pve-root-ca.pem"] = render.FileSpec(self.ctx.config.proxmox_ca_pem.encode())
        elif ca and not self.ctx.config.sim:
            try:
                files["pve-root-ca.pem"] = render.FileSpec(Path(ca).read_bytes())
            except OSError as exc:
                raise StepError(
                    f"cannot read the Proxmox CA certificate {ca}: {exc}",
                    fix="run on the Proxmox host as root (the CA is /etc/pve/pve-root-ca.pem)",
                ) from exc
        if self.ctx.config.runtime == "systemd":  # no compose, Caddy, image or Prometheus files
            files = {k: v for k, v in files.items() if k in SYSTEMD_FILES}
        return files

    def check(self) -> Plan:
        files = self.wanted_files()
        plan = Plan()
        for rel in render.differs(self.ctx.paths, files):
            verb = "replace" if (self.ctx.paths.prefix / rel).exists() else "write"
            plan.changes.append(f"{verb} {self.ctx.paths.prefix / rel}")
        missing = [d for d in render.DATA_DIRS if not (self.ctx.paths.prefix / d).is_dir()]
        if missing:
            plan.changes.append(f"create {', '.join(missing)} in {self.ctx.paths.prefix}")
        return plan

    def apply(self) -> None:
        self._started = True
        files = self.wanted_files()
        render.ensure_dirs(self.ctx.paths, self.ctx.config.uid, self.ctx.config.gid)
        replaced = [r for r in render.differs(self.ctx.paths, files) if (self.ctx.paths.prefix / r).exists()]
        if replaced:
            from pmcp import backup

            self._backup_dir = backup.backup(self.ctx.paths, "install: replaced " + ", ".join(replaced)).path
        self._written = render.write(self.ctx.paths, files)
        if self._written:
            self.ctx.created = set()  # containers made from the files before: compose must recreate them
        statefile.update(self.ctx.paths, config=self.ctx.config.to_dict(), project=self.ctx.project)

    def undo(self) -> None:
        """After a failed apply: put replaced files back. As uninstall: remove the rendered files (the
        rest of the install dir goes last, with InstallDirStep, after the steps that keep state in it)."""
        if self._started:
            for rel in self._written:
                src = self._backup_dir / rel if self._backup_dir else None
                if src and src.exists():
                    atomic_write(self.ctx.paths.prefix / rel, src.read_bytes(), src.stat().st_mode & 0o777)
                else:
                    (self.ctx.paths.prefix / rel).unlink(missing_ok=True)
            self._written = []
            return
        for rel in render.GENERATED:
            (self.ctx.paths.prefix / rel).unlink(missing_ok=True)


class InstallDirStep:
    """First step of every install, so uninstall undoes it last: the install dir itself. Backups and the
    audit log stay unless purge; host-state/ (the host steps' undo records) goes once their undo ran."""

    name = "install dir"

    def __init__(self, paths: InstallPaths, purge: bool = False) -> None:
        self.paths = paths
        self.purge = purge
        self._started = False

    def check(self) -> Plan:
        """Created once preflight passed (it comes first), so a host that fails it gets no dir."""
        if self.paths.prefix.is_dir():
            return Plan()
        return Plan(changes=[f"create {self.paths.prefix}"])

    def apply(self) -> None:
        self._started = True
        self.paths.prefix.mkdir(parents=True, exist_ok=True, mode=0o755)

    def undo(self) -> None:
        if self._started:  # a failed mkdir left nothing to remove
            return
        prefix = self.paths.prefix
        if not prefix.exists():
            return
        if self.purge:
            shutil.rmtree(prefix)
            return
        keep = {"backups", "audit"}
        for child in prefix.iterdir():
            if child.name in keep:
                continue
            if child == self.paths.secrets_dir and os.path.lexists(self.paths.audit_key):
                # the key stays with the audit log it sealed (a reinstall goes on with the same chain)
                for secret in child.iterdir():
                    if secret == self.paths.audit_key:
                        continue
                    if secret.is_dir() and not secret.is_symlink():
                        shutil.rmtree(secret)
                    else:
                        secret.unlink()
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        with contextlib.suppress(OSError):
            prefix.rmdir()  # only when nothing was kept


class ImageStep:
    """The images the stack runs: present -> used; --images -> loaded; the MCP image built locally."""

    name = "image"

    def __init__(self, ctx: StackContext, remove_on_undo: bool = True) -> None:
        self.ctx = ctx
        self.remove_on_undo = remove_on_undo
        self._built = False

    def _is_bundle(self) -> bool:
        """`--images` takes a pmcp bundle (checksummed, `pmcp bundle create`) or a plain `docker save`."""
        from pmcp.stack.bundle import is_bundle

        return bool(self.ctx.images_archive) and is_bundle(self.ctx.images_archive)

    def _needed(self) -> list[str]:
        cfg = self.ctx.config
        out = [cfg.caddy_image]
        if cfg.monitoring:
            out.append(cfg.prometheus_image)
        return out

    def check(self) -> Plan:
        cfg = self.ctx.config
        c = self.ctx.docker
        plan = Plan()
        if self.ctx.images_archive:
            wanted = [cfg.mcp_image, *self._needed()]
            if not all(engine.image_present(c, i) for i in wanted):
                if self._is_bundle():
                    from pmcp.stack.bundle import verify_bundle

                    verify_bundle(self.ctx.images_archive)  # a damaged bundle is refused before any change
                plan.changes.append(f"load images from {self.ctx.images_archive}")
                return plan
        moved = self._moved_tag()
        if not engine.image_present(c, cfg.mcp_image) or moved:
            if engine.self_file() is None:
                absent = (
                    f"image {cfg.mcp_image} is not present, and this pmcp is not a release file to build it"
                )
                raise StepError(
                    moved or absent,
                    fix="run the release file (dist/pmcp, `make dist`), or set PMCP_SELF=/path/to/pmcp",
                )
            why = f" ({moved})" if moved else ""
            plan.changes.append(
                f"build {cfg.mcp_image} from {cfg.base_image} + this pmcp file (no network){why}"
            )
        for name in self._needed():
            if not engine.image_present(c, name):
                plan.changes.append(f"pull {name}")
        if not plan.changes and self._unrecorded():
            plan.changes.append("record the ids of the stack's images in state.json (verify checks them)")
        return plan

    def _moved_tag(self) -> str:
        """Why the MCP image under its tag is not built from this pmcp file ('' when it is): a tag can be
        moved, its ``io.pmcp.sha256`` label says which pmcp file the image holds."""
        cfg = self.ctx.config
        if not cfg.digest or not engine.image_present(self.ctx.docker, cfg.mcp_image):
            return ""
        label = engine.image_labels(self.ctx.docker, cfg.mcp_image).get("io.pmcp.sha256", "")
        if label == cfg.digest:
            return ""
        return (
            f"the image tagged {cfg.mcp_image} holds pmcp {label[:12] or '(no label)'}, not this file "
            f"({cfg.digest[:12]}): its tag was moved"
        )

    def _image_ids(self) -> dict[str, str]:
        names = [self.ctx.config.mcp_image, *self._needed()]
        return {n: i for n in names if (i := engine.image_present(self.ctx.docker, n) or "")}

    def _unrecorded(self) -> bool:
        """Images present whose ids install never recorded (an install made before it recorded them).
        An id that differs from the recorded one is not re-recorded here: verify reports it."""
        recorded = statefile.load(self.ctx.paths).get("image_ids") or {}
        return any(name not in recorded for name in self._image_ids())

    def _record_ids(self) -> None:
        recorded = statefile.load(self.ctx.paths).get("image_ids") or {}
        statefile.update(self.ctx.paths, image_ids=recorded | self._image_ids())

    def apply(self) -> None:
        cfg = self.ctx.config
        c = self.ctx.docker
        if self.ctx.images_archive:
            if self._is_bundle():
                from pmcp.stack.bundle import load_bundle

                load_bundle(self.ctx.images_archive, client=c)
            else:
                engine.load_archive(c, Path(self.ctx.images_archive))
        if not engine.image_present(c, cfg.mcp_image) or self._moved_tag():
            pmcp_file = engine.self_file()
            assert pmcp_file is not None
            engine.build_mcp_image(c, self.ctx.paths.image_dir, cfg.mcp_image, cfg.base_image, pmcp_file)
            self._built = True
        for name in self._needed():
            engine.ensure_pulled(c, name)
        self._record_ids()

    def undo(self) -> None:
        if not self.remove_on_undo:
            return
        with contextlib.suppress(StepError):
            engine.remove_image(self.ctx.docker, self.ctx.config.mcp_image)
        (self.ctx.paths.image_dir / "pmcp").unlink(missing_ok=True)


def fingerprints(paths: InstallPaths, ctx: StackContext) -> dict[str, str]:
    return {
        "compose": render.fingerprint(
            paths, ["docker-compose.yml", ".env", "prometheus.yml", "pve-root-ca.pem"]
        ),
        # the ACME root only when present, so installs without one keep their recorded hash
        "caddy": render.fingerprint(
            paths,
            ["Caddyfile", "tls/cert.pem", "tls/key.pem"]
            + ([render.ACME_ROOT] if (paths.prefix / render.ACME_ROOT).exists() else []),
        ),
        "secrets": render.fingerprint(paths, ["secrets/proxmox-token"]),
        "image": ctx.config.mcp_image,
    }


def wait_tls(host: str, port: int, server_name: str, timeout: float) -> None:
    """Poll until Caddy completes a TLS handshake (it creates its CA and certificate on first start)."""
    deadline = time.monotonic() + timeout
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    last = ""
    while time.monotonic() < deadline:
        try:
            with (
                socket.create_connection((host, port), timeout=3) as raw,
                ctx.wrap_socket(raw, server_hostname=server_name),
            ):
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise StepError(
        f"Caddy does not answer TLS on port {port} after {timeout:g}s",
        fix="see `pmcp logs caddy`",
        detail=last,
    )


class StackStep:
    """compose up, then wait for health (Docker SDK) and for Caddy's TLS; down on undo."""

    name = "stack"

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self._was_running = False

    def _recorded(self) -> dict[str, str]:
        return statefile.load(self.ctx.paths).get("stack_fingerprints", {})

    def check(self) -> Plan:
        plan = Plan()
        if not self.ctx.paths.compose_file.exists():
            return Plan([f"start the stack ({', '.join(self.ctx.services)})"])
        st = engine.states(self.ctx.docker, self.ctx.project)
        down = [s for s in self.ctx.services if s not in st or not st[s].ready]
        if down:
            plan.changes.append(f"start {', '.join(down)}")
        now, rec = fingerprints(self.ctx.paths, self.ctx), self._recorded()
        changed = [k for k in now if now[k] != rec.get(k)]
        if changed and not down:
            plan.changes.append(f"apply changed {', '.join(changed)} (containers recreated)")
        return plan

    def apply(self) -> None:
        c = self.ctx.docker
        self._was_running = bool(engine.states(c, self.ctx.project))
        compose = self.ctx.compose()
        now, rec = fingerprints(self.ctx.paths, self.ctx), self._recorded()
        ours = set(self.ctx.services) - {"pve-sim"}  # the simulator step converges its own
        if not rec and ours <= self.ctx.created <= set(engine.project_containers(c, self.ctx.project)):
            # a fresh install whose containers compose created in this run from these files (the
            # containers or simulator step): start them through the engine, in compose's dependency order
            order = sorted(self.ctx.services, key=lambda s: START_ORDER.index(s) if s in START_ORDER else 9)
            engine.start_services(c, self.ctx.project, order)
            self._wait()
            statefile.update(self.ctx.paths, stack_fingerprints=now)
            return
        compose.config_check()
        compose.up()
        recreate = []
        if rec and now["caddy"] != rec.get("caddy"):
            recreate.append("caddy")  # a bind-mounted single file is replaced atomically: recreate to see it
        if rec and now["secrets"] != rec.get("secrets"):
            recreate.append("mcp-server")
        if recreate:
            compose.up(*recreate, recreate=True)
        self._wait()
        statefile.update(self.ctx.paths, stack_fingerprints=now)

    def _wait(self) -> None:
        """Every service healthy (Docker's own health state, as verify checks it), then Caddy's TLS and CA."""
        c = self.ctx.docker
        engine.wait_healthy(c, self.ctx.project, self.ctx.services, self.ctx.health_timeout, self.ctx.redact)
        name = self.ctx.config.domain or self.ctx.config.public_names[0]
        wait_tls("127.0.0.1", self.ctx.config.https_port, name, min(60.0, self.ctx.health_timeout))
        wait_ca(self.ctx.paths, self.ctx.config, min(60.0, self.ctx.health_timeout))

    def undo(self) -> None:
        if not self.ctx.paths.compose_file.exists():
            return
        if self.ctx.config.sim:  # the simulator outlives the stack: identity's undo still talks to it
            self.ctx.compose(all_profiles=True).run("rm", "-s", "-f", "mcp-server", "caddy", "prometheus")
        else:
            self.ctx.compose(all_profiles=True).down()
        engine.remove_labelled(engine.client(), engine.UPDATE_PROJECT_LABEL, self.ctx.project)
        statefile_path = self.ctx.paths.state_file
        if statefile_path.exists():
            statefile.update(self.ctx.paths, stack_fingerprints={})


START_ORDER = ["pve-sim", "mcp-server", "caddy", "prometheus"]  # compose's depends_on order


class ServerStartStep:
    """A fresh install starts the server container right after compose created it, beside the step that
    makes the Proxmox token: the server imports the MCP SDK and waits for its secrets
    (``PMCP_SECRETS_WAIT`` in .env, pmcp.server.config.wait_for_start_files), so its start is done by
    the time the token exists instead of after it, and the stack step finds it running. Only while its
    token does not exist yet: an install that finds one (a re-run) starts the server with the stack,
    so it never starts on a secret about to be replaced. Undo has nothing of its own to remove: the
    containers step (or, in the demo, the simulator step) removes the container."""

    name = "server start"

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx

    def check(self) -> Plan:
        if self.ctx.paths.proxmox_token_secret.exists():
            return Plan()
        if self.ctx.paths.compose_file.exists():
            st = engine.states(self.ctx.docker, self.ctx.project).get("mcp-server")
            # running already, or made before this run (apply leaves it to the stack step, which converges it)
            if st is not None and (st.status == "running" or "mcp-server" not in self.ctx.created):
                return Plan()
        return Plan(["start the MCP server now: it gets ready while its Proxmox token is made"])

    def apply(self) -> None:
        if "mcp-server" in self.ctx.created and not self.ctx.paths.proxmox_token_secret.exists():
            engine.start_services(self.ctx.docker, self.ctx.project, ["mcp-server"])

    def undo(self) -> None:
        """Nothing: the container goes with the containers step's (or the simulator step's) undo."""


class ContainersStep:
    """compose creates the stack's network and containers (`up --no-start`): that needs no secret, so an
    install runs it beside the identity step, and the stack step then starts them through the engine,
    the server first (Docker's first health check comes an interval after its start): one compose run
    less after the token exists (each costs 0.4-1 s). In the demo the simulator step's compose run made
    them already. Caddy starts with the stack, not here: beside the identity step its start (0.3-0.4 s of
    dockerd) only slowed the pvesh processes, and it is ready long before the server's first check."""

    name = "containers"

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx

    def _missing(self) -> list[str]:
        if not self.ctx.paths.compose_file.exists():
            return list(self.ctx.services)
        have = engine.project_containers(self.ctx.docker, self.ctx.project)
        return [s for s in self.ctx.services if s not in have]

    def check(self) -> Plan:
        missing = self._missing()
        if not missing:
            return Plan()  # the stack step converges what exists (changed files, stopped containers)
        return Plan([f"create the stack's network and containers ({', '.join(missing)}), not started"])

    def apply(self) -> None:
        missing = self._missing()
        self.ctx.compose().create()
        self.ctx.created |= set(missing)

    def undo(self) -> None:
        """Remove the server's containers (the simulator's stays: identity's undo still talks to it; the
        simulator step removes the rest)."""
        if not self.ctx.paths.compose_file.exists():
            return
        have = engine.project_containers(self.ctx.docker, self.ctx.project)
        ours = [s for s in (*SERVER_SERVICES, "prometheus") if s in have]
        if not ours:
            return  # the stack step's undo (uninstall: it runs first) removed them
        if self.ctx.config.sim:
            self.ctx.compose(all_profiles=True).run("rm", "-s", "-f", *ours)
        else:
            self.ctx.compose(all_profiles=True).down()
        self.ctx.created = set()


def wait_ca(paths: InstallPaths, cfg: render.StackConfig, timeout: float) -> None:
    """With `tls internal`, clients need Caddy's root CA file: wait until Caddy has written it."""
    if cfg.domain or cfg.tls_cert:
        return
    deadline = time.monotonic() + timeout
    while not paths.caddy_root_ca.exists():
        if time.monotonic() > deadline:
            raise StepError(
                f"Caddy did not create its root CA at {paths.caddy_root_ca}", fix="pmcp logs caddy"
            )
        time.sleep(0.2)


def _sim_answers(port: int, ca: Path) -> bool:
    """The simulator serves its API on ``port`` with a certificate its CA file vouches for."""
    import urllib.error
    import urllib.request

    from pmcp import pvetls

    try:
        ctx = pvetls.context(ca)
        url = f"https://127.0.0.1:{port}/_sim/health"
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (OSError, ssl.SSLError, ValueError):
        return False


class SimulatorStep:
    """Demo only: the Proxmox simulator as a service of the same project, up before the identity step."""

    name = "simulator"

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx

    def check(self) -> Plan:
        st = engine.states(self.ctx.docker, self.ctx.project).get("pve-sim")
        if st and st.ready:
            return Plan()
        return Plan([f"start the Proxmox simulator on 127.0.0.1:{self.ctx.config.sim.port}"])  # type: ignore[union-attr]

    def apply(self) -> None:
        sim_state = self.ctx.paths.prefix / "sim-state"
        sim_state.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            fix_owner_mode(sim_state, 0o755, (self.ctx.config.uid, self.ctx.config.gid))
        c = self.ctx.docker
        if not engine.project_containers(c, self.ctx.project):
            # a fresh install: one compose run creates every container (the stack step starts the others
            # through the engine), and the simulator starts
            self.ctx.compose().create()
            self.ctx.created = set(self.ctx.services)
            engine.start_services(c, self.ctx.project, ["pve-sim"])
        else:  # a stack exists: compose converges the simulator alone, the rest stays as it is
            self.ctx.compose().up("pve-sim")
        ca = self.ctx.paths.prefix / render.SIM_CA
        deadline = time.monotonic() + self.ctx.health_timeout
        port = self.ctx.config.sim.port  # type: ignore[union-attr]
        # The API answering over verified TLS is what the identity step needs; Docker's own health
        # state comes only with its first check, an interval (2 s) after the start, and the stack
        # step waits for it anyway (pve-sim is one of its services). Measured: 2.9 s -> 1.6 s.
        polls = 0
        while time.monotonic() < deadline:
            if polls % 10 == 0:  # the engine every 0.5 s, the port every 0.05 s
                st = engine.states(self.ctx.docker, self.ctx.project).get("pve-sim")
                if st is not None and st.failed:
                    break  # wait_healthy below raises with the container's log
            polls += 1
            if ca.exists() and _sim_answers(port, ca):
                return
            time.sleep(0.05)
        engine.wait_healthy(
            self.ctx.docker, self.ctx.project, ["pve-sim"], self.ctx.health_timeout, self.ctx.redact
        )

    def undo(self) -> None:
        if self.ctx.paths.compose_file.exists():
            self.ctx.compose(all_profiles=True).down()
