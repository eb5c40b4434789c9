"""Every API call the tools make exists in the official Proxmox VE 8.4 AND 9.1 schemas with the same
method, and every parameter name it sends is defined there (the calls are read off the wire by the
simulator, so nothing the server sends escapes the check)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pmcp.server.registry import TOOLS
from pmcp.sim.testing import running_sim
from tests.support.pve_schema import problems

from .conftest import Served, connect, serve


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Its own world: provisioning adds guests the other modules' counts do not expect."""
    with (
        running_sim(nodes=3, guests=50, seed=1, task_seconds=0.05) as sim,
        serve(sim, Path(tmp_path_factory.mktemp("conformance"))) as served,
    ):
        yield served


def test_the_check_catches_a_wrong_method_path_or_parameter() -> None:
    assert problems([("GET", "/nodes/pve1/qemu", ())]) == []
    assert problems([("POST", "/nodes/pve1/qemu/100/status/start", ("nets-host-mtu",))]) == [
        "PVE 8.4: POST /nodes/{node}/qemu/{vmid}/status/start has no parameter nets-host-mtu"
    ]
    assert problems([("PUT", "/nodes/pve1/qemu/100/status/start", ())], ["9.1"]) == [
        "PVE 9.1: PUT /nodes/pve1/qemu/100/status/start does not exist"
    ]
    assert problems([("POST", "/nodes/pve1/vzdump", ("notes",))], ["9.1"])
    assert problems([("POST", "/nodes/pve1/qemu/100/config", ("net3", "scsi12"))]) == []


