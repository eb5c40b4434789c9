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


async def list_tasks(call: Call, node: str | None, vmid: int | None, errors_only: bool, limit: int) -> Reply:
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
    log_start: int | None = None
    log: list[str] | None = Field(None, description="The log lines asked for with log_lines")


class Tasks(TaskStatus):
    """tasks' answer: a list (returned, tasks, limited) or one task (upid and the rest)."""

    upid: str | None = None  # type: ignore[assignment]  # absent in a list
    node: str | None = None  # type: ignore[assignment]
    outcome: Literal["ok", "failed", "running"] | None = None  # type: ignore[assignment]
    returned: int | None = None
    tasks: list[TaskItem] | None = None
    limited: str | None = None


# The task list and one task's outcome and log in one tool (issue 14: tools/list stays small).
@tool(Risk.READ, "Proxmox tasks", Tasks)
async def tasks(
    call: Call,
    upid: Upid | None = None,
    node: Node | None = None,
    vmid: Vmid | None = None,
    errors_only: Annotated[bool, Field(description="Only tasks that failed")] = False,
    limit: Annotated[int, Field(ge=1, le=200, description="At most this many")] = 20,
    log_lines: Annotated[int, Field(ge=0, le=1000, description="With upid: this many log lines")] = 0,
    log_start: Annotated[int, Field(ge=0, description="First log line")] = 0,
) -> Reply:
    """With upid: that task's outcome (log tail on failure; log_lines: its log). Without: recent tasks,
    newest first."""
    if upid is None:
        reply = await list_tasks(call, node, vmid, errors_only, limit)
    else:
        reply = await task_status(call, upid, log_lines, log_start)
    return Reply(Tasks(**reply.data.model_dump(exclude_none=True)), reply.text)


async def task_status(call: Call, upid: str, log_lines: int, log_start: int) -> Reply:
    """Whether a task is still running, and if not whether it succeeded (exit status, log tail on
    failure); with log_lines, a page of its log."""
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
    if log_lines:
        path = validate.api_path("nodes", node, "tasks", upid, "log")
        raw = await call.px.get(path, start=log_start, limit=log_lines) or []
        data.log = [str(e.get("t", "")) for e in raw if isinstance(e, dict)]
        data.log_start = log_start
        text += f"\nLog from line {log_start}:\n" + ("\n".join(data.log) or "(empty)")
    return Reply(data, text)
