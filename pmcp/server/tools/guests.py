"""Guests (VMs and containers together): list, status, config, power actions, tags/description."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import anyio
from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk, split_tags
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
from pmcp.server.tools.undo import blocker, take, undo_sentence

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
        Field(description="Only guests in this state"),
    ] = None,
    type: Annotated[GuestType | None, Field(description="'qemu' for VMs, 'lxc' for containers")] = None,
    tag: Annotated[
        str | None,
        Field(pattern=validate.TAG_PATTERN, max_length=64, description="Only guests with this tag"),
    ] = None,
    pool: Annotated[
        str | None,
        Field(pattern=validate.POOL_PATTERN, max_length=64, description="Only guests in this pool"),
    ] = None,
    name: Annotated[
        str | None, Field(max_length=128, description="Case-insensitive part of the guest name")
    ] = None,
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE, description="Page size")] = DEFAULT_PAGE,
    offset: Annotated[int, Field(ge=0, description="Skip this many matching guests")] = 0,
    detail: Annotated[bool, Field(description="Add CPU, memory, uptime, pool (larger answer)")] = False,
) -> Reply:
    """List VMs and containers across the cluster, sorted by VMID, filtered and paginated.

    Compact by default (vmid, name, node, type, status, tags); `total` counts every match, so page
    with `offset` instead of asking for everything. Use guest_status for one guest's live numbers."""
    items = await call.rt.locator.listing(call.px)
    needle = name.lower() if name else None
    matches = []
    scope = call.scope
    for i in items:
        if not scope.contains_item(i):  # a scoped client sees its guests only (not even a count)
            continue
        if node and i.get("node") != node:
            continue
        if status and i.get("status") != status:
            continue
        if type and i.get("type") != type:
            continue
        tags = split_tags(i.get("tags"))
        if tag and tag not in tags:
            continue
        if pool and i.get("pool") != pool:
            continue
        if needle and needle not in str(i.get("name") or "").lower():
            continue
        matches.append((i, tags))
    matches.sort(key=lambda m: m[0].get("vmid", 0))
    page = matches[offset : offset + limit]
    guests = []
    for i, tags in page:
        g = GuestItem(
            vmid=i["vmid"],
            name=i.get("name"),
            node=i.get("node", "?"),
            type=i["type"],
            status=i.get("status"),
            tags=tags or None,
        )
        if detail:
            g.pool, g.template = i.get("pool"), bool(i.get("template"))
            g.cpu = round(float(i.get("cpu") or 0), 4)
            g.maxcpu, g.mem, g.maxmem, g.uptime = (
                i.get("maxcpu"),
                i.get("mem"),
                i.get("maxmem"),
                i.get("uptime"),
            )
        guests.append(g)
    nxt = offset + len(page) if offset + len(page) < len(matches) else None
    data = GuestList(total=len(matches), offset=offset, returned=len(guests), next_offset=nxt, guests=guests)
    head = f"{len(matches)} guests match; showing {offset + 1 if guests else 0}-{offset + len(guests)}"
    head += f" (next page: offset={nxt})." if nxt is not None else "."
    lines = [head, "vmid name type status node tags"]
    for g in guests:
        lines.append(
            f"{g.vmid} {g.name or '-'} {g.type} {g.status or '?'} {g.node} {','.join(g.tags or []) or '-'}"
        )
    return Reply(data, "\n".join(lines))


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


@tool(Risk.READ, "Guest status", GuestStatus)
async def guest_status(call: Call, vmid: Vmid) -> Reply:
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
    text += f", uptime {s.get('uptime') or 0}s, cpu {float(s.get('cpu') or 0) * 100:.1f}%, memory {mem}."
    if data.protected_by_pmcp:
        text += f" Protected: {data.protected_by_pmcp}."
    return Reply(data, text)


class GuestConfig(BaseModel):
    guest: Guest
    config: dict[str, str | int | float | bool | None]


