"""`pmcp verify`: prove the install works the way a client uses it, and that the security promises hold.

A real MCP session through Caddy with the real Host header and TLS verified against Caddy's own root CA,
401 without a token, root@pam out of the token's reach, the agent account contained, the containers
hardened. Every check gives a result and, when it fails, the fix. Usable any time, not only by install.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pmcp import authtokens
from pmcp import record as statefile
from pmcp.errors import NotReady
from pmcp.files import UnsafeFile, read_certificate
from pmcp.paths import InstallPaths
from pmcp.stack import engine
from pmcp.stack.render import ACME_ROOT, StackConfig
from pmcp.steps import Plan, StepError

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
SERVER_HEALTH_CACHE = 5.0  # pmcp.server.app.HEALTH_CACHE_SECONDS (the server's own module is not imported)
PREFERRED_READ_TOOLS = ("cluster_status", "list_nodes", "get_version", "list_guests")


@dataclass
class Row:
    check: str
    result: str
    detail: str = ""
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    rows: list[Row]

    @property
    def ok(self) -> bool:
        return all(r.result != FAIL for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [r.to_dict() for r in self.rows]}

    def table(self) -> str:
        w = max([len(r.check) for r in self.rows] + [5])
        lines = [f"{'check'.ljust(w)}  result  detail"]
        for r in self.rows:
            lines.append(f"{r.check.ljust(w)}  {r.result.ljust(6)}  {r.detail}")
            if r.fix and r.result in (FAIL, WARN):
                lines.append(f"{''.ljust(w)}  {'fix:'.ljust(6)}  {r.fix}")
        return "\n".join(lines)


@dataclass
class Target:
    """Where and how to reach the installed server, from state.json and the secrets."""

    paths: InstallPaths
    config: StackConfig
    project: str
    token: str
    agent_user: str | None
    identity: dict[str, Any]
    node: str = ""
    image_ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def server_name(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    def ssl_context(self) -> ssl.SSLContext:
        if self.config.runtime == "systemd" and not (self.config.tls_cert or self.config.domain):  # pmcp's CA
            return ssl.create_default_context(
                cadata=read_certificate(
                    self.paths.prefix, self.paths.own_root_ca.relative_to(self.paths.prefix)
                )
            )
        if self.config.domain and not self.config.tls_cert:
            ctx = ssl.create_default_context()
            acme_root = self.paths.prefix / ACME_ROOT
            if self.config.acme_ca_root and acme_root.exists():  # a private ACME CA (--acme-ca-root)
                ctx.load_verify_locations(cafile=str(acme_root))
            return ctx
        if self.config.tls_cert:  # the copy install made: the user's file may be gone
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(cadata=read_certificate(self.paths.prefix, "tls/cert.pem"))
            return ctx
        pem = caddy_ca_pem(self.paths)
        if pem is None:
            raise FileNotFoundError(f"Caddy's root CA {self.paths.caddy_root_ca} does not exist (yet)")
        return ssl.create_default_context(cadata=pem)


def caddy_ca_pem(paths: InstallPaths) -> str | None:
    """Caddy's root CA, read from the directory the Caddy container owns without following a symlink, as
    a PEM certificate and nothing else (None while Caddy has not written it). Root copies it 0644 for
    clients: without these checks a compromised Caddy could make root publish any host file."""
    try:
        return read_certificate(paths.prefix, paths.caddy_root_ca.relative_to(paths.prefix))
    except FileNotFoundError:
        return None
    except UnsafeFile as exc:
        raise UnsafeFile(
            exc.errno,
            f"{exc.strerror}; refusing to use Caddy's root CA (a compromised Caddy container?): "
            f"check `pmcp logs caddy`, then remove {paths.caddy_root_ca.parent} and re-run pmcp install",
        ) from None


def load_target(prefix: str | Path) -> Target:
    paths = InstallPaths.at(prefix)
    data = statefile.load(paths)
    if not data.get("config"):
        raise NotReady(
            f"no pmcp install at {paths.prefix} (no state.json)", fix="pmcp install (or --prefix DIR)"
        )
    try:
        tokens = authtokens.load(paths.client_tokens)
    except (OSError, authtokens.TokenFileError) as exc:
        raise StepError(
            f"cannot read the client tokens {paths.client_tokens}: {exc}", fix="run as root"
        ) from exc
    if not tokens:
        raise StepError("no client token", fix="pmcp client-config --new-token NAME")
    token = tokens.get("default") or next(iter(tokens.values()))
    return Target(
        paths=paths,
        config=StackConfig.from_dict(data["config"]),
        project=data.get("project", ""),
        token=token,
        agent_user=data.get("options", {}).get("agent_user"),
        identity=data.get("identity", {}),
        node=data.get("node", ""),
        image_ids=data.get("image_ids") or {},
    )


def _https_conn(t: Target, timeout: float = 10) -> http.client.HTTPSConnection:
    """HTTPS to 127.0.0.1:port, but with the public name for SNI, certificate check and Host header."""
    ctx = t.ssl_context()
    port = t.config.https_port

    class _Conn(http.client.HTTPSConnection):
        def connect(self) -> None:
            raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            self.sock = ctx.wrap_socket(raw, server_hostname=t.server_name)

    return _Conn(t.server_name, port, timeout=timeout, context=ctx)


def check_tls(t: Target) -> Row:
    try:
        conn = _https_conn(t)
        conn.connect()
        cert = conn.sock.getpeercert()  # type: ignore[union-attr]
        conn.close()
    except (OSError, ssl.SSLError) as exc:
        how = "Caddy's root CA" if not (t.config.domain or t.config.tls_cert) else "the trust store"
        if t.config.domain and t.config.acme_ca_root:
            how += f" and {t.paths.prefix / ACME_ROOT}"
        return Row(
            "tls",
            FAIL,
            f"certificate for {t.server_name} does not verify against {how}: {exc}",
            "pmcp logs caddy; re-run pmcp install",
        )
    until = cert.get("notAfter", "?") if cert else "?"
    return Row("tls", PASS, f"{t.server_name}:{t.config.https_port} verified (valid until {until})")


def _post_status(t: Target, token: str | None) -> int:
    """HTTP status of a bare JSON-RPC POST to the endpoint, with or without the bearer token."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = _https_conn(t)
    try:
        conn.request("POST", urlsplit(t.url).path or "/mcp", body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def check_unauthenticated(t: Target) -> Row:
    try:
        status = _post_status(t, None)
    except (OSError, ssl.SSLError) as exc:
        return Row("auth required", FAIL, f"request failed: {exc}", "pmcp logs")
    if status == 401:
        return Row("auth required", PASS, "401 without a token")
    return Row(
        "auth required",
        FAIL,
        f"HTTP {status} without a token (expected 401)",
        "the server must run with PMCP_AUTH_TOKEN_FILE; re-run pmcp install",
    )


async def _mcp_session(t: Target) -> tuple[str, int, str]:
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {t.token}"}
    port = t.config.https_port
    async with (
        httpx2.AsyncClient(
            headers=headers, verify=t.ssl_context(), timeout=httpx2.Timeout(30, read=60)
        ) as http,
        Client(streamable_http_client(t.url, http_client=http)) as client,
    ):
        tools = (await client.list_tools()).tools
        pick = _pick_read_tool(tools)
        if pick is None:
            return "", len(tools), "no read tool without required arguments"
        result = await client.call_tool(pick, {})
        if getattr(result, "is_error", False) or getattr(result, "isError", False):
            text = " ".join(getattr(c, "text", "") for c in result.content)[:300]
            raise RuntimeError(f"tool {pick} returned an error: {text}")
        return pick, len(tools), f"port {port}"


def _pick_read_tool(tools: list[Any]) -> str | None:
    def is_read(tool: Any) -> bool:
        ann = getattr(tool, "annotations", None)
        ro = getattr(ann, "read_only_hint", None) if ann else None
        if ro is None and ann is not None:
            ro = getattr(ann, "readOnlyHint", None)
        schema = getattr(tool, "input_schema", None) or getattr(tool, "inputSchema", None) or {}
        return bool(ro) and not schema.get("required")

    names = {tool.name: tool for tool in tools}
    for name in PREFERRED_READ_TOOLS:
        if name in names and is_read(names[name]):
            return name
    return next((tool.name for tool in tools if is_read(tool)), None)


def check_mcp(t: Target) -> Row:
    try:
        tool, count, _ = asyncio.run(_mcp_session(t))
    except Exception as exc:
        msg = _root_cause(exc)
        try:
            status = _post_status(t, t.token)
        except (OSError, ssl.SSLError):
            status = 0
        if status in (401, 403):
            return Row(
                "mcp session",
                FAIL,
                f"the client token was refused (HTTP {status}) at {t.url}",
                f"use a token from {t.paths.client_tokens}, or add one: pmcp client-config --new-token NAME",
            )
        return Row("mcp session", FAIL, f"through {t.url}: {msg}", "pmcp logs mcp-server")
    if not tool:
        return Row(
            "mcp session", FAIL, f"{count} tools listed, but no read tool to call", "pmcp logs mcp-server"
        )
    return Row("mcp session", PASS, f"initialize, tools/list ({count} tools), {tool} through {t.url}")


def _root_cause(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:400]


def check_containers(t: Target) -> list[Row]:
    try:
        c = engine.client()
    except StepError as exc:
        return [Row("containers", FAIL, exc.message, exc.fix)]
    ctrs = engine.project_containers(c, t.project)
    rows = []
    for svc in ("mcp-server", "caddy"):
        ctr = ctrs.get(svc)
        if ctr is None:
            rows.append(Row(f"{svc} running", FAIL, "no container", "pmcp install"))
            continue
        st = engine.state_of(ctr)
        rows.append(
            Row(
                f"{svc} running",
                PASS if st.ready else FAIL,
                f"{st.status}, health {st.health}",
                "" if st.ready else f"pmcp logs {svc}",
            )
        )
        rows.append(_hardening(svc, ctr.attrs, t.config.ipv4_only))
    return rows


def hardening_problems(
    attrs: dict[str, Any], loopback_only: bool, allowed_caps: tuple[str, ...] = (), ipv4_only: bool = False
) -> list[str]:
    cfg, host = attrs.get("Config", {}), attrs.get("HostConfig", {})
    problems = []
    user = (cfg.get("User") or "").split(":")[0]
    if user in ("", "0", "root"):
        problems.append("runs as root")
    if not host.get("ReadonlyRootfs"):
        problems.append("root filesystem writable")
    if "ALL" not in [x.upper() for x in host.get("CapDrop") or []]:
        problems.append("capabilities not dropped")
    added = [c.upper().removeprefix("CAP_") for c in host.get("CapAdd") or []]
    extra = sorted(set(added) - set(allowed_caps))
    if extra:
        problems.append(f"capabilities added: {', '.join(extra)}")
    if not any(o.startswith("no-new-privileges") for o in host.get("SecurityOpt") or []):
        problems.append("no-new-privileges not set")
    if host.get("Privileged"):
        problems.append("privileged")
    if loopback_only:
        for binds in (host.get("PortBindings") or {}).values():
            for b in binds or []:
                if b.get("HostIp") not in ("127.0.0.1", "::1"):
                    problems.append(f"port published on {b.get('HostIp') or '0.0.0.0'}")
    if ipv4_only:  # --allow-from: its DOCKER-USER filter is IPv4, so nothing may listen on IPv6
        for port, binds in (host.get("PortBindings") or {}).items():
            for b in binds or []:
                if ":" in (b.get("HostIp") or ":"):
                    problems.append(f"{port} published on IPv6 too ({b.get('HostIp') or 'all addresses'})")
    return problems


def _hardening(svc: str, attrs: dict[str, Any], ipv4_only: bool = False) -> Row:
    allowed = ("NET_BIND_SERVICE",) if svc == "caddy" else ()  # see the compose file: exec needs it
    problems = hardening_problems(
        attrs, loopback_only=svc == "mcp-server", allowed_caps=allowed, ipv4_only=ipv4_only and svc == "caddy"
    )
    if problems:
        return Row(
            f"{svc} hardening",
            FAIL,
            "; ".join(problems),
            "re-run pmcp install (the compose file is rewritten)",
        )
    return Row(f"{svc} hardening", PASS, "non-root, read-only, cap_drop ALL, no-new-privileges")


def check_identity(t: Target) -> list[Row]:
    from pmcp.host.pve import verify_identity

    try:
        checks = verify_identity(
            t.identity.get("api_url") or "https://127.0.0.1:8006",
            t.config.token_id,
            t.paths.proxmox_token_secret,
            verify=t.identity.get("verify", True),
            mode=t.config.mode,
            pool=t.identity.get("pool"),
            protected=protected_vmids(t.config.protected),
            tls_name=t.identity.get("tls_name"),
        )
    except Exception as exc:
        return [Row("proxmox identity", FAIL, _root_cause(exc), "pmcp install")]
    return [Row(c.name, (WARN if c.warn else PASS) if c.ok else FAIL, c.detail, c.fix) for c in checks]


def protected_vmids(text: str | None) -> list[int]:
    """PMCP_PROTECTED as install records it ("100,105"); anything else is left to the server's check."""
    return [int(v) for v in (text or "").replace(" ", ",").split(",") if v.strip().isdigit()]


def _server_health(t: Target) -> dict[str, Any]:
    from pmcp.lifecycle import runtime

    return runtime.of(t.paths).health(t)


def check_server_api(t: Target) -> Row:
    """The server's own way to Proxmox (its /health probes the API): when it gets no answer, say why,
    and name the Proxmox firewall when that is what drops it (see pmcp.host.firewall.BLOCKED_CAUSE)."""
    name = "server reaches proxmox"
    try:
        health = _server_health(t)
        if not (health.get("proxmox") or {}).get("reachable"):
            time.sleep(SERVER_HEALTH_CACHE + 0.5)  # the server caches its probe: ask once more, fresh
            health = _server_health(t)
    except (OSError, ValueError) as exc:
        return Row(name, FAIL, f"no answer from the server's /health: {exc}", "pmcp logs mcp-server")
    if (health.get("proxmox") or {}).get("reachable"):
        return Row(name, PASS, f"the server gets answers from {t.config.proxmox_url}")
    cause, fix = _api_unreachable_cause(t)
    return Row(name, FAIL, cause, fix)


def _api_unreachable_cause(t: Target) -> tuple[str, str]:
    generic = (
        f"the server gets no answer from {t.config.proxmox_url}",
        "pmcp logs mcp-server; check PROXMOX_URL in .env and that pveproxy runs",
    )
    try:
        from pmcp.host.firewall import API_PORT, api_blocked
        from pmcp.host.run import Pvesh

        env = {**os.environ, **t.identity["pvesh_env"]} if t.identity.get("pvesh_env") else None
        pvesh = Pvesh(t.identity.get("pvesh"), env=env)
        subnet = engine.service_subnet(engine.client(), t.project)
        status = [] if t.node else pvesh.get("/cluster/status") or []
        local = [e["name"] for e in status if e.get("type") == "node" and e.get("local")]
        node = t.node or (local[0] if local else "")
        cause = api_blocked(pvesh, node, subnet) if node else None
    except Exception:  # no pvesh, no engine: the generic answer
        return generic
    if not cause:
        return generic
    return cause, (
        f"pmcp install (adds a node rule for {subnet}), or: pvesh create /nodes/{node}/firewall/rules "
        f"--type in --action ACCEPT --proto tcp --dport {API_PORT} --source {subnet} --enable 1"
    )


def check_agent(t: Target) -> list[Row]:
    if not t.agent_user:
        return [Row("agent account", SKIP, "no agent account configured (--agent-user)")]
    from pmcp.host.agent_user import escalation_battery

    return [
        Row(f"agent: {c.name}", PASS if c.ok else FAIL, c.detail, c.fix)
        for c in escalation_battery(t.agent_user)
    ]


def check_root_paths(t: Target) -> list[Row]:
    """What root runs and reads unattended must be changeable by root only: the install dir (and every
    directory above it) and the file the auto-update schedule runs."""
    import os

    from pmcp.files import path_fix, unsafe_component
    from pmcp.lifecycle import schedule

    if os.geteuid() != 0:
        return [Row("install dir", SKIP, "not run as root: ownership not checked")]
    rows = []
    found = unsafe_component(t.paths.prefix)
    rows.append(
        Row("install dir", FAIL, found[1], path_fix(t.paths.prefix))
        if found
        else Row("install dir", PASS, f"{t.paths.prefix} and every directory above it: root's only")
    )
    exe = schedule.scheduled_exe()
    if exe is not None:
        found = unsafe_component(exe)
        rows.append(
            Row(
                "auto-update file",
                FAIL,
                f"root runs {exe} on schedule, but {found[1]}",
                f"install -o root -g root -m 0755 {exe} {schedule.DEFAULT_EXE} && "
                f"{schedule.DEFAULT_EXE} install --auto-update daily ...",
            )
            if found
            else Row("auto-update file", PASS, f"{exe}: root's only")
        )
    return rows


def check_tls_insecure(t: Target) -> Row:
    if t.config.tls_insecure:
        return Row(
            "proxmox tls",
            WARN,
            "PROXMOX_TLS_INSECURE=1: the server does not verify Proxmox's certificate",
            "mount the Proxmox CA (/etc/pve/pve-root-ca.pem) and re-run pmcp install without it",
        )
    if t.config.proxmox_url.startswith("http://"):
        return Row("proxmox tls", WARN, f"{t.config.proxmox_url} is plain HTTP", "use https://HOST:8006")
    whose = {
        "system": "the system trust store",
        "pin": "the certificate install pinned (pve-root-ca.pem in the install dir)",
    }.get(
        t.identity.get("trust") or "",
        "the simulator's CA" if t.config.sim else "the host's CA (/etc/pve/pve-root-ca.pem)",
    )
    name = f" as {t.config.proxmox_tls_name}" if t.config.proxmox_tls_name else ""
    return Row("proxmox tls", PASS, f"{t.config.proxmox_url}{name} verified with {whose}")


def check_container_ids(t: Target, own_account: str | None = None) -> Row:
    """No host account shares the containers' uid or gid, and secrets/ is root's, group-readable only.
    ``own_account``: the systemd runtime's server account, which holds that uid/gid by design."""
    import os
    import stat

    from pmcp.stack import render

    if os.geteuid() != 0:
        return Row("container ids", SKIP, "not root: the containers run as the caller")
    uid, gid = t.config.uid, t.config.gid
    found = [
        a for a in render.host_accounts_using(uid, gid) if not own_account or f" {own_account} (" not in a
    ]
    if found:
        return Row(
            "container ids",
            FAIL,
            f"the containers' uid/gid {uid}:{gid} belongs to a host account: {', '.join(found)} "
            "(it could reach what the containers own)",
            "give that account another id (usermod -u / groupmod -g), or pmcp uninstall && pmcp install "
            "(a fresh install takes an id no account uses)",
        )
    bad = []
    for p, mode in [(t.paths.secrets_dir, render.SECRET_DIR_MODE)] + [
        (f, render.SECRET_MODE) for f in sorted(t.paths.secrets_dir.glob("*")) if not f.name.startswith(".")
    ]:
        st = p.lstat()
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) or (st.st_uid, st.st_gid) != (0, gid):
            bad.append(f"{p.name} owned {st.st_uid}:{st.st_gid}")
        elif stat.S_IMODE(st.st_mode) != mode:
            bad.append(f"{p.name} mode {stat.S_IMODE(st.st_mode):o}")
    if bad:
        return Row(
            "container ids",
            FAIL,
            f"secrets/ not root:{gid} 0750 with 0640 files: {', '.join(bad)}",
            "pmcp install (re-run: re-protects secrets/)",
        )
    return Row("container ids", PASS, f"{uid}:{gid} used by no host account; secrets/ root:{gid}, 0750/0640")


