"""The cluster log (pmxcfs's ring buffer of recent entries), as the task engine and the API see it."""

from __future__ import annotations

import time
from typing import Any

CLUSTERLOG_MAX = 5000  # pmxcfs keeps a bounded ring buffer; enough for "what happened last night"


def log_event(world: dict[str, Any], node: str, user: str, pri: str, msg: str) -> None:
    """What pve-common PVE/RESTEnvironment.pm fork_worker writes through log_cluster_msg:
    "starting task UPID" (info) and "end task UPID STATUS" (err when the task failed)."""
    entries = world.setdefault("clusterlog", [])
    uid = (entries[-1]["uid"] + 1) if entries else 1
    entries.append(
        {
            "uid": uid,
            "time": int(time.time()),
            "pri": 3 if pri == "err" else 6,
            "tag": "pvedaemon",
            "pid": 1000 + uid % 30000,
            "node": node,
            "user": user,
            "msg": msg,
        }
    )
    if len(entries) > CLUSTERLOG_MAX:
        del entries[: len(entries) - CLUSTERLOG_MAX]
