"""Undo: a safety snapshot before a change of a guest's configuration or disks, and the tool that rolls the
guest back to it.

Which changes take one (each tool's plan says what undo can and cannot do, before it acts):
- ``rollback_snapshot``: the state it discards is kept in the safety snapshot, so the rollback can be undone;
- ``set_guest_metadata`` when it changes tags; not for the description alone, which a rollback keeps
  (pve-guest-common src/PVE/AbstractConfig.pm ``__snapshot_apply_config`` and ``__snapshot_copy_config``
  skip ``description`` and ``unusedN``);
- ``resize_disk``, except on qcow2 files: ``qemu-img resize`` refuses an image with internal snapshots, so a
  safety snapshot would make the resize fail.
Not: ``delete_guest`` (Proxmox destroys a guest's snapshots with it: only a backup brings it back),
``convert_to_template`` (qemu-server API2/Qemu.pm ``template``: "unable to create template, because VM
contains snapshots"; and a template cannot be rolled back: AbstractConfig.pm ``snapshot_rollback``),
``migrate_guest`` (snapshots on local disks can block a migration), power actions and ``delete_snapshot``
(no configuration or disk changes).

Whether a guest can be snapshotted is Proxmox's own answer: ``GET .../feature?feature=snapshot``
(qemu-server API2/Qemu.pm ``vm_feature`` -> QemuConfig.pm ``has_feature``, which skips CD-ROMs; pve-container
LXC/Config.pm ``has_feature``, which also passes whether the container runs), i.e. every volume's storage
plugin's ``volume_has_feature`` (pve-storage: LVM-thin, ZFS, RBD, BTRFS yes; qcow2 files on directory/NFS
yes; plain LVM, iSCSI, raw and subvol files no).

Safety snapshots are disk-only (no RAM state: a VM with PCI passthrough cannot save its RAM,
qemu-server QemuServer.pm ``check_non_migratable_resources``), named ``pmcp-auto-<UTC time>``, and the oldest
beyond ``PMCP_UNDO_KEEP`` (default 3) of a guest are deleted after a new one is taken.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pmcp.server import validate
from pmcp.server.config import Mode
from pmcp.server.policy import PolicyError, Risk
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    ActionResult,
    Confirm,
    Guest,
    Vmid,
    WaitSeconds,
    gate,
    guest_label,
    guest_path,
    resolve_guest,
    task_result,
)

AUTO_PREFIX = "pmcp-auto-"


async def blocker(call: Call, guest: Guest) -> str | None:
    """Why this guest gets no safety snapshot, or None when it does."""
    if call.rt.config.undo_keep == 0:
        return "safety snapshots are turned off on this server (PMCP_UNDO_KEEP=0)"
    if guest.template:
        return "it is a template, and Proxmox cannot roll a template back"
    answer = await call.px.get(guest_path(guest, "feature"), feature="snapshot") or {}
    if not answer.get("hasFeature"):
        return (
            "Proxmox says it cannot be snapshotted: a disk is on storage without snapshots "
            "(plain LVM, iSCSI, raw or subvol files on a directory or NFS)"
        )
    return None


def undo_sentence(reason: str | None, what: str = "the change") -> str:
    """The plan's undo line, said before the change."""
    if reason:
        return f"No safety snapshot, so undo_last_change cannot undo {what}: {reason}"
    return (
        f"pmcp takes a safety snapshot ({AUTO_PREFIX}…) first; undo_last_change rolls the guest back to it "
        f"(undoing {what} and everything written to its disks since; its description stays)"
    )


async def take(call: Call, guest: Guest) -> str:
    """Take the safety snapshot (waiting for it), prune the oldest; refuse the change if it fails."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    existing = await _names(call, guest)
    name = f"{AUTO_PREFIX}{stamp}"
    n = 2
    while name in existing:
        name, n = f"{AUTO_PREFIX}{stamp}-{n}", n + 1
    upid = await call.px.post(
        guest_path(guest, "snapshot"),
        snapname=name,
        description=validate.description(f"pmcp safety snapshot before {call.spec.name} ({call.client})"),
    )
    task = await call.px.wait_task(str(upid), call.wait_limit(None))
    if task.outcome != "ok":
        raise PolicyError(
            f"refused: the safety snapshot of {guest_label(guest)} before {call.spec.name} did not succeed "
            f"({task.outcome}: {task.exitstatus or 'still running'}), so nothing was changed. Retry; an "
            "administrator can turn safety snapshots off with PMCP_UNDO_KEEP=0"
        )
    call.undo = {"vmid": guest.vmid, "snapshot": name}
    await _prune(call, guest, [*existing, name])
    return name


async def _names(call: Call, guest: Guest) -> list[str]:
    """This guest's safety snapshots, oldest first (the names sort by time)."""
    raw = await call.px.get(guest_path(guest, "snapshot")) or []
    return sorted(str(s["name"]) for s in raw if str(s.get("name", "")).startswith(AUTO_PREFIX))


async def _prune(call: Call, guest: Guest, names: list[str]) -> None:
    keep = call.rt.config.undo_keep
    for old in sorted(names)[: max(0, len(names) - keep)]:
        upid = await call.px.delete(guest_path(guest, "snapshot", old))
        task = await call.px.wait_task(str(upid), call.wait_limit(None))
        if task.outcome == "ok":
            call.undo = (call.undo or {}) | {"pruned": [*(call.undo or {}).get("pruned", []), old]}


@tool(Risk.DESTRUCTIVE, "Undo the last change", ActionResult, mode=Mode.OPERATOR)
async def undo_last_change(
    call: Call, vmid: Vmid, confirm: Confirm = False, wait_seconds: WaitSeconds = None
) -> Reply:
    """Roll a guest back to pmcp's safety snapshot from before its last change, and delete it (again: the
    change before). Disk writes since are lost. First: the plan."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    names = await _names(call, guest)
    if not names:
        raise validate.InvalidArgument(
            f"vmid: {guest_label(guest)} has no {AUTO_PREFIX}* safety snapshot: pmcp took none before a "
            "change of it (or they were undone or deleted); list_snapshots shows what there is"
        )
    name = names[-1]
    running = guest.status == "running"
    effect = (
        f"{guest_label(guest)} returns to its safety snapshot '{name}' (taken before a change by pmcp): its "
        "configuration and disks as they were then; everything written since is lost"
        + ("; it is stopped for the rollback and started again" if running else "")
    )
    stop = await gate(
        call,
        guest,
        f"undo: roll back to '{name}'",
        effect,
        "None after the fact: create_snapshot first to keep the current state",
        confirm,
    )
    if stop is not None:
        return stop
    params = {"start": True} if running else {}
    upid = await call.px.post(guest_path(guest, "snapshot", name, "rollback"), **params)
    result, text = task_result(
        f"undo (rollback to '{name}') of", guest, await call.wait(str(upid), wait_seconds)
    )
    call.undo = {"vmid": guest.vmid, "rolled_back_to": name}
    if result.outcome == "ok":
        upid = await call.px.delete(guest_path(guest, "snapshot", name))
        if (await call.wait(str(upid), wait_seconds)).outcome == "ok":
            text += (
                f" The safety snapshot '{name}' is deleted; calling undo_last_change again undoes the "
                "change before."
            )
        result.guest = await resolve_guest(call, guest.vmid)
    return Reply(result, text)
