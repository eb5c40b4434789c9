"""Undo: a safety snapshot before a change of a guest's configuration or disks, undo_last_change rolls the
guest back to it, on the simulator as Proxmox does (pve-guest-common AbstractConfig.pm snapshot_rollback)."""

from __future__ import annotations

import json
from typing import Any

import anyio

from .conftest import Served, connect, free_guests


def _stopped_vm(served: Served, n: int = 0) -> int:
    return free_guests(served, "qemu", "stopped")[
        -1 - n
    ]  # from the end: the other modules pick from the start


def calls(served: Served, *steps: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        out = []
        async with connect(served) as client:
            for name, args in steps:
                result = await client.call_tool(name, args)
                assert not result.is_error, (name, result.content[0].text)
                out.append(result.structured_content | {"text": result.content[0].text})
        return out

    return anyio.run(go)


def autos(served: Served, vmid: int) -> list[str]:
    return sorted(
        s["name"] for s in served.sim.state.guest(vmid)["snapshots"] if s["name"].startswith("pmcp-auto-")
    )


def test_undo_restores_config_and_disk_state(server: Served) -> None:
    sim = server.sim.state
    vmid = _stopped_vm(server)
    sim.write_disk(vmid)  # the guest's disk holds something before pmcp changes anything
    g = sim.guest(vmid)
    before = {k: v for k, v in g["config"].items() if k != "digest"}
    data_before, maxdisk_before = dict(g["disk_data"]), g["maxdisk"]

    resized, tagged = calls(
        server,
        ("set_guest_config", {"vmid": vmid, "grow_disk": "scsi0:+1G", "confirm": True}),
        ("set_guest_config", {"vmid": vmid, "tags": ["undo-me"], "description": "kept by a rollback"}),
    )
    assert resized["outcome"] == "ok" and resized["safety_snapshot"].startswith("pmcp-auto-")
    assert tagged["safety_snapshot"] and "undo_last_change" in tagged["text"]
    assert len(autos(server, vmid)) == 2
    sim.write_disk(vmid)  # and the guest writes after the changes
    assert sim.guest(vmid)["maxdisk"] == maxdisk_before + 1024**3

    (undone,) = calls(server, ("undo_last_change", {"vmid": vmid, "confirm": True}))
    g = sim.guest(vmid)
    assert undone["outcome"] == "ok", undone["text"]
    assert g["config"].get("tags") == before.get("tags")  # the tag change is undone
    assert g["config"]["description"] == "kept by a rollback"  # Proxmox keeps the description
    assert g["maxdisk"] == maxdisk_before + 1024**3  # the resize is older: still there
    assert autos(server, vmid) == [resized["safety_snapshot"]]

    (undone,) = calls(server, ("undo_last_change", {"vmid": vmid, "confirm": True}))
    g = sim.guest(vmid)
    assert undone["outcome"] == "ok", undone["text"]
    # a rollback gives the VM a new vmgenid (qemu-server QemuConfig.pm __snapshot_rollback_hook)
    skip = ("digest", "description", "parent", "vmgenid")
    assert {k: v for k, v in g["config"].items() if k not in skip} == {
        k: v for k, v in before.items() if k not in skip
    }
    assert g["config"].get("vmgenid") != before.get("vmgenid") or "vmgenid" not in before
    assert g["maxdisk"] == maxdisk_before and g["disk_data"] == data_before
    assert autos(server, vmid) == []

    records = [json.loads(x) for x in server.audit_path.read_text().splitlines()]
    done = [
        r
        for r in records
        if r["phase"] == "outcome" and r["tool"] in ("set_guest_config", "undo_last_change")
    ]
    assert done[-4]["undo"]["snapshot"] == resized["safety_snapshot"]  # grow, tags, undo, undo
    assert done[-1]["undo"] == {"vmid": vmid, "rolled_back_to": resized["safety_snapshot"]}


def test_the_plan_says_when_a_guest_cannot_be_snapshotted(server: Served) -> None:
    """A disk on plain LVM: pve-storage LVMPlugin.pm volume_has_feature has no 'snapshot'."""
    sim = server.sim.state
    vmid = _stopped_vm(server, 1)
    with sim.lock:
        sim.world["storages"].setdefault(
            "san-lvm", {"type": "lvm", "content": "images", "shared": 1, "total": 4096}
        )
        sim.guest(vmid)["config"]["scsi1"] = f"san-lvm:vm-{vmid}-disk-1,size=8G"
    try:
        plan, done = calls(
            server,
            ("set_guest_config", {"vmid": vmid, "grow_disk": "scsi1:+1G"}),
            ("set_guest_config", {"vmid": vmid, "grow_disk": "scsi1:+1G", "confirm": True}),
        )
        assert plan["outcome"] == "plan"
        assert (
            "No safety snapshot" in plan["plan"]["undo"] and "cannot be snapshotted" in plan["plan"]["undo"]
        )
        assert done["outcome"] == "ok" and "safety_snapshot" not in done
        assert autos(server, vmid) == []
    finally:
        with sim.lock:
            sim.guest(vmid)["config"].pop("scsi1", None)


def test_safety_snapshots_are_rotated(make_server: Any) -> None:
    with make_server(undo_keep=2) as served:
        vmid = _stopped_vm(served, 2)
        made = calls(served, *[("set_guest_config", {"vmid": vmid, "tags": [f"t{i}"]}) for i in range(3)])
        names = [m["safety_snapshot"] for m in made]
        assert autos(served, vmid) == names[1:]
        calls(served, ("undo_last_change", {"vmid": vmid, "confirm": True}))
        calls(served, ("undo_last_change", {"vmid": vmid, "confirm": True}))
        assert autos(served, vmid) == []
        assert served.sim.state.guest(vmid)["config"].get("tags") == "t0"