def image_problems(
    running: dict[str, dict[str, Any]], recorded: dict[str, str], mcp_labels: dict[str, str], digest: str
) -> list[Row]:
    """Each service runs the image install recorded for its tag (tags can be moved), and the MCP image
    holds this install's pmcp file (its io.pmcp.sha256 label)."""
    rows = []
    for svc, attrs in sorted(running.items()):
        tag, image_id = (attrs.get("Config") or {}).get("Image", ""), attrs.get("Image", "")
        want = recorded.get(tag)
        if not want:
            rows.append(Row(f"{svc} image", WARN, f"no image id recorded for {tag}", "re-run pmcp install"))
        elif want != image_id:
            rows.append(
                Row(
                    f"{svc} image",
                    FAIL,
                    f"runs {image_id[7:19]} but install recorded {want[7:19]} for {tag}: the tag was moved",
                    "find out who re-tagged it (`docker image inspect`), then re-run pmcp install",
                )
            )
        else:
            rows.append(Row(f"{svc} image", PASS, f"{tag} = {image_id[7:19]}, as installed"))
    label = mcp_labels.get("io.pmcp.sha256", "")
    if "mcp-server" in running and digest and label != digest:
        rows.append(
            Row(
                "mcp-server pmcp file",
                FAIL,
                f"the image holds pmcp {label[:12] or '(no label)'}, the install's file is {digest[:12]}",
                "re-run pmcp install with the release file (it rebuilds the image)",
            )
        )
    return rows


