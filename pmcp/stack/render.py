"""Templates -> install dir: each file written atomically, replaced files backed up, unchanged ones untouched.

Rendering is pure (a StackConfig in, a dict of file contents out) so a plan can be shown before anything is
written, and a second install can see that nothing differs and write nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import string
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pmcp import __version__
from pmcp.files import atomic_write, fix_owner_mode
from pmcp.paths import InstallPaths

CONTAINER_UID = 10001  # the first id tried; a fresh install takes the first one no host account uses
SECRET_MODE = 0o640  # as root: secrets are root:GID 0640 in a root:GID 0750 dir; the containers read them
SECRET_DIR_MODE = (
    0o750  # through their group, and an account sharing their uid can neither read nor chmod them
)
UPSTREAM_DEFAULT = "mcp-server:8080"
CA_IN_CONTAINER = "/run/pmcp/pve-root-ca.pem"
ACME_ROOT = "tls/acme-ca-root.pem"  # ./tls is mounted at /etc/caddy/tls
SIM_CA = "sim-state/tls/pve-root-ca.pem"

# Every file install may write (relative to the prefix): what uninstall removes.
GENERATED = (
    "docker-compose.yml",
    "Caddyfile",
    ".env",
    "image/Dockerfile",
    "image/pmcp",
    "prometheus.yml",
    "caddy.d/upstream.caddy",
    "tls/cert.pem",
    "tls/key.pem",
    "tls/acme-ca-root.pem",
    "pve-root-ca.pem",
)

# Directories the containers write to (owned by the container user) or read (config).
DATA_DIRS = (
    "audit",
    "caddy-data",
    "caddy-config",
    "caddy.d",
    "tls",
    "secrets",
    "prometheus-data",
    "sessions",
)


class _Tmpl(string.Template):
    # `$` belongs to compose, Dockerfile and Caddy; `@{...}` is ours.
    delimiter = "@"


def template_text(name: str) -> str:
    return resources.files("pmcp.stack").joinpath("templates", name).read_text(encoding="utf-8")


def _fill(name: str, values: dict[str, Any]) -> str:
    return _Tmpl(template_text(name)).substitute({k: str(v) for k, v in values.items()})


@dataclass
class SimService:
    """The demo's Proxmox simulator, run as one more service of the same project (same image)."""

    port: int = 9006
    nodes: int = 3
    guests: int = 20
    seed: int = 1
    # a host "as shipped" (tests): the Proxmox firewall on; a custom/ACME certificate on 8006 for this name
    firewall: bool = False
    custom_cert: str | None = None
    task_seconds: float = 1.0  # how long each simulated Proxmox task runs (tests of calls in flight)


@dataclass
class StackConfig:
    """Everything the templates need; in state.json (no secrets) so uninstall/update can rebuild it."""

    mode: str = "read-only"
    approval: str = "confirm"
    approval_scope: str = "destructive"
    proxmox_url: str = "https://127.0.0.1:8006"
    token_id: str = "pmcp@pve!mcp"
    proxmox_ca: str | None = "/etc/pve/pve-root-ca.pem"
    # what install chose to trust on 8006 (pmcp.host.pvecert): the PEM itself (wins over proxmox_ca), and
    # the name to check when the URL's host is not on the certificate (an ACME certificate for the FQDN)
    proxmox_ca_pem: str | None = None
    proxmox_tls_name: str | None = None
    tls_insecure: bool = False
    public_names: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    domain: str | None = None
    acme_ca: str | None = None
    acme_ca_root: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    https_port: int = 443
    http_port: int = 80
    server_port: int = 8080
    prometheus_port: int = 9090
    protected: str = ""
    task_timeout: int = 120
    mcp_image: str = ""
    base_image: str = ""
    caddy_image: str = ""
    prometheus_image: str = ""
    digest: str = ""
    uid: int = CONTAINER_UID
    gid: int = CONTAINER_UID
    monitoring: bool = False
    health_interval: str = "2s"
    ipv4_only: bool = False  # --allow-from: publish HTTPS on 0.0.0.0 only (the DOCKER-USER filter is IPv4)
    extra_env: dict[str, str] = field(default_factory=dict)
    sim: SimService | None = None
    runtime: str = "compose"  # or "systemd" (pmcp.lifecycle.runtime): chosen once, at install

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackConfig:
        data = dict(data)
        sim = data.pop("sim", None)
        known = {f for f in cls.__dataclass_fields__}
        cfg = cls(**{k: v for k, v in data.items() if k in known})
        cfg.sim = SimService(**sim) if sim else None
        return cfg

    @property
    def ca_source(self) -> str | None:
        """What is mounted as the Proxmox CA: the simulator's own CA, or install's copy of the host's CA
        (files under /etc/pve are not readable by the container's user, so install copies the public cert)."""
        if self.proxmox_ca_pem:
            return "./pve-root-ca.pem"
        if self.sim:
            return f"./{SIM_CA}"
        return "./pve-root-ca.pem" if self.proxmox_ca else None

    @property
    def url_host(self) -> str:
        host = self.domain or self.public_names[0]
        return f"[{host}]" if _is_ipv6(host) else host

    @property
    def url(self) -> str:
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self.url_host}{port}/mcp"


