"""Node task endpoints: list, status, log, stop. A caller always sees its own tasks."""

from __future__ import annotations

from typing import Any

from pmcp.sim.api.common import Ctx, node_of
from pmcp.sim.errors import ApiError, perm_error
from pmcp.sim.routes import route
from pmcp.sim.tasks import parse_upid, summary


def owns(ctx: Ctx, task: dict[str, Any]) -> bool:
    """pve-manager PVE/API2/Tasks.pm $check_task_user: "token only sees token tasks, user sees
    user + token tasks"."""
    user = task["user"]
    return user == ctx.auth.authid or (not ctx.auth.tokenid and user.split("!", 1)[0] == ctx.auth.userid)


def visible(ctx: Ctx, task: dict[str, Any]) -> bool:
    """Own tasks, else Sys.Audit on the task's node."""
    return owns(ctx, task) or ctx.has(f"/nodes/{task['node']}", "Sys.Audit")


def _task(ctx: Ctx, node: str, upid: str) -> dict[str, Any]:
    node_of(ctx, node)
    info = parse_upid(upid)
    if info is None:
        raise ApiError(400, "Parameter verification failed.", {"upid": "unable to parse worker upid"})
    task = ctx.world["tasks"].get(upid)
    if task is None or task["node"] != node:
        # Tasks.pm read_task_status/read_task_log: raise_param_exc({ upid => "no such task" })
        raise ApiError(400, "Parameter verification failed.", {"upid": "no such task"})
    if not visible(ctx, task):
        raise perm_error(f"/nodes/{node}, Sys.Audit")
    return task


@route("GET", "/nodes/{node}/tasks")
def task_list(ctx: Ctx, p: dict) -> list:
    node_of(ctx, p["node"])
    tasks = [t for t in ctx.world["tasks"].values() if t["node"] == p["node"] and visible(ctx, t)]
    if p.get("vmid") is not None:
        tasks = [t for t in tasks if t["id"] == str(p["vmid"])]
    if p.get("typefilter"):
        tasks = [t for t in tasks if t["type"] == p["typefilter"]]
    if p.get("userfilter"):
        tasks = [t for t in tasks if p["userfilter"] in t["user"]]
    if p.get("source") == "active":
        tasks = [t for t in tasks if t["status"] == "running"]
    if p.get("errors"):
        tasks = [t for t in tasks if t["status"] == "stopped" and t["exitstatus"] != "OK"]
    tasks.sort(key=lambda t: (t["starttime"], t["pid"]), reverse=True)
    start = p.get("start", 0)
    return [summary(t, listing=True) for t in tasks[start : start + p.get("limit", 50)]]


@route("GET", "/nodes/{node}/tasks/{upid}")
def task_dir(ctx: Ctx, p: dict) -> list:
    _task(ctx, p["node"], p["upid"])
    return [{"subdir": "log"}, {"subdir": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
def task_status(ctx: Ctx, p: dict) -> dict:
    return summary(_task(ctx, p["node"], p["upid"]))


@route("GET", "/nodes/{node}/tasks/{upid}/log")
def task_log(ctx: Ctx, p: dict) -> list:
    task = _task(ctx, p["node"], p["upid"])
    lines = task["log"] or ["no content"]
    start = p.get("start", 0)
    limit = p.get("limit", 50)
    return [{"n": i + 1, "t": t} for i, t in enumerate(lines)][start : start + limit]


@route("DELETE", "/nodes/{node}/tasks/{upid}")
def task_stop(ctx: Ctx, p: dict) -> None:
    task = _task(ctx, p["node"], p["upid"])
    if not owns(ctx, task):  # Tasks.pm stop_task: Sys.Modify unless the caller owns it
        ctx.require(f"/nodes/{p['node']}", "Sys.Modify")
    ctx.state.engine.stop(p["upid"])
    ctx.state.changed()
