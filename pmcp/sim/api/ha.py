"""High availability: HA-managed guests, whose start and stop are requests to the HA manager.

qemu-server src/PVE/API2/Qemu.pm vm_start/vm_stop/vm_shutdown and pve-container
src/PVE/API2/LXC/Status.pm: for a guest that ``PVE::HA::Config::vm_is_ha_managed``, the API forks a
``hastart`` / ``hastop`` task that only runs ``ha-manager set vm:ID --state started`` (or
``crm-command stop vm:ID TIMEOUT``) and ends OK once the request is queued. The HA stack then
acts on its own: its local resource manager starts a ``qmstart`` / ``vzstart`` (or stop/shutdown)
task as root@pam some seconds later. The simulator does the same, one task duration later.
"""

from __future__ import annotations

from typing import Any

from pmcp.sim.api.common import Ctx
from pmcp.sim.errors import ApiError, TaskFailed
from pmcp.sim.routes import route
from pmcp.sim.state import SimState
from pmcp.sim.tasks import effect


def ha_sid(g: dict[str, Any]) -> str:
    return f"{'vm' if g['type'] == 'qemu' else 'ct'}:{g['vmid']}"


def ha_resource(world: dict[str, Any], g: dict[str, Any]) -> dict[str, Any] | None:
    return world.get("ha", {}).get(ha_sid(g))


def _entry(sid: str, res: dict[str, Any]) -> dict[str, Any]:
    return {"sid": sid, "type": sid.split(":")[0], "digest": "0" * 40, **res}


def _sid(ctx: Ctx, sid: str) -> tuple[str, dict[str, Any]]:
    kind, _, vmid = sid.partition(":")
    if not vmid:  # a bare VMID names the guest of either type
        kind, vmid = "", sid
    g = ctx.world["guests"].get(vmid)
    if g is None or (kind and kind != ("vm" if g["type"] == "qemu" else "ct")):
        raise ApiError(500, f"unable to find service '{sid}'")
    return ha_sid(g), g


@route("GET", "/cluster/ha/resources")
def ha_resources(ctx: Ctx, p: dict) -> list:
    return [_entry(sid, r) for sid, r in sorted(ctx.world.get("ha", {}).items())]


@route("GET", "/cluster/ha/resources/{sid}")
def ha_resource_read(ctx: Ctx, p: dict) -> dict:
    sid, _ = _sid(ctx, p["sid"])
    res = ctx.world.get("ha", {}).get(sid)
    if res is None:
        raise ApiError(500, f"no such resource '{sid}'")
    return _entry(sid, res)


@route("POST", "/cluster/ha/resources")
def ha_resource_create(ctx: Ctx, p: dict) -> None:
    sid, _ = _sid(ctx, p["sid"])
    ha = ctx.world.setdefault("ha", {})
    if sid in ha:
        raise ApiError(500, f"resource ID '{sid}' already defined")
    ha[sid] = {"state": p.get("state", "started"), "max_restart": 1, "max_relocate": 1}
    if p.get("comment"):
        ha[sid]["comment"] = p["comment"]
    ctx.state.changed()


@route("DELETE", "/cluster/ha/resources/{sid}")
def ha_resource_delete(ctx: Ctx, p: dict) -> None:
    sid, _ = _sid(ctx, p["sid"])
    if ctx.world.get("ha", {}).pop(sid, None) is None:
        raise ApiError(500, f"cannot delete service '{sid}', not HA managed!")
    ctx.state.changed()


@route("GET", "/cluster/ha/status/current")
def ha_status(ctx: Ctx, p: dict) -> list:
    node = next(iter(ctx.world["nodes"]))
    out: list[dict[str, Any]] = [
        {"id": "quorum", "type": "quorum", "node": node, "status": "OK", "quorate": 1}
    ]
    for sid, res in sorted(ctx.world.get("ha", {}).items()):
        g = ctx.world["guests"].get(sid.split(":")[1])
        if g:
            out.append({"id": f"service:{sid}", "type": "service", "sid": sid, "node": g["node"],
                        "state": res["state"], "status": f"{sid} ({g['node']}, {res['state']})"})  # fmt: skip
    return out


def request(ctx: Ctx, g: dict[str, Any], action: str, label: str, timeout: int | None = None) -> str:
    """The API's HA branch: a hastart/hastop task by the caller (see the module docstring)."""
    start = action == "start"
    typ = "hastart" if start else "hastop"
    what = "start" if start else "stop"
    args = {"vmid": g["vmid"], "action": action, "timeout": timeout}
    log = [f"Requesting HA {what} for {label} {g['vmid']}"]
    return ctx.state.engine.start(g["node"], typ, str(g["vmid"]), ctx.auth.authid, "ha_request", args, log)


@effect("ha_request")
def _ha_request(state: SimState, a: dict[str, Any]) -> list[str]:
    """The request is queued (the HA resource's requested state); the local resource manager then
    runs the real task as root@pam."""
    g = state.world["guests"].get(str(a["vmid"]))
    if g is None:
        raise TaskFailed(f"unable to find service 'vm:{a['vmid']}'")
    res = state.world.setdefault("ha", {}).setdefault(ha_sid(g), {"state": "started"})
    action = a["action"]
    res["state"] = "started" if action == "start" else "stopped"
    running = g["status"] == "running"
    if (action == "start") == running:
        return []  # already where HA wants it
    prefix, label = ("qm", "VM") if g["type"] == "qemu" else ("vz", "CT")
    # crm-command stop with a timeout of 0 is a hard stop, else a shutdown (PVE::HA::Resources)
    real = "start" if action == "start" else ("shutdown" if a.get("timeout") else "stop")
    kind = g["type"]
    state.engine.start(
        g["node"], f"{prefix}{real}", str(g["vmid"]), "root@pam", "power",
        {"vmid": g["vmid"], "action": real, "label": label, "kind": kind, "todisk": False},
    )  # fmt: skip
    return []
