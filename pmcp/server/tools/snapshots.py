"""Snapshots: list, create (change), roll back and delete (destructive, confirmed)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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


async def list_snapshots(call: Call, vmid: int) -> Reply:
    """The snapshots of one VM or container, oldest first, with descriptions and parents."""
    guest = await resolve_guest(call, vmid)
    snaps = await _snapshots(call, guest)
    lines = [f"{guest_label(guest)} has {len(snaps)} snapshot(s)."]
    lines += [
        f"- {s.name} (parent {s.parent or '-'}, time {s.snaptime or '?'}) {s.description or ''}".rstrip()
        for s in snaps
    ]
    return Reply(SnapshotList(guest=guest, total=len(snaps), snapshots=snaps), "\n".join(lines))


def _snapshot_risk(arguments: dict[str, Any]) -> Risk | None:
    """Rolling back discards everything since the snapshot; a deleted snapshot is gone: destructive."""
    return Risk.DESTRUCTIVE if arguments.get("action") in ("rollback", "delete") else None


# create, rollback and delete in one tool (issue 14: fewer near-identical tools in tools/list); the
# risk is per call: create is an operator's change, rollback and delete are destructive (admin, confirm).
@tool(Risk.CHANGE, "Create, roll back or delete a snapshot", ActionResult, escalate=_snapshot_risk)
async def snapshot(
    call: Call,
    vmid: Vmid,
    action: Annotated[
        Literal["create", "rollback", "delete"],
        Field(description="create; rollback (discards every change since) or delete: admin mode and confirm"),
    ],
    name: SnapName,
    description: Annotated[str | None, Field(max_length=1024, description="create: what it is for")] = None,
    include_ram: Annotated[bool, Field(description="create, VMs: also save the running memory")] = False,
    start_after: Annotated[bool, Field(description="rollback: start the guest afterwards")] = False,
    confirm: Confirm = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Create a snapshot of a VM or container, roll back to one, or delete one (guest_info show=snapshots
    lists them)."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    name = validate.snapname(name)
    if action == "create":
        effect = f"a snapshot '{name}' of {guest_label(guest)}"
        undo = "action=delete removes it again"
        stop = await gate(call, guest, f"snapshot '{name}'", effect, undo, confirm, always=False)
        return stop or await _create(call, guest, name, description, include_ram, wait_seconds)
    snap = await _existing(call, guest, name)
    if action == "rollback":
        return await _rollback(call, guest, snap, confirm, start_after, wait_seconds)
    return await _delete(call, guest, snap, confirm, wait_seconds)


async def _create(
    call: Call, guest: Guest, name: str, description: str | None, include_ram: bool, wait: int | None
) -> Reply:
    # Reserved: qemu-server API2/Qemu.pm snapshot ('current', 'pending' in any case), pve-container
    # API2/LXC/Snapshot.pm ('current', 'vzdump'); both refuse them with HTTP 500.
    reserved = name == "current" or (name.lower() == "pending" if guest.type == "qemu" else name == "vzdump")
    if reserved:
        raise validate.InvalidArgument(f"name: {name!r} is reserved by Proxmox; choose another name")
    # A used name is the task's failure on a real host (AbstractConfig.pm snapshot_prepare): say it first.
    if any(s.name == name for s in await _snapshots(call, guest)):
        raise validate.InvalidArgument(
            f"name: {guest_label(guest)} already has a snapshot {name!r} (see guest_info show=snapshots); "
            "choose another name or delete it first (action=delete)"
        )
    params: dict[str, object] = {"snapname": name}
    if description:
        params["description"] = validate.description(description)
    if include_ram and guest.type == "qemu":
        params["vmstate"] = True
    upid = await call.px.post(guest_path(guest, "snapshot"), **params)
    result, text = task_result(f"snapshot '{name}' of", guest, await call.wait(str(upid), wait))
    return Reply(result, text)


async def _names(call: Call, guest: Guest) -> set[str]:
    return {s.name for s in await _snapshots(call, guest)}


async def _existing(call: Call, guest: Guest, name: str) -> Snapshot:
    for s in await _snapshots(call, guest):
        if s.name == name:
            return s
    raise validate.InvalidArgument(
        f"name: {guest_label(guest)} has no snapshot {name!r} (see guest_info show=snapshots)"
    )


async def _rollback(
    call: Call, guest: Guest, snap: Snapshot, confirm: bool, start_after: bool, wait: int | None
) -> Reply:
    effect = (
        f"{guest_label(guest)} is {guest.status}; its configuration, disks (and saved memory) return to the "
        f"state of '{snap.name}' and everything written since is lost (the description stays)"
    )
    reason = await blocker(call, guest)
    action = f"roll back to snapshot '{snap.name}'"
    stop = await gate(call, guest, action, effect, undo_sentence(reason, "the rollback"), confirm)
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
    result, text = task_result(f"rollback to '{snap.name}' of", guest, await call.wait(str(upid), wait))
    if result.outcome == "ok":  # the state after: stopped, or running with start_after / a RAM snapshot
        result.guest = await resolve_guest(call, guest.vmid)
    result.safety_snapshot = safety
    return Reply(result, text + (f" Safety snapshot first: {safety} (undo_last_change)." if safety else ""))


async def _delete(call: Call, guest: Guest, snap: Snapshot, confirm: bool, wait: int | None) -> Reply:
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
    result, text = task_result(f"delete snapshot '{snap.name}' of", guest, await call.wait(str(upid), wait))
    return Reply(result, text)
