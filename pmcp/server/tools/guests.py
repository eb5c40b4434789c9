"""Guests (VMs and containers together): list, status, config, power actions, tags/description."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import anyio
from pydantic import BaseModel, Field, TypeAdapter

from pmcp.server import validate
from pmcp.server.policy import Risk, split_tags
from pmcp.server.proxmox import ProxmoxError
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    ActionResult,
    Confirm,
    Guest,
    GuestType,
    Node,
    Vmid,
    WaitSeconds,
    gate,
    guest_label,
    guest_path,
    resolve_guest,
    resolve_guest_status,
    task_result,
)
from pmcp.server.tools.observe import Address, guest_network
from pmcp.server.tools.snapshots import Snapshot, list_snapshots

DEFAULT_PAGE = 40
MAX_PAGE = 500


class GuestItem(BaseModel):
    vmid: int
    name: str | None = None
    node: str
    type: GuestType
    status: str | None = None
    tags: list[str] | None = None
    pool: str | None = None
    template: bool | None = None
    cpu: float | None = None
    maxcpu: float | None = None
    mem: int | None = None
    maxmem: int | None = None
    uptime: int | None = None


_ITEMS = TypeAdapter(list[GuestItem])


class GuestList(BaseModel):
    total: int = Field(description="How many guests match the filters (all pages)")
    offset: int
    returned: int
    next_offset: int | None = Field(
        None, description="Pass as offset for the next page; absent on the last page"
    )
    guests: list[GuestItem]


@tool(Risk.READ, "List guests", GuestList)
async def list_guests(
    call: Call,
    node: Node | None = None,
    status: Annotated[
        Literal["running", "stopped", "paused", "suspended"] | None,
        Field(description="Only in this state"),
    ] = None,
    type: Annotated[GuestType | None, Field(description="qemu: VMs, lxc: containers")] = None,
    tag: Annotated[
        str | None,
        Field(pattern=validate.TAG_PATTERN, max_length=64, description="Only guests with this tag"),
    ] = None,
    pool: Annotated[
        str | None,
        Field(pattern=validate.POOL_PATTERN, max_length=64, description="Only this pool"),
    ] = None,
    name: Annotated[str | None, Field(max_length=128, description="Part of the name (any case)")] = None,
    sort: Annotated[
        Literal["vmid", "name", "cpu", "mem", "disk", "uptime"],
        Field(description="Order (cpu, mem, disk, uptime: largest first)"),
    ] = "vmid",
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE, description="Page size")] = DEFAULT_PAGE,
    offset: Annotated[int, Field(ge=0, description="Skip this many")] = 0,
    detail: Annotated[bool, Field(description="Add CPU, memory, uptime, pool")] = False,
) -> Reply:
    """VMs and containers, filtered, sorted, paginated (`total` counts all matches; page with `offset`);
    the text has CPU, memory, uptime."""
    items = await call.rt.locator.listing(call.px)
    if node and not any(i.get("node") == node for i in items):
        nodes = {str(n.get("node")) for n in await call.px.get("/nodes") or []}
        if node not in nodes:
            raise validate.InvalidArgument(
                f"node: there is no node {node!r} in this cluster "
                f"(nodes: {', '.join(sorted(nodes)) or 'none'})"
            )
    needle = name.lower() if name else None
    matches = []
    scope = call.scope
    # Once per guest of the cluster (5,000 in bench_peers): the tags are split only where a filter
    # needs them, and for the page (measured: splitting them for every guest, twice, was 15% of a
    # 5,000-guest list call's server time, as much as reading the answer off the socket).
    for i in items:
        if scope and not scope.contains_item(i):  # a scoped client sees its guests only (not even a count)
            continue
        if node and i.get("node") != node:
            continue
        if status and i.get("status") != status:
            continue
        if type and i.get("type") != type:
            continue
        if tag and tag not in split_tags(i.get("tags")):
            continue
        if pool and i.get("pool") != pool:
            continue
        if needle and needle not in str(i.get("name") or "").lower():
            continue
        matches.append(i)
    if sort == "name":
        matches.sort(key=lambda m: (str(m.get("name") or "").lower(), m.get("vmid", 0)))
    elif sort != "vmid":  # largest first; vmid breaks ties so pages stay stable
        matches.sort(key=lambda m: (-float(m.get(sort) or 0), m.get("vmid", 0)))
    else:
        matches.sort(key=lambda m: m.get("vmid", 0))
    if offset and offset >= len(matches):
        raise validate.InvalidArgument(
            f"offset: {offset} is past the end: {len(matches)} guests match, so the last page starts "
            f"at offset {max(0, (len(matches) - 1) // limit * limit)}"
        )
    page = [(i, split_tags(i.get("tags"))) for i in matches[offset : offset + limit]]
    # one validation of the page, not one model per guest: 74 against 136-158 us for 40 guests
    guests = _ITEMS.validate_python(
        [
            {
                "vmid": i["vmid"],
                "name": i.get("name"),
                "node": i.get("node", "?"),
                "type": i["type"],
                "status": i.get("status"),
                "tags": tags or None,
            }
            for i, tags in page
        ]
    )
    for (i, _tags), g in zip(page, guests, strict=True) if detail else ():
        g.pool, g.template = i.get("pool"), bool(i.get("template"))
        g.cpu = round(float(i.get("cpu") or 0), 4)
        g.maxcpu, g.mem, g.maxmem, g.uptime = (
            i.get("maxcpu"),
            i.get("mem"),
            i.get("maxmem"),
            i.get("uptime"),
        )
    nxt = offset + len(page) if offset + len(page) < len(matches) else None
    data = GuestList(total=len(matches), offset=offset, returned=len(guests), next_offset=nxt, guests=guests)
    head = f"{len(matches)} guests match; showing {offset + 1 if guests else 0}-{offset + len(guests)}"
    head += f" (next page: offset={nxt})." if nxt is not None else "."
    lines = [head, "vmid name type status node cpu mem(GiB used/max) uptime tags"]
    for (i, _tags), g in zip(page, guests, strict=True):
        cpu = f"{float(i.get('cpu') or 0) * 100:.0f}%/{i.get('maxcpu') or '?'}"
        mem = f"{_gib(i.get('mem'))}/{_gib(i.get('maxmem'))}"
        lines.append(
            f"{g.vmid} {g.name or '-'} {g.type} {g.status or '?'} {g.node} {cpu} {mem} "
            f"{duration(i.get('uptime'))} {','.join(g.tags or []) or '-'}"
        )
    return Reply(data, "\n".join(lines))


def duration(seconds: Any) -> str:
    """Uptime as a person reads it: 3d4h, 5h12m, 7m; '-' when not running."""
    s = int(seconds or 0)
    if s <= 0:
        return "-"
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{d}d{h}h" if d else (f"{h}h{m}m" if h else f"{m}m")


class GuestStatus(BaseModel):
    guest: Guest
    status: str | None = None
    qmpstatus: str | None = None
    lock: str | None = None
    uptime: int | None = None
    cpu: float | None = None
    cpus: float | None = None
    mem: int | None = None
    maxmem: int | None = None
    disk: int | None = None
    maxdisk: int | None = None
    netin: int | None = None
    netout: int | None = None
    ha: dict[str, Any] | None = None
    protected_by_pmcp: str | None = Field(
        None, description="Why pmcp will not change this guest, if it will not"
    )


async def guest_status(call: Call, vmid: int) -> Reply:
    """Live status of one VM or container: state, uptime, CPU, memory, disk, network, lock, HA."""
    guest, s = await resolve_guest_status(call, vmid)
    if s is None:
        s = await call.px.get(guest_path(guest, "status", "current")) or {}
    keys = (
        "status",
        "qmpstatus",
        "lock",
        "uptime",
        "cpu",
        "cpus",
        "mem",
        "maxmem",
        "disk",
        "maxdisk",
        "netin",
        "netout",
    )
    data = GuestStatus(
        guest=guest, ha=s.get("ha") if isinstance(s.get("ha"), dict) else None, **{k: s.get(k) for k in keys}
    )
    data.protected_by_pmcp = call.rt.policy.protection_reason(guest.vmid, guest.tags)
    mem = f"{_gib(s.get('mem'))}/{_gib(s.get('maxmem'))} GiB" if s.get("maxmem") else "?"
    text = f"{guest_label(guest)}: {s.get('status', '?')}"
    if s.get("lock"):
        text += f" (locked: {s['lock']})"
    text += f", uptime {duration(s.get('uptime'))}, cpu {float(s.get('cpu') or 0) * 100:.1f}%, memory {mem}."
    if data.protected_by_pmcp:
        text += f" Protected: {data.protected_by_pmcp}."
    return Reply(data, text)


class GuestConfig(BaseModel):
    guest: Guest
    config: dict[str, str | int | float | bool | None]
    pending: dict[str, str | int | float | bool | None] | None = Field(
        None, description="Changes waiting for the next start (new value; null: to be removed)"
    )


def _shown(key: str, value: Any) -> Any:
    if any(w in key.lower() for w in ("password", "secret", "sshkeys")):
        return "<hidden>"
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


async def guest_config(call: Call, vmid: int) -> Reply:
    """The configuration as it runs, and what waits for the next start: GET .../pending gives both
    (pve-guest-common GuestHelpers.pm config_with_pending_array: value, pending, delete), where GET
    .../config would show pending values as if they were in effect."""
    guest = await resolve_guest(call, vmid)
    config: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    for item in await call.px.get(guest_path(guest, "pending")) or []:
        key = str(item.get("key"))
        if "value" in item:
            config[key] = _shown(key, item["value"])
        if item.get("delete"):
            pending[key] = None
        elif "pending" in item:
            pending[key] = _shown(key, item["pending"])
    config = dict(sorted(config.items()))
    text = f"Configuration of {guest_label(guest)}:\n" + "\n".join(
        f"{k}: {v}" + (f" (pending: {pending[k]})" if k in pending else "") for k, v in config.items()
    )
    text += "".join(f"\n{k}: (pending: {v})" for k, v in pending.items() if k not in config)
    if pending:
        text += "\nPending values apply at the next start (a reboot through Proxmox)."
    return Reply(GuestConfig(guest=guest, config=config, pending=pending or None), text[:6000])


class GuestInfo(GuestStatus):
    """guest_info's answer: the fields of the view asked for (`show`)."""

    show: str
    config: dict[str, str | int | float | bool | None] | None = None
    pending: dict[str, str | int | float | bool | None] | None = None
    source: Literal["guest-agent", "container", "unavailable"] | None = None
    addresses: list[Address] | None = None
    os: str | None = None
    why_unavailable: str | None = None
    total: int | None = None
    snapshots: list[Snapshot] | None = None