def _is_ipv6(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).version == 6
    except ValueError:
        return False


def _site_addresses(cfg: StackConfig) -> str:
    names = [cfg.domain] if cfg.domain else list(dict.fromkeys(cfg.public_names))
    return ", ".join(f"https://[{n}]" if _is_ipv6(n) else f"https://{n}" for n in names)


def _tls_line(cfg: StackConfig) -> str:
    if cfg.tls_cert and cfg.tls_key:
        return "\ttls /etc/caddy/tls/cert.pem /etc/caddy/tls/key.pem\n"
    if cfg.domain:
        return ""  # ACME: Caddy obtains and renews a public certificate by itself
    return "\ttls internal\n"


def _global_extra(cfg: StackConfig) -> str:
    """A private ACME CA (step-ca, Pebble…) in Caddy's global options: `acme_ca` is the directory,
    `acme_ca_root` the PEM file Caddy trusts for that directory's HTTPS (Caddy's own trust store
    holds only public roots)."""
    if not (cfg.domain and cfg.acme_ca) or cfg.tls_cert:
        return ""
    out = f"\tacme_ca {cfg.acme_ca}\n"
    if cfg.acme_ca_root:
        out += f"\tacme_ca_root /etc/caddy/{ACME_ROOT}\n"
    return out


def _allowed_hosts(cfg: StackConfig) -> list[str]:
    names = [cfg.domain] if cfg.domain else []
    return list(dict.fromkeys([*names, *cfg.public_names, "localhost", "127.0.0.1"]))


def compose_text(cfg: StackConfig) -> str:
    sim = ""
    if cfg.sim:
        pairs: list[tuple[str, object]] = [("nodes", cfg.sim.nodes), ("guests", cfg.sim.guests)]
        if cfg.sim.task_seconds != 1.0:
            pairs.append(("task-seconds", cfg.sim.task_seconds))
        args = "".join(f', "--{k}", "{v}"' for k, v in pairs)
        # the host's own pvesh and installer reach the simulator through the Docker gateway: that is "lo"
        args += ', "--local-addr", "gateway"'
        if cfg.sim.firewall:
            args += ', "--firewall"'
        if cfg.sim.custom_cert:
            args += f', "--tls-custom-cert", "{cfg.sim.custom_cert}"'
        sim = _fill(
            "sim-service.yml",
            {
                "mcp_image": cfg.mcp_image,
                "uid": cfg.uid,
                "gid": cfg.gid,
                "sim_args": args,
                "sim_port": cfg.sim.port,
                "health_interval": cfg.health_interval,
            },
        )
    ca_volume = ""
    if cfg.ca_source:
        ca_volume = f"      - {cfg.ca_source}:{CA_IN_CONTAINER}:ro\n"
    http_ports = ""
    if cfg.http_port:
        http_ports = f'      - "{cfg.http_port}:8080"\n'
    return _fill(
        "docker-compose.yml",
        {
            "version": __version__,
            "mcp_image": cfg.mcp_image,
            "caddy_image": cfg.caddy_image,
            "prometheus_image": cfg.prometheus_image,
            "uid": cfg.uid,
            "gid": cfg.gid,
            "ca_volume": ca_volume,
            "server_port": cfg.server_port,
            "health_interval": cfg.health_interval,
            "server_depends": "    depends_on:\n      - pve-sim\n" if cfg.sim else "",
            "https_bind": f"0.0.0.0:{cfg.https_port}" if cfg.ipv4_only else str(cfg.https_port),
            "http_ports": http_ports,
            "prometheus_port": cfg.prometheus_port,
            "sim_service": sim,
        },
    )


