"""An agent's day, through the official SDK client, with the admin role `pmcp install --mode admin` grants:
clone a template with cloud-init, start it, find its IP, grow its disk, snapshot, migrate it, back it up,
restore the backup to a new VMID, delete the clone — each answer checked against the simulator's world.
"""

from __future__ import annotations

import queue
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.host.pve import mode_privileges
from pmcp.server.config import Mode
from pmcp.sim.testing import running_sim

from .conftest import Served, connect, serve

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


def _template(sim: Any) -> dict[str, Any] | None:
    for _v, g in sorted(sim.state.world["guests"].items(), key=lambda kv: int(kv[0])):
        if g["type"] == "qemu" and g["template"]:
            return g
    return None


async def _make_template(agent: Agent, sim: Any) -> dict[str, Any]:
    """No template in this world (pmcp demo's has none): the agent stops a VM without snapshots and turns
    it into one."""
    guests = sim.state.world["guests"]
    vm = next(
        g
        for _v, g in sorted(guests.items(), key=lambda kv: int(kv[0]))
        if g["type"] == "qemu" and not g["snapshots"] and not g["template"]
        and "pmcp-protected" not in str(g["config"].get("tags", ""))
    )  # fmt: skip
    if vm["status"] != "stopped":
        await agent("guest_power", action="stop", vmid=vm["vmid"], confirm=True, wait_seconds=30)
        assert guests[str(vm["vmid"])]["status"] == "stopped"
    plan = await agent("convert_to_template", vmid=vm["vmid"])
    assert plan["outcome"] == "plan" and not guests[str(vm["vmid"])]["template"], "a plan must not act"
    done = await agent("convert_to_template", vmid=vm["vmid"], confirm=True, wait_seconds=30)
    assert done["outcome"] == "ok" and guests[str(vm["vmid"])]["template"]
    return guests[str(vm["vmid"])]


def test_clone_start_find_grow_snapshot_migrate_backup_restore_delete(cluster: tuple[Any, Any]) -> None:
    """With the admin role the installer builds (least privilege, not root)."""
    sim, served = cluster
    anyio.run(agents_day, sim, served)


def test_the_same_day_through_pmcp_demo() -> None:
    """`pmcp demo` as a user starts it (its own 3-node simulator, admin mode): the same day."""
    from pmcp.demo import DemoInfo, run_demo

    ready: queue.Queue[DemoInfo] = queue.Queue()
    stop = threading.Event()
    kwargs = dict(port=0, mode="admin", guests=30, json_info=None, echo=lambda _: None)
    demo = threading.Thread(target=run_demo, kwargs={**kwargs, "wait": stop.wait, "on_ready": ready.put})
    demo.start()
    try:
        info = ready.get(timeout=60)
        served = Served(info.url.removesuffix("/mcp"), info.url, info.token, None, None)
        anyio.run(agents_day, info.sim, served)
    finally:
        stop.set()
        demo.join(timeout=30)
    assert not demo.is_alive()


