"""`pmcp install`: an ordered list of steps from a copied file to a verified, least-privilege MCP stack.

Preflight, VM networking safety, Proxmox identity, agent account, secrets, files, image, stack, firewall,
client configuration, verification. The runner (steps.run_steps) gives dry-run, "already right" on a
second run, and undo of a failed step; this module only decides the steps and their options. The same
list, reversed, is uninstall; with the simulator in front, it is `pmcp demo --stack`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmcp import __version__, outcome
from pmcp import record as statefile
from pmcp.errors import UsageError
from pmcp.files import UnsafeFile, atomic_write
from pmcp.inputs import MODES
from pmcp.lifecycle.target import target_for
from pmcp.paths import DEFAULT_PREFIX, InstallPaths
from pmcp.stack import images, render
from pmcp.stack.compose import project_name
from pmcp.stack.steps import (
    ContainersStep,
    FilesStep,
    ImageStep,
    InstallDirStep,
    SecretsStep,
    ServerStartStep,
    SimulatorStep,
    StackContext,
    StackStep,
)
from pmcp.steps import Plan, RunResult, Step, StepError, StepResult, Together, flat, run_steps

TOKEN_ID = "pmcp@pve!mcp"


@dataclass
class InstallOptions:
    """The install's choices; recorded in state.json so update/uninstall/verify repeat them."""

    prefix: str = DEFAULT_PREFIX
    mode: str = "read-only"
    # who approves destructive calls when the client cannot ask its person (pmcp.server.approval);
    # None: what the install recorded (a re-run never loosens it), else confirm / destructive
    approval: str | None = None  # confirm: the model's confirm=true; elicit: refused
    approval_scope: str | None = None  # destructive | changes (every change is asked)
    pool: str | None = None
    agent_user: str | None = "claude-user"
    edit_shared_sudoers: bool = False  # also edit /etc/sudoers and rules other accounts share (backed up)
    rotate_token: bool = False
    domain: str | None = None
    acme_ca: str | None = None  # a private ACME directory (step-ca…) instead of Let's Encrypt
    acme_ca_root: str | None = None  # PEM root(s) that ACME CA's HTTPS and certificates chain to
    tls_cert: str | None = None
    tls_key: str | None = None
    https_port: int = 443
    http_port: int = 80
    server_port: int = 8080
    allow_from: str | None = None
    images: str | None = None
    monitoring: bool = False
    node: str | None = None
    auto_update: str | None = None  # daily|weekly|off; None leaves the schedule as it is
    protect: str | None = (
        None  # VMIDs "100,105" (PMCP_PROTECTED + NoAccess ACLs); None keeps the recorded list
    )
    proxmox_trust: str = "auto"  # how the server trusts 8006: auto|pve-ca|system|pin (pmcp.host.pvecert)
    runtime: str = "compose"  # how the server runs: compose (Docker) or systemd (pmcp.lifecycle.runtime)
    # Below: set by the demo and the tests, not by the CLI.
    prometheus_port: int = 9090  # on 127.0.0.1, with --monitoring
    sim: render.SimService | None = None
    pvesh: list[str] | None = None
    host_checks: bool = True
    public_names: list[str] | None = None
    proxmox_url: str | None = None
    proxmox_ca: str | None = "/etc/pve/pve-root-ca.pem"
    health_timeout: float = 180.0
    client_config: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstallOptions:
        data = dict(data)
        sim = data.pop("sim", None)
        opts = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        opts.sim = render.SimService(**sim) if sim else None
        return opts

    def validate(self) -> None:
        """Every option checked before anything runs (the CLI checks each one already; the demo and
        state.json come here too); cross-option rules live only here."""
        from pmcp import inputs

        if self.auto_update not in (None, "daily", "weekly", "off"):
            raise UsageError(f"unknown --auto-update {self.auto_update!r}", fix="daily, weekly or off")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}", fix=f"--mode one of {', '.join(MODES)}")
        if self.approval not in (None, "elicit", "confirm"):
            raise UsageError(f"unknown --approval {self.approval!r}", fix="--approval elicit or confirm")
        if self.approval_scope not in (None, "destructive", "changes"):
            raise UsageError(
                f"unknown --approval-scope {self.approval_scope!r}",
                fix="--approval-scope destructive or changes",
            )
        for item in protected_list(self):
            if not 100 <= item <= 999999999:
                raise UsageError(f"--protect: {item} is not a VMID", fix="e.g. --protect 100,105")
        if bool(self.tls_cert) != bool(self.tls_key):
            given, missing = ("--tls-cert", "--tls-key") if self.tls_cert else ("--tls-key", "--tls-cert")
            raise UsageError(
                f"{given} needs {missing}", fix="give both (certificate and its private key), or neither"
            )
        for option, f, marker in (
            ("--tls-cert", self.tls_cert, "CERTIFICATE-----"),
            ("--tls-key", self.tls_key, "PRIVATE KEY-----"),
            ("--bundle", self.images, None),
            ("--acme-ca-root", self.acme_ca_root, None),
        ):
            if not f:
                continue
            if not Path(f).is_file():
                raise UsageError(f"{option} {f}: not found", fix="give the path of an existing file")
            if marker:
                try:
                    text = Path(f).read_text(encoding="ascii", errors="replace")
                except OSError as exc:
                    raise UsageError(f"{option} {f}: {exc.strerror}", fix="run as root") from None
                if marker not in text:
                    raise UsageError(f"{option} {f} holds no PEM {marker.rstrip('-').lower()}",
                                     fix="a PEM file (-----BEGIN ...-----)")  # fmt: skip
        self._validate_acme()
        self._validate_runtime()
        if self.domain:
            self.domain = inputs.dns_name(self.domain, single_label=bool(self.acme_ca))
        if self.pool:
            inputs.pool(self.pool)
        if self.node:
            inputs.node(self.node)
        if self.allow_from:
            self.allow_from = inputs.cidr(self.allow_from)
        inputs.port(self.https_port)
        inputs.port(self.server_port)
        inputs.port(self.http_port, allow_zero=True)
        inputs.distinct_ports(
            {
                "--https-port": self.https_port,
                "--http-port": self.http_port,
                "--server-port": self.server_port,
            }
        )

    def _validate_runtime(self) -> None:
        """What the systemd runtime has no part for (no images, no Prometheus) or cannot reach (a home)."""
        from pmcp.lifecycle.runtime import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise UsageError(
                f"unknown runtime {self.runtime!r}", fix=f"--runtime one of {', '.join(RUNTIMES)}"
            )
        if self.runtime != "systemd":
            return
        home = next(
            (h for h in ("/home", "/root", "/run/user") if Path(self.prefix).resolve().is_relative_to(h)), ""
        )
        if home:
            raise UsageError(
                f"--prefix {self.prefix} is under {home}, which the server's unit hides (ProtectHome=yes)",
                fix="choose a prefix outside home directories, e.g. --prefix /opt/pmcp",
            )
        if self.images:
            raise UsageError(
                "--bundle holds container images, and --runtime systemd runs none",
                fix="leave out --bundle: the pmcp file is all the systemd runtime needs, also air-gapped",
            )
        if self.domain and not self.tls_cert and not self.http_port:
            raise UsageError(
                "--domain gets its certificate by ACME http-01, which needs --http-port (0 turns it off)",
                fix="--http-port 80 (the CA connects there), or give --tls-cert/--tls-key",
            )
        if self.monitoring:
            raise UsageError(
                "--monitoring is not available with --runtime systemd",
                fix="leave out --monitoring, or use the default runtime (compose)",
            )

    def _validate_acme(self) -> None:
        """--acme-ca goes into the Caddyfile verbatim: only a plain https URL may get there."""
        if self.acme_ca_root and not self.acme_ca:
            raise StepError("--acme-ca-root needs --acme-ca", fix="add --acme-ca URL of your ACME directory")
        if not self.acme_ca:
            return
        if not self.domain or self.tls_cert:
            raise StepError(
                "--acme-ca is where the certificate for --domain comes from",
                fix="add --domain NAME (and leave out --tls-cert/--tls-key)",
            )
        from urllib.parse import urlsplit

        example = "e.g. --acme-ca https://ca.example.lan/acme/acme/directory"
        try:
            url = urlsplit(self.acme_ca)
            url.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise StepError(f"--acme-ca is not a URL: {exc}", fix=example) from exc
        bad = [c for c in self.acme_ca if c.isspace() or c in '"{}#`\\' or not c.isprintable()]
        if url.scheme != "https" or not url.hostname or bad or url.username or url.password:
            raise StepError(
                # the value is not echoed: it might hold credentials
                "--acme-ca must be an https URL (ACME requires HTTPS) without spaces, quotes, braces "
                "or credentials",
                fix=example,
            )
        if self.acme_ca_root:
            text = Path(self.acme_ca_root).read_bytes()
            if b"-----BEGIN CERTIFICATE-----" not in text:
                raise StepError(
                    f"--acme-ca-root {self.acme_ca_root} holds no PEM certificate",
                    fix="give your ACME CA's root certificate in PEM (-----BEGIN CERTIFICATE-----)",
                )