def check_images(t: Target) -> list[Row]:
    try:
        c = engine.client()
    except StepError:
        return []  # check_containers already reports an unreachable engine
    running = {
        svc: ctr.attrs
        for svc, ctr in engine.project_containers(c, t.project).items()
        if svc in ("mcp-server", "caddy", "prometheus")
    }
    mcp = running.get("mcp-server")
    labels = engine.image_labels(c, mcp.get("Image", "")) if mcp else {}
    return image_problems(running, t.image_ids, labels, t.config.digest)


def check_audit_space(t: Target) -> Row:
    """Warn before the audit log's quota or its disk runs short: then the server refuses every change."""
    from pmcp.lifecycle.status import audit_space

    usage = audit_space(t.paths)
    mib = 1024 * 1024
    detail = (
        f"{usage.used_bytes // mib} of {usage.max_bytes // mib} MiB used, "
        f"{usage.free_bytes // mib} MiB free on the disk of {usage.directory}"
    )
    if usage.warnings:
        return Row(
            "audit log space",
            WARN,
            "; ".join(usage.warnings),
            f"archive old audit-*.jsonl.gz files from {usage.directory} or free disk space",
        )
    return Row("audit log space", PASS, detail)


def check_audit_chain(t: Target) -> Row:
    """The audit log's HMAC chain holds (pmcp audit verify): no record edited, deleted, reordered or cut."""
    from pmcp.errors import PmcpError
    from pmcp.lifecycle import audit

    try:
        v = audit.verify(t.paths.prefix, newest=2)  # the newest part: a full log takes minutes
    except PmcpError as exc:
        return Row("audit log chain", WARN, exc.message, exc.fix)
    err = audit.broken(v)
    if err is not None:
        return Row("audit log chain", FAIL, err.message, err.fix)
    return Row("audit log chain", PASS, v.summary)  # type: ignore[attr-defined]


