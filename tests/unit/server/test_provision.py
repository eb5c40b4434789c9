"""An agent's day, through the official SDK client, with the admin role `pmcp install --mode admin` grants:
clone a template with cloud-init, start it, find its IP, grow its disk, snapshot, migrate it, back it up,
restore the backup to a new VMID, delete the clone — each answer checked against the simulator's world.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.host.pve import mode_privileges
from pmcp.server.config import Mode
from pmcp.sim.testing import running_sim

from .conftest import connect, serve

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx7bWZ1c2VyQGxhcHRvcA admin@laptop"


def _token(sim: Any, mode: str) -> dict[str, Any]:
    """A privilege-separated token with the role the installer builds for `mode`."""
    status, body = sim.request("GET", "/access/roles/Administrator")
    assert status == 200
    privs = mode_privileges(mode, [p for p, on in body["data"].items() if on])
    role = f"PMCPTest{mode.title().replace('-', '')}"
    assert sim.request("POST", "/access/roles", params={"roleid": role, "privs": ",".join(privs)})[0] == 200
    user = f"pmcp-{mode}@pve"
    assert sim.request("POST", "/access/users", params={"userid": user})[0] == 200
    status, body = sim.request("POST", f"/access/users/{user}/token/mcp", params={"privsep": 1})
    assert status == 200
    for who in ({"users": user}, {"tokens": f"{user}!mcp"}):
        assert sim.request("PUT", "/access/acl", params={"path": "/", "roles": role, **who})[0] == 200
    return {"proxmox_token_id": f"{user}!mcp", "proxmox_token_secret": body["data"]["value"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with running_sim(nodes=3, guests=30, seed=2, task_seconds=0.1) as sim:
        token = _token(sim, "admin")
        with serve(sim, tmp_path_factory.mktemp("provision"), mode=Mode.ADMIN, **token) as served:
            yield sim, served


class Agent:
    """One MCP session; every call must succeed unless the test says otherwise."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def __call__(self, tool: str, /, **args: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, args)
        assert not result.is_error, f"{tool}: {result.content[0].text}"
        return result.structured_content


def _template(sim: Any) -> dict[str, Any]:
    for _v, g in sorted(sim.state.world["guests"].items(), key=lambda kv: int(kv[0])):
        if g["type"] == "qemu" and g["template"]:
            return g
    raise AssertionError("the seeded world has no VM template")


def test_clone_start_find_grow_snapshot_migrate_backup_restore_delete(cluster: tuple[Any, Any]) -> None:
    sim, served = cluster
    tpl = _template(sim)
    guests = sim.state.world["guests"]
    newid = next(v for v in range(900, 999) if str(v) not in guests and v % 7 != 3)  # its agent answers
    restored_id = newid + 1

    async def day() -> None:
        async with connect(served) as client:
            agent = Agent(client)
            clone_args = dict(
                vmid=tpl["vmid"],
                name="web-1",
                newid=newid,
                ciuser="deploy",
                ssh_keys=[KEY],
                ipconfig0="ip=dhcp",
            )
            plan = await agent("clone_guest", **clone_args)
            assert plan["outcome"] == "plan" and str(newid) in plan["plan"]["effect"]
            assert str(newid) not in guests, "a plan must not act"

            done = await agent("clone_guest", **clone_args, confirm=True, wait_seconds=30)
            assert done["outcome"] == "ok" and done["guest"]["vmid"] == newid
            cfg = guests[str(newid)]["config"]
            assert cfg["ciuser"] == "deploy" and cfg["ipconfig0"] == "ip=dhcp"
            assert urllib.parse.unquote(cfg["sshkeys"]).strip() == KEY
            assert "base-" not in cfg["scsi0"] and f"vm-{newid}-disk" in cfg["scsi0"], "a full copy"

            started = await agent("start_guest", vmid=newid, wait_seconds=30)
            assert started["outcome"] == "ok"
            net = await agent("guest_network", vmid=newid)
            assert net["source"] == "guest-agent" and any(a["family"] == "ipv4" for a in net["addresses"])

            before = guests[str(newid)]["maxdisk"]
            plan = await agent("resize_disk", vmid=newid, disk="scsi0", size="+8G")
            assert plan["outcome"] == "plan" and guests[str(newid)]["maxdisk"] == before
            grown = await agent("resize_disk", vmid=newid, disk="scsi0", size="+8G", confirm=True)
            assert grown["outcome"] == "ok" and guests[str(newid)]["maxdisk"] == before + 8 * 1024**3

            snap = await agent("create_snapshot", vmid=newid, name="before_move")
            assert snap["outcome"] == "ok"

            target = next(n for n in sim.state.world["nodes"] if n != guests[str(newid)]["node"])
            await agent("migrate_guest", vmid=newid, target_node=target)  # the plan
            moved = await agent(
                "migrate_guest", vmid=newid, target_node=target, confirm=True, wait_seconds=30
            )
            assert moved["outcome"] == "ok" and moved["guest"]["node"] == target == guests[str(newid)]["node"]

            backup = await agent("backup_guest", vmid=newid, wait_seconds=30)
            assert backup["outcome"] == "ok"
            listed = await agent("list_backups", vmid=newid)
            volume = listed["backups"][0]["volid"]

            plan = await agent("restore_backup", volume=volume, node=target, newid=restored_id)
            assert plan["outcome"] == "plan" and str(restored_id) not in guests
            restored = await agent(
                "restore_backup", volume=volume, node=target, newid=restored_id, confirm=True, wait_seconds=30
            )
            assert restored["outcome"] == "ok" and guests[str(restored_id)]["config"]["ciuser"] == "deploy"

            stopped = await agent("stop_guest", vmid=newid, confirm=True, wait_seconds=30)
            assert stopped["outcome"] == "ok"
            plan = await agent("delete_guest", vmid=newid)
            assert plan["outcome"] == "plan" and "destroyed" in plan["plan"]["effect"]
            assert str(newid) in guests
            gone = await agent("delete_guest", vmid=newid, confirm=True, wait_seconds=30)
            assert gone["outcome"] == "ok"
            assert str(newid) not in guests and str(restored_id) in guests

    anyio.run(day)