def protected_list(opts: InstallOptions) -> list[int]:
    """The guests pmcp protects (--protect, plus a PMCP_PROTECTED the demo or tests put in extra_env)."""
    text = f"{opts.protect or ''},{opts.extra_env.get('PMCP_PROTECTED', '')}"
    items = [v.strip() for v in text.replace(" ", ",").split(",") if v.strip()]
    bad = [v for v in items if not v.isdigit()]
    if bad:
        raise UsageError(f"--protect: {bad[0]!r} is not a VMID", fix="e.g. --protect 100,105")
    return sorted({int(v) for v in items})


def stack_config(opts: InstallOptions, existing: dict[str, Any] | None = None) -> render.StackConfig:
    """The rendered configuration for these options. The image tag names the running pmcp file."""
    from pmcp.stack import engine

    pmcp_file = engine.self_file()
    digest = engine.file_digest(pmcp_file) if pmcp_file else ""
    if os.geteuid() == 0:
        # an install keeps its id (its data dirs are owned by it); a fresh one takes an id no host account
        # uses, so no account shares the containers' files (verify fails when one appears later)
        uid = int((existing or {}).get("uid") or render.free_container_id())
        gid = int((existing or {}).get("gid") or uid)
    else:
        uid, gid = os.getuid(), os.getgid()
    target = target_for(opts)
    mcp_image = images.mcp_image_for(digest) if digest else images.mcp_image(__version__)
    if not digest and existing and existing.get("mcp_image"):
        mcp_image = existing["mcp_image"]  # not a release file: keep the image the install runs
    # the trust install chose for what 8006 serves (TrustStep) stays until install looks again
    prior = existing or {}
    cfg = render.StackConfig(
        mode=opts.mode,
        approval=opts.approval or "confirm",
        approval_scope=opts.approval_scope or "destructive",
        proxmox_url=target.server_url(),
        token_id=TOKEN_ID,
        proxmox_ca=target.server_ca(prior),
        proxmox_ca_pem=prior.get("proxmox_ca_pem"),
        proxmox_tls_name=prior.get("proxmox_tls_name"),
        tls_insecure=False,
        public_names=target.public_names(),
        domain=opts.domain,
        acme_ca=opts.acme_ca,
        acme_ca_root=str(Path(opts.acme_ca_root).resolve()) if opts.acme_ca_root else None,
        tls_cert=str(Path(opts.tls_cert).resolve()) if opts.tls_cert else None,
        tls_key=str(Path(opts.tls_key).resolve()) if opts.tls_key else None,
        https_port=opts.https_port,
        http_port=opts.http_port,
        server_port=opts.server_port,
        prometheus_port=opts.prometheus_port,
        mcp_image=mcp_image,
        base_image=images.python_base(),
        caddy_image=images.caddy(),
        prometheus_image=images.prometheus(),
        digest=digest,
        uid=uid,
        gid=gid,
        monitoring=opts.monitoring,
        protected=",".join(str(v) for v in protected_list(opts)),
        ipv4_only=bool(opts.allow_from),
        extra_env=dict(opts.extra_env),
        sim=opts.sim,
        runtime=opts.runtime,
    )
    return cfg


