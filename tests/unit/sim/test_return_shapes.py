"""Every GET the simulator serves answers in the shape the official schema's ``returns`` describes:
required keys present, and the types and enums of the keys it describes right."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pmcp.sim.api.observe import agent_runs
from pmcp.sim.routes import all_routes
from pmcp.sim.testing import RunningSim
from tests.unit.sim.conftest import ok
from tests.unit.sim.test_schema_conformance import official


def check_shape(value: Any, shape: Any, where: str, problems: list[str]) -> None:
    if isinstance(shape, list):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value[:50]):
            check_shape(item, shape[0], f"{where}[{i}]", problems)
        return
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        keys = {k.rstrip("?"): k.endswith("?") for k in shape}
        for key, optional in keys.items():
            if not optional and key not in value:
                problems.append(f"{where}: required key '{key}' missing")
        for key, item in value.items():
            spec = shape.get(key, shape.get(key + "?"))
            if spec is None and (m := re.fullmatch(r"([a-z]+)\d+", key)):
                spec = shape.get(f"{m[1]}[n]", shape.get(f"{m[1]}[n]?"))
            if spec is not None:  # the schema's summaries leave out keys real PVE returns
                check_shape(item, spec, f"{where}.{key}", problems)
        return
    base, _, rest = str(shape).partition("(")
    base = base.split(":")[0].split("{")[0]
    ok_types = {
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (int, bool),
        "object": (dict,),
        "null": (type(None),),
        "array": (list,),
    }.get(base)
    if ok_types is None:
        return
    if not isinstance(value, ok_types) or (base == "integer" and isinstance(value, float)):
        problems.append(f"{where}: expected {shape}, got {value!r}")
    elif base == "boolean" and value not in (0, 1):
        problems.append(f"{where}: expected a boolean 0/1, got {value!r}")
    elif rest and base == "string" and value not in rest.rstrip(")").split("|"):
        problems.append(f"{where}: {value!r} not in {shape}")


@pytest.fixture(scope="module")
def concrete(sim: RunningSim) -> dict[str, str]:
    """A real value for each path parameter, taken from (and made in) the running simulator."""
    guests = sim.state.world["guests"].values()
    qemu = next(
        g
        for g in guests
        if g["type"] == "qemu"
        and g["snapshots"]
        and str(g["config"].get("agent", "0")).startswith("1")
        and agent_runs(g)  # so the agent endpoints answer (pmcp/sim/api/observe.py)
    )
    lxc = next(g for g in guests if g["type"] == "lxc" and g["node"] == qemu["node"])
    node = qemu["node"]
    upid = ok(sim.request("POST", f"/nodes/{node}/qemu/{qemu['vmid']}/status/reset"))
    ok(
        sim.request(
            "POST", f"/nodes/{node}/firewall/rules", params={"type": "in", "action": "ACCEPT", "dport": "22"}
        )
    )
    ok(
        sim.request(
            "POST",
            "/cluster/firewall/rules",
            params={"type": "in", "action": "DROP", "source": "10.9.0.0/16"},
        )
    )
    if not lxc["snapshots"]:
        snap = ok(
            sim.request("POST", f"/nodes/{node}/lxc/{lxc['vmid']}/snapshot", params={"snapname": "shape"})
        )
        sim.state.engine.complete(snap)
    vol = next(v for v in sim.state.world["content"]["backup-nfs"] if v["content"] == "backup")["volid"]
    ok(sim.request("POST", "/cluster/ha/resources", params={"sid": f"ct:{lxc['vmid']}", "state": "started"}))
    with sim.state.lock:  # what a fresh world leaves empty or absent (pmcp/sim/api/infra.py)
        world = sim.state.world
        world["ceph"] = {"fsid": "0f0e", "health": {"status": "HEALTH_OK", "checks": {}}}
        world["replication"] = [{"id": f"{qemu['vmid']}-0", "guest": qemu["vmid"], "jobnum": 0,
                                 "target": "pve9", "type": "local", "schedule": "*/15"}]  # fmt: skip
        world["sdn"] = {"zones": [{"zone": "lab", "type": "simple"}],
                        "vnets": [{"vnet": "labnet", "zone": "lab", "type": "vnet", "tag": 10}]}  # fmt: skip
        update = {"Package": "pve-manager", "Version": "9.1.2", "OldVersion": "9.1.1", "Arch": "amd64"}
        update |= {"Description": "PVE", "Origin": "Proxmox", "Priority": "optional", "Section": "admin"}
        world["apt_updates"] = {node: [update | {"Title": "PVE"}]}
        qemu["firewall_rules"] = [
            {"type": "in", "action": "ACCEPT", "dport": "443", "proto": "tcp", "enable": 1}
        ]
    return {
        "sid": f"ct:{lxc['vmid']}",
        "node": node,
        "qemu": str(qemu["vmid"]),
        "lxc": str(lxc["vmid"]),
        "qemu_snap": qemu["snapshots"][0]["name"],
        "lxc_snap": lxc["snapshots"][0]["name"],
        "storage": "backup-nfs",
        "volume": vol,
        "upid": upid,
        "poolid": "lab",
        "roleid": "Administrator",
        "userid": "alice@pve",
        "tokenid": "pmcp-sim",
        "groupid": "admins",
        "pos": "0",
    }


def fill(path: str, c: dict[str, str]) -> str:
    kind = "lxc" if "/lxc/" in path else "qemu"
    values = {**c, "vmid": c[kind], "snapname": c[f"{kind}_snap"]}
    if "/token/" in path:
        values["userid"] = "root@pam"
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


GETS = [p for m, p in all_routes() if m == "GET"]
REQUIRED = {p: {"timeframe": "day"} for p in GETS if p.endswith("/rrddata")} | {
    p: {"feature": "snapshot"} for p in GETS if p.endswith("/feature")
}


@pytest.mark.parametrize("template", GETS)
def test_get_answers_in_the_schema_shape(sim: RunningSim, concrete: dict[str, str], template: str) -> None:
    path = fill(template, concrete)
    data = ok(sim.request("GET", path, params=REQUIRED.get(template)))
    problems: list[str] = []
    check_shape(data, official()["endpoints"][template]["GET"]["returns"], path, problems)
    assert not problems, "\n".join(problems[:20])
