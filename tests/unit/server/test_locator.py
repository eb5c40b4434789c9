"""One-guest calls ask the guest's own node, not the whole cluster, and never act on a wrong node.

The simulator logs every API request it serves (`state.requests`); these tests read that log, so they
assert what Proxmox would have been asked, not what our code believes it asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pmcp.server.config import Mode
from pmcp.sim.testing import running_sim

from .conftest import connect, serve


@pytest.fixture(scope="module")
def private_sim() -> Iterator[Any]:
    with running_sim(nodes=3, guests=120, seed=7, task_seconds=0.2, tls=False) as s:
        yield s


def _requests(sim: Any) -> list[tuple[str, str]]:
    with sim.state.lock:
        return [tuple(r) for r in sim.state.requests]


def _clear(sim: Any) -> None:
    sim.state.clear_requests()


def _guest(sim: Any, kind: str = "qemu", status: str = "running") -> dict[str, Any]:
    for _vmid, g in sorted(sim.state.world["guests"].items(), key=lambda kv: int(kv[0])):
        tags = str(g.get("config", {}).get("tags", ""))
        if g["type"] == kind and g["status"] == status and not g.get("template") and "pmcp" not in tags:
            return g
    raise AssertionError(f"no {status} {kind} in the simulated cluster")


def _call(served: Any, name: str, **arguments: Any) -> Any:
    async def go() -> Any:
        async with connect(served) as client:
            return await client.call_tool(name, arguments)

    return anyio.run(go)


def test_a_known_guest_costs_one_request_to_its_node(private_sim: Any, tmp_path: Path) -> None:
    g = _guest(private_sim)
    with serve(private_sim, tmp_path) as served:
        first = _call(served, "guest_info", vmid=g["vmid"])
        assert not first.is_error
        _clear(private_sim)
        second = _call(served, "guest_info", vmid=g["vmid"])
    assert not second.is_error
    assert second.structured_content["guest"]["node"] == g["node"]
    seen = _requests(private_sim)
    assert ("GET", "/cluster/resources") not in seen, seen
    current = f"/nodes/{g['node']}/qemu/{g['vmid']}/status/current"
    assert seen.count(("GET", current)) == 1, seen


def test_a_guest_moved_behind_our_back_is_found_on_its_new_node(private_sim: Any, tmp_path: Path) -> None:
    g = _guest(private_sim, status="stopped")
    old = g["node"]
    new = next(n for n in private_sim.state.world["nodes"] if n != old)
    with serve(private_sim, tmp_path, mode=Mode.OPERATOR) as served:
        assert not _call(served, "guest_info", vmid=g["vmid"]).is_error  # the map now says `old`
        with private_sim.state.lock:
            g["node"] = new  # an admin migrated it in the web UI
            private_sim.state.changed()
        _clear(private_sim)
        result = _call(served, "guest_power", action="start", vmid=g["vmid"], wait_seconds=10)
    assert not result.is_error, result.content[0].text
    assert result.structured_content["guest"]["node"] == new
    seen = _requests(private_sim)
    assert ("POST", f"/nodes/{old}/qemu/{g['vmid']}/status/start") not in seen, seen
    assert ("POST", f"/nodes/{new}/qemu/{g['vmid']}/status/start") in seen, seen
    assert ("GET", "/cluster/resources") in seen, "a miss on the old node must refresh from the cluster"


def test_a_tag_added_after_the_lookup_protects_the_guest(private_sim: Any, tmp_path: Path) -> None:
    g = _guest(private_sim, kind="lxc")
    with serve(private_sim, tmp_path, mode=Mode.ADMIN) as served:
        assert not _call(served, "guest_info", vmid=g["vmid"]).is_error
        with private_sim.state.lock:
            g["config"]["tags"] = "pmcp-protected"
            private_sim.state.changed()
        try:
            result = _call(served, "guest_power", action="stop", vmid=g["vmid"], confirm=True)
        finally:
            with private_sim.state.lock:
                g["config"].pop("tags", None)
                private_sim.state.changed()
    assert result.is_error
    assert "protected" in result.content[0].text
    assert g["status"] == "running"
