"""cluster_info: each topic answers shortly from the simulator, says plainly what is absent (Ceph) or
not readable with pmcp's role (pending updates need Sys.Modify), and filters what Proxmox filters."""

from __future__ import annotations

from typing import Any

import anyio

from pmcp.server.config import Mode

from .conftest import connect, mode_token


def _ask(served: Any, **args: Any) -> Any:
    async def go() -> Any:
        async with connect(served) as client:
            return await client.call_tool("cluster_info", args)

    result = anyio.run(go)
    assert not result.is_error, result.content[0].text
    return result


def test_topics_answer_from_the_cluster(server: Any, sim: Any) -> None:
    world = sim.state.world
    with sim.state.lock:
        world["apt_updates"] = {
            "pve1": [{"Package": "pve-manager", "OldVersion": "9.1.1", "Version": "9.1.2"}]
        }
        world["replication"] = [
            {"id": "100-0", "guest": 100, "target": "pve2", "schedule": "*/15", "type": "local"}
        ]
    ceph = _ask(server, topic="ceph")
    assert ceph.structured_content["total"] == 0 and "not installed" in ceph.content[0].text
    jobs = _ask(server, topic="backup_jobs").structured_content
    assert jobs["items"][0]["schedule"] == "sun 01:00"
    updates = _ask(server, topic="updates", node="pve1").structured_content
    assert updates["items"] == [
        {"node": "pve1", "Package": "pve-manager", "OldVersion": "9.1.1", "Version": "9.1.2"}
    ]
    assert _ask(server, topic="replication").structured_content["items"][0]["target"] == "pve2"
    templates = _ask(server, topic="templates").structured_content["items"]
    vm_templates = [t for t in templates if str(t["volid"]).startswith("VM template")]
    assert len(vm_templates) == sum(1 for g in world["guests"].values() if g["template"])
    assert any(t.get("content") == "iso" for t in templates)
    pools = _ask(server, topic="pools", limit=1).structured_content
    assert pools["total"] > 1 and len(pools["items"]) == 1, "the default answer stays short"
    fw = _ask(server, topic="firewall")
    assert "cluster firewall" in fw.content[0].text


def test_a_read_only_token_is_told_what_it_cannot_read(make_server: Any, sim: Any) -> None:
    token_id, secret = mode_token(sim, "read-only")
    with make_server(mode=Mode.READ_ONLY, proxmox_token_id=token_id, proxmox_token_secret=secret) as served:
        updates = _ask(served, topic="updates", node="pve1")
        ha = _ask(served, topic="ha")
    assert updates.structured_content["total"] == 0
    assert (
        "Sys.Modify on /nodes/pve1" in updates.content[0].text
        and "apt list --upgradable" in updates.content[0].text
    )
    assert ha.structured_content["items"][0]["type"] == "quorum"


def test_a_url_download_with_the_privilege(server: Any, sim: Any) -> None:
    """With Sys.AccessNetwork (here root's token) the ISO lands on the storage as a new volume."""

    async def go() -> Any:
        async with connect(server) as client:
            args = {"node": "pve2", "storage": "local", "source": "https://example.org/x/netinst.iso"}
            return await client.call_tool("download_template", args | {"confirm": True, "wait_seconds": 30})

    result = anyio.run(go)
    assert not result.is_error and result.structured_content["outcome"] == "ok", result.content[0].text
    assert "local:iso/netinst.iso" in [v["volid"] for v in sim.state.world["content"]["pve2/local"]]
