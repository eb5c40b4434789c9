"""`pmcp status`: services, health, versions, URL, token age and the last install/update, at a glance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pmcp import __version__
from pmcp import record as statefile
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


def status(prefix: str | Path) -> dict[str, Any]:
    paths = InstallPaths.at(prefix)
    data = statefile.load(paths)
    if not data:
        raise StepError(f"no pmcp install at {paths.prefix}", fix="pmcp install (or --prefix DIR)")
    project = data.get("project") or project_name(paths.prefix)
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
    last_update = data.get("last_update")  # this install's own record; transcripts are host-wide
    if not last_update:
        try:
            from pmcp.lifecycle.transcript import last_result

            last_update = last_result("update")
        except Exception:
            last_update = None
    return {
        "prefix": str(paths.prefix),
        "url": data.get("url", ""),
        "version": data.get("version", ""),
        "pmcp_running": __version__,
        "image": data.get("mcp_image", ""),
        "mode": data.get("config", {}).get("mode", ""),
        "healthy": healthy,
        "services": services,
        "token_age": {"client": _age(paths.client_tokens), "proxmox": _age(paths.proxmox_token_secret)},
        "installed_at": data.get("installed_at", ""),
        "last_install": data.get("last_install"),
        "last_update": last_update,
    }


def render_text(st: dict[str, Any]) -> str:
    lines = [
        f"pmcp {st['version'] or '?'} at {st['prefix']} (this file: {st['pmcp_running']}), mode {st['mode']}",
        f"URL:      {st['url']}",
        f"image:    {st['image']}",
    ]
    for svc, s in st["services"].items():
        lines.append(f"  {svc:<11} {s['status']:<10} health {s['health']:<9} {s.get('image', '')}")
    if not st["services"]:
        lines.append("  (no containers: run `pmcp install`)")
    lines.append(f"token age: client {st['token_age']['client']}, proxmox {st['token_age']['proxmox']}")
    if st.get("last_update"):
        lu = st["last_update"]
        lines.append(
            f"last update: {lu.get('started', lu.get('at', '?'))} {lu.get('result', lu.get('ok', ''))}"
        )
    return "\n".join(lines)
