"""Argument types, shared result models and the guest lookup every guest tool starts with."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import PolicyError, split_tags
from pmcp.server.proxmox import TaskOutcome
from pmcp.server.registry import Call, Reply, declined_text

Vmid = Annotated[int, Field(ge=validate.VMID_MIN, le=validate.VMID_MAX, description="VMID")]
# no max_length: the patterns bound the length themselves (63 and 64 characters)
Node = Annotated[str, Field(pattern=validate.NODE_PATTERN, description="Node name")]
StorageId = Annotated[str, Field(pattern=validate.STORAGE_PATTERN, description="Storage ID")]
SnapName = Annotated[
    str,
    Field(
        pattern=validate.SNAPNAME_PATTERN,
        max_length=40,
        description="Snapshot name",
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
        description="Seconds to wait (default 60; 0: none)",
    ),
]
# strict: only the JSON boolean true confirms; "true", 1 or "yes" are refused, not coerced. No description:
# the same words on 11 tools cost ~800 bytes of every tools/list (issue 14); each planned tool's description
# says "Without confirm=true: the plan", and the server instructions say that the person's answer, where
# the client can ask, is what approves (confirm does not replace it).
Confirm = Annotated[bool, Field(strict=True)]
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

    outcome: Literal["ok", "failed", "running", "plan", "declined"]
    action: str
    guest: Guest | None = None
    upid: str | None = None
    exitstatus: str | None = None
    log_tail: list[str] | None = None
    seconds: float | None = None
    follow_up: str | None = None
    plan: Plan | None = None
    detail: str | None = None
    safety_snapshot: str | None = None  # taken before the change: undo_last_change rolls back to it


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
    scope = call.scope
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
        if not scope.contains(guest.tags, None):
            await _pool_in_scope(call, vmid)  # its fresh tags did not place it in scope: its pool may
        return guest, s
    for item in await locator.listing(call.px):
        if item.get("vmid") == vmid:
            if not scope.contains_item(item):
                raise scope.refusal(vmid, call.client)
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
    if scope:  # the same answer whether the guest exists or not
        raise scope.refusal(vmid, call.client)
    call.rt.policy.check_guest(call.spec.name, vmid, ())  # a listed guest is hidden by its NoAccess ACL
    raise validate.InvalidArgument(
        f"vmid: no VM or container {vmid} that this server's token can see (see list_guests); "
        "protected guests are hidden from it"
    )


async def _pool_in_scope(call: Call, vmid: int) -> None:
    """Refuse ``vmid`` unless the authoritative cluster listing puts it in one of the scope's pools.

    `status/current` carries no pool (qemu-server PVE/QemuServer.pm and pve-container PVE/LXC.pm
    `vmstatus`); `/cluster/resources` does (pve-manager PVE/API2/Cluster.pm `resources` sets `pool`
    from the pool membership in user.cfg, for a caller with Pool.Audit on it). Listed fresh, never
    from the locator's memory: a guest taken out of the pool must leave the scope at once. Costs one
    listing, only for a scoped token whose tags did not already decide."""
    scope = call.scope
    if scope.pools:
        for item in await call.rt.locator.listing(call.px):
            if item.get("vmid") == vmid:
                pool = item.get("pool")
                if scope.contains((), pool if isinstance(pool, str) else None):
                    return
                break
    raise scope.refusal(vmid, call.client)


def check_may_create(call: Call) -> None:
    """A scoped client creates no guest: the new one would start outside its scope (no tag, no pool
    yet), and the answers about a chosen VMID ("exists") would reveal guests outside it."""
    if call.scope:
        raise PolicyError(
            f"{call.spec.name}: this client's token is scoped ({call.scope.describe()}) and a scoped "
            "client creates no guests (the new guest would be outside its scope). An administrator "
            f"can lift the scope: `pmcp client-config --token-name {call.client} --scope ''`"
        )


async def scope_vmids(call: Call) -> set[int] | None:
    """The VMIDs this client may see (one cluster listing), or None when its token has no scope."""
    scope = call.scope
    if not scope:
        return None
    return {i["vmid"] for i in await call.rt.locator.listing(call.px) if scope.contains_item(i)}


def vmid_visible(vmid: object, inside: set[int] | None, *, guestless: bool = False) -> bool:
    """Whether an item naming ``vmid`` (a volume's, a task's id) may be shown: every item for a client
    without scope; for a scoped one the items of its guests, and with ``guestless`` also the items
    of no guest (an ISO or a template volume; never a task: a multi-guest vzdump has no id and its log
    names every guest)."""
    if inside is None:
        return True
    text = str(vmid if vmid is not None else "")
    if not text:
        return guestless
    return text.isdigit() and int(text) in inside


async def check_task_scope(call: Call, upid: str) -> None:
    """A scoped client reads only the tasks of its guests (a guest task's UPID carries its VMID as
    the id field: pve-common src/PVE/Tools.pm upid_encode, UPID:node:pid:pstart:start:type:id:user:).
    Decided before any request, so the answer says nothing about whether the task exists."""
    inside = await scope_vmids(call)
    if inside is not None and not vmid_visible(upid.split(":")[6], inside):
        raise PolicyError(
            f"task {upid}: not in this client's scope ({call.scope.describe()}): a scoped client reads "
            "only the tasks of its own guests (list_tasks shows them)"
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
        result.follow_up = "Read the log tail; tasks with this upid and log_lines shows the whole log."
        tail = "\n".join(task.log_tail[-5:])
        text = f"{action} {what}: FAILED (exit status {task.exitstatus!r}).\nLast log lines:\n{tail}"
    else:
        result.follow_up = f"Still running; call tasks with upid={task.upid} to follow it."
        text = f"{action} {what}: still running after {task.seconds:g}s; see tasks upid={task.upid}."
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


def plan_reply(action: str, guest: Guest | None, effect: str, undo: str, tool_name: str) -> Reply:
    """The answer of a planned tool that did not act: the plan, and how to go on."""
    plan = Plan(
        action=action,
        effect=effect,
        undo=undo,
        to_proceed=f"call {tool_name} again with the same arguments and confirm=true",
    )
    text = (
        f"Nothing done yet (confirm=true is required).\nPlan: {effect}\nUndo: {undo}\n"
        f"To proceed: {plan.to_proceed}."
    )
    return Reply(ActionResult(outcome="plan", action=action, guest=guest, plan=plan), text)


async def gate(
    call: Call,
    guest: Guest | None,
    action: str,
    effect: str,
    undo: str,
    confirm: bool,
    *,
    always: bool = True,
) -> Reply | None:
    """Where a planned tool acts: None to go on, else the reply that stops it (the plan, or the person's
    no). The person sees this plan in their client when it can ask them (pmcp.server.approval)."""
    what = guest_label(guest) if guest else "Proxmox VE"
    message = (
        f"pmcp asks you to approve a change to {what}, requested by the AI client "
        f"'{call.client}' ({call.spec.name}).\n\nAction: {action}\nEffect: {effect}\nUndo: {undo}"
    )
    verdict = await call.approve(message, confirm, always=always)
    if verdict is None or verdict.accepted:
        return None
    reply = plan_reply(action, guest, effect, undo, call.spec.name)
    if verdict.answer == "plan":
        return reply
    assert isinstance(reply.data, ActionResult)
    reply.data.outcome = "declined"
    reply.data.plan = None
    reply.data.detail = f"the person answered {verdict.answer!r}: nothing was done"
    return Reply(reply.data, f"{declined_text(verdict)}\nThe plan was: {effect}")
