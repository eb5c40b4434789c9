"""The cluster's infrastructure in one read tool with a `topic` (issue 14: HA, replication, Ceph, SDN,
firewall, pools, backup jobs, ISO and template lists, pending updates). One tool with a topic enum
costs a model a fraction of nine tools' schemas; each answer is a short list (at most `limit` items).

What the token may not read is said, not hidden: a 403 names the privilege Proxmox wanted (Proxmox's
error message carries it); pending package updates need Sys.Modify on the node (pve-manager
PVE/API2/APT.pm list_updates), which pmcp's roles never hold, so that topic says so on a real install.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk
from pmcp.server.proxmox import ProxmoxError
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    Node,
    Vmid,
    guest_label,
    guest_path,
    resolve_guest,
    scope_vmids,
    vmid_visible,
)

Topic = Literal[
    "ha", "replication", "ceph", "sdn", "firewall", "pools", "backup_jobs", "templates", "updates"
]
Row = dict[str, str | int | float | bool | None]


class InfraInfo(BaseModel):
    topic: str
    total: int
    items: list[Row]
    note: str | None = Field(None, description="Why the answer is empty or partial")


def _row(item: dict[str, Any], keys: tuple[str, ...]) -> Row:
    return {k: item[k] for k in keys if isinstance(item.get(k), str | int | float | bool)}


async def _nodes(call: Call, node: str | None) -> list[str]:
    if node:
        return [validate.node(node)]
    return [
        validate.node(n["node"]) for n in await call.px.get("/nodes") or [] if n.get("status") == "online"
    ]


def _guest_of(row: Row) -> object:
    """The VMID a row is about (an HA service 'vm:100', a replication job's guest, a VM template)."""
    sid = str(row.get("sid") or row.get("id") or "")
    if row.get("type") == "service" or sid.startswith(("vm:", "ct:", "service:")):
        return sid.rsplit(":", 1)[-1]
    return row.get("guest", row.get("vmid"))


async def _gather(call: Call, topic: str, node: str | None, vmid: int | None) -> tuple[list[Row], str | None]:
    if topic == "ha":
        status = await call.px.get("/cluster/ha/status/current") or []
        return [_row(s, ("id", "type", "node", "state", "status", "quorate")) for s in status], None
    if topic == "replication":
        jobs = await call.px.get("/cluster/replication") or []
        rows = [_row(j, ("id", "guest", "target", "schedule", "disable", "comment")) for j in jobs]
        return rows, None if rows else "no replication jobs (that this token may see: VM.Audit per guest)"
    if topic == "ceph":
        try:
            health = (await call.px.get("/cluster/ceph/status") or {}).get("health") or {}
        except ProxmoxError as exc:
            if exc.status == 500 and "not installed" in exc.message:
                return [], "Ceph is not installed on this cluster"
            raise
        checks = health.get("checks") or {}
        rows: list[Row] = [{"status": health.get("status")}]
        rows += [{"check": k, "severity": (v or {}).get("severity")} for k, v in checks.items()]
        return rows, None
    if topic == "sdn":
        zones = [_row(z, ("zone", "type", "state")) for z in await call.px.get("/cluster/sdn/zones") or []]
        vnets = [
            _row(v, ("vnet", "zone", "tag", "alias")) for v in await call.px.get("/cluster/sdn/vnets") or []
        ]
        return zones + vnets, None if zones or vnets else "no SDN zones or vnets: guests use the node bridges"
    if topic == "firewall":
        if vmid is not None:
            guest = await resolve_guest(call, vmid)
            path, where = guest_path(guest, "firewall", "rules"), guest_label(guest)
        elif node:
            path, where = validate.api_path("nodes", validate.node(node), "firewall", "rules"), f"node {node}"
        else:
            path, where = "/cluster/firewall/rules", "the cluster"
        rules = await call.px.get(path) or []
        keys = (
            "pos",
            "type",
            "action",
            "enable",
            "iface",
            "source",
            "dest",
            "proto",
            "dport",
            "macro",
            "comment",
        )
        note = None
        if vmid is None and node is None:
            enabled = (await call.px.get("/cluster/firewall/options") or {}).get("enable")
            note = (
                f"cluster firewall {'on' if enabled else 'off (no rule filters anything)'}; rules of {where}"
            )
        return [_row(r, keys) for r in rules], note or f"rules of {where}"
    if topic == "pools":
        pools = await call.px.get("/pools") or []
        return [_row(p, ("poolid", "comment")) for p in pools], None
    if topic == "backup_jobs":
        jobs = await call.px.get("/cluster/backup") or []
        keys = ("id", "enabled", "schedule", "storage", "all", "vmid", "pool", "mode", "comment")
        return [_row(j, keys) for j in jobs], None if jobs else "no scheduled backup jobs"
    if topic == "templates":
        rows = [
            {
                "volid": f"VM template {g.get('vmid')}",
                "vmid": g.get("vmid"),
                "name": g.get("name"),
                "node": g.get("node"),
            }
            for g in await call.rt.locator.listing(call.px)
            if g.get("template")
        ]
        for n in await _nodes(call, node):
            for s in await call.px.get(validate.api_path("nodes", n, "storage")) or []:
                content = str(s.get("content") or "")
                if "iso" not in content and "vztmpl" not in content:
                    continue
                path = validate.api_path("nodes", n, "storage", validate.storage(s["storage"]), "content")
                for kind in ("iso", "vztmpl"):
                    if kind in content:
                        for v in await call.px.get(path, content=kind) or []:
                            rows.append(
                                {"volid": v.get("volid"), "content": kind, "size": v.get("size"), "node": n}
                            )
        return rows, None if rows else "no ISO images, container templates or VM templates found"
    notes, rows = [], []
    for n in await _nodes(call, node):
        try:
            for u in await call.px.get(validate.api_path("nodes", n, "apt", "update")) or []:
                rows.append({"node": n} | _row(u, ("Package", "OldVersion", "Version", "Priority")))
        except ProxmoxError as exc:
            if exc.status != 403:
                raise
            notes.append(
                f"{n}: reading pending updates needs Sys.Modify on /nodes/{n} (pve-manager APT.pm), which "
                "also allows changing the node's system, so pmcp's role never holds it; run "
                "`apt list --upgradable` on the node"
            )
    return rows, "; ".join(notes) or (None if rows else "no pending updates")


@tool(Risk.READ, "Cluster infrastructure", InfraInfo)
async def cluster_info(
    call: Call,
    topic: Annotated[
        Topic,
        Field(
            description="firewall: rules of the cluster, or of node=/vmid=; templates: ISOs, CT and VM "
            "templates; updates: pending packages"
        ),
    ],
    node: Node | None = None,
    vmid: Vmid | None = None,
    limit: Annotated[int, Field(ge=1, le=500, description="At most this many items")] = 30,
) -> Reply:
    """The cluster's infrastructure, one topic at a time, as a short list."""
    rows, note = await _gather(call, topic, node, vmid)
    inside = await scope_vmids(call)  # a scoped client sees rows of its own guests (and of none)
    rows = [r for r in rows if vmid_visible(_guest_of(r), inside, guestless=True)]
    data = InfraInfo(topic=topic, total=len(rows), items=rows[:limit], note=note)
    head = f"{topic}: {len(rows)} item(s)" + (f", showing {limit}" if len(rows) > limit else "")
    lines = [head + (f". {note}." if note else ".")]
    lines += ["- " + ", ".join(f"{k}={v}" for k, v in r.items() if v not in (None, "")) for r in data.items]
    return Reply(data, "\n".join(lines))
