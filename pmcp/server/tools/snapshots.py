"""Snapshots: list, create (change), roll back and delete (destructive, confirmed)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    ActionResult,
    Confirm,
    Guest,
    SnapName,
    Vmid,
    WaitSeconds,
    gate,
    guest_label,
    guest_path,
    resolve_guest,
    task_result,
)
from pmcp.server.tools.undo import AUTO_PREFIX, blocker, take, undo_sentence


class Snapshot(BaseModel):
    name: str
    description: str | None = None
    parent: str | None = None
    snaptime: int | None = None
    vmstate: bool | None = None


class SnapshotList(BaseModel):
    guest: Guest
    total: int
    snapshots: list[Snapshot]


async def _snapshots(call: Call, guest: Guest) -> list[Snapshot]:
    raw = await call.px.get(guest_path(guest, "snapshot")) or []
    out = []
    for s in raw:
        if s.get("name") == "current":  # the "you are here" marker, not a snapshot
            continue
        out.append(
            Snapshot(
                name=str(s.get("name")),
                description=(s.get("description") or None),
                parent=s.get("parent"),
                snaptime=s.get("snaptime"),
                vmstate=bool(s["vmstate"]) if "vmstate" in s else None,
            )
        )
    return sorted(out, key=lambda s: s.snaptime or 0)


@tool(Risk.READ, "List snapshots", SnapshotList)
async def list_snapshots(call: Call, vmid: Vmid) -> Reply:
    """The snapshots of one VM or container, oldest first, with descriptions and parents."""
    guest = await resolve_guest(call, vmid)
    snaps = await _snapshots(call, guest)
    lines = [f"{guest_label(guest)} has {len(snaps)} snapshot(s)."]
    lines += [
        f"- {s.name} (parent {s.parent or '-'}, time {s.snaptime or '?'}) {s.description or ''}".rstrip()
        for s in snaps
    ]
    return Reply(SnapshotList(guest=guest, total=len(snaps), snapshots=snaps), "\n".join(lines))


@tool(Risk.CHANGE, "Create snapshot", ActionResult)
async def create_snapshot(
    call: Call,
    vmid: Vmid,
    name: SnapName,
    description: Annotated[
        str | None, Field(max_length=1024, description="What this snapshot is for")
    ] = None,
    include_ram: Annotated[bool, Field(description="VMs only: also save the running memory state")] = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Take a snapshot of a VM or container (the usual safety net before a risky change)."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    name = validate.snapname(name)
    # Reserved: qemu-server API2/Qemu.pm snapshot ('current', 'pending' in any case), pve-container
    # API2/LXC/Snapshot.pm ('current', 'vzdump'); both refuse them with HTTP 500.
    reserved = name == "current" or (name.lower() == "pending" if guest.type == "qemu" else name == "vzdump")
    if reserved:
        raise validate.InvalidArgument(f"name: {name!r} is reserved by Proxmox; choose another name")
    # A used name is the task's failure on a real host (AbstractConfig.pm snapshot_prepare): say it first.
    if any(s.name == name for s in await _snapshots(call, guest)):
        raise validate.InvalidArgument(
            f"name: {guest_label(guest)} already has a snapshot {name!r} (see list_snapshots); "
            "choose another name or delete_snapshot it first"
        )
    params: dict[str, object] = {"snapname": name}
    if description:
        params["description"] = validate.description(description)
    if include_ram and guest.type == "qemu":
        params["vmstate"] = True
    upid = await call.px.post(guest_path(guest, "snapshot"), **params)
    result, text = task_result(f"snapshot '{name}' of", guest, await call.wait(str(upid), wait_seconds))
    return Reply(result, text)


async def _names(call: Call, guest: Guest) -> set[str]:
    return {s.name for s in await _snapshots(call, guest)}


async def _existing(call: Call, guest: Guest, name: str) -> Snapshot:
    for s in await _snapshots(call, guest):
        if s.name == name:
            return s
    raise validate.InvalidArgument(
        f"name: {guest_label(guest)} has no snapshot {name!r} (see list_snapshots)"
    )


@tool(Risk.DESTRUCTIVE, "Roll back to snapshot", ActionResult)
async def rollback_snapshot(
    call: Call,
    vmid: Vmid,
    name: SnapName,
    confirm: Confirm = False,
    start_after: Annotated[bool, Field(description="Start the guest after the rollback")] = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Return a guest to a snapshot, discarding every change since. Without confirm=true: only the plan."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    snap = await _existing(call, guest, validate.snapname(name))
    effect = (
        f"{guest_label(guest)} is {guest.status}; its configuration, disks (and saved memory) return to the "
        f"state of '{snap.name}' and everything written since is lost (the description stays)"
    )
    reason = await blocker(call, guest)
    stop = await gate(
        call,
        guest,
        f"roll back to snapshot '{snap.name}'",
        effect,
        undo_sentence(reason, "the rollback"),
        confirm,
    )
    if stop is not None:
        return stop
    safety = await take(call, guest) if reason is None else None
    if (
        safety is not None
        and snap.name.startswith(AUTO_PREFIX)
        and snap.name not in await _names(call, guest)
    ):
        raise validate.InvalidArgument(  # pruned by the safety snapshot just taken (PMCP_UNDO_KEEP)
            f"name: '{snap.name}' was the oldest safety snapshot and has just been rotated out; "
            f"'{safety}' holds the state before this call"
        )
    params = {"start": True} if start_after else {}
    upid = await call.px.post(guest_path(guest, "snapshot", snap.name, "rollback"), **params)
    result, text = task_result(
        f"rollback to '{snap.name}' of", guest, await call.wait(str(upid), wait_seconds)
    )
    result.safety_snapshot = safety
    return Reply(result, text + (f" Safety snapshot first: {safety} (undo_last_change)." if safety else ""))


@tool(Risk.DESTRUCTIVE, "Delete snapshot", ActionResult, idempotent=True)
async def delete_snapshot(
    call: Call, vmid: Vmid, name: SnapName, confirm: Confirm = False, wait_seconds: WaitSeconds = None
) -> Reply:
    """Delete one snapshot of a guest (the guest itself is untouched). Without confirm=true only the plan."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    snap = await _existing(call, guest, validate.snapname(name))
    stop = await gate(
        call,
        guest,
        f"delete snapshot '{snap.name}'",
        f"snapshot '{snap.name}' of {guest_label(guest)} is removed; the guest is unchanged",
        "None: a deleted snapshot cannot be restored. Back the guest up first (backup_guest)",
        confirm,
    )
    if stop is not None:
        return stop
    upid = await call.px.delete(guest_path(guest, "snapshot", snap.name))
    result, text = task_result(
        f"delete snapshot '{snap.name}' of", guest, await call.wait(str(upid), wait_seconds)
    )
    return Reply(result, text)
