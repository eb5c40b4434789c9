"""Backups: list them (by guest or storage) and back a guest up now (vzdump)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    ActionResult,
    Confirm,
    StorageId,
    Vmid,
    WaitSeconds,
    gate,
    guest_label,
    hidden_volumes,
    resolve_guest,
    scope_vmids,
    task_result,
    vmid_visible,
)


class Backup(BaseModel):
    volid: str
    storage: str
    vmid: int | None = None
    size: int | None = None
    ctime: int | None = None
    format: str | None = None
    notes: str | None = None
    protected: bool | None = None


class BackupList(BaseModel):
    total: int
    returned: int
    storages: list[str]
    backups: list[Backup]
    hidden: list[str] | None = Field(
        None, description="Backups Proxmox does not show this server's token, and the privilege it lacks"
    )


async def _first_online_node(call: Call) -> str:
    for n in await call.px.get("/nodes") or []:
        if n.get("status") == "online":
            return validate.node(n.get("node"))
    raise validate.InvalidArgument("no online node found to read backups from")


async def list_backups(
    call: Call, vmid: int | None, storage: str | None, node: str | None, limit: int
) -> Reply:
    """Backups (vzdump archives), newest first: of one guest, on one storage, or everywhere visible."""
    if vmid is not None and (node is None or call.scope):
        node = node or (await resolve_guest(call, vmid)).node  # resolving applies the client's scope
    inside = await scope_vmids(call)
    node = validate.node(node) if node else await _first_online_node(call)
    if storage:
        storages = [validate.storage(storage)]
    else:
        listed = await call.px.get(validate.api_path("nodes", node, "storage"), content="backup") or []
        storages = [validate.storage(s["storage"]) for s in listed if s.get("storage")]
    found: list[Backup] = []
    hidden: list[str] = []
    for sid in storages:
        hidden += await hidden_volumes(call, sid, ["backup"], vmid)
        path = validate.api_path("nodes", node, "storage", sid, "content")
        for v in await call.px.get(path, content="backup", vmid=vmid) or []:
            if not vmid_visible(v.get("vmid"), inside):
                continue
            found.append(
                Backup(
                    volid=str(v.get("volid")),
                    storage=sid,
                    vmid=v.get("vmid"),
                    size=v.get("size"),
                    ctime=v.get("ctime"),
                    format=v.get("format"),
                    notes=v.get("notes"),
                    protected=bool(v["protected"]) if "protected" in v else None,
                )
            )
    found.sort(key=lambda b: b.ctime or 0, reverse=True)
    page = found[:limit]
    scope = f"guest {vmid}" if vmid else "all guests"
    lines = [
        f"{len(found)} backup(s) of {scope} on {', '.join(storages) or 'no backup storage'}; "
        f"showing {len(page)}."
    ]
    lines += [f"- {b.volid} ({(b.size or 0) / 1024**3:.2f} GiB, time {b.ctime})" for b in page]
    lines += [f"Not shown: {h}." for h in hidden]
    data = BackupList(
        total=len(found), returned=len(page), storages=storages, backups=page, hidden=hidden or None
    )
    return Reply(data, "\n".join(lines))


def _stop_mode(arguments: dict[str, Any]) -> Risk | None:
    """mode=stop shuts the guest down (and hard-stops it if it does not comply): stop_guest's downtime."""
    return Risk.DESTRUCTIVE if arguments.get("mode") == "stop" else None


@tool(Risk.CHANGE, "Back up guest now", ActionResult, escalate=_stop_mode)
async def backup_guest(
    call: Call,
    vmid: Vmid,
    storage: StorageId | None = None,
    mode: Annotated[
        Literal["snapshot", "suspend", "stop"],
        Field(
            description="snapshot: no downtime (default); suspend: brief pause; stop: consistent, "
            "downtime (like stop_guest: needs PMCP_MODE=admin and confirm=true)"
        ),
    ] = "snapshot",
    notes: Annotated[
        str | None,
        Field(
            max_length=1000,
            description="Notes stored with the backup; {{guestname}}, {{vmid}}, {{node}}, {{cluster}} "
            "are filled in",
        ),
    ] = None,
    confirm: Confirm = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Back up one guest now (vzdump, zstd) to a storage or the node's default."""
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    if mode == "stop":
        effect = (
            f"{guest_label(guest)} is {guest.status or 'in an unknown state'}; it will be shut down for the "
            "backup (and powered off if it does not shut down in time), then started again"
        )
        undo = "Nothing undoes the downtime. mode=snapshot backs it up without stopping it."
    else:
        effect = f"{guest_label(guest)} is backed up with vzdump in {mode} mode"
        undo = "The guest is not changed; the backup stays on its storage until it is pruned or deleted"
    stop = await gate(call, guest, f"backup in {mode} mode", effect, undo, confirm, always=mode == "stop")
    if stop is not None:
        return stop
    params: dict[str, object] = {"vmid": str(guest.vmid), "mode": mode, "compress": "zstd"}
    if storage:
        params["storage"] = validate.storage(storage)
    if notes:
        params["notes-template"] = validate.notes_template(notes)
        if not storage:
            # The schema says notes-template "requires" storage (pve-guest-common VZDump/Common.pm),
            # so name the storage vzdump would pick: the node's defaults (/etc/vzdump.conf, else local).
            defaults = await call.px.get(validate.api_path("nodes", guest.node, "vzdump", "defaults"))
            params["storage"] = validate.storage((defaults or {}).get("storage") or "local")
    upid = await call.px.post(validate.api_path("nodes", guest.node, "vzdump"), **params)
    if upid == "OK":  # pve-manager API2/VZDump.pm: no guest of the request on this node, no task
        raise validate.InvalidArgument(
            f"vmid: Proxmox started no backup: guest {guest.vmid} is no longer on {guest.node} "
            "(migrated?); call backup_guest again"
        )
    result, text = task_result("backup", guest, await call.wait(str(upid), wait_seconds))
    return Reply(result, text)
