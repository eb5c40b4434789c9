"""The questions admins ask most after "what runs where": a guest's addresses, how busy something was,
and what happened while nobody watched. Answers are summaries, never raw series: a day of RRD data is
70 points x 11 fields per guest, which would cost a model thousands of tokens to average by itself.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk
from pmcp.server.proxmox import ProxmoxError
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    Guest,
    Node,
    Vmid,
    guest_label,
    guest_path,
    resolve_guest,
    scope_vmids,
    vmid_visible,
)


def when(epoch: float | int | None) -> str | None:
    """Epoch seconds as a time a person reads (UTC, minutes)."""
    if not epoch:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- addresses --------------------------------------------------------------------------------------


class Address(BaseModel):
    interface: str
    address: str
    prefix: int | None = None
    family: Literal["ipv4", "ipv6"]
    mac: str | None = None


class GuestNetwork(BaseModel):
    guest: Guest
    source: Literal["guest-agent", "container", "unavailable"]
    addresses: list[Address]
    os: str | None = None
    why_unavailable: str | None = None


def _addresses(interfaces: Any) -> list[Address]:
    out = []
    for iface in interfaces if isinstance(interfaces, list) else []:
        name = str(iface.get("name", "?"))
        if name == "lo":
            continue
        mac = iface.get("hardware-address") or iface.get("hwaddr")
        for ip in iface.get("ip-addresses") or []:
            kind = str(ip.get("ip-address-type", ""))
            family: Literal["ipv4", "ipv6"] = "ipv6" if kind in ("ipv6", "inet6") else "ipv4"
            addr = str(ip.get("ip-address", ""))
            if not addr or addr.startswith("fe80:"):
                continue  # link-local addresses answer no question an admin asks
            out.append(Address(interface=name, address=addr, prefix=ip.get("prefix"), family=family, mac=mac))
    return out


AGENT_PRIVILEGE_NOTE = (
    "Reading addresses through the QEMU guest agent needs VM.GuestAgent.Audit on Proxmox VE 9. On Proxmox "
    "VE 8 the only privilege for it is VM.Monitor, which also allows running commands inside the guest "
    "(qemu-server API2/Qemu/Agent.pm: exec and file-read need only VM.Monitor), so pmcp does not hold it."
)


async def guest_network(call: Call, vmid: int) -> Reply:
    """IP addresses (and, for VMs, the OS) of one guest: from the QEMU guest agent for VMs, from the
    container's own interfaces for containers. Says plainly when no agent answers and why."""
    guest = await resolve_guest(call, vmid)
    label = guest_label(guest)
    if guest.type == "lxc":
        data = await call.px.get(guest_path(guest, "interfaces"))
        if not data:
            result = GuestNetwork(
                guest=guest,
                source="unavailable",
                addresses=[],
                why_unavailable="the container is not running",
            )
            return Reply(result, f"{label}: no addresses, the container is not running.")
        addrs = _addresses(data)
        result = GuestNetwork(guest=guest, source="container", addresses=addrs)
        return Reply(
            result, f"{label}: " + (", ".join(f"{a.address}/{a.prefix}" for a in addrs) or "no address")
        )
    try:
        data = await call.px.get(guest_path(guest, "agent", "network-get-interfaces")) or {}
    except ProxmoxError as exc:
        if exc.status == 403:
            why = AGENT_PRIVILEGE_NOTE
        elif exc.status == 500:
            # qemu-server QemuServer/Agent.pm agent_available: not configured / VM not running / agent silent
            why = exc.message.strip().rstrip(".")
            if "not running" in why and "agent" in why:
                why += " (install qemu-guest-agent in the VM and start it)"
            elif "configured" in why:
                why += " (enable it under the VM's Options > QEMU Guest Agent, then install it in the VM)"
        else:
            raise
        result = GuestNetwork(guest=guest, source="unavailable", addresses=[], why_unavailable=why)
        return Reply(result, f"{label}: addresses unknown: {why}.")
    addrs = _addresses(data.get("result"))
    os_name = None
    try:
        info = (await call.px.get(guest_path(guest, "agent", "get-osinfo")) or {}).get("result") or {}
        os_name = info.get("pretty-name") or info.get("name")
    except ProxmoxError:
        pass  # the addresses are the answer; an agent too old for get-osinfo does not spoil them
    result = GuestNetwork(guest=guest, source="guest-agent", addresses=addrs, os=os_name)
    text = f"{label}: " + (
        ", ".join(f"{a.address}/{a.prefix} ({a.interface})" for a in addrs) or "no address"
    )
    return Reply(result, text + (f"; OS: {os_name}." if os_name else "."))


# --- metrics history --------------------------------------------------------------------------------


class Figure(BaseModel):
    avg: float | None = None
    max: float | None = None
    last: float | None = None
    max_at: str | None = None


class MetricsSummary(BaseModel):
    target: str
    timeframe: str
    points: int
    first: str | None = None
    last: str | None = None
    cpu_percent: Figure
    memory_percent: Figure
    net_in_bytes_per_s: Figure
    net_out_bytes_per_s: Figure
    disk_read_bytes_per_s: Figure | None = None
    disk_write_bytes_per_s: Figure | None = None
    iowait_percent: Figure | None = None


def _figure(points: list[dict[str, Any]], value: Any) -> Figure:
    series = [(p["time"], v) for p in points if (v := value(p)) is not None]
    if not series:
        return Figure()
    peak_t, peak = max(series, key=lambda tv: tv[1])
    avg = sum(v for _, v in series) / len(series)
    return Figure(avg=round(avg, 2), max=round(peak, 2), last=round(series[-1][1], 2), max_at=when(peak_t))


