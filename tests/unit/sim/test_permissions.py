"""Authorization as PVE does it: roles, ACL paths and propagation, privilege-separated tokens,
token-forbidden endpoints, root@pam protection, and PVE's wording."""

from __future__ import annotations

import itertools
import time

import pytest

from pmcp.sim.testing import RunningSim
from tests.unit.sim.conftest import make_identity, ok

_ids = itertools.count(1)


def uid() -> str:
    return f"perm{next(_ids)}@pve"


def a_vm(sim: RunningSim, **want: object) -> dict:
    for g in sim.state.world["guests"].values():
        if g["type"] == "qemu" and not g["template"] and all(g.get(k) == v for k, v in want.items()):
            return g
    raise AssertionError(f"no guest with {want}")


def start_path(g: dict) -> str:
    return f"/nodes/{g['node']}/qemu/{g['vmid']}/status/start"


ROLE_PRIVS = {
    "SimAudit": "VM.Audit,Sys.Audit,Datastore.Audit",
    "SimPower": "VM.Audit,VM.PowerMgmt",
    "SimUserAdmin": "User.Modify,Sys.Audit",
}


@pytest.mark.parametrize(
    ("user_role", "token_role", "privsep", "expected"),
    [
        # the user lacks VM.PowerMgmt: refused even though the token has it (intersection)
        ("SimAudit", "SimPower", 1, 403),
        # the token lacks it while the user has it: refused too
        ("SimPower", "SimAudit", 1, 403),
        # both have it
        ("SimPower", "SimPower", 1, 200),
        # not privilege-separated: the token is its user
        ("SimPower", None, 0, 200),
        ("SimAudit", None, 0, 403),
    ],
)
def test_privsep_token_gets_the_intersection(
    sim: RunningSim, user_role: str, token_role: str | None, privsep: int, expected: int
) -> None:
    for role, privs in ROLE_PRIVS.items():
        if role not in sim.state.world["roles"]:
            ok(sim.request("POST", "/access/roles", params={"roleid": role, "privs": privs}))
    who = make_identity(sim, uid(), role=user_role, token_role=token_role, privsep=privsep)
    g = a_vm(sim, status="stopped")
    status, body = sim.request("POST", start_path(g), token=who.token)
    assert status == expected, body
    if expected == 403:
        assert body == {
            "data": None,
            "message": f"Permission check failed (/vms/{g['vmid']}, VM.PowerMgmt)\n",
        }


def test_password_change_with_a_token_is_refused_before_any_check(sim: RunningSim) -> None:
    status, body = sim.request(
        "PUT", "/access/password", params={"userid": "root@pam", "password": "secret123"}
    )
    assert status == 403
    assert "not available with API token" in body["message"]
    who = make_identity(sim, uid(), role="SimAudit", privs=ROLE_PRIVS["SimAudit"])
    userid = who.userid
    status, body = sim.request(
        "PUT", "/access/password", token=who.token, params={"userid": userid, "password": "x"}
    )
    assert status == 403, "allowtoken=false is checked before parameters and permissions"


@pytest.mark.parametrize(
    ("acl_path", "expected"),
    [
        (None, 403),  # no User.Modify anywhere
        ("/access/groups/admins", 403),  # a group root@pam is not in does not help
        ("/access/groups", 200),  # only User.Modify on /access/groups itself can modify root@pam
    ],
)
def test_root_pam_is_modifiable_only_with_user_modify_on_access_groups(
    sim: RunningSim, acl_path: str | None, expected: int
) -> None:
    who = make_identity(
        sim,
        uid(),
        role="SimUserAdmin",
        privs=ROLE_PRIVS["SimUserAdmin"],
        user_acl=acl_path,
        token_acl=acl_path,
    )
    status, body = sim.request(
        "PUT", "/access/users/root@pam", token=who.token, params={"comment": "changed"}
    )
    assert status == expected, body
    if expected == 403:
        assert body["message"].startswith("Permission check failed")


def test_user_modify_on_a_group_covers_its_members(sim: RunningSim) -> None:
    who = make_identity(
        sim, uid(), role="SimUserAdmin", privs=ROLE_PRIVS["SimUserAdmin"], user_acl="/access/groups/admins",
        token_acl="/access/groups/admins",
    )  # fmt: skip
    status, body = sim.request("PUT", "/access/users/alice@pve", token=who.token, params={"comment": "ok"})
    assert status == 200, body