async def agents_day(sim: Any, served: Any) -> None:
    """Clone, start, find the IP, reconfigure, grow, snapshot, migrate, back up, restore, delete."""
    guests = sim.state.world["guests"]
    newid = next(v for v in range(900, 999) if str(v) not in guests and v % 7 != 3)  # its agent answers
    restored_id = newid + 1
    async with connect(served) as client:
        agent = Agent(client)
        tpl = _template(sim) or await _make_template(agent, sim)
        clone_args = dict(
            source=tpl["vmid"],
            name="web-1",
            newid=newid,
            ciuser="deploy",
            ssh_keys=[KEY],
            ipconfig0="ip=dhcp",
        )
        plan = await agent("create_guest", **clone_args)
        assert plan["outcome"] == "plan" and str(newid) in plan["plan"]["effect"]
        assert str(newid) not in guests, "a plan must not act"

        done = await agent("create_guest", **clone_args, confirm=True, wait_seconds=30)
        assert done["outcome"] == "ok" and done["guest"]["vmid"] == newid
        cfg = guests[str(newid)]["config"]
        assert cfg["ciuser"] == "deploy" and cfg["ipconfig0"] == "ip=dhcp"
        assert urllib.parse.unquote(cfg["sshkeys"]).strip() == KEY
        assert "base-" not in cfg["scsi0"] and f"vm-{newid}-disk" in cfg["scsi0"], "a full copy"

        started = await agent("guest_power", action="start", vmid=newid, wait_seconds=30)
        assert started["outcome"] == "ok" and started["guest"]["status"] == "running", "the state after"
        net = await agent("guest_info", show="network", vmid=newid)
        assert net["source"] == "guest-agent" and any(a["family"] == "ipv4" for a in net["addresses"])

        # a running VM: cores and memory wait for the next start, balloon and net0 hot-plug
        # (qemu-server vmconfig_hotplug_pending with the default hotplug 'network,disk,usb')
        cores = guests[str(newid)]["config"]["cores"] + 1
        change = dict(vmid=newid, cores=cores, memory_mib=4096, balloon_mib=1024, vlan=20)
        plan = await agent("set_guest_config", **change)
        assert plan["outcome"] == "plan" and "cores" in plan["plan"]["effect"]
        assert "pending" not in guests[str(newid)], "a plan must not act"
        done = await agent("set_guest_config", **change, confirm=True)
        applies = {c["key"]: c["applies"] for c in done["changes"]}
        assert applies == {"cores": "next start", "memory": "next start", "balloon": "now", "net0": "now"}
        assert guests[str(newid)]["config"]["net0"].endswith("tag=20")
        assert guests[str(newid)]["pending"] == {"cores": cores, "memory": "4096"}
        shown = await agent("guest_info", vmid=newid, show="config")
        assert shown["pending"] == {"cores": str(cores), "memory": "4096"}
        assert shown["config"]["cores"] == str(cores - 1)
        await agent("guest_power", action="reboot", vmid=newid, wait_seconds=30)
        assert guests[str(newid)]["config"]["cores"] == cores and "pending" not in guests[str(newid)]
        assert guests[str(newid)]["maxmem"] == 4096 * 1024**2

        before = guests[str(newid)]["maxdisk"]
        plan = await agent("set_guest_config", vmid=newid, grow_disk="scsi0:+8G")
        assert plan["outcome"] == "plan" and guests[str(newid)]["maxdisk"] == before
        grown = await agent("set_guest_config", vmid=newid, grow_disk="scsi0:+8G", confirm=True)
        assert grown["outcome"] == "ok" and guests[str(newid)]["maxdisk"] == before + 8 * 1024**3

        snap = await agent("snapshot", action="create", vmid=newid, name="before_move")
        assert snap["outcome"] == "ok"

        target = next(n for n in sim.state.world["nodes"] if n != guests[str(newid)]["node"])
        await agent("migrate_guest", vmid=newid, target_node=target)  # the plan
        moved = await agent("migrate_guest", vmid=newid, target_node=target, confirm=True, wait_seconds=30)
        assert moved["outcome"] == "ok" and moved["guest"]["node"] == target == guests[str(newid)]["node"]

        backup = await agent("backup_guest", vmid=newid, wait_seconds=30)
        assert backup["outcome"] == "ok"
        listed = await agent("list_storage", content="backup", vmid=newid)
        volume = listed["backups"][0]["volid"]

        plan = await agent("create_guest", source=volume, node=target, newid=restored_id)
        assert plan["outcome"] == "plan" and str(restored_id) not in guests
        restored = await agent(
            "create_guest", source=volume, node=target, newid=restored_id, confirm=True, wait_seconds=30
        )
        assert restored["outcome"] == "ok" and guests[str(restored_id)]["config"]["ciuser"] == "deploy"

        stopped = await agent("guest_power", action="stop", vmid=newid, confirm=True, wait_seconds=30)
        assert stopped["outcome"] == "ok"
        plan = await agent("delete_guest", vmid=newid)
        assert plan["outcome"] == "plan" and "destroyed" in plan["plan"]["effect"]
        assert str(newid) in guests
        gone = await agent("delete_guest", vmid=newid, confirm=True, wait_seconds=30)
        assert gone["outcome"] == "ok"
        assert str(newid) not in guests and str(restored_id) in guests


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
                    "set_guest_config", {"vmid": stopped["vmid"], "grow_disk": "scsi0:1G"}
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

            async def go() -> tuple[set[str], Any, Any, Any]:
                async with connect(served) as client:
                    names = {t.name for t in (await client.list_tools()).tools}
                    grow = {"vmid": 100, "grow_disk": "scsi0:+1G"}
                    return (
                        names,
                        await client.call_tool("create_guest", {"source": 100, "name": "x"}),
                        await client.call_tool("set_guest_config", grow),
                        await client.call_tool("set_guest_config", {"vmid": 100, "tags": ["web"]}),
                    )

            names, refused, grow, tags = anyio.run(go)
        status, body = sim.request("GET", "/access/roles/PMCPTestOperator")
    assert "migrate_guest" in names
    assert not {"create_guest", "delete_guest"} & names
    assert refused.is_error and "PMCP_MODE=admin" in refused.content[0].text
    assert grow.is_error and "set_guest_config with these arguments" in grow.content[0].text
    assert not tags.is_error, "tags and notes are an operator's (VM.Config.Options)"
    assert status == 200 and "VM.Allocate" not in body["data"]