def caddyfile_text(cfg: StackConfig) -> str:
    return _fill(
        "Caddyfile",
        {
            "version": __version__,
            "global_extra": _global_extra(cfg),
            "site_addresses": _site_addresses(cfg),
            "tls_line": _tls_line(cfg),
            "https_suffix": "" if cfg.https_port == 443 else f":{cfg.https_port}",
        },
    )


def upstream_text(upstream: str = UPSTREAM_DEFAULT) -> str:
    return _fill("upstream.caddy", {"upstream": upstream})


def env_text(cfg: StackConfig) -> str:
    """The server's .env; ``extra_env`` lines come last, so they win (compose keeps the last of a name)."""
    hosts = _allowed_hosts(cfg)
    port = "" if cfg.https_port == 443 else f":{cfg.https_port}"
    origins = [f"https://{f'[{h}]' if _is_ipv6(h) else h}{port}" for h in hosts]
    return (
        _fill(
            "env",
            {
                "version": __version__,
                "mode": cfg.mode,
                "approval": cfg.approval,
                "approval_scope": cfg.approval_scope,
                "allowed_hosts": ",".join(hosts),
                "allowed_origins": ",".join(origins),
                "protected": cfg.protected,
                "task_timeout": cfg.task_timeout,
                "proxmox_url": cfg.proxmox_url,
                "token_id": cfg.token_id,
                "ca_file": CA_IN_CONTAINER if cfg.ca_source else "",
                "tls_insecure": "1" if cfg.tls_insecure else "0",
            },
        )
        + (f"PROXMOX_TLS_NAME={cfg.proxmox_tls_name}\n" if cfg.proxmox_tls_name else "")
        + "".join(f"{k}={v}\n" for k, v in sorted(cfg.extra_env.items()))
    )


def dockerfile_text(cfg: StackConfig) -> str:
    return _fill("Dockerfile", {"version": __version__, "base_image": cfg.base_image, "digest": cfg.digest})


def prometheus_text() -> str:
    return _fill("prometheus.yml", {"version": __version__})


@dataclass(frozen=True)
class FileSpec:
    content: bytes
    mode: int = 0o644
    secret: bool = False
    owner: tuple[int, int] | None = None  # chown (when root) so the non-root container can read it


def render(cfg: StackConfig, *, upstream: str | None = None) -> dict[str, FileSpec]:
    """The install dir's generated files, relative to the prefix.

    The upstream file is rendered only when asked (first install): afterwards it belongs to `pmcp update`,
    which points it at whichever server container is live.
    """
    files = {
        "docker-compose.yml": FileSpec(compose_text(cfg).encode()),
        "Caddyfile": FileSpec(caddyfile_text(cfg).encode()),
        ".env": FileSpec(env_text(cfg).encode(), 0o640),
        "image/Dockerfile": FileSpec(dockerfile_text(cfg).encode()),
        "prometheus.yml": FileSpec(prometheus_text().encode()),
    }
    if upstream is not None:
        files["caddy.d/upstream.caddy"] = FileSpec(upstream_text(upstream).encode())
    if cfg.acme_ca_root and _global_extra(cfg):
        files[ACME_ROOT] = FileSpec(Path(cfg.acme_ca_root).read_bytes())
    if cfg.tls_cert and cfg.tls_key:
        files["tls/cert.pem"] = FileSpec(Path(cfg.tls_cert).read_bytes())
        files["tls/key.pem"] = FileSpec(
            Path(cfg.tls_key).read_bytes(), 0o600, secret=True, owner=(cfg.uid, cfg.gid)
        )
    return files


