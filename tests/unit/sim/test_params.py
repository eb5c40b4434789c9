"""Parameter verification from the schema, and PVE's answers for unknown paths and objects."""

from __future__ import annotations

import pytest

from pmcp.sim.testing import RunningSim


def first_vm(sim: RunningSim) -> dict:
    return next(g for g in sim.state.world["guests"].values() if g["type"] == "qemu")


@pytest.mark.parametrize(
    ("method", "path", "params", "param", "message"),
    [
        (
            "GET",
            "/nodes/pve1/qemu/abc/status/current",
            {},
            "vmid",
            "type check ('integer') failed - got 'abc'",
        ),
        ("GET", "/nodes/pve1/qemu/99/status/current", {}, "vmid", "value must have a minimum value of 100"),
        (
            "POST",
            "/nodes/pve1/qemu/1000000000/status/start",
            {},
            "vmid",
            "value must have a maximum value of 999999999",
        ),
        (
            "GET",
            "/nodes/bad_node!/qemu",
            {},
            "node",
            "invalid format - value does not look like a valid node name\n",
        ),
        (
            "POST",
            "/nodes/pve1/qemu/100/snapshot",
            {"snapname": "1st"},
            "snapname",
            "invalid format - invalid configuration ID '1st'\n",
        ),
        (
            "POST",
            "/nodes/pve1/qemu/100/snapshot",
            {"snapname": "a" * 41},
            "snapname",
            "value may only be 40 characters long",
        ),
        (
            "POST",
            "/nodes/pve1/qemu/100/snapshot",
            {},
            "snapname",
            "property is missing and it is not optional",
        ),
        (
            "GET",
            "/cluster/resources",
            {"type": "disk"},
            "type",
            "value 'disk' does not have a value in the enumeration 'vm, storage, node, sdn'",
        ),
        (
            "GET",
            "/cluster/resources",
            {"bogus": "1"},
            "bogus",
            "property is not defined in schema and the schema does not allow additional properties",
        ),
        (
            "POST",
            "/nodes/pve1/qemu/100/status/start",
            {"skiplock": "maybe"},
            "skiplock",
            "type check ('boolean') failed - got 'maybe'",
        ),
        (
            "POST",
            "/access/users/alice@pve/token/9tok",
            {},
            "tokenid",
            "value does not match the regex pattern",
        ),
    ],
)
def test_parameter_errors(
    sim: RunningSim, method: str, path: str, params: dict, param: str, message: str
) -> None:
    status, body = sim.request(method, path, params=params)
    assert status == 400, body
    assert body["message"] == "Parameter verification failed.\n"
    assert body["data"] is None
    assert body["errors"][param] == message


def test_unknown_path_is_501(sim: RunningSim) -> None:
    status, body = sim.request("GET", "/foo")
    assert (status, body) == (501, {"data": None, "message": "Method 'GET /foo' not implemented\n"})
    assert sim.request("PATCH" if False else "POST", "/version")[0] == 501


def test_missing_guest_and_node(sim: RunningSim) -> None:
    status, body = sim.request("GET", "/nodes/pve1/qemu/999999/config")
    assert status == 500
    assert body["message"] == "Configuration file 'nodes/pve1/qemu-server/999999.conf' does not exist\n"
    status, body = sim.request("GET", "/nodes/pve99/qemu")
    assert status == 500 and "pve99" in body["message"]


def test_guest_on_another_node_is_not_found_there(sim: RunningSim) -> None:
    g = first_vm(sim)
    other = next(n for n in sim.state.world["nodes"] if n != g["node"])
    status, _ = sim.request("GET", f"/nodes/{other}/qemu/{g['vmid']}/config")
    assert status == 500


def test_config_update_and_digest(sim: RunningSim) -> None:
    g = first_vm(sim)
    path = f"/nodes/{g['node']}/qemu/{g['vmid']}/config"
    _, cfg = sim.request("GET", path)
    digest = cfg["data"]["digest"]
    assert sim.request("PUT", path, params={"name": "renamed-vm", "digest": digest})[0] == 200
    _, cfg = sim.request("GET", path)
    assert cfg["data"]["name"] == "renamed-vm" and cfg["data"]["digest"] != digest
    status, body = sim.request("PUT", path, params={"name": "again", "digest": digest})
    assert status == 500 and "file changed by other user" in body["message"]
    assert sim.request("PUT", path, params={"net5": "virtio,bridge=vmbr0"})[0] == 200, (
        "indexed net[n] parameters"
    )
    assert sim.request("PUT", path, params={"delete": "net5"})[0] == 200
    assert "net5" not in sim.request("GET", path)[1]["data"]


def test_nextid(sim: RunningSim) -> None:
    _, body = sim.request("GET", "/cluster/nextid")
    assert str(body["data"]) not in sim.state.world["guests"]
    status, body = sim.request("GET", "/cluster/nextid", params={"vmid": 100})
    assert status == 400 and body["errors"] == {"vmid": "VM 100 already exists"}


def test_a_parameter_that_requires_another(sim: RunningSim) -> None:
    status, body = sim.request("PUT", "/access/users/alice@pve", params={"append": 1})
    assert status == 400 and body["errors"] == {
        "groups": "missing property - 'append' requires this property"
    }


def test_booleans_are_1_or_0_only(sim: RunningSim) -> None:
    """pve-common JSONSchema.pm check_type: '1' or '0' (or a JSON boolean); 'true' is refused."""
    g = first_vm(sim)
    path = f"/nodes/{g['node']}/qemu/{g['vmid']}/status/shutdown"
    for word in ("true", "yes", "on", "false"):
        status, body = sim.request("POST", path, params={"forceStop": word})
        assert (status, body.get("errors")) == (
            400,
            {"forceStop": f"type check ('boolean') failed - got '{word}'"},
        )


def test_configids_are_case_insensitive_and_take_hyphens(sim: RunningSim) -> None:
    """pve-common JSONSchema.pm: $CONFIGID_RE = qr/[a-z][a-z0-9_-]+/i (snapshot names)."""
    g = first_vm(sim)
    snaps = f"/nodes/{g['node']}/qemu/{g['vmid']}/snapshot"
    for name in ("pre-upgrade", "Pre_Upgrade-2"):
        status, body = sim.request("POST", snaps, params={"snapname": name})
        assert status == 200, body
    status, body = sim.request("POST", snaps, params={"snapname": "9lives"})
    assert status == 400 and "invalid configuration ID '9lives'" in body["errors"]["snapname"]


def test_permission_is_checked_before_parameters(sim: RunningSim) -> None:
    """pve-manager PVE/HTTPServer.pm rest_handler: token allowed -> permissions (403) -> the
    handler verifies parameters (400)."""
    from tests.unit.sim.conftest import make_identity

    who = make_identity(sim, "order@pve", role="OrderAudit", privs="VM.Audit")
    g = first_vm(sim)
    path = f"/nodes/{g['node']}/qemu/{g['vmid']}/status/shutdown"
    status, body = sim.request("POST", path, token=who.token, params={"forceStop": "maybe"})
    assert status == 403 and body["message"].startswith("Permission check failed")
    status, _ = sim.request("POST", path, params={"forceStop": "maybe"})
    assert status == 400
