"""Provisioning: grow a disk (set_guest_config grow_disk=), migrate, make a template, delete a guest
(creating, cloning and restoring are create_guest's: tools/create.py). Every call that creates, consumes
or destroys something answers with a plan first (what, where, how much) and acts only with confirm=true.

Modes follow the privileges, not only the risk: cloning, restoring, templating and deleting all need
VM.Allocate, and in Proxmox VM.Allocate on a guest also allows destroying it (qemu-server API2/Qemu.pm
destroy_vm checks only VM.Allocate), so they are admin tools; growing a disk needs VM.Config.Disk, which
also allows detaching and removing disks, so it is admin too. Migration (VM.Migrate) is an operator tool.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.config import Mode
from pmcp.server.policy import Risk
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    ActionResult,
    Confirm,
    Guest,
    Node,
    Vmid,
    WaitSeconds,
    gate,
    guest_label,
    guest_path,
    resolve_guest,
    task_result,
)
from pmcp.server.tools.undo import blocker, take, undo_sentence

GIB = 1024**3
DISK_RE = re.compile(r"^(?:(?:scsi|sata|ide|virtio)\d{1,2}|rootfs|mp\d{1,3})$")
SIZE_RE = re.compile(r"^\+?\d+(?:\.\d+)?[KMGT]?$")
Name = Annotated[
    str,
    Field(
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}$",
        description="A DNS name",
    ),
]
WaitLong = Annotated[
    int | None,
    Field(ge=0, le=3600, description="Seconds to wait (default 60; 0: none)"),
]


def _size_of(value: str) -> int:
    m = re.search(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT])?", value)
    if not m:
        return 0
    return int(float(m[1]) * {None: 1, "K": 1024, "M": 1024**2, "G": GIB, "T": 1024**4}[m[2]])


def _disks(config: dict[str, Any]) -> dict[str, str]:
    return {
        k: str(v)
        for k, v in config.items()
        if DISK_RE.match(k) and "media=cdrom" not in str(v) and ":" in str(v)
    }


async def _after(call: Call, guest: Guest) -> Guest:
    """The guest as it is after an action (a change tool answers with the state after, not before)."""
    try:
        return await resolve_guest(call, guest.vmid)
    except validate.InvalidArgument:
        return guest


async def _next_id(call: Call) -> int:
    return validate.vmid(int(await call.px.get("/cluster/nextid")))


async def resize_disk(
    call: Call, vmid: int, disk: str, size: str, confirm: bool, wait_seconds: int | None
) -> Reply:
    """Grow one disk of a VM or container (Proxmox cannot shrink): set_guest_config grow_disk=. It needs
    VM.Config.Disk, which also detaches disks: admin. Without confirm=true: the plan."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    config = await call.px.get(guest_path(guest, "config")) or {}
    current = _disks(config).get(disk)
    if current is None:
        have = ", ".join(sorted(_disks(config))) or "none"
        raise validate.InvalidArgument(f"disk: {guest_label(guest)} has no disk {disk!r} (it has: {have})")
    now = _size_of(current)
    units = {"K": 1024, "M": 1024**2, "G": GIB, "T": 1024**4}
    m = re.match(r"^(\+)?(\d+(?:\.\d+)?)([KMGT])?$", size)
    assert m  # the pattern above already held
    new = int(float(m[2]) * units.get(m[3] or "", 1)) + (now if m[1] else 0)
    if new < now:
        raise validate.InvalidArgument(f"size: {disk} is {now / GIB:.1f} GiB; Proxmox cannot shrink a disk")
    effect = (
        f"{disk} of {guest_label(guest)} grows from {now / GIB:.1f} GiB to {new / GIB:.1f} GiB "
        f"(+{(new - now) / GIB:.1f} GiB on {current.split(':')[0]}); the partition and file system "
        "inside the guest must still be grown there"
    )
    # qemu-img refuses to resize a qcow2 image that holds internal snapshots: a safety snapshot would
    # make this resize fail, so none is taken for one (tools/undo.py)
    qcow2 = current.split(",")[0].endswith(".qcow2")
    reason = "its disk is a qcow2 file, which cannot be resized while it holds a snapshot" if qcow2 else None
    reason = reason or await blocker(call, guest)
    undo = f"Proxmox cannot shrink a disk. {undo_sentence(reason, 'the resize')}"
    stop = await gate(call, guest, f"grow {disk}", effect, undo, confirm)
    if stop is not None:
        return stop
    snap = await take(call, guest) if reason is None else None
    upid = await call.px.put(guest_path(guest, "resize"), disk=disk, size=size)
    result, text = task_result(
        f"grow {disk} to {new / GIB:.1f} GiB of", guest, await call.wait(str(upid), wait_seconds)
    )
    result.safety_snapshot = snap
    return Reply(result, text + (f" Safety snapshot first: {snap} (undo_last_change)." if snap else ""))


class MigrationCheck(BaseModel):
    running: bool
    allowed_nodes: list[str] = []
    local_disks: list[str] = []
    local_resources: list[str] = []


