"""A pool-scoped install (the mode's role on /pool/NAME only) gets useful answers, not a bare 403:
Proxmox refuses /cluster/status and /nodes/{node}/status without Sys.Audit on / and the node, and
/cluster/tasks shows a token none of its own tasks (pve-manager API2/Cluster.pm tasks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.server.config import Mode
from pmcp.sim.testing import RunningSim, running_sim

from .conftest import Served, connect, mode_token, serve


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    with running_sim(nodes=2, guests=20, seed=9, task_seconds=0.05) as sim:
        pool = "production"
        token_id, secret = mode_token(sim, "operator", f"/pool/{pool}")
        with serve(
            sim,
            Path(tmp_path_factory.mktemp("pool")),
            Mode.OPERATOR,
            proxmox_token_id=token_id,
            proxmox_token_secret=secret,
        ) as served:
            yield served, pool


def call(served: Served, tool: str, args: dict[str, Any]) -> Any:
    async def go() -> Any:
        async with connect(served) as client:
            return await client.call_tool(tool, args)

    result = anyio.run(go)
    assert not result.is_error, result.content[0].text
    return result


def members(sim: RunningSim, pool: str) -> list[int]:
    return sorted(
        g["vmid"]
        for g in sim.state.world["guests"].values()
        if g.get("pool") == pool and not g["template"]
        and "pmcp-protected" not in str(g["config"].get("tags", ""))
    )  # fmt: skip


def test_cluster_overview_counts_the_pool_and_says_what_it_cannot_see(pooled) -> None:
    served, pool = pooled
    r = call(served, "cluster_overview", {})
    data = r.structured_content
    total = data["guests"]["vms"] + data["guests"]["containers"]
    assert total == sum(1 for g in served.sim.state.world["guests"].values() if g.get("pool") == pool)
    assert {n["node"] for n in data["nodes"]} == set(served.sim.state.world["nodes"])
    assert "Sys.Audit on /" in data["limited"] and "Limited:" in r.content[0].text


def test_node_status_says_online_and_why_no_more(pooled) -> None:
    served, _ = pooled
    node = sorted(served.sim.state.world["nodes"])[0]
    data = call(served, "cluster_overview", {"node": node}).structured_content
    assert data["status"] == "online" and f"Sys.Audit on /nodes/{node}" in data["limited"]


def test_list_tasks_shows_the_tokens_own_tasks(pooled) -> None:
    served, pool = pooled
    vmid = members(served.sim, pool)[0]
    started = call(
        served, "snapshot", {"action": "create", "vmid": vmid, "name": "pooltask"}
    ).structured_content
    tasks = call(served, "tasks", {}).structured_content
    mine = [t for t in tasks["tasks"] if t["upid"] == started["upid"]]
    assert mine and mine[0]["user"] == served.config.proxmox_token_id
    assert "Sys.Audit on /" in tasks["limited"]