@tool(Risk.READ, "Guest configuration", GuestConfig)
async def guest_config(call: Call, vmid: Vmid) -> Reply:
    """The configuration of one VM or container (CPU, memory, disks, network, options). Secrets are hidden."""
    guest = await resolve_guest(call, vmid)
    raw = await call.px.get(guest_path(guest, "config")) or {}
    config: dict[str, Any] = {}
    for k, v in sorted(raw.items()):
        if any(w in k.lower() for w in ("password", "secret", "sshkeys")):
            v = "<hidden>"
        elif not isinstance(v, str | int | float | bool) and v is not None:
            v = str(v)
        config[k] = v
    text = f"Configuration of {guest_label(guest)}:\n" + "\n".join(f"{k}: {v}" for k, v in config.items())
    return Reply(GuestConfig(guest=guest, config=config), text[:6000])


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
        raise validate.InvalidArgument(f"{label} is paused; resume_guest continues it")
    if action in ("stop", "shutdown") and status == "stopped":
        return "already stopped"
    if action == "suspend" and paused:
        return "already paused"
    if action == "suspend" and guest.type == "lxc" and status == "stopped":
        raise validate.InvalidArgument(
            f"{label} is not running. A suspended container is stopped with its checkpoint on disk "
            "(lxc-checkpoint); resume_guest restores it"
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
    result.follow_up = "The HA manager acts on its own schedule; guest_status shows when it is " + want
    return result, (
        f"{action} {label}: requested through HA (task {result.upid} OK), but it is still {state}; "
        f"guest_status shows when the HA manager has made it {want}."
    )


@tool(Risk.CHANGE, "Start guest", ActionResult, idempotent=True)
async def start_guest(call: Call, vmid: Vmid, wait_seconds: WaitSeconds = None) -> Reply:
    """Start a stopped VM or container and wait until Proxmox reports the outcome."""
    return await _act(call, vmid, "start", ("status", "start"), {}, wait_seconds)


def _hard_stop(arguments: dict[str, Any]) -> Risk | None:
    """force_stop=true powers the guest off after the timeout (1 s at least): stop_guest's downtime."""
    return Risk.DESTRUCTIVE if arguments.get("force_stop") is True else None


@tool(Risk.CHANGE, "Shut down guest (graceful)", ActionResult, idempotent=True, escalate=_hard_stop)
async def shutdown_guest(
    call: Call,
    vmid: Vmid,
    timeout: Annotated[int, Field(ge=1, le=3600, description="Seconds the guest OS gets to shut down")] = 120,
    force_stop: Annotated[
        bool,
        Field(
            strict=True,
            description="Hard-stop the guest if it has not shut down by then: like stop_guest, "
            "needs PMCP_MODE=admin and confirm=true",
        ),
    ] = False,
    confirm: Confirm = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Ask the guest OS to shut down cleanly (ACPI / container init), like pressing the power button."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    if force_stop:
        effect = (
            f"it gets {timeout} s to shut down, then it is powered off like pulling the plug: "
            "unsaved data inside it is lost"
        )
        undo = (
            "Nothing restores lost in-memory state; start_guest boots it again. Without force_stop "
            "the guest is never powered off."
        )
    else:
        effect, undo = "its OS is asked to shut down cleanly", "start_guest boots it again"
    stop = await _gate(
        call,
        guest,
        "shutdown" + (", then hard power-off" if force_stop else ""),
        effect,
        undo,
        confirm,
        always=force_stop,
    )
    if stop is not None:
        return stop
    params = {"timeout": timeout, "forceStop": force_stop}
    return await _act(call, vmid, "shutdown", ("status", "shutdown"), params, wait_seconds)


@tool(Risk.CHANGE, "Reboot guest", ActionResult)
async def reboot_guest(call: Call, vmid: Vmid, wait_seconds: WaitSeconds = None) -> Reply:
    """Reboot a running VM or container cleanly (shutdown, then start)."""
    return await _act(call, vmid, "reboot", ("status", "reboot"), {}, wait_seconds)


@tool(Risk.CHANGE, "Suspend guest", ActionResult)
async def suspend_guest(call: Call, vmid: Vmid, wait_seconds: WaitSeconds = None) -> Reply:
    """Pause a running VM in memory, or checkpoint a container to disk (it is then stopped);
    resume_guest continues either."""
    return await _act(call, vmid, "suspend", ("status", "suspend"), {}, wait_seconds)


@tool(Risk.CHANGE, "Resume guest", ActionResult, idempotent=True)
async def resume_guest(call: Call, vmid: Vmid, wait_seconds: WaitSeconds = None) -> Reply:
    """Resume a paused VM, or restore a suspended container from its checkpoint."""
    return await _act(call, vmid, "resume", ("status", "resume"), {}, wait_seconds)


@tool(Risk.CHANGE, "Set guest tags / description", ActionResult, idempotent=True)
async def set_guest_metadata(
    call: Call,
    vmid: Vmid,
    tags: Annotated[
        list[Annotated[str, Field(pattern=validate.TAG_PATTERN, max_length=64)]] | None,
        Field(
            max_length=32, description="The complete new tag list (replaces the old one); [] removes all tags"
        ),
    ] = None,
    description: Annotated[
        str | None,
        Field(max_length=validate.MAX_DESCRIPTION, description="New description/notes (replaces the old)"),
    ] = None,
) -> Reply:
    """Replace a guest's tags and/or its description (notes). Give at least one of them."""
    if tags is None and description is None:
        raise validate.InvalidArgument("give tags, description, or both")
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    params: dict[str, Any] = {}
    delete = []
    if tags is not None:
        if tags:
            params["tags"] = validate.tags(tags)
        else:
            delete.append("tags")
    if description is not None:
        if description:
            params["description"] = validate.description(description)
        else:
            delete.append("description")
    if delete:
        params["delete"] = ",".join(delete)
    snap = None
    note = ""
    # a rollback keeps the description, so only a tag change gets a safety snapshot
    if tags is not None and sorted(tags) != sorted(guest.tags):
        reason = await blocker(call, guest)
        snap = await take(call, guest) if reason is None else None
        note = " " + (
            f"Safety snapshot first: {snap} (undo_last_change reverts the tags)."
            if snap
            else undo_sentence(reason, "it") + "."
        )
    await call.px.put(guest_path(guest, "config"), **params)
    changed = " and ".join(
        x for x in ("tags" if tags is not None else "", "description" if description is not None else "") if x
    )
    result = ActionResult(
        outcome="ok", action="set metadata", guest=guest, detail=f"{changed} updated", safety_snapshot=snap
    )
    return Reply(result, f"Updated the {changed} of {guest_label(guest)}.{note}")


async def _gate(
    call: Call, guest: Guest, action: str, effect: str, undo: str, confirm: bool, *, always: bool = True
) -> Reply | None:
    """``gate`` with the guest's state first in the plan (what the person weighs a power action by)."""
    state = f"{guest_label(guest)} is {guest.status or 'in an unknown state'}; {effect}"
    return await gate(call, guest, action, state, undo, confirm, always=always)


@tool(Risk.DESTRUCTIVE, "Stop guest (hard power-off)", ActionResult, idempotent=True)
async def stop_guest(
    call: Call, vmid: Vmid, confirm: Confirm = False, wait_seconds: WaitSeconds = None
) -> Reply:
    """Power a guest off immediately, without a clean shutdown (data in its memory is lost).

    Prefer shutdown_guest. Without confirm=true this only returns the plan."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    stop = await _gate(
        call,
        guest,
        "stop (hard power-off)",
        "it will be powered off at once, like pulling the plug: unsaved data inside it is lost",
        "Nothing restores lost in-memory state; start_guest boots it again. Try shutdown_guest first.",
        confirm,
    )
    if stop is not None:
        return stop
    return await _act(call, vmid, "stop", ("status", "stop"), {}, wait_seconds)


@tool(Risk.DESTRUCTIVE, "Reset VM (hard reboot)", ActionResult)
async def reset_guest(
    call: Call, vmid: Vmid, confirm: Confirm = False, wait_seconds: WaitSeconds = None
) -> Reply:
    """Hard-reset a VM, like the reset button (no clean shutdown). VMs only; containers use reboot_guest.

    Without confirm=true this only returns the plan."""
    guest = await resolve_guest(call, vmid)
    if guest.type != "qemu":
        raise validate.InvalidArgument(
            f"{guest_label(guest)} is a container; containers have no reset, use reboot_guest"
        )
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    stop = await _gate(
        call,
        guest,
        "reset (hard reboot)",
        "it will be reset at once without a clean shutdown: unsaved data inside it is lost",
        "Nothing restores lost in-memory state. Try reboot_guest (clean) first.",
        confirm,
    )
    if stop is not None:
        return stop
    return await _act(call, vmid, "reset", ("status", "reset"), {}, wait_seconds)


def _gib(value: Any) -> str:
    return f"{(value or 0) / 1024**3:.1f}"