def identity_info(opts: InstallOptions, trust: dict[str, Any] | None = None) -> dict[str, Any]:
    """How verify/uninstall reach Proxmox for this install (recorded in state.json; no secret).
    ``trust``: what the proxmox tls step chose (its ``verify`` and ``tls_name`` win)."""
    target = target_for(opts)
    info = {
        "token_id": TOKEN_ID,
        "pvesh": target.pvesh_command(),
        "pvesh_env": target.pvesh_env(),
        "api_url": target.api_url(),
        "verify": target.api_verify(),
        "tls_name": None,
        "pool": opts.pool,
    }
    info.update({k: v for k, v in (trust or {}).items() if k in ("verify", "tls_name", "trust")})
    return info


class TrustStep:
    """Step: look at the certificate port 8006 serves and decide how the server and the installer trust it
    (pmcp.host.pvecert: the host's CA, the public trust store for a name it carries, or a pin). Changes
    the rendered configuration only; in the demo the files were rendered before the simulator ran, so it
    renders them again when the choice changes them."""

    name = "proxmox tls"

    def __init__(
        self, opts: InstallOptions, ctx: StackContext, shared: dict[str, Any], rerender: bool
    ) -> None:
        self.opts = opts
        self.target = target_for(opts)
        self.ctx = ctx
        self.shared = shared  # read by the identity step and verify (identity_info)
        self.rerender = rerender
        self.trust: Any = None

    def _decide(self) -> Any:
        from urllib.parse import urlsplit

        from pmcp.host import pvecert

        api = urlsplit(self.target.api_url())
        url_host = urlsplit(self.ctx.config.proxmox_url).hostname or "127.0.0.1"
        pve_ca, chain = self.target.served_certificate()
        return pvecert.choose(
            api.hostname or "127.0.0.1", api.port or 8006, url_host, pve_ca, chain, self.opts.proxmox_trust
        )

    def _apply_choice(self) -> None:
        t = self.trust
        cfg = self.ctx.config
        cfg.proxmox_tls_name = t.server_name
        if t.mode == "pve-ca":
            cfg.proxmox_ca_pem = None  # the file itself is mounted (the host's CA, or the simulator's)
            cfg.proxmox_ca = self.target.server_ca({})
            verify: bool | str = self.target.api_verify()
        elif t.mode == "system":
            cfg.proxmox_ca_pem = None
            cfg.proxmox_ca = None
            verify = True
        else:
            cfg.proxmox_ca_pem = t.pem.decode()
            verify = str(self.ctx.paths.prefix / "pve-root-ca.pem")
        self.shared.update(verify=verify, tls_name=t.server_name, trust=t.mode)

    def _files(self) -> Any:
        from pmcp.stack.steps import FilesStep

        return FilesStep(self.ctx)

    def check(self) -> Plan:
        self.trust = self._decide()
        self._apply_choice()
        t = self.trust
        plan = Plan(notes=[f"port 8006 serves {t.detail} (SHA-256 {t.fingerprint[:23]}...)"])
        how = {"pve-ca": "the host's CA", "system": "the system trust store", "pin": "a pin"}[t.mode]
        plan.notes.append(
            f"the server trusts it with {how}"
            + (f", checking the name {t.server_name}" if t.server_name else "")
            + ("" if self.opts.proxmox_trust != "auto" else " (override: --proxmox-trust pve-ca|system|pin)")
        )
        pin = self.ctx.paths.prefix / "pve-root-ca.pem"
        if t.mode == "pin" and (not pin.is_file() or pin.read_bytes() != t.pem):
            plan.changes.append(f"write the pinned certificate to {pin}")
        if self.rerender:
            plan.changes += self._files().check().changes
        return plan

    def apply(self) -> None:
        if self.trust.mode == "pin":
            atomic_write(self.ctx.paths.prefix / "pve-root-ca.pem", self.trust.pem, 0o644)
        if self.rerender:
            self._files().apply()

    def undo(self) -> None:
        """The files it wrote belong to the files step, which removes them."""


