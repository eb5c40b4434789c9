"""Proxmox tasks: UPIDs, running then stopped with an exit status, a log, effects applied at the end.

A task's effect (the VM really starting, the backup volume appearing) is applied when the task
completes, and only when it succeeds. ``SimState.fail_next`` makes the next task of a type fail.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pmcp.sim.clusterlog import log_event as clusterlog
from pmcp.sim.errors import TaskFailed

if TYPE_CHECKING:
    from pmcp.sim.state import SimState

Effect = Callable[["SimState", dict[str, Any]], list[str] | None]
EFFECTS: dict[str, Effect] = {}
MAX_TASKS = 5000
WARNINGS = re.compile(r"^WARNINGS: \d+$")


def effect(name: str) -> Callable[[Effect], Effect]:
    def register(fn: Effect) -> Effect:
        EFFECTS[name] = fn
        return fn

    return register


def make_upid(node: str, pid: int, pstart: int, starttime: int, typ: str, ident: str, user: str) -> str:
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{typ}:{ident}:{user}:"


def parse_upid(upid: str) -> dict[str, Any] | None:
    parts = upid.split(":")
    if len(parts) < 9 or parts[0] != "UPID":
        return None
    try:
        return {
            "node": parts[1],
            "pid": int(parts[2], 16),
            "pstart": int(parts[3], 16),
            "starttime": int(parts[4], 16),
            "type": parts[5],
            "id": parts[6],
            "user": ":".join(parts[7:-1]),
        }
    except ValueError:
        return None


class TaskEngine:
    """Owns the task table inside the world dict; completes due tasks when ``tick`` is called."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self._due: list[tuple[float, str]] = []
        tasks = state.world.setdefault("tasks", {})
        for t in tasks.values():
            if t["status"] == "running":
                self._finish(t, "unexpected status", ["TASK ERROR: unexpected status"])

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return self.state.world["tasks"]

    def start(
        self,
        node: str,
        typ: str,
        ident: str,
        user: str,
        effect_name: str | None = None,
        args: dict[str, Any] | None = None,
        log: list[str] | None = None,
        seconds: float | None = None,
        guests: tuple[int, ...] = (),
        lock: str | None = None,
    ) -> str:
        """Start a task; ``guests`` must not be locked (else the task fails like PVE's worker),
        and with ``lock`` they stay locked (``backup``, ``snapshot``...) until the task ends."""
        world = self.state.world
        world["next_pid"] += 1
        now = time.time()
        pid = world["next_pid"]
        pstart = int(world["nodes"][node]["uptime"] * 100) + pid
        upid = make_upid(node, pid, pstart, int(now), typ, ident, user)
        while upid in self.tasks:
            world["next_pid"] += 1
            pid = world["next_pid"]
            upid = make_upid(node, pid, pstart, int(now), typ, ident, user)
        fail = self.state.take_failure(typ)
        held = []
        for vmid in guests:
            g = world["guests"].get(str(vmid))
            if g and g.get("lock") and not fail:
                label = "VM" if g["type"] == "qemu" else "CT"
                fail = f"{label} is locked ({g['lock']})"
        if lock and not fail:
            for vmid in guests:
                if g := world["guests"].get(str(vmid)):
                    g["lock"] = lock
                    held.append(vmid)
            self.state.changed()
        task = {
            "upid": upid,
            "node": node,
            "pid": pid,
            "pstart": pstart,
            "starttime": int(now),
            "type": typ,
            "id": ident,
            "user": user,
            "status": "running",
            "log": list(log or []),
            "effect": [effect_name, args or {}] if effect_name else None,
            "fail": fail,
            "locks": held,
        }
        self.tasks[upid] = task
        clusterlog(world, node, user, "info", f"starting task {upid}")
        duration = self.state.task_seconds if seconds is None else seconds
        if duration <= 0:
            self.complete(upid)
        else:
            heapq.heappush(self._due, (now + duration, upid))
        self._trim()
        return upid

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self._due and self._due[0][0] <= now:
            _, upid = heapq.heappop(self._due)
            self.complete(upid)

    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    def complete(self, upid: str) -> None:
        task = self.tasks.get(upid)
        if not task or task["status"] != "running":
            return
        fail = task.get("fail")
        if fail and not WARNINGS.match(fail):
            self._finish(task, fail, [f"TASK ERROR: {fail}"])
            return
        lines: list[str] = []
        try:
            if task.get("effect"):
                name, args = task["effect"]
                lines = list(EFFECTS[name](self.state, args) or [])
        except TaskFailed as e:
            self._finish(task, str(e), [*e.lines, f"TASK ERROR: {e}"])
            return
        warnings = sum(1 for line in lines if line.startswith("WARN"))
        if fail:
            warnings = int(fail.split(":")[1])
            lines.extend(f"WARN: simulated warning {i + 1}" for i in range(warnings))
        task["log"].extend(lines)
        if warnings:
            self._finish(task, f"WARNINGS: {warnings}", [f"TASK WARNINGS: {warnings}"])
        else:
            self._finish(task, "OK", ["TASK OK"])

    def stop(self, upid: str) -> None:
        task = self.tasks.get(upid)
        if task and task["status"] == "running":
            self._finish(
                task, "interrupted by signal", ["received interrupt", "TASK ERROR: interrupted by signal"]
            )

    def _finish(self, task: dict[str, Any], exitstatus: str, lines: list[str]) -> None:
        task["log"].extend(lines)
        task["status"] = "stopped"
        task["exitstatus"] = exitstatus
        task["endtime"] = max(int(time.time()), task["starttime"])
        failed = exitstatus != "OK" and not WARNINGS.match(exitstatus)
        clusterlog(
            self.state.world,
            task["node"],
            task["user"],
            "err" if failed else "info",
            f"end task {task['upid']} {exitstatus}",
        )
        task.pop("effect", None)
        for vmid in task.pop("locks", None) or ():
            if g := self.state.world["guests"].get(str(vmid)):
                g.pop("lock", None)
        self.state.changed()

    def _trim(self) -> None:
        if len(self.tasks) > MAX_TASKS:
            done = [u for u, t in self.tasks.items() if t["status"] == "stopped"]
            for u in done[: len(self.tasks) - MAX_TASKS]:
                del self.tasks[u]


def summary(task: dict[str, Any], listing: bool = False) -> dict[str, Any]:
    """A task as ``/tasks/{upid}/status`` (or, with ``listing``, a task list) shows it."""
    out = {k: task[k] for k in ("upid", "node", "pid", "pstart", "starttime", "type", "id", "user")}
    # pve-manager PVE/API2/Tasks.pm $convert_token_task: a token's task shows user + tokenid
    user, bang, tokenid = out["user"].partition("!")
    if bang:
        out["user"], out["tokenid"] = user, tokenid
    if listing:
        if task["status"] == "stopped":
            out["status"] = task["exitstatus"]
            out["endtime"] = task["endtime"]
        return out
    out["status"] = task["status"]
    if task["status"] == "stopped":
        out["exitstatus"] = task["exitstatus"]
    return out
