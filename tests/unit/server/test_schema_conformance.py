"""Every API call the tools make exists in the official Proxmox VE 8.4 and 9.1 schemas."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import anyio
import pytest

from .conftest import connect

SCHEMA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "pve-api"


@cache
def templates(version: str) -> list[tuple[str, re.Pattern[str]]]:
    path = SCHEMA_DIR / f"pve-{version}.json"
    if not path.exists():
        pytest.skip(f"the Proxmox API schema is not at {SCHEMA_DIR} (CI puts shared/ beside the clone)")
    endpoints = json.loads(path.read_text())["endpoints"]
    out = []
    for template, methods in endpoints.items():
        rx = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$")
        out += [(method, rx) for method in methods]
    return out


def test_all_tool_calls_exist_in_the_schema(server, sim):
    def pick(**match):
        return next(
            int(v)
            for v, g in sorted(sim.state.world["guests"].items())
            if all(g.get(k) == x for k, x in match.items())
            and "pmcp-protected" not in str(g["config"].get("tags", ""))
        )

    vm, ct = pick(type="qemu", status="running"), pick(type="lxc", status="running")

    async def go():
        async with connect(server) as client:
            for name in ("cluster_overview", "list_guests", "list_storage", "list_tasks", "capabilities"):
                assert not (await client.call_tool(name, {})).is_error, name
            for vmid in (vm, ct):
                for name, args in [
                    ("guest_status", {}),
                    ("guest_config", {}),
                    ("list_snapshots", {}),
                    ("list_backups", {}),
                    ("create_snapshot", {"name": "conformance"}),
                    ("rollback_snapshot", {"name": "conformance", "confirm": True}),
                    ("delete_snapshot", {"name": "conformance", "confirm": True}),
                    ("set_guest_metadata", {"description": "conformance"}),
                    ("suspend_guest", {}),
                    ("resume_guest", {}),
                    ("reboot_guest", {}),
                    ("backup_guest", {}),
                    ("shutdown_guest", {}),
                    ("start_guest", {}),
                    ("stop_guest", {"confirm": True}),
                    ("start_guest", {"wait_seconds": 0}),
                ]:
                    r = await client.call_tool(name, {"vmid": vmid} | args)
                    assert not r.is_error, (name, vmid, r.content[0].text)
                    if r.structured_content.get("upid"):
                        upid = r.structured_content["upid"]
            node = sim.state.world["guests"][str(vm)]["node"]
            for name, args in [
                ("node_status", {"node": node}),
                ("list_tasks", {"node": node, "vmid": vm}),
                ("storage_content", {"node": node, "storage": "local"}),
                ("task_status", {"upid": upid}),
                ("task_log", {"upid": upid}),
                ("reset_guest", {"vmid": vm, "confirm": True}),
            ]:
                assert not (await client.call_tool(name, args)).is_error, name

    sim.state.clear_requests()
    anyio.run(go)
    calls = set(sim.state.requests)
    assert len(calls) > 20
    for version in ("8.4", "9.1"):
        missing = [
            (m, p) for m, p in calls if not any(m == tm and rx.match(p) for tm, rx in templates(version))
        ]
        assert not missing, (version, missing)
