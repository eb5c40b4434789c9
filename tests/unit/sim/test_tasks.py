"""Tasks: UPIDs, running -> stopped, exit statuses, logs, injected failures, and their effects."""

from __future__ import annotations

import re
import time

import pytest

from pmcp.sim.testing import RunningSim, running_sim
from tests.unit.sim.conftest import ok

UPID = re.compile(r"^UPID:[a-z0-9-]+:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:\w+:[^:]*:[^:]+:$")


def wait(sim: RunningSim, node: str, upid: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ok(sim.request("GET", f"/nodes/{node}/tasks/{upid}/status"))
        if st["status"] == "stopped":
            return st
        time.sleep(0.02)
    raise AssertionError(f"task {upid} still running")


def guest(sim: RunningSim, kind: str = "qemu", status: str | None = None) -> dict:
    for g in sim.state.world["guests"].values():
        if g["type"] == kind and not g["template"] and status in (None, g["status"]) and not g.get("lock"):
            return g
    raise AssertionError("no such guest")


def base(g: dict) -> str:
    return f"/nodes/{g['node']}/{g['type']}/{g['vmid']}"


@pytest.fixture
def slow_sim():
    with running_sim(nodes=2, guests=10, seed=3, task_seconds=0.4) as s:
        yield s


def test_task_runs_then_stops_ok_and_applies_its_effect(slow_sim: RunningSim) -> None:
    sim = slow_sim
    g = guest(sim, status="stopped")
    upid = ok(sim.request("POST", base(g) + "/status/start"))
    assert UPID.match(upid), upid
    assert upid.split(":")[5:8] == ["qmstart", str(g["vmid"]), "root@pam!pmcp-sim"]
    running = ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/status"))
    assert running["status"] == "running" and "exitstatus" not in running
    assert ok(sim.request("GET", base(g) + "/status/current"))["status"] == "stopped"
    done = wait(sim, g["node"], upid)
    assert done["exitstatus"] == "OK"
    assert {"upid", "node", "pid", "pstart", "starttime", "type", "id", "user"} <= set(done)
    assert ok(sim.request("GET", base(g) + "/status/current"))["status"] == "running"
    log = ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/log"))
    assert log[-1] == {"n": len(log), "t": "TASK OK"}
    listed = ok(sim.request("GET", f"/nodes/{g['node']}/tasks", params={"vmid": g["vmid"]}))
    assert listed[0]["upid"] == upid and listed[0]["status"] == "OK"
    assert any(t["upid"] == upid for t in ok(sim.request("GET", "/cluster/tasks")))


def test_injected_failure_ends_the_task_with_the_message_and_no_effect(sim: RunningSim) -> None:
    g = guest(sim, status="stopped")
    sim.state.fail_next("qmstart", "QEMU exited with code 1")
    upid = ok(sim.request("POST", base(g) + "/status/start"))
    done = wait(sim, g["node"], upid)
    assert done["exitstatus"] == "QEMU exited with code 1"
    assert ok(sim.request("GET", base(g) + "/status/current"))["status"] == "stopped"
    log = ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/log"))
    assert log[-1]["t"] == "TASK ERROR: QEMU exited with code 1"
    upid = ok(sim.request("POST", base(g) + "/status/start"))
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK", "only the next task fails"


def test_start_of_a_running_guest_fails_like_pve(sim: RunningSim) -> None:
    g = guest(sim, status="running")
    upid = ok(sim.request("POST", base(g) + "/status/start"))
    assert wait(sim, g["node"], upid)["exitstatus"] == f"VM {g['vmid']} already running"


def test_shutdown_and_lxc_power(sim: RunningSim) -> None:
    ct = guest(sim, kind="lxc", status="running")
    upid = ok(sim.request("POST", base(ct) + "/status/shutdown"))
    assert upid.split(":")[5] == "vzshutdown"
    assert wait(sim, ct["node"], upid)["exitstatus"] == "OK"
    assert ok(sim.request("GET", base(ct) + "/status/current"))["status"] == "stopped"
    status, body = sim.request("POST", base(ct) + "/status/shutdown")  # pve-container: an immediate 500
    assert (status, body["message"]) == (500, f"CT {ct['vmid']} not running\n")


def test_task_stop(slow_sim: RunningSim) -> None:
    sim = slow_sim
    g = guest(sim, status="stopped")
    upid = ok(sim.request("POST", base(g) + "/status/start"))
    ok(sim.request("DELETE", f"/nodes/{g['node']}/tasks/{upid}"))
    st = ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/status"))
    assert st["status"] == "stopped" and st["exitstatus"] != "OK"
    time.sleep(0.5)
    assert ok(sim.request("GET", base(g) + "/status/current"))["status"] == "stopped"


def test_vzdump_creates_a_backup_volume(sim: RunningSim) -> None:
    g = guest(sim)
    upid = ok(
        sim.request("POST", f"/nodes/{g['node']}/vzdump", params={"vmid": g["vmid"], "storage": "backup-nfs"})
    )
    assert upid.split(":")[5:7] == ["vzdump", str(g["vmid"])]
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    backups = ok(
        sim.request(
            "GET",
            f"/nodes/{g['node']}/storage/backup-nfs/content",
            params={"content": "backup", "vmid": g["vmid"]},
        )
    )
    newest = max(backups, key=lambda b: b["ctime"])
    assert re.match(
        rf"^backup-nfs:backup/vzdump-qemu-{g['vmid']}-\d{{4}}_\d\d_\d\d-\d\d_\d\d_\d\d\.vma\.zst$",
        newest["volid"],
    )
    assert newest["ctime"] >= int(time.time()) - 5 and newest["format"] == "vma.zst" and newest["size"] > 0
    log = [line["t"] for line in ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/log"))]
    assert any("creating vzdump archive" in t for t in log)
    # a local (per-node) storage holds it on that node only
    upid = ok(
        sim.request("POST", f"/nodes/{g['node']}/vzdump", params={"vmid": g["vmid"], "storage": "local"})
    )
    wait(sim, g["node"], upid)
    other = next(n for n in sim.state.world["nodes"] if n != g["node"])
    here = ok(sim.request("GET", f"/nodes/{g['node']}/storage/local/content", params={"content": "backup"}))
    there = ok(sim.request("GET", f"/nodes/{other}/storage/local/content", params={"content": "backup"}))
    assert any(b["vmid"] == g["vmid"] for b in here) and not any(b.get("vmid") == g["vmid"] for b in there)


def test_failed_vzdump_creates_nothing(sim: RunningSim) -> None:
    g = guest(sim)
    path = f"/nodes/{g['node']}/storage/backup-nfs/content"
    before = ok(sim.request("GET", path, params={"content": "backup"}))
    sim.state.fail_next("vzdump", "job failed with err -5 - Input/output error")
    upid = ok(
        sim.request("POST", f"/nodes/{g['node']}/vzdump", params={"vmid": g["vmid"], "storage": "backup-nfs"})
    )
    assert wait(sim, g["node"], upid)["exitstatus"].startswith("job failed")
    assert ok(sim.request("GET", path, params={"content": "backup"})) == before


def test_vzdump_to_a_storage_without_backup_content(sim: RunningSim) -> None:
    g = guest(sim)
    status, body = sim.request(
        "POST", f"/nodes/{g['node']}/vzdump", params={"vmid": g["vmid"], "storage": "local-lvm"}
    )
    assert status == 500 and "backups" in body["message"]


def test_backup_delete(sim: RunningSim) -> None:
    g = guest(sim)
    upid = ok(
        sim.request("POST", f"/nodes/{g['node']}/vzdump", params={"vmid": g["vmid"], "storage": "backup-nfs"})
    )
    wait(sim, g["node"], upid)
    path = f"/nodes/{g['node']}/storage/backup-nfs/content"
    vol = max(ok(sim.request("GET", path, params={"vmid": g["vmid"]})), key=lambda b: b["ctime"])["volid"]
    upid = ok(sim.request("DELETE", f"{path}/{vol}"))
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    assert vol not in {b["volid"] for b in ok(sim.request("GET", path))}


def test_snapshot_create_rollback_delete(sim: RunningSim) -> None:
    g = guest(sim, status="running")
    snaps = base(g) + "/snapshot"
    upid = ok(sim.request("POST", snaps, params={"snapname": "pre_upgrade", "description": "before"}))
    assert upid.split(":")[5] == "qmsnapshot"
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    listed = ok(sim.request("GET", snaps))
    assert listed[-1]["name"] == "current" and listed[-1]["parent"] == "pre_upgrade"
    assert any(s["name"] == "pre_upgrade" and s["description"] == "before" for s in listed)
    upid = ok(sim.request("POST", snaps, params={"snapname": "pre_upgrade"}))  # the worker dies: a task
    assert wait(sim, g["node"], upid)["exitstatus"] == "snapshot name 'pre_upgrade' already used"
    ok(sim.request("PUT", base(g) + "/config", params={"cores": 16}))
    upid = ok(sim.request("POST", f"{snaps}/pre_upgrade/rollback"))
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    assert ok(sim.request("GET", base(g) + "/config"))["cores"] != 16
    upid = ok(sim.request("DELETE", f"{snaps}/pre_upgrade"))
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    assert "pre_upgrade" not in {s["name"] for s in ok(sim.request("GET", snaps))}
    status, body = sim.request("DELETE", f"{snaps}/pre_upgrade")
    assert status == 500 and body["message"] == "snapshot 'pre_upgrade' does not exist\n"


def test_injected_errors_and_latency(sim: RunningSim) -> None:
    sim.state.inject_errors(503, 2)
    assert sim.request("GET", "/version")[0] == 503
    assert sim.request("GET", "/version")[0] == 503
    assert sim.request("GET", "/version")[0] == 200
    sim.state.inject_latency(0.2)
    t = time.monotonic()
    ok(sim.request("GET", "/version"))
    assert time.monotonic() - t >= 0.2
    sim.state.inject_latency(0)


def test_request_log_in_process_and_over_http(sim: RunningSim) -> None:
    sim.state.clear_requests()
    ok(sim.request("GET", "/nodes"))
    sim.request("GET", "/cluster/resources", params={"type": "vm"})
    assert sim.state.requests == [("GET", "/nodes"), ("GET", "/cluster/resources")]
    # /_sim/... lives beside /api2/json and needs the root credential
    from pmcp.sim.testing import call

    status, body = call(sim.url, "GET", "/_sim/requests", sim.root_token)
    assert status == 200 and ["GET", "/nodes"] in body["data"]
    assert call(sim.url, "GET", "/_sim/requests", "alice@pve!x=y")[0] == 401
    assert (
        call(sim.url, "POST", "/_sim/fail-next", sim.root_token, {"type": "qmreboot", "message": "boom"})[0]
        == 200
    )
    g = guest(sim, status="running")
    upid = ok(sim.request("POST", base(g) + "/status/reboot"))
    assert wait(sim, g["node"], upid)["exitstatus"] == "boom"
    assert call(sim.url, "POST", "/_sim/errors", sim.root_token, {"status": 502, "count": 1})[0] == 200
    assert sim.request("GET", "/version")[0] == 502
    assert call(sim.url, "DELETE", "/_sim/requests", sim.root_token)[0] == 200
    assert sim.state.requests == []
    assert call(sim.url, "GET", "/_sim/health", None) == (200, {"data": "ok"})


def test_clone_migrate_destroy(sim: RunningSim) -> None:
    g = guest(sim, status="stopped")
    newid = ok(sim.request("GET", "/cluster/nextid"))
    upid = ok(
        sim.request("POST", base(g) + "/clone", params={"newid": newid, "name": "cloned-vm", "pool": "lab"})
    )
    assert upid.split(":")[5] == "qmclone"
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    clone = {**g, "vmid": newid}
    assert ok(sim.request("GET", base(clone) + "/config"))["name"] == "cloned-vm"
    target = next(n for n in sim.state.world["nodes"] if n != g["node"])
    upid = ok(sim.request("POST", base(clone) + "/migrate", params={"target": target}))
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    moved = {**clone, "node": target}
    assert ok(sim.request("GET", base(moved) + "/status/current"))["status"] == "stopped"
    running = guest(sim, status="running")
    status, body = sim.request("DELETE", base(running))
    assert status == 500 and "is running" in body["message"]
    upid = ok(sim.request("DELETE", base(moved), params={"purge": 1}))
    assert wait(sim, target, upid)["exitstatus"] == "OK"
    assert sim.request("GET", base(moved) + "/config")[0] == 500
    assert str(newid) not in sim.state.world["guests"]


def test_firewall_rules_and_options(sim: RunningSim) -> None:
    rules = "/nodes/pve1/firewall/rules"
    ok(sim.request("POST", rules, params={"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "8443"}))
    ok(
        sim.request(
            "POST",
            rules,
            params={"type": "in", "action": "ACCEPT", "dport": "22", "proto": "tcp", "enable": 1},
        )
    )
    listed = ok(sim.request("GET", rules))
    assert [(r["pos"], r["dport"], r["enable"]) for r in listed[:2]] == [(0, "22", 1), (1, "8443", 0)]
    ok(sim.request("PUT", f"{rules}/1", params={"enable": 1, "comment": "pmcp"}))
    assert ok(sim.request("GET", f"{rules}/1"))["comment"] == "pmcp"
    ok(sim.request("DELETE", f"{rules}/1"))
    assert len(ok(sim.request("GET", rules))) == len(listed) - 1
    assert ok(sim.request("GET", "/cluster/firewall/options"))["enable"] == 0
    ok(sim.request("PUT", "/cluster/firewall/options", params={"enable": 1}))
    assert ok(sim.request("GET", "/cluster/firewall/options"))["enable"] == 1


def test_pools(sim: RunningSim) -> None:
    ok(sim.request("POST", "/pools", params={"poolid": "simtest", "comment": "t"}))
    g = guest(sim)
    ok(sim.request("PUT", "/pools", params={"poolid": "simtest", "vms": g["vmid"], "allow-move": 1}))
    pools = ok(sim.request("GET", "/pools", params={"poolid": "simtest"}))
    assert [m["vmid"] for m in pools[0]["members"]] == [g["vmid"]]
    assert ok(sim.request("GET", "/pools/simtest"))["members"][0]["id"] == f"qemu/{g['vmid']}"
    assert sim.request("DELETE", "/pools", params={"poolid": "simtest"})[0] == 500, "not empty"
    ok(sim.request("PUT", "/pools", params={"poolid": "simtest", "vms": g["vmid"], "delete": 1}))
    ok(sim.request("DELETE", "/pools", params={"poolid": "simtest"}))


def test_a_running_backup_locks_the_guest(slow_sim: RunningSim) -> None:
    sim = slow_sim
    g = guest(sim, status="stopped")
    backup = ok(
        sim.request("POST", f"/nodes/{g['node']}/vzdump", params={"vmid": g["vmid"], "storage": "local"})
    )
    assert ok(sim.request("GET", base(g) + "/status/current"))["lock"] == "backup"
    start = ok(sim.request("POST", base(g) + "/status/start"))
    assert wait(sim, g["node"], start)["exitstatus"] == "VM is locked (backup)"
    assert wait(sim, g["node"], backup)["exitstatus"] == "OK"
    assert "lock" not in ok(sim.request("GET", base(g) + "/status/current"))


def test_injected_warnings_still_apply_the_effect(sim: RunningSim) -> None:
    g = guest(sim, status="stopped")
    sim.state.fail_next("qmstart", "WARNINGS: 2")
    upid = ok(sim.request("POST", base(g) + "/status/start"))
    assert wait(sim, g["node"], upid)["exitstatus"] == "WARNINGS: 2"
    assert ok(sim.request("GET", base(g) + "/status/current"))["status"] == "running"
    log = ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/log"))
    assert log[-1]["t"] == "TASK WARNINGS: 2"