_VIEWS = {
    "status": guest_status,
    "config": guest_config,
    "network": guest_network,
    "snapshots": list_snapshots,
}


# Four reads of one guest in one tool (issue 14: tools/list stays small): each view is the answer the
# separate tool gave, so its fields keep their names.
@tool(Risk.READ, "Guest details", GuestInfo)
async def guest_info(
    call: Call,
    vmid: Vmid,
    show: Annotated[
        Literal["status", "config", "network", "snapshots"],
        Field(
            description="status (live numbers, lock, HA), config (+ pending changes), network "
            "(IPs, OS), snapshots"
        ),
    ] = "status",
) -> Reply:
    """One VM or container: live status, configuration, IP addresses and OS (guest agent), or snapshots."""
    reply = await _VIEWS[show](call, vmid)
    data = GuestInfo(show=show, **reply.data.model_dump(exclude_none=True))
    return Reply(data, reply.text)


def _already(guest: Guest, action: str, live: dict[str, Any]) -> str | None:
    """Why ``action`` has nothing to do on a guest in this live state (None: it has work to do).

    Real hosts are not idempotent here, so the tools are (their MCP idempotent hint says so):
    pve-container API2/LXC/Status.pm answers HTTP 500 "CT N already running" to start/resume and
    "CT N not running" to stop/shutdown/suspend; qemu-server QemuServer.pm vm_start fails its task
    with "VM N already running". A paused VM is refused rather than skipped: starting it is not
    what resumes it, and its state would otherwise be misreported."""
    status = live.get("status")
    paused = guest.type == "qemu" and live.get("qmpstatus") in ("paused", "prelaunch")
    label = guest_label(guest)
    if action in ("start", "resume") and status == "running" and not paused:
        return "already running"
    if action == "start" and paused:
        raise validate.InvalidArgument(f"{label} is paused; action=resume continues it")
    if action in ("stop", "shutdown") and status == "stopped":
        return "already stopped"
    if action == "suspend" and paused:
        return "already paused"
    if action == "suspend" and guest.type == "lxc" and status == "stopped":
        raise validate.InvalidArgument(
            f"{label} is not running. A suspended container is stopped with its checkpoint on disk "
            "(lxc-checkpoint); action=resume restores it"
        )
    return None