class Deferred:
    """A step built only when it is reached: it needs facts that an earlier step (preflight) gathers."""

    def __init__(self, name: str, factory: Callable[[], Step | None]) -> None:
        self.name = name
        self._factory = factory
        self._step: Step | None = None
        self._built = False

    def _get(self) -> Step | None:
        if not self._built:
            self._step = self._factory()
            self._built = True
        return self._step

    def check(self) -> Plan:
        step = self._get()
        return step.check() if step else Plan(notes=["not needed here"])

    def apply(self) -> None:
        step = self._get()
        if step:
            step.apply()

    def undo(self) -> None:
        step = self._get()
        if step:
            step.undo()


class Skipped:
    """A step that does not apply to this install, with the reason shown."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def check(self) -> Plan:
        return Plan(notes=[self.reason])

    def apply(self) -> None:
        """Nothing to do."""

    def undo(self) -> None:
        """Nothing was done."""


@dataclass
class InstallPlan:
    """The built step list and what the steps share."""

    opts: InstallOptions
    paths: InstallPaths
    ctx: StackContext
    steps: list[Step] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    trust: dict[str, Any] = field(default_factory=dict)


def build(
    opts: InstallOptions,
    *,
    dry_run: bool = False,
    purge: bool = False,
    redact: Callable[[str], str] | None = None,
    recorded: bool = False,
    keep_images: bool = False,
) -> InstallPlan:
    """The ordered steps of an install with these options (uninstall runs their undo in reverse).

    ``recorded``: use the configuration state.json recorded (uninstall removes what is there, whatever
    version of pmcp runs it) instead of computing it from the options and this file.
    """
    paths = InstallPaths.at(opts.prefix)
    existing = statefile.load(paths).get("config") if paths.state_file.exists() else None
    cfg = render.StackConfig.from_dict(existing) if (recorded and existing) else stack_config(opts, existing)
    ctx = StackContext(
        paths=paths,
        config=cfg,
        project=project_name(paths.prefix),
        images_archive=opts.images,
        health_timeout=opts.health_timeout,
    )
    if redact:
        ctx.redact = redact
    b = InstallPlan(opts, paths, ctx)
    target = target_for(opts)
    pvesh = target.pvesh

    preflight_holder: dict[str, Any] = {}
    systemd = opts.runtime == "systemd"

    def make_preflight() -> Step:
        from pmcp.host.preflight import Preflight, PreflightOptions

        ports = [("0.0.0.0", opts.https_port), ("127.0.0.1", opts.server_port)]
        if systemd:  # the socket unit listens on the HTTPS port only; a re-run finds its own there
            from pmcp.stack import systemd as sd

            ports = [] if sd.active(sd.Names(ctx.project).socket) else [("0.0.0.0", opts.https_port)]
            if opts.domain and not opts.tls_cert and opts.http_port:  # ACME's http-01, while ordering
                ports.append(("0.0.0.0", opts.http_port))
        elif opts.http_port:
            ports.append(("0.0.0.0", opts.http_port))
        if opts.monitoring:
            ports.append(("127.0.0.1", opts.prometheus_port))
        step = Preflight(
            PreflightOptions(
                require_root=opts.host_checks,
                require_pve=opts.host_checks,
                node=opts.node,
                ports=ports,
                prefix=paths.prefix,
                compose_project=ctx.project,
                pvesh=pvesh(),
                min_free_mb=1024 if opts.host_checks else 256,
                require_docker=not systemd,
            )
        )
        preflight_holder["step"] = step
        return step

    def make_forward() -> Step | None:
        if not opts.host_checks:
            return Skipped("vm networking", "demo: the host's networking is left alone")
        from pmcp.host.dockeruser import ForwardSafety

        facts = preflight_holder["step"].facts if "step" in preflight_holder else None
        version = facts.docker_version if facts else _docker_version()
        return ForwardSafety(version, paths.prefix / "host-state")

    trust: dict[str, Any] = {}
    identity = identity_info(opts)

    def make_identity() -> Step | None:
        from pmcp.host.pve import ProxmoxIdentity

        identity.update(identity_info(opts, trust))  # the proxmox tls step ran: verify with its choice
        return ProxmoxIdentity(
            pvesh(),
            opts.mode,
            paths,
            pool=opts.pool,
            rotate=opts.rotate_token,
            api_url=target.api_url(),
            verify=identity["verify"],
            tls_name=identity["tls_name"],
            secret_owner=render.secret_owner(cfg.gid)[0],
            protected=protected_list(opts),
        )

    def make_agent() -> Step | None:
        if not opts.agent_user:
            return Skipped("agent account", "no agent account (--agent-user not given)")
        from pmcp.host.agent_user import AgentContainment
        from pmcp.host.files import host_state_dir

        return AgentContainment(
            opts.agent_user,
            backup_dir=host_state_dir(paths) / "agent-user",
            edit_shared=opts.edit_shared_sudoers,
        )

    def make_firewall() -> Step | None:
        from pmcp.host.firewall import FirewallRule

        facts = preflight_holder["step"].facts if "step" in preflight_holder else None
        node = opts.node or (facts.node if facts else None) or statefile.load(paths).get("node") or ""
        return FirewallRule(pvesh(), node, port=opts.https_port, allow_from=opts.allow_from)

    def make_api_firewall() -> Step | None:
        from pmcp.host.firewall import ApiAccessRule
        from pmcp.stack import engine

        facts = preflight_holder["step"].facts if "step" in preflight_holder else None
        node = opts.node or (facts.node if facts else None) or statefile.load(paths).get("node") or ""
        try:
            subnet = engine.service_subnet(ctx.docker, ctx.project)
        except StepError:
            subnet = None  # uninstall with the engine gone: undo finds the rule by its comment anyway
        return ApiAccessRule(pvesh(), node, subnet)

    preflight = Deferred("preflight", make_preflight)
    steps: list[Step] = [InstallDirStep(paths, purge=purge)]
    if systemd:
        makers = {"proxmox identity": make_identity, "agent account": make_agent, "firewall": make_firewall}
        host = [Deferred(n, f) for n, f in makers.items()]
        b.steps = _systemd_steps(opts, ctx, b, steps[0], preflight, trust, identity, recorded, dry_run, *host)
        b.facts = preflight_holder
        b.trust = trust
        return b
    if target.simulated:  # the simulator is part of the stack: its files and image come first
        steps += [
            FilesStep(ctx),
            ImageStep(ctx, remove_on_undo=not keep_images),
            SimulatorStep(ctx),
            preflight,
        ]
    else:  # preflight first: a host that cannot take the stack gets no install dir either
        steps = [preflight, *steps, Deferred("vm networking", make_forward)]
    if not recorded:  # uninstall removes what is there: no need to look at the certificate
        steps.append(TrustStep(opts, ctx, trust, rerender=target.simulated))
    # Proxmox and Docker side by side: the identity needs only pvesh, the containers (all but the server's
    # start) need no secret. Measured on the demo (bench_install): identity 2.9 s and the stack's compose
    # runs no longer follow one another.
    identity_branch: list[Step] = [
        Deferred("proxmox identity", make_identity),
        Deferred("agent account", make_agent),
        SecretsStep(ctx),
    ]
    docker_branch: list[Step] = []
    if not target.simulated:
        docker_branch += [FilesStep(ctx), ImageStep(ctx, remove_on_undo=not keep_images)]
    steps.append(Together(identity_branch, [*docker_branch, ContainersStep(ctx), ServerStartStep(ctx)]))
    # the server's own way to the API through the Proxmox firewall (its network exists since the
    # containers step) and the HTTPS rule are set while the stack starts and gets healthy
    steps.append(
        Together(
            [StackStep(ctx)],
            [Deferred("api firewall", make_api_firewall), Deferred("firewall", make_firewall)],
        )
    )
    if opts.allow_from and opts.host_checks:
        from pmcp.host.dockeruser import PublishedPortFilter

        # pve-firewall's rule never sees Docker's DNATed traffic: enforce the CIDR in DOCKER-USER too
        steps.append(PublishedPortFilter(opts.https_port, opts.allow_from))
    if opts.client_config:
        steps.append(ClientsStep(paths))
    if opts.auto_update:
        from pmcp.lifecycle.schedule import AutoUpdateStep

        steps.append(AutoUpdateStep(opts.auto_update, prefix=paths.prefix))
    from pmcp.lifecycle.verify import VerifyStep

    steps.append(VerifyStep(paths.prefix, dry_run=dry_run, identity=identity, agent_user=opts.agent_user))
    b.steps = steps
    b.facts = preflight_holder
    b.trust = trust
    return b


def _systemd_steps(
    opts: InstallOptions,
    ctx: StackContext,
    b: InstallPlan,
    install_dir: Step,
    preflight: Step,
    trust: dict[str, Any],
    identity: dict[str, Any],
    recorded: bool,
    dry_run: bool,
    *host_steps: Step,
) -> list[Step]:
    """The same install for the systemd runtime (pmcp.stack.systemd): the server file, pmcp's certificate,
    the units and the running server take the place of the image, Caddy and the compose stack; no Docker
    networking to keep safe, and the server reaches Proxmox from the host itself (no API rule)."""
    from pmcp.lifecycle.verify import VerifyStep
    from pmcp.stack import systemd as sd

    names = sd.Names(ctx.project)
    cfg, paths = ctx.config, b.paths
    server_file, units = sd.ServerFileStep(paths, cfg, names), sd.UnitsStep(paths, cfg, names)
    steps: list[Step] = [install_dir]
    if opts.sim:
        steps += [server_file, units, sd.SimServiceStep(paths, cfg, names, opts.health_timeout), preflight]
    else:
        steps = [preflight, *steps]
    if not recorded:
        steps.append(TrustStep(opts, ctx, trust, rerender=bool(opts.sim)))
    identity_step, agent_step, firewall_step = host_steps
    steps += [identity_step, agent_step, SecretsStep(ctx), FilesStep(ctx), sd.CertificateStep(paths, cfg)]
    if not opts.sim:
        steps += [server_file, units]
    steps += [
        sd.AccountStep(cfg, names),
        sd.ServiceStep(paths, cfg, names, opts.health_timeout),
        firewall_step,
    ]
    if opts.client_config:
        steps.append(ClientsStep(paths))
    if opts.auto_update:
        from pmcp.lifecycle.schedule import AutoUpdateStep

        steps.append(AutoUpdateStep(opts.auto_update, prefix=paths.prefix))
    steps.append(VerifyStep(paths.prefix, dry_run=dry_run, identity=identity, agent_user=opts.agent_user))
    return steps


def check_host(opts: InstallOptions) -> None:
    """Preflight alone, changing nothing: raises NotReady listing every blocking problem at once.

    The CLI runs it before asking "Install?", so nobody confirms and then learns the host is wrong."""
    for step in flat(build(opts, dry_run=True).steps):
        if step.name == "preflight":
            step.check()
            return


def _docker_version() -> str:
    from pmcp.stack import engine

    try:
        return str(engine.client().version().get("Version", ""))
    except StepError:
        return ""


class ClientsStep:
    """Client configuration files in clients/: Claude Code's `claude mcp add` line and a `.mcp.json`."""

    name = "client config"

    def __init__(self, paths: InstallPaths) -> None:
        self.paths = paths

    def _wanted(self) -> dict[str, tuple[str, int]]:
        from pmcp import clients

        out: dict[str, tuple[str, int]] = {}
        prepared = clients.prepare(self.paths.prefix, "claude-code")
        for cfg in prepared.configs:
            for snip in cfg.snippets:
                if snip.kind == "command":
                    out["claude-code.sh"] = (snip.text.rstrip() + "\n", 0o644)
                elif snip.kind == "file":
                    out[Path(snip.path).name or ".mcp.json"] = (snip.text.rstrip() + "\n", 0o644)
        from pmcp.lifecycle.verify import caddy_ca_pem

        if self.paths.own_root_ca.is_file():  # the systemd runtime: pmcp's own CA
            out["pmcp-root-ca.crt"] = (self.paths.own_root_ca.read_text(), 0o644)
        else:
            ca = caddy_ca_pem(self.paths)
            if ca is not None:
                out["caddy-root-ca.crt"] = (ca, 0o644)
        return out

    def check(self) -> Plan:
        try:
            wanted = self._wanted()
        except UnsafeFile as exc:
            raise StepError(str(exc.strerror), fix="pmcp logs caddy") from None
        except Exception as exc:
            return Plan(notes=[f"client configuration skipped: {exc}"])
        plan = Plan()
        for name, (text, _) in wanted.items():
            p = self.paths.clients_dir / name
            if not p.exists() or p.read_text() != text:
                plan.changes.append(f"write {p}")
        return plan

    def apply(self) -> None:
        for name, (text, mode) in self._wanted().items():
            atomic_write(self.paths.clients_dir / name, text.encode(), mode)

    def undo(self) -> None:
        import shutil

        shutil.rmtree(self.paths.clients_dir, ignore_errors=True)