@pytest.mark.parametrize(
    "header_token",
    [
        "root@pam!pmcp-sim=wrong-secret",
        "nobody@pve!t=00000000-0000-0000-0000-000000000000",
        "root@pam!nosuchtoken=00000000-0000-4000-8000-000000000000",
        "garbage",
    ],
)
def test_bad_token_is_401(sim: RunningSim, header_token: str) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        sim.api_url + "/version", headers={"Authorization": f"PVEAPIToken={header_token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    # pve-http-server APIServer/AnyEvent.pm: HTTP::Response->new(401, $err) -- no body at all
    assert (err.value.code, err.value.reason, err.value.read()) == (401, "Authentication failed!", b"")


def test_no_credentials_is_401(sim: RunningSim) -> None:
    from pmcp.sim.testing import call

    status, _ = call(sim.api_url, "GET", "/nodes", None)
    assert status == 401


@pytest.mark.parametrize(
    ("acls", "vm_expected", "other_expected"),
    [
        ([("/vms", 0)], 403, 403),  # not propagated: /vms itself only
        ([("/vms", 1)], 200, 200),  # propagated down to every guest
        ([("/vms/{vmid}", 1)], 200, 403),  # one guest only
    ],
)
def test_acl_propagation(sim: RunningSim, acls: list, vm_expected: int, other_expected: int) -> None:
    g = a_vm(sim)
    other = next(
        x for x in sim.state.world["guests"].values() if x["vmid"] != g["vmid"] and x["type"] == "qemu"
    )
    who = make_identity(sim, uid(), privsep=0)
    for path, propagate in acls:
        acl = {"path": path.format(vmid=g["vmid"]), "roles": "PVEAuditor", "users": who.userid}
        ok(sim.request("PUT", "/access/acl", params={**acl, "propagate": propagate}))
    for guest, expected in ((g, vm_expected), (other, other_expected)):
        status, body = sim.request(
            "GET", f"/nodes/{guest['node']}/qemu/{guest['vmid']}/status/current", token=who.token
        )
        assert status == expected, (guest["vmid"], body)


def test_more_specific_path_overrides_and_noaccess_removes(sim: RunningSim) -> None:
    g = a_vm(sim, pool=None)
    who = make_identity(sim, uid(), privsep=0)
    ok(sim.request("PUT", "/access/acl", params={"path": "/", "roles": "PVEAuditor", "users": who.userid}))
    ok(
        sim.request(
            "PUT",
            "/access/acl",
            params={"path": f"/vms/{g['vmid']}", "roles": "NoAccess", "users": who.userid},
        )
    )
    status, body = sim.request("GET", f"/nodes/{g['node']}/qemu/{g['vmid']}/config", token=who.token)
    assert status == 403
    assert body["message"] == f"Permission check failed (/vms/{g['vmid']}, VM.Audit)\n"
    vms = ok(sim.request("GET", "/cluster/resources", token=who.token, params={"type": "vm"}))
    assert g["vmid"] not in {v["vmid"] for v in vms}
    assert len(vms) == len(sim.state.world["guests"]) - 1


def test_pool_acl_reaches_the_pools_guests(sim: RunningSim) -> None:
    pooled = [g for g in sim.state.world["guests"].values() if g.get("pool") == "lab"]
    assert pooled
    who = make_identity(sim, uid(), privsep=0)
    ok(
        sim.request(
            "PUT", "/access/acl", params={"path": "/pool/lab", "roles": "PVEAuditor", "users": who.userid}
        )
    )
    vms = ok(sim.request("GET", "/cluster/resources", token=who.token, params={"type": "vm"}))
    assert {v["vmid"] for v in vms} == {g["vmid"] for g in pooled}


def test_a_guests_pool_is_shown_only_with_pool_audit(sim: RunningSim) -> None:
    """pve-manager PVE/API2/Cluster.pm resources deletes `pool` from a guest's entry unless the caller
    holds Pool.Audit on /pool/NAME (pmcp's per-client pool scope reads it there)."""
    pooled = {g["vmid"] for g in sim.state.world["guests"].values() if g.get("pool") == "lab"}
    who = make_identity(sim, uid(), role="SimAudit", privs=ROLE_PRIVS["SimAudit"], token_acl="/vms")
    vms = ok(sim.request("GET", "/cluster/resources", token=who.token, params={"type": "vm"}))
    assert pooled <= {v["vmid"] for v in vms} and not any("pool" in v for v in vms)
    _acl(sim, "/pool/lab", "PVEAuditor", users=who.userid)
    _acl(sim, "/pool/lab", "PVEAuditor", tokens=f"{who.userid}!tok")
    vms = ok(sim.request("GET", "/cluster/resources", token=who.token, params={"type": "vm"}))
    assert {v["vmid"] for v in vms if v.get("pool") == "lab"} == pooled
    assert not any(v.get("pool") not in (None, "lab") for v in vms)


def _acl(sim: RunningSim, path: str, role: str, **who: str) -> None:
    ok(sim.request("PUT", "/access/acl", params={"path": path, "roles": role, **who}))


def _vm_config(sim: RunningSim, g: dict, token: str) -> int:
    return sim.request("GET", f"/nodes/{g['node']}/qemu/{g['vmid']}/config", token=token)[0]


def test_noaccess_on_a_guest_is_not_trumped_by_its_pools_acl(sim: RunningSim) -> None:
    """PVE/RPCEnvironment.pm $compile_acl_path: "NoAccess must not be trumped by pool ACLs"."""
    g = a_vm(sim, pool="lab")
    who = make_identity(sim, uid(), privsep=1)
    tok = f"{who.userid}!tok"
    for kind, name in (("users", who.userid), ("tokens", tok)):
        _acl(sim, "/pool/lab", "PVEAuditor", **{kind: name})
    assert _vm_config(sim, g, who.token) == 200
    _acl(sim, f"/vms/{g['vmid']}", "NoAccess", tokens=tok)
    assert _vm_config(sim, g, who.token) == 403
    perms = ok(sim.request("GET", "/access/permissions", token=who.token))
    assert f"/vms/{g['vmid']}" not in perms
    assert any(p.startswith("/vms/") for p in perms)  # the pool's other guests (pool member paths)


def test_a_pools_noaccess_trumps_the_guests_own_acl(sim: RunningSim) -> None:
    """PVE/RPCEnvironment.pm $compile_acl_path: "but pool ACL NoAccess trumps regular ACL"."""
    g = a_vm(sim, pool="lab")
    who = make_identity(sim, uid(), privsep=0)
    _acl(sim, "/vms", "PVEAuditor", users=who.userid)
    assert _vm_config(sim, g, who.token) == 200
    _acl(sim, "/pool/lab", "NoAccess", users=who.userid)
    assert _vm_config(sim, g, who.token) == 403
    assert _vm_config(sim, a_vm(sim, pool=None), who.token) == 200


def test_token_and_user_are_intersected_after_pool_roles_are_merged(sim: RunningSim) -> None:
    """The user holds VM.Audit through /vms, the token through the guest's pool: PVE merges pool roles
    into each side first (RPCEnvironment.pm $compile_acl_path), then intersects: allowed."""
    g = a_vm(sim, pool="lab")
    who = make_identity(sim, uid(), privsep=1)
    _acl(sim, "/vms", "PVEAuditor", users=who.userid)
    _acl(sim, "/pool/lab", "PVEAuditor", tokens=f"{who.userid}!tok")
    assert _vm_config(sim, g, who.token) == 200
    assert _vm_config(sim, a_vm(sim, pool=None), who.token) == 403


def test_a_pools_storage_gets_the_pools_roles(sim: RunningSim) -> None:
    """RPCEnvironment.pm $compile_acl_path: pool roles apply to /storage/ID members too."""
    sid = "backup-nfs"
    ok(sim.request("PUT", "/pools", params={"poolid": "lab", "storage": sid}))
    who = make_identity(sim, uid(), privsep=0)
    _acl(sim, "/pool/lab", "PVEAuditor", users=who.userid)
    node = next(iter(sim.state.world["nodes"]))
    status, _ = sim.request("GET", f"/nodes/{node}/storage/{sid}/content", token=who.token)
    assert status == 200
    perms = ok(sim.request("GET", "/access/permissions", token=who.token))
    assert "Datastore.Audit" in perms[f"/storage/{sid}"]


def test_token_never_exceeds_its_own_acl(sim: RunningSim) -> None:
    g = a_vm(sim)
    who = make_identity(
        sim, uid(), role="SimAudit", privs=ROLE_PRIVS["SimAudit"], token_acl=f"/vms/{g['vmid']}"
    )
    vms = ok(sim.request("GET", "/cluster/resources", token=who.token, params={"type": "vm"}))
    assert [v["vmid"] for v in vms] == [g["vmid"]]
    perms = ok(sim.request("GET", "/access/permissions", token=who.token))
    assert set(perms) == {f"/vms/{g['vmid']}"}
    assert set(perms[f"/vms/{g['vmid']}"]) == {"VM.Audit", "Sys.Audit", "Datastore.Audit"}


def test_permissions_of_others_need_sys_audit_on_access(sim: RunningSim) -> None:
    who = make_identity(sim, uid(), role="SimPower", privs=ROLE_PRIVS["SimPower"])
    status, body = sim.request("GET", "/access/permissions", token=who.token, params={"userid": "root@pam"})
    assert status == 403
    assert body["message"] == "Permission check failed (/access, Sys.Audit)\n"
    mine = ok(
        sim.request("GET", "/access/permissions", token=who.token, params={"userid": f"{who.userid}!tok"})
    )
    assert "VM.PowerMgmt" in mine["/"]


def test_administrator_lists_every_valid_privilege(sim: RunningSim) -> None:
    privs = ok(sim.request("GET", "/access/roles/Administrator"))
    assert len(privs) == 47
    assert "VM.GuestAgent.Audit" in privs and "VM.Monitor" not in privs


@pytest.mark.parametrize(
    ("roleid", "privs", "status", "needle"),
    [
        ("SimBadPriv", "VM.Audit,VM.Monitor", 400, "invalid privilege 'VM.Monitor'"),
        ("PVEMine", "VM.Audit", 400, "(case-insensitive) 'PVE' namespace"),
        ("pveMine", "VM.Audit", 400, "(case-insensitive) 'PVE' namespace"),
        ("Administrator", "VM.Audit", 500, "already exists"),
    ],
)
def test_role_creation_errors(sim: RunningSim, roleid: str, privs: str, status: int, needle: str) -> None:
    got, body = sim.request("POST", "/access/roles", params={"roleid": roleid, "privs": privs})
    assert got == status
    assert needle in body["message"] + str(body.get("errors"))


def test_role_lifecycle_and_its_acls_go_with_it(sim: RunningSim) -> None:
    ok(sim.request("POST", "/access/roles", params={"roleid": "SimTmp", "privs": "VM.Audit"}))
    ok(sim.request("PUT", "/access/roles/SimTmp", params={"privs": "Sys.Audit", "append": 1}))
    assert ok(sim.request("GET", "/access/roles/SimTmp")) == {"Sys.Audit": 1, "VM.Audit": 1}
    ok(sim.request("PUT", "/access/acl", params={"path": "/vms", "roles": "SimTmp", "users": "alice@pve"}))
    acl = ok(sim.request("GET", "/access/acl"))
    assert {"path": "/vms", "type": "user", "ugid": "alice@pve", "roleid": "SimTmp", "propagate": 1} in acl
    ok(sim.request("DELETE", "/access/roles/SimTmp"))
    # AccessControl.pm parse_user_config: "ignore invalid acl role" -- the entry is gone
    assert not [a for a in ok(sim.request("GET", "/access/acl")) if a["roleid"] == "SimTmp"]


def test_acls_go_with_their_user_and_token(sim: RunningSim) -> None:
    who = make_identity(sim, uid(), role="SimAudit", privs=ROLE_PRIVS["SimAudit"])
    ok(sim.request("DELETE", f"/access/users/{who.userid}"))
    assert not [a for a in ok(sim.request("GET", "/access/acl")) if a["ugid"].startswith(who.userid)]


def test_token_secret_is_shown_once(sim: RunningSim) -> None:
    userid = uid()
    ok(sim.request("POST", "/access/users", params={"userid": userid, "comment": "x"}))
    created = ok(
        sim.request("POST", f"/access/users/{userid}/token/mcp", params={"privsep": 1, "comment": "c"})
    )
    assert created["full-tokenid"] == f"{userid}!mcp"
    assert set(created) == {"full-tokenid", "info", "value"}
    assert created["info"]["privsep"] == 1
    again = ok(sim.request("GET", f"/access/users/{userid}/token/mcp"))
    assert "value" not in again and created["value"] not in str(sim.request("GET", f"/access/users/{userid}"))
    status, body = sim.request("POST", f"/access/users/{userid}/token/mcp")  # User.pm: raise_param_exc
    assert (status, body["errors"]) == (400, {"tokenid": "Token already exists."})
    ok(sim.request("DELETE", f"/access/users/{userid}/token/mcp"))
    assert sim.request("GET", "/version", token=f"{userid}!mcp={created['value']}")[0] == 401


def test_vzdump_needs_backup_and_storage_space(sim: RunningSim) -> None:
    g = a_vm(sim)
    who = make_identity(sim, uid(), role="SimPower", privs=ROLE_PRIVS["SimPower"])
    status, body = sim.request(
        "POST", f"/nodes/{g['node']}/vzdump", token=who.token, params={"vmid": g["vmid"]}
    )
    # pve-manager API2/VZDump.pm: the storage is checked before the task ...
    assert status == 403
    assert body["message"] == "Permission check failed (/storage/local, Datastore.AllocateSpace)\n"
    # ... VM.Backup inside it (VZDump.pm exec_backup): a failed task, no backup
    space = make_identity(sim, uid(), role="SimSpace", privs="VM.Audit,Datastore.AllocateSpace")
    upid = ok(
        sim.request("POST", f"/nodes/{g['node']}/vzdump", token=space.token, params={"vmid": g["vmid"]})
    )
    for _ in range(100):
        task = ok(sim.request("GET", f"/nodes/{g['node']}/tasks/{upid}/status", token=space.token))
        if task["status"] == "stopped":
            break
        time.sleep(0.02)
    assert task["exitstatus"] == f"Permission check failed (/vms/{g['vmid']}, VM.Backup)"


def test_pve8_host_has_its_42_privileges(sim: RunningSim) -> None:
    from pmcp.sim.testing import running_sim

    with running_sim(nodes=1, guests=2, pve_version=8) as sim8:
        assert ok(sim8.request("GET", "/version"))["release"] == "8.4"
        privs = ok(sim8.request("GET", "/access/roles/Administrator"))
        assert len(privs) == 42 and "VM.Monitor" in privs and "VM.GuestAgent.Audit" not in privs
        status, body = sim8.request(
            "POST", "/access/roles", params={"roleid": "New", "privs": "VM.GuestAgent.Audit"}
        )
        assert status == 400 and body["errors"]["privs"].startswith("invalid format - invalid privilege")
        ok(sim8.request("POST", "/access/roles", params={"roleid": "Old", "privs": "VM.Monitor,VM.Audit"}))
    status, body = sim.request("POST", "/access/roles", params={"roleid": "Old9", "privs": "VM.Monitor"})
    assert status == 400 and "VM.Monitor" in body["errors"]["privs"], "PVE 9 dropped VM.Monitor"


def test_acl_list_needs_sys_audit_on_access_or_leave_to_modify_the_path(sim: RunningSim) -> None:
    """PVE/API2/ACL.pm read_acl: all entries with Sys.Audit on /access, else only those on paths the
    caller may modify (check_perm_modify: VM.Allocate on /vms/ID, ...). Sys.Audit on a path is not enough."""
    g = a_vm(sim)
    auditor = make_identity(sim, uid(), privsep=0)
    _acl(sim, "/", "PVEAuditor", users=auditor.userid)
    _acl(sim, "/access", "NoAccess", users=auditor.userid)
    assert ok(sim.request("GET", "/access/acl", token=auditor.token)) == []
    vmadmin = make_identity(sim, uid(), privsep=0)
    _acl(sim, f"/vms/{g['vmid']}", "PVEVMAdmin", users=vmadmin.userid)
    seen = {(e["path"], e["ugid"]) for e in ok(sim.request("GET", "/access/acl", token=vmadmin.token))}
    assert seen and all(path == f"/vms/{g['vmid']}" for path, _ in seen)
    everyone = ok(sim.request("GET", "/access/acl"))  # root: Sys.Audit on /access
    assert len(everyone) > len(seen)


def test_effective_permissions_carry_propagate_flags_and_pool_members(sim: RunningSim) -> None:
    """pve-access-control RPCEnvironment.pm: values are propagate flags (0 still means held); a
    pool's roles reach its guests AND its storages with flag 0; the listing covers the top-level
    paths, ACL paths and pool members (get_effective_permissions)."""
    pool = "permpool"
    ok(sim.request("POST", "/pools", params={"poolid": pool}))
    vm = next(g for g in sim.state.world["guests"].values() if not g.get("pool") and not g["template"])
    ok(sim.request("PUT", "/pools", params={"poolid": pool, "vms": vm["vmid"], "storage": "backup-nfs"}))
    who = make_identity(
        sim, uid(), role="SimPoolOp", privs="VM.Audit,Datastore.Audit,Datastore.AllocateSpace",
        user_acl=f"/pool/{pool}", token_acl=f"/pool/{pool}",
    )  # fmt: skip
    for kind, ugid in (("users", who.userid), ("tokens", f"{who.userid}!tok")):
        ok(
            sim.request(
                "PUT", "/access/acl",
                params={"path": "/nodes", "roles": "SimAudit", "propagate": 0, kind: ugid},
            )
        )  # fmt: skip
    perms = ok(sim.request("GET", "/access/permissions", token=who.token))
    assert perms[f"/pool/{pool}"]["VM.Audit"] == 1
    assert perms[f"/vms/{vm['vmid']}"] == {"VM.Audit": 0, "Datastore.Audit": 0, "Datastore.AllocateSpace": 0}
    assert perms["/storage/backup-nfs"]["Datastore.AllocateSpace"] == 0
    assert perms["/nodes"]["Sys.Audit"] == 0, "an ACL without propagation: held, flag 0"
    assert "/storage/local" not in perms and "/" not in perms
    one = ok(sim.request("GET", "/access/permissions", token=who.token, params={"path": "/storage/local"}))
    assert one == {"/storage/local": {}}
    # the storage's pool membership lets the token list it and back up into it
    storages = ok(sim.request("GET", f"/nodes/{vm['node']}/storage", token=who.token))
    assert [s["storage"] for s in storages] == ["backup-nfs"]


def test_noaccess_on_a_guest_is_not_trumped_by_its_pool(sim: RunningSim) -> None:
    pool = "noaccpool"
    ok(sim.request("POST", "/pools", params={"poolid": pool}))
    vm = next(g for g in sim.state.world["guests"].values() if not g.get("pool") and not g["template"])
    ok(sim.request("PUT", "/pools", params={"poolid": pool, "vms": vm["vmid"]}))
    who = make_identity(
        sim, uid(), role="SimPower", privs=ROLE_PRIVS["SimPower"],
        user_acl=f"/pool/{pool}", token_acl=f"/pool/{pool}",
    )  # fmt: skip
    path = f"/nodes/{vm['node']}/{vm['type']}/{vm['vmid']}/status/current"
    assert sim.request("GET", path, token=who.token)[0] == 200
    ok(sim.request("PUT", "/access/acl", params={"path": f"/vms/{vm['vmid']}", "roles": "NoAccess",
                                                 "tokens": f"{who.userid}!tok"}))  # fmt: skip
    assert sim.request("GET", path, token=who.token)[0] == 403


@pytest.mark.parametrize("major", [8, 9])
def test_builtin_roles_are_accesscontrol_pm_create_roles(major: int) -> None:
    """pve-access-control src/PVE/AccessControl.pm $privgroups + create_roles (stable-bookworm = 8,
    master = 9): PVEAdmin holds User.Modify but not Sys.Modify/Permissions.Modify/Mapping.Modify;
    PVESysAdmin is Sys.Audit, Sys.Console, Sys.Syslog; PVEVMUser has no Pool.Audit."""
    from pmcp.sim.testing import running_sim

    with running_sim(nodes=1, guests=2, pve_version=major) as s:
        role = lambda r: set(ok(s.request("GET", f"/access/roles/{r}")))  # noqa: E731
        admin = role("PVEAdmin")
        assert "User.Modify" in admin and "Realm.AllocateUser" in admin
        assert not admin & {
            "Sys.Modify",
            "Sys.PowerMgmt",
            "Permissions.Modify",
            "Mapping.Modify",
            "Realm.Allocate",
        }
        assert role("PVESysAdmin") == {"Sys.Audit", "Sys.Console", "Sys.Syslog"}
        vm_user = {
            "VM.Audit",
            "VM.Backup",
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.PowerMgmt",
        }
        if major == 9:
            vm_user |= {"VM.GuestAgent.Audit", "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt",
                        "VM.GuestAgent.FileWrite"}  # fmt: skip
            assert "VM.Replicate" in role("PVEVMAdmin") and "VM.Monitor" not in role("PVEVMAdmin")
        else:
            assert "VM.Monitor" in role("PVEVMAdmin")
        assert role("PVEVMUser") == vm_user
        assert role("PVEPoolUser") == {"Pool.Audit"} and role("PVETemplateUser") == {"VM.Audit", "VM.Clone"}
        assert not [r for r in ok(s.request("GET", "/access/roles")) if r["roleid"] == "PVEUserUser"]