def test_all_tool_calls_match_both_schemas(own: Served) -> None:
    server, sim = own, own.sim

    def pick(**match):
        return next(
            int(v)
            for v, g in sorted(sim.state.world["guests"].items(), key=lambda kv: int(kv[0]))
            if all(g.get(k) == x for k, x in match.items())
            and not g["template"]
            and "pmcp-protected" not in str(g["config"].get("tags", ""))
        )

    vm, ct = pick(type="qemu", status="running"), pick(type="lxc", status="running")
    called: set[str] = set()

    async def go():
        async with connect(server) as client:

            async def ok(name, args):
                r = await client.call_tool(name, args)
                assert not r.is_error, (name, args, r.content[0].text)
                called.add(name)
                return r.structured_content or {}

            for name in (
                "cluster_overview",
                "list_guests",
                "list_storage",
                "tasks",
                "capabilities",
            ):
                await ok(name, {})
            upid = None
            for vmid in (vm, ct):
                for name, args in [
                    ("guest_info", {}),
                    ("guest_info", {"show": "config"}),
                    ("guest_info", {"show": "snapshots"}),
                    ("list_storage", {"content": "backup"}),
                    ("snapshot", {"action": "create", "name": "pre-upgrade", "description": "conformance"}),
                    ("snapshot", {"action": "rollback", "name": "pre-upgrade", "confirm": True}),
                    ("snapshot", {"action": "delete", "name": "pre-upgrade", "confirm": True}),
                    ("set_guest_config", {"description": "conformance", "tags": ["a"]}),
                    ("set_guest_config", {"tags": []}),
                    ("undo_last_change", {"confirm": True}),
                    ("guest_power", {"action": "start"}),
                    ("guest_power", {"action": "suspend"}),
                    ("guest_power", {"action": "resume"}),
                    ("guest_power", {"action": "reboot"}),
                    ("backup_guest", {"notes": "conformance {{guestname}}", "mode": "snapshot"}),
                    ("backup_guest", {"storage": "local"}),
                    ("guest_power", {"action": "shutdown", "timeout": 30, "force_stop": True}),
                    ("guest_power", {"action": "start"}),
                    ("guest_power", {"action": "stop", "confirm": True}),
                    ("guest_power", {"action": "start", "wait_seconds": 0}),
                ]:
                    data = await ok(name, {"vmid": vmid} | args)
                    upid = data.get("upid") or upid
            node = sim.state.world["guests"][str(vm)]["node"]
            for name, args in [
                ("cluster_overview", {"node": node}),
                ("tasks", {"node": node, "vmid": vm}),
                ("list_storage", {"node": node}),
                ("list_storage", {"node": node, "storage": "local"}),
                ("list_storage", {"node": node, "storage": "local", "content": "backup", "vmid": vm}),
                ("list_storage", {"content": "backup", "storage": "local"}),
                ("tasks", {"upid": upid}),
                ("tasks", {"log_lines": 100, "upid": upid}),
                ("guest_power", {"action": "reset", "vmid": vm, "confirm": True}),
                ("guest_info", {"show": "network", "vmid": vm}),
                ("guest_info", {"show": "network", "vmid": ct}),
                ("metrics_history", {"vmid": vm, "timeframe": "hour"}),
                ("metrics_history", {"node": node}),
                ("recent_events", {}),
                ("cluster_info", {"topic": "firewall", "vmid": vm}),
                ("cluster_info", {"topic": "firewall", "node": node}),
                *[("cluster_info", {"topic": t}) for t in ("ha", "replication", "ceph", "sdn", "firewall")],
                *[("cluster_info", {"topic": t}) for t in ("pools", "backup_jobs", "templates", "updates")],
            ]:
                await ok(name, args)

            # provisioning, on a clone (so the shared world keeps its guests)
            tpl = pick(type="qemu", status="stopped")
            guests = sim.state.world["guests"]
            new = next(v for v in range(950, 990) if not {str(v + i) for i in range(5)} & set(guests))
            clone = {
                "source": tpl,
                "name": "conf-1",
                "newid": new,
                "ciuser": "deploy",
                "ipconfig0": "ip=dhcp",
            }
            await ok("create_guest", clone | {"confirm": True, "wait_seconds": 30})
            await ok("set_guest_config", {"vmid": new, "grow_disk": "scsi0:+1G", "confirm": True})
            change = {"cores": 2, "memory_mib": 1024, "balloon_mib": 512, "vlan": 10}
            change |= {"ssh_keys": ["ssh-ed25519 AAAAC3Nz x@y"], "confirm": True}
            await ok("set_guest_config", {"vmid": new} | change)
            target = next(n for n in sim.state.world["nodes"] if n != guests[str(new)]["node"])
            await ok(
                "migrate_guest", {"vmid": new, "target_node": target, "confirm": True, "wait_seconds": 30}
            )
            await ok("backup_guest", {"vmid": new, "wait_seconds": 30})
            volume = (await ok("list_storage", {"content": "backup", "vmid": new}))["backups"][0]["volid"]
            await ok("create_guest", {"source": volume, "node": target, "newid": new + 1, "confirm": True,
                                        "wait_seconds": 30})  # fmt: skip
            volumes = [v for items in sim.state.world["content"].values() for v in items]
            iso = next(v["volid"] for v in volumes if v.get("content") == "iso")
            vztmpl = next(v["volid"] for v in volumes if v.get("content") == "vztmpl")
            made = {"node": target, "confirm": True, "wait_seconds": 30}
            await ok("create_guest", made | {"source": iso, "name": "conf-vm", "newid": new + 2})
            await ok("create_guest", made | {"name": "conf-blank", "newid": new + 3, "disk_gib": 4})
            new_ct = {"source": vztmpl, "name": "conf-ct", "newid": new + 4, "ipconfig0": "ip=dhcp"}
            await ok("create_guest", made | new_ct | {"ssh_keys": ["ssh-ed25519 AAAAC3Nz x@y"]})
            dl = {"node": target, "storage": "local", "confirm": True, "wait_seconds": 30}
            await ok("download_template", dl | {"source": "alpine-3.22-default_20250617_amd64.tar.xz"})
            await ok("download_template", dl | {"source": "https://example.org/d/rescue.iso"})
            await ok("convert_to_template", {"vmid": new + 1, "confirm": True, "wait_seconds": 30})
            await ok("delete_guest", {"vmid": new, "confirm": True, "wait_seconds": 30})
            audit = (await ok("capabilities", {"verify_audit": True}))[
                "audit_status"
            ]  # every change is sealed
            assert audit["verified"] is True and audit["records"] > 60, audit

    sim.state.clear_requests()
    anyio.run(go)
    calls = list(sim.state.calls)
    assert len({(m, p) for m, p, _ in calls}) > 30
    assert any(names for _, _, names in calls), "parameter names are part of the check"
    assert not problems(calls), "\n".join(problems(calls))
    untested = set(TOOLS) - called
    assert not untested, f"tools whose calls are not checked: {untested}"
