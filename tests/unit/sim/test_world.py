"""The generated world: deterministic from the seed, realistic, and fast at 5,000 guests."""

from __future__ import annotations

import time

from pmcp.sim.generate import generate
from pmcp.sim.testing import running_sim


def test_same_seed_same_world() -> None:
    assert generate(3, 30, seed=4) == generate(3, 30, seed=4)
    assert generate(3, 30, seed=4) != generate(3, 30, seed=5)


def test_world_is_realistic() -> None:
    w = generate(3, 200, seed=1)
    kinds = {g["type"] for g in w["guests"].values()}
    assert kinds == {"qemu", "lxc"}
    statuses = {g["status"] for g in w["guests"].values()}
    assert statuses == {"running", "stopped"}
    assert any(g["pool"] for g in w["guests"].values()) and any(g["snapshots"] for g in w["guests"].values())
    assert any(g["config"].get("tags") for g in w["guests"].values())
    contents = {v["content"] for vols in w["content"].values() for v in vols}
    assert {"iso", "vztmpl", "backup"} <= contents
    assert set(w["nodes"]) == {"pve1", "pve2", "pve3"}


def test_cluster_resources_with_5000_guests_is_fast() -> None:
    with running_sim(nodes=20, guests=5000, seed=1) as sim:
        status, body = sim.request("GET", "/cluster/resources")
        assert status == 200 and sum(1 for r in body["data"] if r["type"] in ("qemu", "lxc")) == 5000
        times = []
        for _ in range(5):
            t = time.perf_counter()
            assert sim.request("GET", "/cluster/resources", params={"type": "vm"})[0] == 200
            times.append(time.perf_counter() - t)
        assert sorted(times)[2] < 0.25, (
            f"median {sorted(times)[2] * 1000:.0f} ms (bench/bench_sim.py measures it)"
        )
