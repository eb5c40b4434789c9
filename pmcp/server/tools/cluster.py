"""The cluster at a glance, and one node's health."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk
from pmcp.server.proxmox import ProxmoxError
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import Node


class NodeSummary(BaseModel):
    node: str
    status: str | None = None
    cpu: float | None = None
    maxcpu: int | None = None
    mem: int | None = None
    maxmem: int | None = None
    uptime: int | None = None


class GuestCounts(BaseModel):
    vms: int = 0
    containers: int = 0
    running: int = 0
    paused: int = 0
    stopped: int = 0
    other: int = 0


class ClusterOverview(BaseModel):
    cluster_name: str | None = None
    quorate: bool | None = None
    nodes: list[NodeSummary]
    guests: GuestCounts
    storage_used: int | None = None
    storage_total: int | None = None
    limited: str | None = Field(None, description="What this token may not see, and why")


LIMITED = (
    "this token lacks Sys.Audit on {path} (a pool-scoped install holds privileges only inside its "
    "pool), so Proxmox shows {what}"
)


async def _forbidden_is_none(coro: Any) -> Any:
    """The answer, or None when Proxmox refuses it for lack of a privilege (HTTP 403)."""
    try:
        return await coro
    except ProxmoxError as exc:
        if exc.status == 403:
            return None
        raise


async def _overview(call: Call) -> Reply:
    # /cluster/status needs Sys.Audit on / (pve-manager PVE/API2/Cluster.pm get_status);
    # /cluster/resources and /nodes answer everyone, filtered by privilege.
    status = await _forbidden_is_none(call.px.get("/cluster/status"))
    resources = await call.px.get("/cluster/resources") or []
    call.rt.locator.remember(resources)
    scope = call.scope  # a scoped client counts its own guests only
    resources = [r for r in resources if r.get("type") not in ("qemu", "lxc") or scope.contains_item(r)]
    cluster = next((s for s in status or [] if s.get("type") == "cluster"), {})
    nodes, counts = [], GuestCounts()
    used = total = 0
    for r in resources:
        kind = r.get("type")
        if kind == "node":
            nodes.append(
                NodeSummary(
                    node=r.get("node") or r.get("id", "?"),
                    status=r.get("status"),
                    cpu=round(float(r.get("cpu") or 0), 4),
                    maxcpu=r.get("maxcpu"),
                    mem=r.get("mem"),
                    maxmem=r.get("maxmem"),
                    uptime=r.get("uptime"),
                )
            )
        elif kind in ("qemu", "lxc"):
            if kind == "qemu":
                counts.vms += 1
            else:
                counts.containers += 1
            st = r.get("status")
            if st == "running":
                counts.running += 1
            elif st == "paused":  # a paused VM's status is its qmpstatus (pve-manager pvestatd.pm)
                counts.paused += 1
            elif st == "stopped":
                counts.stopped += 1
            else:
                counts.other += 1
        elif kind == "storage" and isinstance(r.get("maxdisk"), int):
            used += int(r.get("disk") or 0)
            total += int(r["maxdisk"])
    limited = None
    if status is None:
        limited = LIMITED.format(path="/", what="no quorum and only the guests and storages it may see")
        if not nodes:  # nodes without Sys.Audit on them: /nodes still names them and their state
            nodes = [
                NodeSummary(node=n.get("node", "?"), status=n.get("status"))
                for n in await call.px.get("/nodes") or []
            ]
    nodes.sort(key=lambda n: n.node)
    quorate = cluster.get("quorate")
    data = ClusterOverview(
        cluster_name=cluster.get("name"),
        quorate=bool(quorate) if quorate is not None else (True if len(nodes) <= 1 and not limited else None),
        nodes=nodes,
        guests=counts,
        storage_used=used or None,
        storage_total=total or None,
        limited=limited,
    )
    online = sum(1 for n in nodes if n.status == "online")
    text = (
        f"Cluster {data.cluster_name or '(standalone)'}: {online}/{len(nodes)} nodes online, "
        f"quorate={data.quorate}. Guests: {counts.vms} VMs, {counts.containers} containers "
        f"({counts.running} running, {counts.paused} paused, {counts.stopped} stopped, {counts.other} other)."
    )
    for n in nodes:
        cpu = f"cpu {100 * (n.cpu or 0):.0f}% of {n.maxcpu}" if n.maxcpu else "cpu ?"
        text += f"\n- {n.node}: {n.status}, {cpu}, mem {_pct(n.mem, n.maxmem)}"
    if limited:
        text += f"\nLimited: {limited}."
    return Reply(data, text)


class NodeStatus(BaseModel):
    node: str
    cpu: float | None = None
    cpus: int | None = None
    cpu_model: str | None = None
    loadavg: list[str] | None = None
    memory: dict[str, int] | None = None
    rootfs: dict[str, int] | None = None
    uptime: int | None = None
    pveversion: str | None = None
    kernel: str | None = None
    status: str | None = None
    limited: str | None = Field(None, description="What this token may not see, and why")


async def node_status(call: Call, node: str) -> Reply:
    """One node's health: CPU, load, memory, root disk, uptime, Proxmox and kernel versions."""
    node = validate.node(node)
    got = await _forbidden_is_none(call.px.get(validate.api_path("nodes", node, "status")))
    if got is None:  # needs Sys.Audit on /nodes/{node}; /nodes still tells whether it is online
        listed = next((n for n in await call.px.get("/nodes") or [] if n.get("node") == node), None)
        if listed is None:
            raise validate.InvalidArgument(f"node: no node {node!r} in this cluster (see cluster_overview)")
        why = LIMITED.format(path=f"/nodes/{node}", what="only whether the node is online")
        data = NodeStatus(node=node, status=listed.get("status"), limited=why)
        return Reply(data, f"Node {node}: {listed.get('status', '?')}. Limited: {why}.")
    s: dict[str, Any] = got or {}
    info = s.get("cpuinfo") or {}
    kernel = s.get("current-kernel") or {}
    data = NodeStatus(
        node=node,
        status="online",
        cpu=round(float(s.get("cpu") or 0), 4),
        cpus=info.get("cpus"),
        cpu_model=info.get("model"),
        loadavg=[str(x) for x in s.get("loadavg") or []] or None,
        memory={k: int(v) for k, v in (s.get("memory") or {}).items() if isinstance(v, int | float)} or None,
        rootfs={k: int(v) for k, v in (s.get("rootfs") or {}).items() if isinstance(v, int | float)} or None,
        uptime=s.get("uptime"),
        pveversion=s.get("pveversion"),
        kernel=kernel.get("release") if isinstance(kernel, dict) else None,
    )
    mem = data.memory or {}
    text = (
        f"Node {node}: cpu {100 * (data.cpu or 0):.0f}% of {data.cpus}, load {' '.join(data.loadavg or [])}, "
        f"memory {_pct(mem.get('used'), mem.get('total'))}, uptime {data.uptime}s, {data.pveversion}."
    )
    return Reply(data, text)


def _pct(used: Any, total: Any) -> str:
    if not total:
        return "?"
    return f"{100 * (used or 0) / total:.0f}% of {total / 1024**3:.1f} GiB"


class Overview(NodeStatus):
    """cluster_overview's answer: the cluster (nodes, guests, quorum...) or, with node, that node."""

    node: str | None = None  # type: ignore[assignment]  # absent in the cluster's answer
    cluster_name: str | None = None
    quorate: bool | None = None
    nodes: list[NodeSummary] | None = None
    guests: GuestCounts | None = None
    storage_used: int | None = None
    storage_total: int | None = None


# The cluster and one node in one tool (issue 14: tools/list stays small).
@tool(Risk.READ, "Cluster overview", Overview)
async def cluster_overview(call: Call, node: Node | None = None) -> Reply:
    """Start here: nodes, guest counts by state, quorum, storage use; with node: that node's load, memory,
    disk, versions."""
    reply = await (node_status(call, node) if node else _overview(call))
    return Reply(Overview(**reply.data.model_dump(exclude_none=True)), reply.text)