@tool(Risk.CHANGE, "Migrate guest", ActionResult)
async def migrate_guest(
    call: Call,
    vmid: Vmid,
    target_node: Node,
    online: Annotated[
        bool, Field(description="Live-migrate a running VM (containers restart instead)")
    ] = True,
    confirm: Confirm = False,
    wait_seconds: WaitLong = None,
) -> Reply:
    """Move a VM or container to another node (Proxmox's own precondition check first). Without
    confirm=true: the plan."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    target = validate.node(target_node)
    if target == guest.node:
        raise validate.InvalidArgument(f"target_node: {guest_label(guest)} is already there")
    running = guest.status == "running"
    local: list[str] = []
    if guest.type == "qemu":
        check = await call.px.get(guest_path(guest, "migrate"), target=target) or {}
        allowed = check.get("allowed_nodes")
        if check.get("local_resources"):
            raise validate.InvalidArgument(
                f"{guest_label(guest)} uses local resources ({', '.join(check['local_resources'])}): "
                "Proxmox cannot migrate it"
            )
        if isinstance(allowed, list) and target not in allowed:
            why = (check.get("not_allowed_nodes") or {}).get(target) or "not allowed by Proxmox"
            raise validate.InvalidArgument(f"target_node: {target} cannot take {guest_label(guest)}: {why}")
        local = [str(d.get("volid")) for d in check.get("local_disks") or [] if not d.get("cdrom")]
    if running and not online:
        raise validate.InvalidArgument(
            f"{guest_label(guest)} is running: pass online=true or shut it down first"
        )
    how = (
        "live (no downtime)"
        if running and guest.type == "qemu"
        else ("with a restart" if running else "offline")
    )
    effect = f"{guest_label(guest)} moves to {target}, {how}"
    if local:
        effect += f"; local disks copied over the network: {', '.join(local)}"
    stop = await gate(
        call, guest, f"migrate to {target}", effect, f"migrate_guest back to {guest.node}", confirm
    )
    if stop is not None:
        return stop
    params: dict[str, Any] = {"target": target}
    if running:
        params["online" if guest.type == "qemu" else "restart"] = True
    if local and guest.type == "qemu":
        params["with-local-disks"] = True
    upid = await call.px.post(guest_path(guest, "migrate"), **params)
    result, text = task_result(f"migrate to {target} of", guest, await call.wait(str(upid), wait_seconds))
    if result.outcome == "ok":
        result.guest = await _after(call, guest)
    return Reply(result, text)


@tool(Risk.CHANGE, "Convert to template", ActionResult, mode=Mode.ADMIN)
async def convert_to_template(
    call: Call, vmid: Vmid, confirm: Confirm = False, wait_seconds: WaitSeconds = None
) -> Reply:
    """Make a stopped guest without snapshots a template to clone from (irreversible). Without
    confirm=true: the plan."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    if guest.template:
        raise validate.InvalidArgument(f"{guest_label(guest)} is already a template")
    effect = f"{guest_label(guest)} becomes a template: it can no longer be started, only cloned"
    undo = "None: clone it to get a normal guest back (a guest with snapshots cannot become a template)"
    stop = await gate(call, guest, "convert to template", effect, undo, confirm)
    if stop is not None:
        return stop
    upid = await call.px.post(guest_path(guest, "template"))
    if isinstance(upid, str) and upid.startswith("UPID:"):
        result, text = task_result("convert to template", guest, await call.wait(upid, wait_seconds))
    else:  # pve-container answers synchronously (null)
        result, text = (
            ActionResult(outcome="ok", action="convert to template", guest=guest),
            f"{guest_label(guest)} is now a template.",
        )
    result.guest = await _after(call, guest)
    return Reply(result, text)


@tool(Risk.DESTRUCTIVE, "Delete guest", ActionResult)
async def delete_guest(
    call: Call,
    vmid: Vmid,
    purge: Annotated[bool, Field(description="Also remove it from backup jobs, replication and HA")] = True,
    confirm: Confirm = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Delete a stopped VM or container and its disks. Refused for guests with Proxmox's own protection
    flag and for pmcp-protected ones. Without confirm=true: the plan (what is lost)."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    config = await call.px.get(guest_path(guest, "config")) or {}
    if str(config.get("protection", "0")) == "1":
        raise validate.InvalidArgument(
            f"{guest_label(guest)} has Proxmox's protection flag set (Options > Protection); "
            "an administrator must clear it before it can be deleted"
        )
    if guest.status != "stopped":
        raise validate.InvalidArgument(f"{guest_label(guest)} is {guest.status}: shut it down first")
    disks = _disks(config)
    size = sum(_size_of(v) for v in disks.values())
    effect = (
        f"{guest_label(guest)} and its {len(disks)} disk(s) ({size / GIB:.1f} GiB: "
        f"{', '.join(v.split(',')[0] for v in disks.values()) or 'none'}) are destroyed, with its snapshots"
    )
    undo = (
        "None after the fact, and no safety snapshot (it is destroyed with the guest): back it up first "
        "(backup_guest), then restore_backup brings it back"
    )
    stop = await gate(call, guest, f"delete {guest.vmid}", effect, undo, confirm)
    if stop is not None:
        return stop
    upid = await call.px.delete(guest_path(guest), purge=purge, **{"destroy-unreferenced-disks": True})
    result, text = task_result("delete", guest, await call.wait(str(upid), wait_seconds))
    if result.outcome == "ok":
        call.rt.locator.forget(guest.vmid)
    return Reply(result, text)