@dataclass
class InstallResult:
    run: RunResult
    url: str = ""
    prefix: str = ""
    token_file: str = ""
    ca_file: str = ""
    transcript: str = ""
    verify: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.run.ok

    def to_dict(self) -> dict[str, Any]:
        out = self.run.to_dict()
        out.update(
            url=self.url,
            prefix=self.prefix,
            token_file=self.token_file,
            ca_file=self.ca_file,
            transcript=self.transcript,
        )
        if self.verify:
            out["verify"] = self.verify
        return out


def install(
    opts: InstallOptions,
    *,
    dry_run: bool = False,
    report: Callable[[StepResult], None] | None = None,
    kind: str = "install",
) -> InstallResult:
    """Run the install under the host lock, with a redacted transcript; never raises a StepError."""
    from pmcp.lifecycle.lock import HostLock

    paths = InstallPaths.at(opts.prefix)
    if opts.auto_update is None and paths.state_file.exists():
        # a re-run without --auto-update keeps (and records) the schedule chosen before
        opts.auto_update = (statefile.load(paths).get("options") or {}).get("auto_update")
    if opts.protect is None and paths.state_file.exists():
        # a re-run without --protect keeps the protected guests: dropping them would widen the token
        opts.protect = (statefile.load(paths).get("options") or {}).get("protect")
    for name in ("approval", "approval_scope"):  # a re-run without --approval keeps the install's choice
        if getattr(opts, name) is None and paths.state_file.exists():
            setattr(opts, name, (statefile.load(paths).get("options") or {}).get(name))
    try:
        opts.validate()
        from pmcp.lifecycle.runtime import refuse_switch

        refuse_switch(paths, opts.runtime)
    except StepError as exc:
        res = RunResult(dry_run=dry_run)
        res.steps.append(StepResult.from_error("options", exc))
        return InstallResult(res, prefix=str(paths.prefix))
    transcript = None if dry_run else _open_transcript(kind, paths)

    def on_step(r: StepResult) -> None:
        if transcript:
            transcript.redact.add_install_secrets(paths)  # secrets this run just created are masked too
            transcript.step(r)
        if report:
            report(r)

    plan: InstallPlan | None = None
    try:
        with HostLock(command=f"pmcp {kind}"):
            plan = build(opts, dry_run=dry_run, redact=transcript.redact if transcript else None)
            if transcript:
                transcript.line(f"prefix {paths.prefix}, options {_public_options(opts)}")
            try:
                run = run_steps(plan.steps, dry_run=dry_run, report=on_step)
            except BaseException:
                if transcript:
                    transcript.finish(False, "interrupted")
                raise
    except StepError as exc:  # the lock
        run = RunResult(dry_run=dry_run)
        run.steps.append(StepResult.from_error("lock", exc))
        on_step(run.steps[-1])
    result = InstallResult(run, prefix=str(paths.prefix))
    if paths.state_file.exists():
        cfg = render.StackConfig.from_dict(statefile.load(paths).get("config", {}))
        result.url = cfg.url
        result.token_file = str(paths.client_tokens)
        if cfg.runtime == "systemd" and not (cfg.tls_cert or cfg.domain):
            result.ca_file = str(paths.own_root_ca)
        elif not (cfg.domain or cfg.tls_cert):
            copy = paths.clients_dir / "caddy-root-ca.crt"  # root's checked copy, not Caddy's own file
            result.ca_file = str(copy if copy.is_file() else paths.caddy_root_ca)
        if not dry_run:
            pre = plan.facts.get("step") if plan else None
            _record(paths, opts, cfg, run, kind, pre.facts.node if pre else "", plan.trust if plan else None)
    from pmcp.lifecycle.verify import VerifyStep

    for step in flat(plan.steps) if plan else []:
        if isinstance(step, VerifyStep) and step.report:
            result.verify = [r.to_dict() for r in step.report.rows]
    if transcript:
        result.transcript = str(transcript.path)
        transcript.finish(run.ok, "changed" if run.changed else "nothing to change")
    return result