def _ratio(num: str, den: str, scale: float = 100.0):
    def get(p: dict[str, Any]) -> float | None:
        a, b = p.get(num), p.get(den)
        if a is None or not b:
            return None
        return float(a) / float(b) * scale

    return get


def _field(name: str, scale: float = 1.0):
    def get(p: dict[str, Any]) -> float | None:
        v = p.get(name)
        return None if v is None else float(v) * scale

    return get


@tool(Risk.READ, "Metrics history", MetricsSummary)
async def metrics_history(
    call: Call,
    node: Node | None = None,
    vmid: Vmid | None = None,
    timeframe: Annotated[
        Literal["hour", "day", "week"], Field(description="hour (1-minute steps), day (30 min) or week (3 h)")
    ] = "day",
) -> Reply:
    """How busy a node or guest was over the last hour, day or week: avg, peak (when) and last CPU, memory,
    network, disk I/O."""
    if (node is None) == (vmid is None):
        raise validate.InvalidArgument("give either node (for a node) or vmid (for a VM or container)")
    if vmid is not None:
        guest = await resolve_guest(call, vmid)
        target = guest_label(guest)
        points = await call.px.get(guest_path(guest, "rrddata"), timeframe=timeframe, cf="AVERAGE") or []
        mem = _ratio("mem", "maxmem")
    else:
        target = f"node {node}"
        path = validate.api_path("nodes", validate.node(node or ""), "rrddata")
        points = await call.px.get(path, timeframe=timeframe, cf="AVERAGE") or []
        mem = _ratio("memused", "memtotal")
    points = [p for p in points if isinstance(p, dict) and isinstance(p.get("time"), int | float)]
    data = MetricsSummary(
        target=target,
        timeframe=timeframe,
        points=len(points),
        first=when(points[0]["time"]) if points else None,
        last=when(points[-1]["time"]) if points else None,
        cpu_percent=_figure(points, _field("cpu", 100.0)),
        memory_percent=_figure(points, mem),
        net_in_bytes_per_s=_figure(points, _field("netin")),
        net_out_bytes_per_s=_figure(points, _field("netout")),
    )
    if vmid is not None:
        data.disk_read_bytes_per_s = _figure(points, _field("diskread"))
        data.disk_write_bytes_per_s = _figure(points, _field("diskwrite"))
    else:
        data.iowait_percent = _figure(points, _field("iowait", 100.0))
    c, m = data.cpu_percent, data.memory_percent
    if not points:
        return Reply(data, f"{target}: no metrics recorded for the last {timeframe}.")
    text = (
        f"{target}, last {timeframe} ({data.first} to {data.last}): CPU avg {c.avg}%, "
        f"peak {c.max}% at {c.max_at}, now {c.last}%; memory avg {m.avg}%, peak {m.max}% at {m.max_at}; "
        f"network in avg {data.net_in_bytes_per_s.avg} B/s, out avg {data.net_out_bytes_per_s.avg} B/s."
    )
    return Reply(data, text)


# --- what happened ----------------------------------------------------------------------------------


class Event(BaseModel):
    time: str | None
    node: str | None = None
    kind: Literal["failed-task", "log"]
    what: str
    user: str | None = None
    upid: str | None = None


class RecentEvents(BaseModel):
    since: str
    failed_tasks: int
    events: list[Event]
    note: str | None = None


@tool(Risk.READ, "What happened recently", RecentEvents)
async def recent_events(
    call: Call,
    hours: Annotated[int, Field(ge=1, le=168, description="How far back to look (1-168 hours)")] = 12,
    limit: Annotated[int, Field(ge=1, le=200, description="At most this many events")] = 50,
) -> Reply:
    """What happened in the last hours ("last night?"): failed tasks and the cluster log, newest first."""
    since = time.time() - hours * 3600
    events: list[Event] = []
    failed = 0
    inside = await scope_vmids(call)
    for t in await call.px.get("/cluster/tasks") or []:
        status, start = t.get("status"), t.get("starttime") or 0
        if start < since or status in (None, "OK", "running") or str(status).startswith("WARNINGS"):
            continue
        if not vmid_visible(t.get("id"), inside):
            continue
        failed += 1
        what = f"{t.get('type')} {t.get('id') or ''}".strip() + f" failed: {status}"
        events.append(
            Event(
                time=when(start),
                node=t.get("node"),
                kind="failed-task",
                what=what,
                user=t.get("user"),
                upid=t.get("upid"),
            )
        )
    note = None
    try:
        log = []  # a scoped client does not read the cluster log: its free text names other guests
        if inside is None:
            log = await call.px.get("/cluster/log", max=500) or []
    except ProxmoxError as exc:
        log, note = [], f"cluster log not readable: {exc.message.strip()}"
    if inside is not None:
        note = "This client's token is scoped: only failed tasks of its guests; no cluster log."
    for e in log:
        if (e.get("time") or 0) < since:
            continue
        events.append(
            Event(
                time=when(e.get("time")),
                node=e.get("node"),
                kind="log",
                what=str(e.get("msg", ""))[:300],
                user=e.get("user"),
            )
        )
    events.sort(key=lambda e: e.time or "", reverse=True)
    events = events[:limit]
    if note is None:
        note = (
            "Without Sys.Syslog on / Proxmox shows only this token's own cluster log entries "
            "(pve-manager API2/Cluster.pm 'log'); failed tasks come from every node."
        )
    data = RecentEvents(since=when(since) or "", failed_tasks=failed, events=events, note=note)
    lines = [f"Since {data.since}: {failed} failed task(s), {len(events)} event(s) shown, newest first."]
    lines += [f"- {e.time} {e.node or ''}: {e.what}" for e in events[:30]]
    return Reply(data, "\n".join(lines))
