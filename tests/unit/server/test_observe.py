"""The read tools an admin asks first: a guest's IPs, how busy it was, what happened last night.

Driven through the official SDK client against the simulator, with the read-only role the installer
builds (host/pve.py mode_privileges) on Proxmox VE 8 and 9, so the privilege story is the real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.host.pve import mode_privileges
from pmcp.server.config import Mode
from pmcp.sim.testing import running_sim

from .conftest import connect, serve


def _call(served: Any, name: str, **arguments: Any) -> Any:
    async def go() -> Any:
        async with connect(served) as client:
            return await client.call_tool(name, arguments)

    return anyio.run(go)


def _ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def _read_only_token(sim: Any) -> dict[str, Any]:
    """A privilege-separated token with the installer's read-only role, as `pmcp install` grants it."""
    status, body = sim.request("GET", "/access/roles/Administrator")
    assert status == 200
    valid = [p for p, on in body["data"].items() if on]
    privs = mode_privileges("read-only", valid)
    assert (
        sim.request("POST", "/access/roles", params={"roleid": "PMCPReadOnly", "privs": ",".join(privs)})[0]
        == 200
    )
    assert sim.request("POST", "/access/users", params={"userid": "pmcp@pve"})[0] == 200
    status, body = sim.request("POST", "/access/users/pmcp@pve/token/mcp", params={"privsep": 1})
    assert status == 200
    for who in ({"users": "pmcp@pve"}, {"tokens": "pmcp@pve!mcp"}):
        assert (
            sim.request("PUT", "/access/acl", params={"path": "/", "roles": "PMCPReadOnly", **who})[0] == 200
        )
    return {"proxmox_token_id": "pmcp@pve!mcp", "proxmox_token_secret": body["data"]["value"]}


@pytest.fixture(scope="module", params=[9, 8], ids=["pve9", "pve8"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Any]]:
    with running_sim(nodes=2, guests=40, seed=3, task_seconds=0.2, pve_version=request.param) as sim:
        token = _read_only_token(sim)
        with serve(sim, tmp_path_factory.mktemp("observe"), mode=Mode.READ_ONLY, **token) as served:
            yield sim, served


def _pick(sim: Any, kind: str, status: str, agent: bool | None = None) -> dict[str, Any]:
    from pmcp.sim.api.observe import agent_runs

    for _v, g in sorted(sim.state.world["guests"].items(), key=lambda kv: int(kv[0])):
        if g["type"] != kind or g["status"] != status or g.get("template"):
            continue
        if (
            agent is not None
            and (str(g["config"].get("agent", "0")).startswith("1") and agent_runs(g)) != agent
        ):
            continue
        return g
    raise AssertionError(f"no {status} {kind} (agent={agent}) in the simulated world")


def test_a_running_containers_addresses(world: tuple[Any, Any]) -> None:
    sim, served = world
    g = _pick(sim, "lxc", "running")
    data = _ok(_call(served, "guest_info", show="network", vmid=g["vmid"]))
    assert data["source"] == "container"
    assert [a["address"] for a in data["addresses"] if a["family"] == "ipv4"], data
    assert all(a["interface"] != "lo" for a in data["addresses"])


def test_a_stopped_container_says_so(world: tuple[Any, Any]) -> None:
    sim, served = world
    g = _pick(sim, "lxc", "stopped")
    result = _call(served, "guest_info", show="network", vmid=g["vmid"])
    data = _ok(result)
    assert data["source"] == "unavailable" and "not running" in result.content[0].text


def test_a_vm_through_its_agent_where_the_privilege_allows(world: tuple[Any, Any]) -> None:
    sim, served = world
    g = _pick(sim, "qemu", "running", agent=True)
    result = _call(served, "guest_info", show="network", vmid=g["vmid"])
    data = _ok(result)
    if sim.state.world["pve_version"].startswith("9"):
        assert data["source"] == "guest-agent"
        assert any(a["family"] == "ipv4" for a in data["addresses"]), data
        assert data["os"]
    else:  # PVE 8: only VM.Monitor reads the agent, and it also runs commands in the guest
        assert data["source"] == "unavailable"
        assert "VM.Monitor" in data["why_unavailable"] and "VM.GuestAgent.Audit" in data["why_unavailable"]


def test_a_vm_whose_agent_is_silent_gets_the_reason_and_the_fix(world: tuple[Any, Any]) -> None:
    sim, served = world
    g = _pick(sim, "qemu", "running", agent=False)
    data = _ok(_call(served, "guest_info", show="network", vmid=g["vmid"]))
    assert data["source"] == "unavailable"
    if sim.state.world["pve_version"].startswith("8"):  # refused before the agent is asked at all
        assert "VM.Monitor" in data["why_unavailable"]
        return
    assert "agent" in data["why_unavailable"].lower()
    assert "qemu-guest-agent" in data["why_unavailable"] or "Options" in data["why_unavailable"]


def test_how_busy_a_guest_and_a_node_were(world: tuple[Any, Any]) -> None:
    sim, served = world
    g = _pick(sim, "qemu", "running")
    guest = _ok(_call(served, "metrics_history", vmid=g["vmid"], timeframe="day"))
    assert guest["points"] == 70  # pve-cluster PVE/RRD.pm: day = 70 steps of 30 minutes
    cpu = guest["cpu_percent"]
    assert 0 <= cpu["avg"] <= cpu["max"] <= 100 and cpu["max_at"].endswith("UTC")
    node = _ok(_call(served, "metrics_history", node=g["node"], timeframe="hour"))
    assert node["points"] == 70 and node["iowait_percent"]["avg"] is not None
    assert 0 < node["memory_percent"]["avg"] < 100


def test_what_happened_shows_failed_tasks_with_readable_times(world: tuple[Any, Any]) -> None:
    sim, served = world
    g = _pick(sim, "qemu", "stopped")
    sim.state.fail_next("qmstart", "start failed: simulated disk error")
    status, body = sim.request("POST", f"/nodes/{g['node']}/qemu/{g['vmid']}/status/start")
    assert status == 200
    upid = body["data"]
    for _ in range(100):
        if sim.state.engine.tasks[upid]["status"] == "stopped":
            break
        anyio.run(anyio.sleep, 0.05)
    result = _call(served, "recent_events", hours=1)
    data = _ok(result)
    failed = [e for e in data["events"] if e["kind"] == "failed-task"]
    assert any(e["upid"] == upid and "simulated disk error" in e["what"] for e in failed), data
    assert data["failed_tasks"] >= 1 and failed[0]["time"].endswith("UTC")
    assert "failed task" in result.content[0].text


def test_the_cluster_log_shows_a_token_only_its_own_entries(tmp_path: Path) -> None:
    """pve-manager API2/Cluster.pm 'log': without Sys.Syslog on / only the caller's own entries."""
    with running_sim(nodes=1, guests=6, seed=5, task_seconds=0) as sim:
        g = _pick(sim, "lxc", "stopped")
        assert (
            sim.request("POST", f"/nodes/{g['node']}/lxc/{g['vmid']}/status/start")[0] == 200
        )  # root's task
        token = _read_only_token(sim)
        status, body = sim.request("GET", "/cluster/log")
        assert status == 200 and any("starting task" in e["msg"] for e in body["data"])
        with serve(sim, tmp_path, mode=Mode.READ_ONLY, **token) as served:
            data = _ok(_call(served, "recent_events", hours=1))
    assert not [e for e in data["events"] if e["kind"] == "log"], "root's entries leaked to the token"
    assert "Sys.Syslog" in data["note"]
