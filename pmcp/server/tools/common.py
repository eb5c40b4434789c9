"""Argument types, shared result models and the guest lookup every guest tool starts with."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import split_tags
from pmcp.server.proxmox import TaskOutcome
from pmcp.server.registry import Call

Vmid = Annotated[
    int, Field(ge=validate.VMID_MIN, le=validate.VMID_MAX, description="VMID of a VM or container")
]
Node = Annotated[
    str, Field(pattern=validate.NODE_PATTERN, max_length=63, description="Cluster node name, e.g. 'pve1'")
]
StorageId = Annotated[
    str, Field(pattern=validate.STORAGE_PATTERN, max_length=64, description="Storage ID, e.g. 'local'")
]
SnapName = Annotated[
    str,
    Field(
        pattern=validate.SNAPNAME_PATTERN,
        max_length=40,
        description="Snapshot name: a letter, then letters, digits, '_' or '-' (2-40 characters)",
    ),
]
Upid = Annotated[
    str,
    Field(pattern=validate.UPID_PATTERN, max_length=512, description="Task ID (UPID) as returned by a tool"),
]
WaitSeconds = Annotated[
    int | None,
    Field(
        ge=0,
        le=600,
        description="Seconds to wait for the task (default 60; 0 returns the task ID at once)",
    ),
]
# strict: only the JSON boolean true confirms; "true", 1 or "yes" are refused, not coerced.
Confirm = Annotated[
    bool,
    Field(
        strict=True,
        description="the JSON boolean true to act; without it nothing changes and the plan is returned",
    ),
]
GuestType = Literal["qemu", "lxc"]


class Guest(BaseModel):
    vmid: int
    name: str | None = None
    node: str
    type: GuestType
    status: str | None = None
    tags: list[str] = []
    template: bool = False


class Plan(BaseModel):
    action: str
    effect: str
    undo: str
    to_proceed: str


class ActionResult(BaseModel):
    """The outcome of a change: ok / failed / running (still going) / plan (nothing done yet)."""

    outcome: Literal["ok", "failed", "running", "plan"]
    action: str
    guest: Guest | None = None
    upid: str | None = None
    exitstatus: str | None = None
    log_tail: list[str] | None = None
    seconds: float | None = None
    follow_up: str | None = None
    plan: Plan | None = None
    detail: str | None = None


async def resolve_guest(call: Call, vmid: int) -> Guest:
    """Find a guest's node and type (the caller gives only the cluster-unique VMID)."""
    return (await resolve_guest_status(call, vmid))[0]


async def resolve_guest_status(call: Call, vmid: int) -> tuple[Guest, dict[str, Any] | None]:
    """The guest and, when its node was already known, its live `status/current` (one request).

    Cost does not grow with the cluster on a hit (server/locator.py says why the hint is safe); a miss
    lists the cluster once, which also refreshes every other guest's entry.
    """
    vmid = validate.vmid(vmid)
    locator = call.rt.locator
    found = await locator.current(call.px, vmid)
    if found is not None:
        (node, kind), s = found
        state = s.get("status")
        if kind == "qemu" and state == "running" and s.get("qmpstatus"):
            state = s["qmpstatus"]  # as /cluster/resources reports it: a paused VM is "paused"
        guest = Guest(
            vmid=vmid,
            name=s.get("name"),
            node=validate.node(node),
            type=kind,  # type: ignore[arg-type]  # the locator only records "qemu" or "lxc"
            status=state,
            tags=split_tags(s.get("tags")),
            template=bool(s.get("template")),
        )
        return guest, s
    for item in await locator.listing(call.px):
        if item.get("vmid") == vmid:
            return (
                Guest(
                    vmid=vmid,
                    name=item.get("name"),
                    node=validate.node(item.get("node")),
                    type=item["type"],
                    status=item.get("status"),
                    tags=split_tags(item.get("tags")),
                    template=bool(item.get("template")),
                ),
                None,
            )
    call.rt.policy.check_guest(call.spec.name, vmid, ())  # a listed guest is hidden by its NoAccess ACL
    raise validate.InvalidArgument(
        f"vmid: no VM or container {vmid} that this server's token can see (see list_guests); "
        "protected guests are hidden from it"
    )