async def _act(
    call: Call, vmid: int, action: str, path: tuple[str, ...], params: dict[str, Any], wait: int | None
) -> Reply:
    guest, live = await resolve_guest_status(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    if action in ("start", "stop", "shutdown", "suspend", "resume"):
        # /cluster/resources lags (pvestatd writes it every 10 s): the live state decides.
        if live is None:
            live = await call.px.get(guest_path(guest, "status", "current")) or {}
        if why := _already(guest, action, live):
            result = ActionResult(outcome="ok", action=action, guest=guest, detail=f"{why}; nothing was done")
            return Reply(result, f"{action} {guest_label(guest)}: {why}, nothing done.")
    upid = await call.px.post(guest_path(guest, *path), **params)
    if not isinstance(upid, str):
        raise validate.InvalidArgument(
            f"Proxmox did not start a task for {action} (answer: {str(upid)[:80]})"
        )
    started = time.monotonic()
    task = await call.wait(upid, wait)
    result, text = task_result(action, guest, task)
    if task.task_type in ("hastart", "hastop") and task.outcome == "ok":
        result, text = await _ha_outcome(call, guest, action, result, wait, started)
    elif task.outcome == "ok":  # answer with the state after the action, read live (status/current)
        result.guest = (await resolve_guest_status(call, guest.vmid))[0]
        text = text.rstrip(".") + f"; it is now {result.guest.status or 'in an unknown state'}."
    return Reply(result, text)


async def _ha_outcome(
    call: Call, guest: Guest, action: str, result: ActionResult, wait: int | None, started: float
) -> tuple[ActionResult, str]:
    """An HA-managed guest: qemu-server/pve-container answered with a hastart/hastop task that
    ends OK as soon as the request is queued (``ha-manager set``/``crm-command stop``); the HA stack
    acts later. Wait (within the same bound) for the state the request asked for, and say which."""
    want = "running" if action == "start" else "stopped"
    label = guest_label(guest)
    state = None
    while True:
        live = await call.px.get(guest_path(guest, "status", "current")) or {}
        state = live.get("status")
        left = call.wait_limit(wait) - (time.monotonic() - started)
        if state == want or left <= 0:
            break
        await call.progress(time.monotonic() - started, call.wait_limit(wait), f"HA: {label} is {state}")
        await anyio.sleep(min(1.0, left))
    if state == want:
        result.detail = f"requested through HA; {label} is now {want}"
        return result, f"{action} {label}: requested through HA (task {result.upid}); it is now {want}."
    result.outcome = "running"
    result.detail = f"requested through HA; {label} is still {state or 'in an unknown state'}"
    result.follow_up = "The HA manager acts on its own schedule; guest_info shows when it is " + want
    return result, (
        f"{action} {label}: requested through HA (task {result.upid} OK), but it is still {state}; "
        f"guest_info shows when the HA manager has made it {want}."
    )


PowerAction = Literal["start", "shutdown", "reboot", "suspend", "resume", "stop", "reset"]
BULK_MAX = 50  # guests one tagged call may act on
# What a hard action loses, and what to try first: the plan's text (stop, reset and shutdown's force_stop).
_HARD = {
    "stop": (
        "stop (hard power-off)",
        "it will be powered off at once, like pulling the plug: unsaved data inside it is lost",
        "Nothing restores lost in-memory state; action=start boots it again. Try action=shutdown first.",
    ),
    "reset": (
        "reset (hard reboot)",
        "it will be reset at once without a clean shutdown: unsaved data inside it is lost",
        "Nothing restores lost in-memory state. Try action=reboot (clean) first.",
    ),
}


_UNDO = {
    "start": "action=shutdown stops it again",
    "shutdown": "action=start boots it again",
    "reboot": "none needed: it comes back by itself",
    "suspend": "action=resume continues it",
    "resume": "action=suspend pauses it again",
}


def _hard_power(arguments: dict[str, Any]) -> Risk | None:
    """stop and reset lose what is in the guest's memory, and so does shutdown with force_stop=true
    once its timeout passes (at least 1 s): destructive calls, for admin mode and confirm=true."""
    hard = arguments.get("action") in _HARD or arguments.get("force_stop") is True
    return Risk.DESTRUCTIVE if hard else None


# One tool for the seven power actions (issue 14: a model holds one action enum better than seven
# near-identical tools; tools/list admin 22.2 -> see BENCHMARKS.md). The risk is per call (_hard_power).
@tool(Risk.CHANGE, "Power a guest on, off or through a reboot", ActionResult, escalate=_hard_power)
async def guest_power(
    call: Call,
    action: Annotated[
        PowerAction,
        Field(
            description="shutdown and reboot are clean; suspend: VM paused in RAM, container checkpointed; "
            "stop (power-off) and reset (VMs) lose unsaved data: admin mode, confirm"
        ),
    ],
    vmid: Vmid | None = None,
    tag: Annotated[
        str | None,
        Field(
            pattern=validate.TAG_PATTERN,
            description="Instead of vmid: every guest with this tag (planned first)",
        ),
    ] = None,
    timeout: Annotated[int, Field(ge=1, le=3600, description="shutdown: seconds the guest OS gets")] = 120,
    force_stop: Annotated[
        bool,
        Field(strict=True, description="shutdown: then power off (admin mode, confirm)"),
    ] = False,
    confirm: Confirm = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Start, shut down, reboot, suspend, resume, stop or reset a VM or container; answers with its state
    after. Nothing is done if it is already so."""
    if (vmid is None) == (tag is None):
        raise validate.InvalidArgument("give vmid (one guest) or tag (every guest with that tag)")
    if tag is not None:
        return await _power_tagged(call, tag, action, timeout, force_stop, confirm, wait_seconds)
    return await _power_one(call, vmid, action, timeout, force_stop, confirm, wait_seconds)  # type: ignore[arg-type]


async def _power_one(
    call: Call,
    vmid: int,
    action: str,
    timeout: int,
    force_stop: bool,
    confirm: bool,
    wait_seconds: int | None,
    *,
    gated: bool = False,
) -> Reply:
    """One guest; ``gated``: a tagged call already had its whole plan approved."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    if action == "reset" and guest.type != "qemu":
        raise validate.InvalidArgument(
            f"{guest_label(guest)} is a container; containers have no reset, use action=reboot"
        )
    hard = action in _HARD or (action == "shutdown" and force_stop)
    if action in _HARD:
        what, effect, undo = _HARD[action]
    elif hard:
        what = "shutdown, then hard power-off"
        effect = (
            f"it gets {timeout} s to shut down, then it is powered off like pulling the plug: "
            "unsaved data inside it is lost"
        )
        undo = (
            "Nothing restores lost in-memory state; action=start boots it again. Without force_stop "
            "the guest is never powered off."
        )
    else:
        what, effect, undo = action, f"{action} through Proxmox", _UNDO.get(action, "the opposite action")
    # hard actions always plan (and ask the person); the others only with --approval-scope changes
    stop = None if gated else await _gate(call, guest, what, effect, undo, confirm, always=hard)
    if stop is not None:
        return stop
    params: dict[str, Any] = {"timeout": timeout, "forceStop": force_stop} if action == "shutdown" else {}
    return await _act(call, vmid, action, ("status", action), params, wait_seconds)


async def _power_tagged(
    call: Call, tag: str, action: str, timeout: int, force_stop: bool, confirm: bool, wait: int | None
) -> Reply:
    """A bulk action ("shut down every guest tagged dev"): always planned first, bounded, protected guests
    named and left alone, then one guest after the other, each answered as a single call would be."""
    found = sorted(
        (
            i
            for i in await call.rt.locator.listing(call.px)
            if tag in split_tags(i.get("tags")) and not i.get("template") and call.scope.contains_item(i)
        ),
        key=lambda i: i["vmid"],
    )
    protected = [i for i in found if call.rt.policy.protection_reason(i["vmid"], split_tags(i.get("tags")))]
    targets = [i for i in found if i not in protected]
    if not targets:
        raise validate.InvalidArgument(f"tag: no unprotected guest carries the tag {tag!r} (see list_guests)")
    if len(targets) > BULK_MAX:
        raise validate.InvalidArgument(
            f"tag: {len(targets)} guests carry {tag!r}; at most {BULK_MAX} at once: narrow it with "
            "another tag"
        )
    names = ", ".join(f"{i['vmid']} ({i.get('name') or '?'}, {i.get('status') or '?'})" for i in targets)
    left = f"; protected, left alone: {', '.join(str(i['vmid']) for i in protected)}" if protected else ""
    stop = await gate(
        call,
        None,
        f"{action} of {len(targets)} guest(s) tagged {tag}",
        f"{action} of {names}{left}",
        "each guest as a single call would be undone (start what was stopped, and so on)",
        confirm,
    )  # a bulk action always plans first, whatever its risk
    if stop is not None:
        return stop
    lines, outcomes = [], []
    for i in targets:
        try:
            reply = await _power_one(call, i["vmid"], action, timeout, force_stop, True, wait, gated=True)
            outcomes.append(str(getattr(reply.data, "outcome", "ok")))
            lines.append(reply.text.splitlines()[0])
        except (validate.InvalidArgument, ProxmoxError) as exc:
            outcomes.append("failed")
            lines.append(f"{action} {i['vmid']}: FAILED: {exc}")
    outcome = "failed" if "failed" in outcomes else ("running" if "running" in outcomes else "ok")
    head = f"{action} of {len(targets)} guest(s) tagged {tag}: {outcomes.count('ok')} ok{left}."
    result = ActionResult(outcome=outcome, action=f"{action} tagged {tag}", detail="\n".join(lines))  # type: ignore[arg-type]
    return Reply(result, "\n".join([head, *lines]))


async def _gate(
    call: Call, guest: Guest, action: str, effect: str, undo: str, confirm: bool, *, always: bool = True
) -> Reply | None:
    """``gate`` with the guest's state first in the plan (what the person weighs a power action by)."""
    state = f"{guest_label(guest)} is {guest.status or 'in an unknown state'}; {effect}"
    return await gate(call, guest, action, state, undo, confirm, always=always)


def _gib(value: Any) -> str:
    return f"{(value or 0) / 1024**3:.1f}"
