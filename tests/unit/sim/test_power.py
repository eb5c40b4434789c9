"""Power actions as qemu-server and pve-container do them: which refusals are an immediate HTTP 500
(the API handler's die) and which a failed task (the worker's die), the task types, LXC suspend as a
CRIU checkpoint, and a paused VM's status in /cluster/resources (its qmpstatus)."""

from __future__ import annotations

import time

import pytest

from pmcp.sim.testing import RunningSim, running_sim
from tests.unit.sim.conftest import ok
from tests.unit.sim.test_tasks import base, wait


@pytest.fixture(scope="module")
def sim():
    with running_sim(nodes=2, guests=40, seed=11, task_seconds=0.05) as s:
        yield s


TAKEN: set[int] = set()


def fresh(sim: RunningSim, kind: str, status: str, take: bool = True) -> dict:
    """A guest no other test in this module changed (a test that changes one takes it)."""
    for g in sim.state.world["guests"].values():
        if (
            g["type"] == kind
            and g["status"] == status
            and not g["template"]
            and not g.get("lock")
            and g["vmid"] not in TAKEN
        ):
            if take:
                TAKEN.add(g["vmid"])
            return g
    raise AssertionError(f"no unused {status} {kind}")


def act(sim: RunningSim, g: dict, action: str, **params) -> tuple[int, dict]:
    return sim.request("POST", f"{base(g)}/status/{action}", params=params or None)


def run_task(sim: RunningSim, g: dict, action: str, **params) -> dict:
    return wait(sim, g["node"], ok(act(sim, g, action, **params)))


def status(sim: RunningSim, g: dict) -> dict:
    return ok(sim.request("GET", base(g) + "/status/current"))


def resource(sim: RunningSim, g: dict) -> dict:
    items = ok(sim.request("GET", "/cluster/resources", params={"type": "vm"}))
    return next(i for i in items if i["vmid"] == g["vmid"])


@pytest.mark.parametrize(
    "kind,state,action,message",
    [
        # qemu-server src/PVE/API2/Qemu.pm: vm_reset, vm_reboot, vm_suspend, vm_resume check first
        ("qemu", "stopped", "reset", "VM {vmid} not running"),
        ("qemu", "stopped", "reboot", "VM {vmid} not running"),
        ("qemu", "stopped", "suspend", "VM {vmid} not running"),
        ("qemu", "stopped", "resume", "VM {vmid} not running"),
        # pve-container src/PVE/API2/LXC/Status.pm
        ("lxc", "running", "start", "CT {vmid} already running"),
        ("lxc", "running", "resume", "CT {vmid} already running"),
        ("lxc", "stopped", "stop", "CT {vmid} not running"),
        ("lxc", "stopped", "shutdown", "CT {vmid} not running"),
        ("lxc", "stopped", "suspend", "CT {vmid} not running"),
        ("lxc", "stopped", "reboot", "VM {vmid} not running"),  # sic: Status.pm vm_reboot says "VM"
    ],
)
def test_refusals_that_are_an_immediate_500(
    sim: RunningSim, kind: str, state: str, action: str, message: str
) -> None:
    g = fresh(sim, kind, state, take=False)
    code, body = act(sim, g, action)
    assert (code, body["message"]) == (500, message.format(vmid=g["vmid"]) + "\n")
    assert status(sim, g)["status"] == state


def test_qemu_start_of_a_running_vm_is_a_failed_task_and_stop_shutdown_of_a_stopped_one_ok(
    sim: RunningSim,
) -> None:
    running = fresh(sim, "qemu", "running")
    assert run_task(sim, running, "start")["exitstatus"] == f"VM {running['vmid']} already running"
    stopped = fresh(sim, "qemu", "stopped")
    # QemuServer.pm _do_vm_stop: "return if !$pid" -- nothing to stop is success
    assert run_task(sim, stopped, "shutdown")["exitstatus"] == "OK"
    assert run_task(sim, stopped, "stop")["exitstatus"] == "OK"
    assert status(sim, stopped)["status"] == "stopped"


