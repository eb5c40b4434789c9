"""Proxmox tasks: recent ones, one task's outcome, and its log."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.policy import Risk
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    Node,
    Upid,
    Vmid,
    check_task_scope,
    held_privileges,
    resolve_guest,
    scope_vmids,
    vmid_visible,
)


class TaskItem(BaseModel):
    upid: str
    node: str | None = None
    type: str | None = None
    id: str | None = None
    user: str | None = None
    starttime: int | None = None
    endtime: int | None = None
    status: str | None = None


class TaskList(BaseModel):
    returned: int
    tasks: list[TaskItem]
    limited: str | None = Field(None, description="What this token may not see, and why")


def _user(t: dict) -> str | None:
    """pve-manager API2/Tasks.pm $convert_token_task splits a token's task into user + tokenid."""
    user = t.get("user")
    return f"{user}!{t['tokenid']}" if user and t.get("tokenid") else user


async def _per_node(call: Call, limit: int, vmid: int | None, errors_only: bool) -> list[dict]:
    out: list[dict] = []
    for n in await call.px.get("/nodes") or []:
        if n.get("status") != "online":
            continue
        path = validate.api_path("nodes", validate.node(n.get("node")), "tasks")
        params = {"limit": limit, "vmid": vmid, "errors": True if errors_only else None, "source": "all"}
        out += await call.px.get(path, **params) or []
    return out


@tool(Risk.READ, "List tasks", TaskList)
async def list_tasks(
    call: Call,
    node: Node | None = None,
    vmid: Vmid | None = None,
    errors_only: Annotated[bool, Field(description="Only tasks that failed")] = False,
    limit: Annotated[int, Field(ge=1, le=200, description="At most this many tasks")] = 20,
) -> Reply:
    """Recent Proxmox tasks (start, backup, snapshot, ...), newest first, on one node or cluster-wide."""
    if node:
        raw = (
            await call.px.get(
                validate.api_path("nodes", validate.node(node), "tasks"),
                limit=limit,
                vmid=vmid,
                errors=True if errors_only else None,
                source="all",
            )
            or []
        )
    if vmid is not None and call.scope:
        await resolve_guest(call, vmid)  # applies the client's scope
    inside = await scope_vmids(call)
    limited = None
    if not node:
        # pve-manager API2/Cluster.pm tasks: without Sys.Audit on / only tasks whose user (a token's
        # split off) is the caller -- never a token's own. Each node's list shows a token its own.
        if "Sys.Audit" in await held_privileges(call, "/"):
            raw = await call.px.get("/cluster/tasks") or []
        else:
            raw = await _per_node(call, limit, vmid, errors_only)
            limited = (
                "this token lacks Sys.Audit on / (a pool-scoped install holds privileges only inside its "
                "pool), so the list holds its own tasks and those on nodes where it holds Sys.Audit"
            )
    items = []
    for t in raw:
        status = t.get("status")
        if vmid is not None and str(t.get("id")) != str(vmid):
            continue
        if not vmid_visible(t.get("id"), inside):
            continue
        if errors_only and (status in (None, "OK", "running") or str(status).startswith("WARNINGS")):
            continue
        items.append(
            TaskItem(
                upid=str(t.get("upid")),
                node=t.get("node"),
                type=t.get("type"),
                id=str(t.get("id") or "") or None,
                user=_user(t),
                starttime=t.get("starttime"),
                endtime=t.get("endtime"),
                status=status,
            )
        )
    items.sort(key=lambda t: t.starttime or 0, reverse=True)
    items = items[:limit]
    lines = [f"{len(items)} task(s), newest first."]
    lines += [f"- {t.type} {t.id or ''} on {t.node}: {t.status or 'running'} ({t.upid})" for t in items]
    if limited:
        lines.append(f"Limited: {limited}.")
    return Reply(TaskList(returned=len(items), tasks=items, limited=limited), "\n".join(lines))


class TaskStatus(BaseModel):
    upid: str
    node: str
    type: str | None = None
    status: str | None = None
    exitstatus: str | None = None
    outcome: Literal["ok", "failed", "running"]
    starttime: int | None = None
    log_tail: list[str] | None = None


@tool(Risk.READ, "Task status", TaskStatus)
async def task_status(call: Call, upid: Upid) -> Reply:
    """Whether a task is still running, and if not whether it succeeded (exit status, log tail on failure)."""
    upid = validate.upid(upid)
    node = validate.upid_node(upid)
    await check_task_scope(call, upid)
    s = await call.px.get(validate.api_path("nodes", node, "tasks", upid, "status")) or {}
    exitstatus = s.get("exitstatus")
    if s.get("status") != "stopped":
        outcome = "running"
    elif isinstance(exitstatus, str) and (exitstatus == "OK" or exitstatus.startswith("WARNINGS")):
        outcome = "ok"
    else:
        outcome = "failed"
    tail = await call.px.task_log_tail(node, upid) if outcome == "failed" else None
    data = TaskStatus(
        upid=upid,
        node=node,
        type=s.get("type"),
        status=s.get("status"),
        exitstatus=exitstatus,
        outcome=outcome,
        starttime=s.get("starttime"),
        log_tail=tail,
    )
    text = f"Task {s.get('type', '?')} on {node}: {outcome}" + (
        f" (exit status {exitstatus})" if exitstatus else ""
    )
    if tail:
        text += "\nLast log lines:\n" + "\n".join(tail[-5:])
    return Reply(data, text)


class TaskLog(BaseModel):
    upid: str
    start: int
    lines: list[str]


@tool(Risk.READ, "Task log", TaskLog)
async def task_log(
    call: Call,
    upid: Upid,
    start: Annotated[int, Field(ge=0, description="First line number (0-based)")] = 0,
    limit: Annotated[int, Field(ge=1, le=1000, description="At most this many lines")] = 100,
) -> Reply:
    """The log lines of one task (page with start/limit)."""
    upid = validate.upid(upid)
    node = validate.upid_node(upid)
    await check_task_scope(call, upid)
    raw = (
        await call.px.get(validate.api_path("nodes", node, "tasks", upid, "log"), start=start, limit=limit)
        or []
    )
    lines = [str(e.get("t", "")) for e in raw if isinstance(e, dict)]
    return Reply(TaskLog(upid=upid, start=start, lines=lines), "\n".join(lines) or "(empty log)")
