"""`pmcp status`: services, health, versions, URL, token age and the last install/update, at a glance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pmcp import __version__
from pmcp import record as statefile
from pmcp.errors import NotReady
from pmcp.paths import InstallPaths
from pmcp.stack import engine
from pmcp.stack.compose import project_name
from pmcp.steps import StepError


def _age(path: Path) -> str:
    try:
        days = (time.time() - path.stat().st_mtime) / 86400
    except OSError:
        return "missing"
    return f"{days:.0f} days" if days >= 1 else f"{days * 24:.1f} hours"


def audit_space(paths: InstallPaths) -> Any:
    """The audit log's use of its quota and of the disk, with the server's limits from the install's .env
    (the server refuses changes at the quota or when the disk is short: warn before that)."""
    from pmcp.server.audit import DEFAULT_MAX_BYTES, DEFAULT_MIN_FREE, usage_of

    limits = {"PMCP_AUDIT_MAX_BYTES": DEFAULT_MAX_BYTES, "PMCP_AUDIT_MIN_FREE": DEFAULT_MIN_FREE}
    try:
        for line in paths.env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() in limits and value.strip().isdigit():
                limits[name.strip()] = int(value.strip())
    except OSError:
        pass
    return usage_of(paths.audit_dir, limits["PMCP_AUDIT_MAX_BYTES"], limits["PMCP_AUDIT_MIN_FREE"])


def _containers(project: str) -> tuple[dict[str, Any], bool]:
    """The compose runtime's services: each container's state, health, image and restarts."""
    services: dict[str, Any] = {}
    healthy = False
    try:
        c = engine.client()
        for svc, st in sorted(engine.states(c, project).items()):
            ctr = c.containers.get(st.id)
            services[svc] = {
                "status": st.status,
                "health": st.health,
                "image": (ctr.image.tags or [st.image[:19]])[0],
                "restarts": st.restarts,
            }
        healthy = all(services.get(s, {}).get("health") == "healthy" for s in ("mcp-server",)) and bool(
            services
        )
    except StepError as exc:
        services = {"error": {"status": exc.message, "health": "unknown"}}
    return services, healthy


def status(prefix: str | Path) -> dict[str, Any]:
    paths = InstallPaths.at(prefix)
    data = statefile.load(paths)
    if not data:
        raise NotReady(f"no pmcp install at {paths.prefix}", fix="pmcp install (or --prefix DIR)")
    project = data.get("project") or project_name(paths.prefix)
    from pmcp.lifecycle import runtime

    kind = runtime.name_of(paths)
    if kind == "systemd":
        services, healthy, server = runtime.systemd_services(paths, data)
    else:
        services, healthy = _containers(project)
        server = data.get("mcp_image", "")
    last_update = data.get("last_update")  # this install's own record; transcripts are host-wide
    if not last_update:
        try:
            from pmcp.lifecycle.transcript import last_result

            last_update = last_result("update")
        except Exception:
            last_update = None
    audit = audit_space(paths)
    return {
        "prefix": str(paths.prefix),
        "url": data.get("url", ""),
        "version": data.get("version", ""),
        "pmcp_running": __version__,
        "runtime": kind,
        "server": server,  # compose: the image; systemd: the pmcp file the live slot runs
        "image": data.get("mcp_image", "") if kind == "compose" else "",
        "mode": data.get("config", {}).get("mode", ""),
        "healthy": healthy,
        "services": services,
        "token_age": {"client": _age(paths.client_tokens), "proxmox": _age(paths.proxmox_token_secret)},
        "installed_at": data.get("installed_at", ""),
        "last_install": data.get("last_install"),
        "last_update": last_update,
        "audit": {
            "directory": audit.directory,
            "used_bytes": audit.used_bytes,
            "max_bytes": audit.max_bytes,
            "free_bytes": audit.free_bytes,
            "warnings": audit.warnings,
        },
    }


def _runtime_line(st: dict[str, Any]) -> str:
    kind = st.get("runtime") or "compose"
    server = st.get("server") or st.get("image") or "?"
    return f"runtime:  {kind}, {'image ' if kind == 'compose' else ''}{server}"


def render_text(st: dict[str, Any]) -> str:
    lines = [
        f"pmcp {st['version'] or '?'} at {st['prefix']} (this file: {st['pmcp_running']}), mode {st['mode']}",
        f"URL:      {st['url']}",
        _runtime_line(st),
    ]
    for svc, s in st["services"].items():
        lines.append(f"  {svc:<11} {s['status']:<10} health {s['health']:<9} {s.get('image', '')}")
    if not st["services"]:
        lines.append("  (nothing running: run `pmcp install`)")
    lines.append(f"token age: client {st['token_age']['client']}, proxmox {st['token_age']['proxmox']}")
    audit = st.get("audit") or {}
    if audit:
        mib = 1024 * 1024
        lines.append(
            f"audit log: {audit['used_bytes'] // mib} of {audit['max_bytes'] // mib} MiB used, "
            f"{audit['free_bytes'] // mib} MiB free on its disk"
        )
        lines += [f"warning: {w}" for w in audit.get("warnings", [])]
    if st.get("last_update"):
        lu = st["last_update"]
        lines.append(
            f"last update: {lu.get('started', lu.get('at', '?'))} {lu.get('result', lu.get('ok', ''))}"
        )
    return "\n".join(lines)