def test_qemu_pause_is_qmpause_and_shows_as_paused_in_cluster_resources(sim: RunningSim) -> None:
    g = fresh(sim, "qemu", "running")
    upid = ok(act(sim, g, "suspend"))
    assert upid.split(":")[5] == "qmpause"
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    st = status(sim, g)
    assert (st["status"], st["qmpstatus"]) == ("running", "paused")
    assert resource(sim, g)["status"] == "paused"  # pvestatd: $d->{qmpstatus} || $d->{status}
    # vm_shutdown and vm_reboot refuse a paused VM unless forceStop (then: a stop, with a warning)
    for action in ("shutdown", "reboot"):
        code, body = act(sim, g, action)
        assert (code, body["message"]) == (500, "VM is paused - cannot shutdown\n")
    assert run_task(sim, g, "resume")["exitstatus"] == "OK"
    assert resource(sim, g)["status"] == "running"
    assert run_task(sim, g, "resume")["exitstatus"] == "OK", "vm_resume of a running VM: job done"
    assert run_task(sim, g, "suspend")["exitstatus"] == "OK"
    done = run_task(sim, g, "shutdown", forceStop=1)
    assert done["exitstatus"] == "WARNINGS: 1" and status(sim, g)["status"] == "stopped"


def test_lxc_suspend_is_a_checkpoint_that_leaves_the_ct_stopped(sim: RunningSim) -> None:
    g = fresh(sim, "lxc", "running")
    upid = ok(act(sim, g, "suspend"))
    assert upid.split(":")[5] == "vzsuspend"
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    assert status(sim, g)["status"] == "stopped" and resource(sim, g)["status"] == "stopped"
    assert run_task(sim, g, "resume")["exitstatus"] == "OK"
    assert status(sim, g)["status"] == "running"
    other = fresh(sim, "lxc", "stopped")  # nothing to restore: lxc-checkpoint -r fails in the task
    assert "lxc-checkpoint" in run_task(sim, other, "resume")["exitstatus"]


def test_starting_a_template_is_a_failed_task(sim: RunningSim) -> None:
    g = next(g for g in sim.state.world["guests"].values() if g["template"] and g["type"] == "qemu")
    assert run_task(sim, g, "start")["exitstatus"] == "you can't start a vm if it's a template"


def test_snapshot_reserved_names_are_refused_at_once(sim: RunningSim) -> None:
    vm, ct = fresh(sim, "qemu", "stopped", take=False), fresh(sim, "lxc", "stopped", take=False)
    for g, name in ((vm, "current"), (vm, "Pending"), (ct, "vzdump")):
        code, body = sim.request("POST", base(g) + "/snapshot", params={"snapname": name})
        assert (code, body["message"]) == (500, f"unable to use snapshot name '{name}' (reserved name)\n")


def test_ha_managed_start_and_stop_are_requests_to_the_ha_manager(sim: RunningSim) -> None:
    """qemu-server Qemu.pm vm_start/vm_stop: an HA-managed guest gets a hastart/hastop task that
    only queues the request; the HA stack's own qmstart/qmstop (by root@pam) follows."""
    g = fresh(sim, "qemu", "stopped")
    ok(sim.request("POST", "/cluster/ha/resources", params={"sid": f"vm:{g['vmid']}", "state": "stopped"}))
    upid = ok(act(sim, g, "start"))
    assert upid.split(":")[5] == "hastart"
    assert wait(sim, g["node"], upid)["exitstatus"] == "OK"
    log = ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/log"))
    assert log[0]["t"] == f"Requesting HA start for VM {g['vmid']}"
    follow = next(
        t for t in sim.state.world["tasks"].values() if t["type"] == "qmstart" and t["id"] == str(g["vmid"])
    )
    assert follow["user"] == "root@pam"
    wait(sim, g["node"], follow["upid"])
    st = status(sim, g)
    assert st["status"] == "running" and st["ha"] == {"managed": 1, "state": "started"}
    assert resource(sim, g)["hastate"] == "started"
    upid = ok(act(sim, g, "stop"))
    assert upid.split(":")[5] == "hastop" and wait(sim, g["node"], upid)["exitstatus"] == "OK"
    for _ in range(100):
        if status(sim, g)["status"] == "stopped":
            break
        time.sleep(0.02)
    assert status(sim, g)["status"] == "stopped" and resource(sim, g)["hastate"] == "stopped"
