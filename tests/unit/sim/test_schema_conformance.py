"""Every route the simulator serves exists in the official PVE 9.1 schema, and the shipped subset
is exactly what make_schema.py derives from it (so it cannot drift)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pmcp.sim import make_schema
from pmcp.sim.privileges import BUILTIN_ROLES, PRIVILEGES
from pmcp.sim.routes import all_routes
from pmcp.sim.schema import SUBSET_FILE

SCHEMA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "pve-api"


@cache
def official(version: str = "9.1") -> dict:
    path = SCHEMA_DIR / f"pve-{version}.json"
    assert path.exists(), f"official schema missing at {path}: put shared/pve-api beside the repository"
    return json.loads(path.read_text())


def test_every_served_route_exists_in_the_official_schema() -> None:
    endpoints = official()["endpoints"]
    served = all_routes()
    missing = [f"{m} {p}" for m, p in served if m not in endpoints.get(p, {})]
    assert not missing, f"served but not in pve-9.1.json: {missing}"
    total = official()["meta"]["endpoint_count"]
    print(
        f"\nsimulator coverage: {len(served)} of {total} PVE 9.1 endpoints ({100 * len(served) / total:.1f}%)"
    )
    assert len(served) >= 100


def test_the_endpoints_the_issue_names_are_served() -> None:
    served = set(all_routes())
    needed = [
        ("GET", "/version"),
        ("GET", "/cluster/status"),
        ("GET", "/cluster/resources"),
        ("GET", "/cluster/tasks"),
        ("GET", "/cluster/nextid"),
        ("GET", "/nodes"),
        ("GET", "/nodes/{node}/status"),
        ("GET", "/nodes/{node}/qemu"),
        ("GET", "/nodes/{node}/lxc"),
        ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/reset"),
        ("POST", "/nodes/{node}/lxc/{vmid}/status/resume"),
        ("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback"),
        ("DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}"),
        ("POST", "/nodes/{node}/vzdump"),
        ("GET", "/nodes/{node}/storage/{storage}/content"),
        ("GET", "/nodes/{node}/tasks/{upid}/log"),
        ("DELETE", "/nodes/{node}/tasks/{upid}"),
        ("GET", "/pools"),
        ("POST", "/nodes/{node}/firewall/rules"),
        ("PUT", "/cluster/firewall/options"),
        ("DELETE", "/access/roles/{roleid}"),
        ("POST", "/access/users/{userid}/token/{tokenid}"),
        ("PUT", "/access/acl"),
        ("GET", "/access/permissions"),
        ("PUT", "/access/password"),
    ]
    assert [n for n in needed if n not in served] == []


def test_shipped_subset_equals_what_make_schema_derives() -> None:
    assert SUBSET_FILE.read_text() == make_schema.render(official()), (
        "pmcp/sim/schema_subset.json is stale: run `python -m pmcp.sim.make_schema`"
    )


def test_privileges_are_pve9s_47() -> None:
    assert sorted(PRIVILEGES) == sorted(official()["privileges_referenced"])
    assert len(PRIVILEGES) == 47
    assert "VM.Monitor" not in PRIVILEGES
    assert set(BUILTIN_ROLES["Administrator"]) == set(PRIVILEGES)
    for privs in BUILTIN_ROLES.values():
        assert set(privs) <= set(PRIVILEGES)


def test_token_forbidden_endpoints_match_the_schema() -> None:
    subset = json.loads(SUBSET_FILE.read_text())["endpoints"]
    forbidden = {f"{m} {p}" for p, ms in subset.items() for m, info in ms.items() if not info["allowtoken"]}
    assert forbidden == {e for e in official()["meta"]["token_forbidden"] if e in forbidden}
    assert "PUT /access/password" in forbidden
