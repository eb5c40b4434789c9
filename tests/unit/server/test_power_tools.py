"""The power tools on a simulator that answers as qemu-server and pve-container do: tools marked
idempotent really are (guest_power: a second start answers "already running", ok, and sends no POST), a paused
VM is seen as paused (list_guests, cluster_overview), and refusals read clearly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.sim.generate import config_digest
from pmcp.sim.testing import running_sim

from .conftest import Served, connect, serve


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with (
        running_sim(nodes=2, guests=30, seed=5, task_seconds=0.05) as sim,
        serve(sim, Path(tmp_path_factory.mktemp("power"))) as s,
    ):
        yield s


def pick(served: Served, kind: str, status: str, n: int = 0) -> int:
    found = [
        int(v)
        for v, g in sorted(served.sim.state.world["guests"].items(), key=lambda kv: int(kv[0]))
        if g["type"] == kind
        and g["status"] == status
        and not g["template"]
        and "pmcp-protected" not in str(g["config"].get("tags", ""))
    ]
    return found[n]


def call(served: Served, name: str, args: dict[str, Any]) -> Any:
    """``start_guest`` etc. are ``guest_power`` with that action (one tool since issue 14)."""
    if name.endswith("_guest"):
        name, args = "guest_power", {"action": name.removesuffix("_guest")} | args

    async def go() -> Any:
        async with connect(served) as client:
            return await client.call_tool(name, args)

    return anyio.run(go)


def posts(served: Served) -> list[str]:
    return [p for m, p in served.sim.state.requests if m == "POST"]


@pytest.mark.parametrize(
    "tool,kind,status,why",
    [
        ("start_guest", "qemu", "running", "already running"),
        ("start_guest", "lxc", "running", "already running"),
        ("resume_guest", "lxc", "running", "already running"),
        ("stop_guest", "lxc", "stopped", "already stopped"),
        ("shutdown_guest", "lxc", "stopped", "already stopped"),
        ("shutdown_guest", "qemu", "stopped", "already stopped"),
    ],
)
def test_idempotent_tools_answer_ok_when_there_is_nothing_to_do(
    own: Served, tool: str, kind: str, status: str, why: str
) -> None:
    vmid = pick(own, kind, status)
    own.sim.state.clear_requests()
    args = {"vmid": vmid} | ({"confirm": True} if tool == "stop_guest" else {})
    r = call(own, tool, args)
    assert not r.is_error, r.content[0].text
    assert r.structured_content["outcome"] == "ok"
    assert r.structured_content["detail"] == f"{why}; nothing was done"
    assert why in r.content[0].text
    assert posts(own) == [], "nothing is sent when nothing is to be done"


def test_a_paused_vm_is_listed_counted_and_resumed(own: Served) -> None:
    vmid = pick(own, "qemu", "running", 1)
    r = call(own, "suspend_guest", {"vmid": vmid})
    assert r.structured_content["outcome"] == "ok", r.content[0].text
    listed = call(own, "list_guests", {"status": "paused"}).structured_content
    assert [g["vmid"] for g in listed["guests"]] == [vmid]
    overview = call(own, "cluster_overview", {}).structured_content
    assert overview["guests"]["paused"] == 1
    again = call(own, "suspend_guest", {"vmid": vmid}).structured_content
    assert again["detail"] == "already paused; nothing was done"
    start = call(own, "start_guest", {"vmid": vmid})
    assert start.is_error and "action=resume" in start.content[0].text
    assert call(own, "resume_guest", {"vmid": vmid}).structured_content["outcome"] == "ok"
    assert own.sim.state.guest(vmid)["paused"] is False


def test_a_suspended_container_is_stopped_and_resume_restores_it(own: Served) -> None:
    vmid = pick(own, "lxc", "running", 1)
    assert call(own, "suspend_guest", {"vmid": vmid}).structured_content["outcome"] == "ok"
    assert own.sim.state.guest(vmid)["status"] == "stopped"
    again = call(own, "suspend_guest", {"vmid": vmid})
    assert again.is_error and "action=resume restores it" in again.content[0].text
    assert call(own, "resume_guest", {"vmid": vmid}).structured_content["outcome"] == "ok"
    assert own.sim.state.guest(vmid)["status"] == "running"


def test_reset_of_a_stopped_vm_reads_as_proxmox_says(own: Served) -> None:
    r = call(own, "reset_guest", {"vmid": pick(own, "qemu", "stopped", 1), "confirm": True})
    assert r.is_error and "not running" in r.content[0].text


def test_snapshot_names_as_proxmox_takes_them(own: Served) -> None:
    """pve-configid is [a-z][a-z0-9_-]+, case-insensitive: 'pre-upgrade' works end to end; a used
    or reserved name is refused before anything is sent (on a real host: a failed task / a 500)."""
    vmid = pick(own, "qemu", "stopped", 2)
    made = call(own, "snapshot", {"action": "create", "vmid": vmid, "name": "Pre-Upgrade"})
    assert made.structured_content["outcome"] == "ok", made.content[0].text
    own.sim.state.clear_requests()
    for name, why in (
        ("Pre-Upgrade", "already has a snapshot"),
        ("PENDING", "reserved"),
        ("current", "reserved"),
    ):
        r = call(own, "snapshot", {"action": "create", "vmid": vmid, "name": name})
        assert r.is_error and why in r.content[0].text, (name, r.content[0].text)
    assert posts(own) == []
    gone = call(own, "snapshot", {"action": "delete", "vmid": vmid, "name": "Pre-Upgrade", "confirm": True})
    assert gone.structured_content["outcome"] == "ok"


def test_ha_managed_start_waits_for_the_ha_manager_and_says_so(own: Served) -> None:
    vmid = pick(own, "qemu", "stopped", 3)
    status, body = own.sim.request("POST", "/cluster/ha/resources", params={"sid": f"vm:{vmid}"})
    assert status == 200, body
    r = call(own, "start_guest", {"vmid": vmid})
    data = r.structured_content
    assert data["outcome"] == "ok" and data["upid"].split(":")[5] == "hastart"
    assert "requested through HA" in data["detail"] and "now running" in r.content[0].text
    assert own.sim.state.guest(vmid)["status"] == "running"
    quick = call(own, "shutdown_guest", {"vmid": vmid, "wait_seconds": 0})
    assert quick.structured_content["outcome"] == "running"


def test_a_tagged_bulk_action_is_planned_and_leaves_protected_guests_alone(own: Served) -> None:
    """Issue 14: "shut down every guest tagged dev" — a plan naming each guest first, then each guest as a
    single call would be; a pmcp-protected guest with the tag is named and left alone."""
    world = own.sim.state.world["guests"]
    with own.sim.state.lock:
        running = [g for g in world.values() if g["type"] == "lxc" and g["status"] == "running"][-3:]
        for g in running:
            g["config"]["tags"] = "bulktest" + (";pmcp-protected" if g is running[2] else "")
            g["config"]["digest"] = config_digest(g["config"])  # as a real config write changes it
        own.sim.state.changed()
    mine, kept = [g["vmid"] for g in running[:2]], running[2]["vmid"]
    args = {"action": "shutdown", "tag": "bulktest", "timeout": 5}
    plan = call(own, "guest_power", args)
    assert plan.structured_content["outcome"] == "plan"
    text = plan.content[0].text
    assert all(str(v) in text for v in mine) and f"left alone: {kept}" in text, (mine, kept, text)
    assert all(own.sim.state.guest(v)["status"] == "running" for v in mine), "a plan must not act"
    done = call(own, "guest_power", args | {"confirm": True})
    assert done.structured_content["outcome"] == "ok", done.content[0].text
    assert all(own.sim.state.guest(v)["status"] == "stopped" for v in mine)
    assert own.sim.state.guest(kept)["status"] == "running"
    both = call(own, "guest_power", {"action": "start", "tag": "bulktest", "vmid": mine[0]})
    assert both.is_error and "give vmid" in both.content[0].text