def test_new_container_and_vm_with_defaults_and_arguments_that_do_not_apply(cluster: tuple[Any, Any]) -> None:
    """A container from a CT template and a VM from an ISO, planned first; an argument that does not
    apply to the chosen source is named, not silently dropped."""
    sim, served = cluster
    guests = sim.state.world["guests"]
    volumes = [v for items in sim.state.world["content"].values() for v in items]
    vztmpl = next(v["volid"] for v in volumes if v.get("content") == "vztmpl")
    iso = next(v["volid"] for v in volumes if v.get("content") == "iso")
    ct_id, vm_id = [v for v in range(700, 800) if str(v) not in guests][:2]

    async def go() -> list[Any]:
        async with connect(served) as client:
            agent = Agent(client)
            ct = dict(source=vztmpl, name="cache-1", node="pve1", newid=ct_id, ssh_keys=[KEY])
            plan = await agent("create_guest", **ct)
            assert plan["outcome"] == "plan" and "1 core(s), 512 MiB, 8 GiB" in plan["plan"]["effect"]
            assert str(ct_id) not in guests
            made = await agent("create_guest", **ct, confirm=True, wait_seconds=30)
            vm = await agent("create_guest", source=iso, name="win-1", node="pve1", newid=vm_id, cores=4,
                             confirm=True, wait_seconds=30)  # fmt: skip
            wrong = await client.call_tool("create_guest", {"source": vztmpl, "name": "x", "node": "pve1",
                                                            "full": True})  # fmt: skip
            return [made, vm, wrong]

    made, vm, wrong = anyio.run(go)
    assert made["outcome"] == "ok" and made["guest"]["type"] == "lxc"
    cfg = guests[str(ct_id)]["config"]
    assert cfg["unprivileged"] in (1, True, "1") and "ip=dhcp" in cfg["net0"] and "size=8G" in cfg["rootfs"]
    assert vm["outcome"] == "ok" and guests[str(vm_id)]["config"]["ide2"] == f"{iso},media=cdrom"
    assert guests[str(vm_id)]["config"]["cores"] == 4 and guests[str(vm_id)]["maxdisk"] == 32 * 1024**3
    assert wrong.is_error and "full" in wrong.content[0].text and "not used" in wrong.content[0].text


def test_download_a_template_and_a_url_needs_a_privilege_pmcp_does_not_take(cluster: tuple[Any, Any]) -> None:
    """Datastore.AllocateTemplate (admin role) downloads from Proxmox's appliance index; a URL also needs
    Sys.AccessNetwork on the node (pve-storage download_url), which the answer names."""
    sim, served = cluster
    name = "debian-12-standard_12.12-1_amd64.tar.zst"

    async def go() -> list[Any]:
        async with connect(served) as client:
            args = {"node": "pve1", "storage": "local", "source": name}
            url = {"node": "pve1", "storage": "local", "source": "https://example.org/img/alpine.iso"}
            return [
                await client.call_tool("download_template", args),
                await client.call_tool("download_template", args | {"confirm": True, "wait_seconds": 30}),
                await client.call_tool("download_template", args | {"source": "debian"}),
                await client.call_tool("download_template", url | {"confirm": True}),
            ]

    plan, done, unknown, refused = anyio.run(go)
    assert plan.structured_content["outcome"] == "plan" and "129 MB" in plan.content[0].text
    assert done.structured_content["outcome"] == "ok", done.content[0].text
    volids = [v["volid"] for v in sim.state.world["content"]["pve1/local"]]
    assert f"local:vztmpl/{name}" in volids
    assert unknown.is_error and "matching: debian-12-standard" in unknown.content[0].text
    assert refused.is_error and "Sys.AccessNetwork on /nodes/pve1" in refused.content[0].text
