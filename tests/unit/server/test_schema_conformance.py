"""Every API call the tools make exists in the official Proxmox VE 8.4 AND 9.1 schemas with the same
method, and every parameter name it sends is defined there (the calls are read off the wire by the
simulator, so nothing the server sends escapes the check)."""

from __future__ import annotations

import anyio

from pmcp.server.registry import TOOLS
from tests.support.pve_schema import problems

from .conftest import connect


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


def test_all_tool_calls_match_both_schemas(server, sim):
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
                "list_tasks",
                "capabilities",
                "audit_log",
            ):
                await ok(name, {})
            upid = None
            for vmid in (vm, ct):
                for name, args in [
                    ("guest_status", {}),
                    ("guest_config", {}),
                    ("list_snapshots", {}),
                    ("list_backups", {}),
                    ("create_snapshot", {"name": "pre-upgrade", "description": "conformance"}),
                    ("rollback_snapshot", {"name": "pre-upgrade", "confirm": True}),
                    ("delete_snapshot", {"name": "pre-upgrade", "confirm": True}),
                    ("set_guest_metadata", {"description": "conformance", "tags": ["a"]}),
                    ("set_guest_metadata", {"tags": []}),
                    ("start_guest", {}),
                    ("suspend_guest", {}),
                    ("resume_guest", {}),
                    ("reboot_guest", {}),
                    ("backup_guest", {"notes": "conformance {{guestname}}", "mode": "snapshot"}),
                    ("backup_guest", {"storage": "local"}),
                    ("shutdown_guest", {"timeout": 30, "force_stop": True}),
                    ("start_guest", {}),
                    ("stop_guest", {"confirm": True}),
                    ("start_guest", {"wait_seconds": 0}),
                ]:
                    data = await ok(name, {"vmid": vmid} | args)
                    upid = data.get("upid") or upid
            node = sim.state.world["guests"][str(vm)]["node"]
            for name, args in [
                ("node_status", {"node": node}),
                ("list_tasks", {"node": node, "vmid": vm}),
                ("list_storage", {"node": node}),
                ("storage_content", {"node": node, "storage": "local"}),
                ("storage_content", {"node": node, "storage": "local", "content": "backup", "vmid": vm}),
                ("list_backups", {"storage": "local"}),
                ("task_status", {"upid": upid}),
                ("task_log", {"upid": upid}),
                ("reset_guest", {"vmid": vm, "confirm": True}),
            ]:
                await ok(name, args)

    sim.state.clear_requests()
    anyio.run(go)
    calls = list(sim.state.calls)
    assert len({(m, p) for m, p, _ in calls}) > 30
    assert any(names for _, _, names in calls), "parameter names are part of the check"
    assert not problems(calls), "\n".join(problems(calls))
    untested = set(TOOLS) - called - {"rollback_snapshot"}
    assert not untested, f"tools whose calls are not checked: {untested}"