def guest_path(guest: Guest, *rest: str) -> str:
    return validate.api_path("nodes", guest.node, guest.type, guest.vmid, *rest)


def guest_label(guest: Guest) -> str:
    kind = "VM" if guest.type == "qemu" else "container"
    return f"{kind} {guest.vmid}" + (f" ({guest.name})" if guest.name else "") + f" on {guest.node}"


def task_result(action: str, guest: Guest | None, task: TaskOutcome) -> tuple[ActionResult, str]:
    """Turn a task outcome into the result and its one-paragraph summary."""
    what = guest_label(guest) if guest else task.node
    result = ActionResult(
        outcome=task.outcome,
        action=action,
        guest=guest,
        upid=task.upid,
        exitstatus=task.exitstatus,
        log_tail=task.log_tail or None,
        seconds=task.seconds,
    )
    if task.outcome == "ok":
        text = f"{action} {what}: done in {task.seconds:g}s (exit status {task.exitstatus})."
    elif task.outcome == "failed":
        result.follow_up = "Read the log tail; task_log with this upid shows the whole log."
        tail = "\n".join(task.log_tail[-5:])
        text = f"{action} {what}: FAILED (exit status {task.exitstatus!r}).\nLast log lines:\n{tail}"
    else:
        result.follow_up = f"Still running; call task_status with upid={task.upid} to follow it."
        text = f"{action} {what}: still running after {task.seconds:g}s; see task_status upid={task.upid}."
    return result, text


# pve-storage src/PVE/Storage.pm check_volume_access: what lets a token see a guest's volume (the
# storage privilege, then the guest privilege); Datastore.Allocate on the storage sees everything.
VOLUME_NEEDS = {
    "backup": ("Datastore.AllocateSpace", "VM.Backup"),
    "images": ("Datastore.Audit", "VM.Config.Disk"),
    "rootdir": ("Datastore.Audit", "VM.Config.Disk"),
}
_KIND_WORDS = {"backup": "backups", "images": "disk images", "rootdir": "disk images"}


async def held_privileges(call: Call, path: str) -> set[str]:
    """The privileges this server's own token holds on ``path`` (GET /access/permissions; every
    user and token may read its own). A key counts whatever its value: the value is only the
    propagate flag (pve-access-control RPCEnvironment.pm permissions)."""
    data = await call.px.call("GET", "/access/permissions", {"path": path}) or {}
    return set((data.get(path) or {}).keys())


async def hidden_volumes(call: Call, storage: str, kinds: list[str], vmid: int | None) -> list[str]:
    """Why Proxmox leaves volumes out of a storage listing for this token (it drops them without a
    word, pve-storage API2/Storage/Content.pm index), one sentence per kind; [] when none are."""
    kinds = [k for k in kinds if k in VOLUME_NEEDS]
    if not kinds:
        return []
    on_storage = await held_privileges(call, f"/storage/{storage}")
    if "Datastore.Allocate" in on_storage:
        return []
    guest_path = f"/vms/{vmid}" if vmid is not None else "/vms"
    on_guests: set[str] | None = None
    notes = []
    seen: set[tuple[str, str]] = set()
    for kind in kinds:
        spriv, gpriv = VOLUME_NEEDS[kind]
        if (spriv, gpriv) in seen:
            continue
        seen.add((spriv, gpriv))
        words = _KIND_WORDS[kind]
        need = f"Proxmox shows them only with {spriv} on /storage/{storage} and {gpriv} on the guest"
        if spriv not in on_storage:
            notes.append(f"{words} on {storage} are not shown: {need}; this token lacks {spriv} there")
            continue
        if on_guests is None:
            on_guests = await held_privileges(call, guest_path)
        if gpriv not in on_guests:
            whose = f"of guest {vmid}" if vmid is not None else "of guests it lacks it on"
            notes.append(f"{words} {whose} are not shown: {need}; this token lacks {gpriv} on {guest_path}")
    return notes