def run_verify(
    prefix: str | Path, identity: dict[str, Any] | None = None, agent_user: str | None = ""
) -> Report:
    """All checks. ``identity``/``agent_user`` override what state.json recorded (install passes them)."""
    t = load_target(prefix)
    if identity is not None:
        t.identity = identity
    if agent_user != "":
        t.agent_user = agent_user
    from pmcp.lifecycle import runtime

    server_rows = runtime.of(t.paths).server_rows(t)  # containers, or the unit: what differs by runtime
    later = [r for r in server_rows if r.check.endswith(" image") or r.check == "mcp-server pmcp file"]
    rows = [r for r in server_rows if r not in later and r.check != "container ids"]
    rows.append(check_tls(t))
    rows.append(check_unauthenticated(t))
    rows.append(check_mcp(t))
    rows.append(check_server_api(t))
    rows.extend(check_identity(t))
    rows += [r for r in server_rows if r.check == "container ids"]
    rows.extend(check_agent(t))
    rows.extend(check_root_paths(t))
    rows.append(check_tls_insecure(t))
    rows += later
    rows.append(check_audit_space(t))
    rows.append(check_audit_chain(t))
    return Report(rows)


class VerifyStep:
    """Install's last step: the same checks as `pmcp verify`; it changes nothing, a failing check fails it."""

    name = "verify"

    def __init__(
        self,
        prefix: str | Path,
        dry_run: bool = False,
        identity: dict[str, Any] | None = None,
        agent_user: str | None = "",
    ) -> None:
        self.prefix = prefix
        self.dry_run = dry_run
        self.identity = identity
        self.agent_user = agent_user
        self.report: Report | None = None

    def check(self) -> Plan:
        if self.dry_run:
            return Plan(notes=["would verify the install (pmcp verify)"])
        self.report = run_verify(self.prefix, self.identity, self.agent_user)
        failed = [r for r in self.report.rows if r.result == FAIL]
        if failed:
            raise StepError(
                "verification failed: " + "; ".join(f"{r.check}: {r.detail}" for r in failed),
                fix=failed[0].fix or "pmcp verify",
                detail=self.report.table(),
            )
        passed = sum(1 for r in self.report.rows if r.result == PASS)
        notes = [f"{passed} checks passed"]
        notes += [f"warning: {r.check}: {r.detail}" for r in self.report.rows if r.result == WARN]
        return Plan(notes=notes)

    def apply(self) -> None:
        """Never called: check() has nothing to change."""

    def undo(self) -> None:
        """Verification changes nothing."""