def _public_options(opts: InstallOptions) -> dict[str, Any]:
    return {k: v for k, v in opts.to_dict().items() if v not in (None, False, "", [])}


def _open_transcript(kind: str, paths: InstallPaths) -> Any:
    from pmcp.lifecycle.run import begin

    try:
        return begin(kind, paths.prefix)[2]
    except OSError:
        return None


def _record(
    paths: InstallPaths,
    opts: InstallOptions,
    cfg: render.StackConfig,
    run: RunResult,
    kind: str,
    node: str,
    trust: dict[str, Any] | None = None,
) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = statefile.load(paths)
    tls = "custom" if cfg.tls_cert else ("acme" if cfg.domain else "internal")
    changes: dict[str, Any] = {
        "version": __version__,
        "options": opts.to_dict(),
        "url": cfg.url,
        "domain": cfg.domain,
        "acme_ca": cfg.acme_ca,
        "https_port": cfg.https_port,
        "tls": tls,
        "mcp_image": cfg.mcp_image,
        "identity": {**data.get("identity", {}), **identity_info(opts, trust)},
        f"last_{kind}": {"at": now, "ok": run.ok, "changed": run.changed},
    }
    if node:
        changes["node"] = node
    if run.ok and "installed_at" not in data:
        changes["installed_at"] = now
    statefile.update(paths, **changes)


step_line = outcome.step_line  # where the CLI and the demo stack have always found it