def differs(paths: InstallPaths, files: dict[str, FileSpec]) -> list[str]:
    """Relative paths whose content or mode on disk is not what was rendered."""
    out = []
    for rel, spec in files.items():
        target = paths.prefix / rel
        try:
            same = target.read_bytes() == spec.content and (target.stat().st_mode & 0o777) == spec.mode
        except OSError:
            same = False
        if not same:
            out.append(rel)
    return out


def write(paths: InstallPaths, files: dict[str, FileSpec]) -> list[str]:
    """Write what differs; return the relative paths written. Caller backs up first (see FilesStep)."""
    written = []
    for rel in differs(paths, files):
        spec = files[rel]
        atomic_write(paths.prefix / rel, spec.content, spec.mode, spec.owner)
        written.append(rel)
    return written


def ensure_dirs(paths: InstallPaths, uid: int, gid: int) -> list[str]:
    """Create the data directories the containers use; return the ones created. ``secrets/`` stays
    root's (group-readable by the containers' group) when root runs this."""
    created = []
    paths.prefix.mkdir(parents=True, exist_ok=True)
    fix_owner_mode(paths.prefix, 0o755)  # never through a symlink
    for name in DATA_DIRS:
        d = paths.prefix / name
        if not os.path.lexists(d):
            try:
                d.mkdir(mode=0o700 if name in ("secrets", "caddy-data", "audit", "sessions") else 0o755)
                created.append(name)
            except FileExistsError:  # a step running beside this one (pmcp.steps.Together) made it
                pass
        if os.geteuid() == 0:
            if name == "secrets":
                fix_owner_mode(d, SECRET_DIR_MODE, (0, gid))  # never through a symlink
                _protect_secret_files(d, gid)
            else:
                fix_owner_mode(d, stat.S_IMODE(os.lstat(d).st_mode), (uid, gid))
    return created


def _protect_secret_files(secrets_dir: Path, gid: int) -> None:
    """An install made before secrets/ was root's (files 0600 of the container uid): make each regular file
    root:GID 0640, so `pmcp update` converges it too. Links and other non-files are left alone."""
    import stat

    for f in secrets_dir.iterdir():
        st = f.lstat()
        if stat.S_ISREG(st.st_mode) and not f.name.startswith(".") and (st.st_uid, st.st_gid) != (0, gid):
            fix_owner_mode(
                f, SECRET_MODE, (0, gid)
            )  # through an O_NOFOLLOW descriptor: no check-then-use race


def secret_owner(gid: int) -> tuple[tuple[int, int] | None, int]:
    """(owner, mode) of a secret file: root:GID 0640 as root, else the caller's own file 0600."""
    return ((0, gid), SECRET_MODE) if os.geteuid() == 0 else (None, 0o600)


def host_accounts_using(uid: int, gid: int) -> list[str]:
    """Host accounts or groups that hold the containers' uid or gid (they would share its files)."""
    import grp
    import pwd

    found = [f"user {p.pw_name} (uid {uid})" for p in pwd.getpwall() if p.pw_uid == uid]
    found += [
        f"user {p.pw_name} (primary gid {gid})" for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid != uid
    ]
    found += [f"group {g.gr_name} (gid {gid})" for g in grp.getgrall() if g.gr_gid == gid]
    return found


def free_container_id(start: int = CONTAINER_UID) -> int:
    """The first id from ``start`` that no host account uses as uid, primary gid or group id."""
    import grp
    import pwd

    used = {p.pw_uid for p in pwd.getpwall()} | {p.pw_gid for p in pwd.getpwall()}
    used |= {g.gr_gid for g in grp.getgrall()}
    n = start
    while n in used:
        n += 1
    return n


def fingerprint(paths: InstallPaths, rels: list[str]) -> str:
    """A hash of the files the running stack was started from: unchanged hash -> no restart needed."""
    h = hashlib.sha256()
    for rel in sorted(rels):
        p = paths.prefix / rel
        h.update(rel.encode() + b"\0")
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()