def test_proxmox_protection_flag_and_running_guests_are_refused_in_words(cluster: tuple[Any, Any]) -> None:
    sim, served = cluster
    guests = sim.state.world["guests"]
    running = next(g for g in guests.values() if g["status"] == "running" and not g["template"])
    stopped = next(g for g in guests.values() if g["status"] == "stopped" and not g["template"])
    with sim.state.lock:
        stopped["config"]["protection"] = 1
        sim.state.changed()

    async def go() -> list[Any]:
        async with connect(served) as client:
            return [
                await client.call_tool("delete_guest", {"vmid": running["vmid"], "confirm": True}),
                await client.call_tool("delete_guest", {"vmid": stopped["vmid"], "confirm": True}),
                await client.call_tool(
                    "resize_disk", {"vmid": stopped["vmid"], "disk": "scsi0", "size": "1G"}
                ),
            ]

    try:
        on, flagged, shrink = anyio.run(go)
    finally:
        with sim.state.lock:
            stopped["config"].pop("protection", None)
            sim.state.changed()
    assert on.is_error and "shut it down first" in on.content[0].text
    assert flagged.is_error and "protection flag" in flagged.content[0].text
    assert shrink.is_error and (
        "cannot shrink" in shrink.content[0].text or "no disk" in shrink.content[0].text
    )
    assert str(running["vmid"]) in guests and str(stopped["vmid"]) in guests


def test_an_operator_token_cannot_clone_or_delete(tmp_path: Path) -> None:
    """Provisioning needs VM.Allocate, which also deletes: operator mode neither lists nor holds it."""
    with running_sim(nodes=1, guests=8, seed=2, task_seconds=0.1) as sim:
        token = _token(sim, "operator")
        with serve(sim, tmp_path, mode=Mode.OPERATOR, **token) as served:

            async def go() -> tuple[set[str], Any]:
                async with connect(served) as client:
                    names = {t.name for t in (await client.list_tools()).tools}
                    return names, await client.call_tool("clone_guest", {"vmid": 100, "name": "x"})

            names, refused = anyio.run(go)
        status, body = sim.request("GET", "/access/roles/PMCPTestOperator")
    assert "migrate_guest" in names
    assert not {"clone_guest", "delete_guest", "restore_backup", "resize_disk"} & names
    assert refused.is_error and "PMCP_MODE=admin" in refused.content[0].text
    assert status == 200 and "VM.Allocate" not in body["data"]
