"""ProxmoxIdentity and verify_identity against the simulator through `pmcp sim pvesh`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pmcp import record as statefile
from pmcp.host import pve as pve_mod
from pmcp.host.pve import (
    FORBIDDEN,
    ROLE_NAMES,
    ProxmoxIdentity,
    is_forbidden,
    mode_privileges,
    token_authenticates,
    verify_identity,
)
from pmcp.host.run import Pvesh, PveshError
from pmcp.paths import InstallPaths
from pmcp.steps import run_steps
from tests.unit.host.conftest import RecordingPvesh, assert_calls_in_schema, schema_privileges


@pytest.fixture
def paths(tmp_path: Path) -> InstallPaths:
    return InstallPaths.at(tmp_path / "prefix")


def ident(pvesh: Pvesh, sim: Any, paths: InstallPaths, **kw: Any) -> ProxmoxIdentity:
    return ProxmoxIdentity(pvesh, kw.pop("mode", "operator"), paths, api_url=sim.url, **kw)


def our_acls(pvesh: Pvesh) -> set[tuple[str, str, str, str]]:
    return {
        (a["path"], a["type"], a["ugid"], a["roleid"])
        for a in pvesh.get("/access/acl")
        if a["ugid"].startswith("pmcp@pve")
    }


BACKUP_STORAGES = ("backup-nfs", "local")  # the simulator's storages with content "backup"


def scoped(role: str, protected: tuple[int, ...] = ()) -> set[tuple[str, str, str, str]]:
    """The ACLs pmcp makes without --pool: reading on / (not propagated) and the top-level trees, the
    mode's role on /vms and the backup storages, NoAccess on each protected guest -- for user and token."""
    places = [(p, "PMCPReadOnly") for p in ("/", "/nodes", "/storage", "/pool", "/sdn")]
    places.append(("/vms", role))
    if role != "PMCPReadOnly":
        places += [(f"/storage/{sid}", role) for sid in BACKUP_STORAGES]
    places += [(f"/vms/{v}", "NoAccess") for v in protected]
    return {(p, k, who, r) for p, r in places for k, who in (("user", "pmcp@pve"), ("token", "pmcp@pve!mcp"))}


def test_mode_privileges_never_forbidden_on_pve8_and_pve9() -> None:
    for version in ("8.4", "9.1"):
        valid = schema_privileges(version)
        assert {"User.Modify", "Sys.Modify", "Realm.Allocate"} <= valid
        for mode in ROLE_NAMES:
            privs = mode_privileges(mode, valid)
            assert privs and set(privs) <= valid
            assert not [p for p in privs if is_forbidden(p)]
            assert not FORBIDDEN & set(privs)
    assert "SDN.Audit" not in mode_privileges("read-only", schema_privileges("9.1") - {"SDN.Audit"})
    assert "VM.PowerMgmt" not in mode_privileges("read-only", schema_privileges("9.1"))
    for mode in ("operator", "admin"):  # undo_last_change: a rollback, in every mode that changes things
        assert {"VM.Snapshot", "VM.Snapshot.Rollback"} <= set(mode_privileges(mode, schema_privileges("9.1")))
    assert not {"VM.Snapshot", "VM.Snapshot.Rollback"} & set(
        mode_privileges("read-only", schema_privileges("9.1"))
    )


def test_a_forbidden_privilege_can_never_be_granted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pve_mod._MODE_PRIVS, "operator", {"VM.Audit", "Permissions.Modify"})
    with pytest.raises(AssertionError):
        mode_privileges("operator", {"VM.Audit", "Permissions.Modify"})


def test_install_rerun_rotate_uninstall(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    rec = RecordingPvesh(pvesh)
    step = ident(rec, sim, paths)
    plan = step.check()
    assert any(c.startswith("create role PMCPOperator") for c in plan.changes)
    assert any(c.startswith("create user pmcp@pve") for c in plan.changes)
    assert any(c.startswith("create API token pmcp@pve!mcp") for c in plan.changes)
    assert sum(c.startswith("grant PMCPOperator on /") for c in plan.changes) == 6  # /vms + 2 storages
    assert "grant PMCPReadOnly on / (not propagated) to token pmcp@pve!mcp" in plan.changes
    result = run_steps([step])
    assert result.ok, result.to_dict()

    valid = step.valid_privileges()
    role = pvesh.get("/access/roles/PMCPOperator")
    granted = {k for k, v in role.items() if v} if "privs" not in role else set(role["privs"].split(","))
    assert granted == set(mode_privileges("operator", valid))
    assert not [p for p in granted if is_forbidden(p)]
    tokens = pvesh.get("/access/users/pmcp@pve/token")
    assert [(t["tokenid"], int(t["privsep"])) for t in tokens] == [("mcp", 1)]
    assert our_acls(pvesh) == scoped("PMCPOperator")
    assert {tuple(k) for k in statefile.load(paths)["identity_acls"]} == scoped("PMCPOperator")
    secret_file = paths.proxmox_token_secret
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert paths.secrets_dir.stat().st_mode & 0o777 == 0o700
    first_secret = secret_file.read_text()
    assert token_authenticates(sim.url, "pmcp@pve!mcp", first_secret)

    again = ident(rec, sim, paths)
    plan = again.check()
    assert not plan.needed, plan.changes
    assert any("still authenticates" in n for n in plan.notes)
    assert secret_file.read_text() == first_secret

    rotate = ident(rec, sim, paths, rotate=True)
    assert rotate.check().changes == ["replace API token pmcp@pve!mcp (--rotate-token)"]
    rotate.apply()
    assert secret_file.read_text() != first_secret
    assert not token_authenticates(sim.url, "pmcp@pve!mcp", first_secret)
    assert token_authenticates(sim.url, "pmcp@pve!mcp", secret_file.read_text())
    assert not ident(rec, sim, paths).check().needed

    assert_calls_in_schema(rec.calls)

    ident(rec, sim, paths).undo()
    assert our_acls(pvesh) == set()
    assert statefile.load(paths)["identity_acls"] == []
    assert "pmcp@pve" not in {u["userid"] for u in pvesh.get("/access/users")}
    assert not {r["roleid"] for r in pvesh.get("/access/roles")} & set(ROLE_NAMES.values())
    assert not secret_file.exists()
    assert_calls_in_schema(rec.calls)
    ident(rec, sim, paths).undo()  # idempotent


def test_missing_secret_file_means_broken_token(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    ident(pvesh, sim, paths, mode="read-only").apply()
    paths.proxmox_token_secret.unlink()
    plan = ident(pvesh, sim, paths, mode="read-only").check()
    assert plan.changes == [
        f"replace API token pmcp@pve!mcp: its secret file {paths.proxmox_token_secret} is missing"
    ]
    ident(pvesh, sim, paths, mode="read-only").apply()
    assert token_authenticates(sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret.read_text())


def test_verify_identity_refuses_root_changes(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    ident(pvesh, sim, paths, mode="admin").apply()
    checks = verify_identity(sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, mode="admin")
    by_name = {c.name: c for c in checks}
    assert all(c.ok for c in checks), checks
    assert "403" in by_name["root@pam protected"].detail
    assert "403" in by_name["acl change refused"].detail
    assert (
        by_name["token scope"].ok and by_name["protected guests"].ok and not by_name["protected guests"].warn
    )
    assert pvesh.get("/access/users/root@pam").get("comment", "") != "pmcp-probe"


def test_verify_identity_catches_a_too_powerful_token(pvesh: Pvesh, sim: Any, tmp_path: Path) -> None:
    pvesh.create("/access/users", userid="big@pve")
    created = pvesh.create("/access/users/big@pve/token/tok", privsep=0)
    pvesh.set("/access/acl", path="/", roles="Administrator", users="big@pve")
    secret = tmp_path / "secret"
    secret.write_text(created["value"])
    checks = {c.name: c for c in verify_identity(sim.url, "big@pve!tok", secret, mode="read-only")}
    assert checks["proxmox token"].ok
    assert not checks["token permissions"].ok and "User.Modify" in checks["token permissions"].detail
    assert not checks["root@pam protected"].ok and checks["root@pam protected"].fix
    # the ACL probe can fail (PUT /access/password could not: PVE refuses it to every token)
    assert not checks["acl change refused"].ok and "can change ACLs" in checks["acl change refused"].detail
    assert not checks["token scope"].ok and "/access" in checks["token scope"].detail
    assert "pmcp-probe" not in str(pvesh.get("/access/acl"))  # the probe changed nothing


def test_verify_counts_a_forbidden_privilege_held_without_propagation(
    pvesh: Pvesh, sim: Any, paths: InstallPaths
) -> None:
    ident(pvesh, sim, paths, mode="read-only").apply()
    # Proxmox lists it as "Permissions.Modify": 0 (0 = not propagated), yet the token holds it.
    for kind, who in (("users", "pmcp@pve"), ("tokens", "pmcp@pve!mcp")):
        pvesh.set("/access/acl", path="/access", roles="Administrator", propagate=0, **{kind: who})
    checks = {
        c.name: c
        for c in verify_identity(sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, mode="read-only")
    }
    assert not checks["token permissions"].ok
    assert "Permissions.Modify" in checks["token permissions"].detail


def test_privsep_token_gets_the_intersection(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    ident(pvesh, sim, paths, mode="operator").apply()
    # Give the USER more; the privilege-separated token must not gain it.
    pvesh.set("/access/acl", path="/", roles="Administrator", users="pmcp@pve")
    checks = {
        c.name: c
        for c in verify_identity(sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, mode="operator")
    }
    assert checks["token permissions"].ok, checks["token permissions"]
    assert checks["root@pam protected"].ok
    plan = ident(pvesh, sim, paths, mode="operator").check()
    assert not plan.needed, plan.changes  # pmcp did not make it: kept, and said so
    assert any("kept ACL pmcp did not make: Administrator on / for user pmcp@pve" in n for n in plan.notes)


def test_pool_scope_and_mode_change(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    pool = pvesh.get("/pools")[0]["poolid"]
    ident(pvesh, sim, paths, mode="read-only").apply()
    step = ident(pvesh, sim, paths, mode="operator", pool=pool)
    plan = step.check()
    assert "remove ACL pmcp made: PMCPReadOnly on / for token pmcp@pve!mcp" in plan.changes
    step.apply()
    assert our_acls(pvesh) == {
        (f"/pool/{pool}", "user", "pmcp@pve", "PMCPOperator"),
        (f"/pool/{pool}", "token", "pmcp@pve!mcp", "PMCPOperator"),
    }
    checks = verify_identity(sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, mode="operator", pool=pool)
    assert all(c.ok for c in checks), checks
    step.undo()
    step2 = ident(pvesh, sim, paths, mode="operator", pool=pool)
    step2.undo()
    assert not {r["roleid"] for r in pvesh.get("/access/roles")} & set(ROLE_NAMES.values())


def test_missing_pool_is_a_clear_error(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    from pmcp.steps import StepError

    with pytest.raises(StepError, match="pool nope does not exist") as err:
        ident(pvesh, sim, paths, pool="nope").check()
    assert "pvesh create /pools --poolid nope" in err.value.fix


def test_failed_apply_reverts_only_its_own_changes(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    pvesh.create("/access/roles", roleid="PMCPOperator", privs="VM.Audit")  # pre-existing, other privileges
    failing = RecordingPvesh(pvesh, fail_on=("create", "/access/users/pmcp@pve/token/mcp"))
    result = run_steps([ident(failing, sim, paths)])
    assert not result.ok
    assert "injected failure" in result.steps[-1].error
    assert "pmcp@pve" not in {u["userid"] for u in pvesh.get("/access/users")}
    assert pvesh.get("/access/roles/PMCPOperator") in ({"VM.Audit": 1}, {"privs": "VM.Audit"})
    assert our_acls(pvesh) == set()


def test_tls_uses_the_given_ca_and_never_skips_verification(tmp_path: Path) -> None:
    from pmcp.sim.testing import running_sim
    from pmcp.steps import StepError
    from tests.unit.host.conftest import InProcessPvesh

    with running_sim(nodes=1, guests=2, seed=2, tls=True) as tsim:
        assert tsim.url.startswith("https://") and tsim.ca_file
        pvesh = InProcessPvesh(["pvesh"], env=tsim.env())
        paths = InstallPaths.at(tmp_path / "p")
        step = ProxmoxIdentity(pvesh, "read-only", paths, api_url=tsim.url, verify=tsim.ca_file)
        step.apply()
        checks = verify_identity(tsim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, verify=tsim.ca_file)
        assert all(c.ok for c in checks), checks
        untrusted = verify_identity(tsim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, verify=True)
        assert not untrusted[-1].ok and "TLS verification of the Proxmox API" in untrusted[-1].detail
        assert "unable to get local issuer certificate" in untrusted[-1].detail
        with pytest.raises(StepError, match="TLS verification of the Proxmox API"):
            ProxmoxIdentity(pvesh, "read-only", paths, api_url=tsim.url, verify=True).check()


def test_disabled_user_is_enabled_not_rotated(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    ident(pvesh, sim, paths).apply()
    secret = paths.proxmox_token_secret.read_text()
    pvesh.set("/access/users/pmcp@pve", enable=0)
    assert not token_authenticates(sim.url, "pmcp@pve!mcp", secret)
    step = ident(pvesh, sim, paths)
    assert step.check().changes == ["enable user pmcp@pve (it is disabled or expired)"]
    step.apply()
    assert paths.proxmox_token_secret.read_text() == secret
    assert token_authenticates(sim.url, "pmcp@pve!mcp", secret)
    assert not ident(pvesh, sim, paths).check().needed


# -- item: a token no bigger than its mode ------------------------------------------------------------------


def as_token(sim: Any, paths: InstallPaths, method: str, api_path: str, **params: Any) -> tuple[int, Any]:
    token = f"pmcp@pve!mcp={paths.proxmox_token_secret.read_text().strip()}"
    return sim.request(method, api_path, token=token, params=params or None)


def guests(pvesh: Pvesh) -> list[dict[str, Any]]:
    return [g for g in pvesh.get("/cluster/resources", type="vm") if not g.get("template")]


def test_the_token_holds_nothing_on_root_or_access(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    """VM.PowerMgmt on / is leave to stop every guest of a node (pve-manager Nodes.pm stopall); Sys.Audit
    propagated from / reads every user and ACL. The ACLs go on /vms, the storages and the read trees."""
    ident(pvesh, sim, paths, mode="operator").apply()
    status, body = as_token(sim, paths, "GET", "/access/permissions", path="/")
    assert status == 200
    assert set(body["data"]["/"]) <= pve_mod._MODE_PRIVS["read-only"]
    users = {u["userid"] for u in as_token(sim, paths, "GET", "/access/users")[1]["data"]}
    assert users <= {"pmcp@pve"}  # no Sys.Audit on /access: nobody else
    assert as_token(sim, paths, "GET", "/access/acl")[1]["data"] == []  # nor any ACL (ACL.pm read_acl)
    g = guests(pvesh)[0]
    assert as_token(sim, paths, "GET", f"/nodes/{g['node']}/{g['type']}/{g['vmid']}/config")[0] == 200
    # operator: Datastore.AllocateSpace only where backups go, not on the disk-image storage
    status, body = as_token(sim, paths, "GET", "/access/permissions", path="/storage/local-lvm")
    assert "Datastore.AllocateSpace" not in body["data"]["/storage/local-lvm"]
    assert "Datastore.Audit" in body["data"]["/storage/local-lvm"]
    status, body = as_token(sim, paths, "GET", "/access/permissions", path="/storage/local")
    assert "Datastore.AllocateSpace" in body["data"]["/storage/local"]

    def checks_for(mode: str) -> dict[str, Any]:
        found = verify_identity(sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, mode=mode)
        return {c.name: c for c in found}

    assert all(c.ok for c in checks_for("operator").values())

    # admin allocates disks (clone, restore, grow) and picks bridges: its role covers /storage and /sdn,
    # and still holds nothing beyond reading on / itself
    ident(pvesh, sim, paths, mode="admin").apply()
    status, body = as_token(sim, paths, "GET", "/access/permissions", path="/storage/local-lvm")
    assert "Datastore.AllocateSpace" in body["data"]["/storage/local-lvm"]
    assert ("/storage/local", "token", "pmcp@pve!mcp", "PMCPAdmin") not in our_acls(pvesh)  # /storage has it
    status, body = as_token(sim, paths, "GET", "/access/permissions", path="/")
    assert set(body["data"]["/"]) <= pve_mod._MODE_PRIVS["read-only"]
    assert all(c.ok for c in checks_for("admin").values())

    # the scope check can fail: the old layout (the mode's role on /) is caught
    for kind, who in (("users", "pmcp@pve"), ("tokens", "pmcp@pve!mcp")):
        pvesh.set("/access/acl", path="/", roles="PMCPAdmin", **{kind: who})
    checks = checks_for("admin")
    assert not checks["token scope"].ok and "VM.PowerMgmt" in checks["token scope"].detail


def test_protected_guests_get_noaccess_and_converge(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    listed, tagged, later, free = (g for g in guests(pvesh)[:4])
    pvesh.set(f"/nodes/{tagged['node']}/{tagged['type']}/{tagged['vmid']}/config", tags="pmcp-protected")
    step = ident(pvesh, sim, paths, protected=[listed["vmid"]])
    plan = step.check()
    for g, why in ((listed, "listed in PMCP_PROTECTED"), (tagged, "tagged pmcp-protected")):
        vmid = g["vmid"]
        assert f"deny /vms/{vmid} to token pmcp@pve!mcp (NoAccess: guest {vmid} is {why})" in plan.changes
    step.apply()
    assert our_acls(pvesh) == scoped("PMCPOperator", (listed["vmid"], tagged["vmid"]))

    def reach(g: dict[str, Any]) -> int:
        return as_token(
            sim, paths, "POST", f"/nodes/{g['node']}/{g['type']}/{g['vmid']}/snapshot", snapname="leak"
        )[0]

    assert reach(listed) == 403 and reach(tagged) == 403  # a leaked token cannot touch them either
    assert reach(free) == 200
    visible = {g["vmid"] for g in as_token(sim, paths, "GET", "/cluster/resources", type="vm")[1]["data"]}
    assert listed["vmid"] not in visible and tagged["vmid"] not in visible and free["vmid"] in visible

    def protected_check() -> Any:
        checks = verify_identity(
            sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, mode="operator", protected=[listed["vmid"]]
        )
        return next(c for c in checks if c.name == "protected guests")

    assert protected_check().ok and not protected_check().warn
    # tagged after the install: the server refuses it already; verify warns until a re-run converges
    pvesh.set(f"/nodes/{later['node']}/{later['type']}/{later['vmid']}/config", tags="pmcp-protected")
    warn = protected_check()
    assert warn.ok and warn.warn and str(later["vmid"]) in warn.detail and "pmcp install" in warn.fix
    again = ident(pvesh, sim, paths, protected=[listed["vmid"]])
    assert [c for c in again.check().changes if c.startswith("deny")] == [
        f"deny /vms/{later['vmid']} to {k} (NoAccess: guest {later['vmid']} is tagged pmcp-protected)"
        for k in ("token pmcp@pve!mcp", "user pmcp@pve")
    ]
    again.apply()
    assert reach(later) == 403 and not protected_check().warn

    # no longer listed: pmcp removes its own NoAccess, and the plan says the token widens
    plan = ident(pvesh, sim, paths, protected=[]).check()
    assert (
        f"remove ACL pmcp made: NoAccess on /vms/{listed['vmid']} for token pmcp@pve!mcp: "
        f"/vms/{listed['vmid']} is no longer protected, the token may act on it again"
    ) in plan.changes
    ident(pvesh, sim, paths, protected=[]).apply()
    assert reach(listed) == 200 and reach(tagged) == 403


def test_noaccess_holds_inside_a_pool_scope(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    """With --pool the role sits on /pool/NAME; a guest's NoAccess is not trumped by it (RPCEnvironment)."""
    pool = "production"
    member = next(g for g in guests(pvesh) if g.get("pool") == pool)
    ident(pvesh, sim, paths, pool=pool, protected=[member["vmid"]]).apply()
    path = f"/nodes/{member['node']}/{member['type']}/{member['vmid']}/config"
    assert as_token(sim, paths, "GET", path)[0] == 403


# -- item: a re-install removes only what pmcp made -------------------------------------------------------


def test_reinstall_keeps_an_admins_noaccess(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    ident(pvesh, sim, paths).apply()
    g = guests(pvesh)[0]
    pvesh.set("/access/acl", path=f"/vms/{g['vmid']}", roles="NoAccess", tokens="pmcp@pve!mcp")
    plan = ident(pvesh, sim, paths).check()
    assert not plan.needed, plan.changes
    assert any(
        f"kept ACL pmcp did not make: NoAccess on /vms/{g['vmid']} for token pmcp@pve!mcp" in n
        and "--delete 1" in n
        for n in plan.notes
    )
    ident(pvesh, sim, paths).apply()
    # an admin's NoAccess above pmcp's ACLs is kept too, and the plan says where pmcp's override it
    pvesh.set("/access/acl", path="/storage", roles="NoAccess", tokens="pmcp@pve!mcp")
    notes = ident(pvesh, sim, paths).check().notes
    assert any(
        "NoAccess on /storage for token" in n and "override it on /storage/backup-nfs, /storage/local" in n
        for n in notes
    ), notes
    ident(pvesh, sim, paths, mode="read-only").apply()  # a mode change rewrites pmcp's own ACLs only
    assert (f"/vms/{g['vmid']}", "token", "pmcp@pve!mcp", "NoAccess") in our_acls(pvesh)
    path = f"/nodes/{g['node']}/{g['type']}/{g['vmid']}/config"
    assert as_token(sim, paths, "GET", path)[0] == 403


def test_an_older_install_is_adopted_by_role_only(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    """An install made before the record: its ACLs on / carry pmcp's roles; an admin's do not."""
    ident(pvesh, sim, paths).apply()
    data = statefile.load(paths)
    del data["identity_acls"]
    statefile.save(paths, data)
    for a in pvesh.get("/access/acl"):
        if a["ugid"].startswith("pmcp@pve"):
            kind = "users" if a["type"] == "user" else "tokens"
            pvesh.set("/access/acl", path=a["path"], roles=a["roleid"], delete=1, **{kind: a["ugid"]})
    for kind, who in (("users", "pmcp@pve"), ("tokens", "pmcp@pve!mcp")):
        pvesh.set("/access/acl", path="/", roles="PMCPOperator", **{kind: who})  # what 0.x made
    pvesh.set("/access/acl", path="/vms/101", roles="NoAccess", tokens="pmcp@pve!mcp")  # the admin's
    plan = ident(pvesh, sim, paths).check()
    assert "remove ACL pmcp made: PMCPOperator on / for token pmcp@pve!mcp" in plan.changes
    ident(pvesh, sim, paths).apply()
    assert our_acls(pvesh) == scoped("PMCPOperator") | {("/vms/101", "token", "pmcp@pve!mcp", "NoAccess")}
    assert ["/vms/101", "token", "pmcp@pve!mcp", "NoAccess"] not in statefile.load(paths)["identity_acls"]


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_the_secret_is_roots_and_readable_by_the_containers_group(
    pvesh: Pvesh, sim: Any, paths: InstallPaths
) -> None:
    ident(pvesh, sim, paths, secret_owner=(0, 10001)).apply()
    st, dst = paths.proxmox_token_secret.stat(), paths.secrets_dir.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 10001, 0o640)
    assert (dst.st_uid, dst.st_gid, dst.st_mode & 0o777) == (0, 10001, 0o750)
    assert not ident(pvesh, sim, paths, secret_owner=(0, 10001)).check().needed


def test_update_only_narrows_a_tag_added_later(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    """`pmcp update` (cron) adds the NoAccess of a guest tagged since the install, and nothing else: it
    neither grants a missing ACL nor removes one (that can widen the token; install shows its plan)."""
    import sys
    from types import SimpleNamespace

    from pmcp.lifecycle.run import Recorder as _Recorder
    from pmcp.lifecycle.update import Outcome, _deny_protected
    from pmcp.stack.render import StackConfig
    from tests.unit.host.conftest import _sim_env

    ident(pvesh, sim, paths, protected=[]).apply()
    first, later = guests(pvesh)[:2]
    pvesh.set(f"/nodes/{later['node']}/{later['type']}/{later['vmid']}/config", tags="pmcp-protected")
    pvesh.set("/access/acl", path="/sdn", roles="PMCPReadOnly", delete=1, tokens="pmcp@pve!mcp")  # a gap
    inst = SimpleNamespace(
        paths=paths,
        ctx=SimpleNamespace(config=StackConfig(mode="operator")),
        state={
            "options": {"protect": str(first["vmid"])},
            "identity": {
                "token_id": "pmcp@pve!mcp",
                "pvesh": [sys.executable, "-m", "pmcp", "sim", "pvesh"],
                "pvesh_env": _sim_env(sim),
            },
        },
    )
    out = Outcome("update")
    _deny_protected(inst, _Recorder(out, None, None))  # type: ignore[arg-type]
    assert [s.name for s in out.steps] == ["protected guests"]
    assert out.steps[0].notes == [
        f"denied /vms/{g['vmid']} to pmcp@pve!mcp (NoAccess: guest {g['vmid']} is {why})"
        for g, why in ((first, "listed in PMCP_PROTECTED"), (later, "tagged pmcp-protected"))
    ]
    assert (
        as_token(sim, paths, "GET", f"/nodes/{later['node']}/{later['type']}/{later['vmid']}/config")[0]
        == 403
    )
    assert ("/sdn", "token", "pmcp@pve!mcp", "PMCPReadOnly") not in our_acls(pvesh)  # not granted by update
    recorded = {tuple(k) for k in statefile.load(paths)["identity_acls"]}
    assert (f"/vms/{later['vmid']}", "token", "pmcp@pve!mcp", "NoAccess") in recorded
    again = Outcome("update")
    _deny_protected(inst, _Recorder(again, None, None))  # type: ignore[arg-type]
    assert again.steps == []  # nothing to do: no phase, no noise in cron's output


def test_every_call_install_verify_and_uninstall_make_matches_both_schemas(
    pvesh: Pvesh, sim: Any, paths: InstallPaths
) -> None:
    """Read off the wire (pvesh and the direct HTTPS calls of verify alike): method, path and every
    parameter name must exist in PVE 8.4 and 9.1."""
    from tests.support.pve_schema import problems

    pool = pvesh.get("/pools")[0]["poolid"]
    sim.state.clear_requests()
    for mode, kw in (("read-only", {}), ("operator", {"pool": pool}), ("admin", {"rotate": True})):
        step = ident(pvesh, sim, paths, mode=mode, **kw)
        step.check()
        step.apply()
        verify_identity(sim.url, "pmcp@pve!mcp", paths.proxmox_token_secret, mode=mode, pool=kw.get("pool"))
    secret = paths.proxmox_token_secret.read_text().strip()
    assert token_authenticates(sim.url, "pmcp@pve!mcp", secret)
    ident(pvesh, sim, paths, mode="admin").undo()
    calls = list(sim.state.calls)
    assert {m for m, _, _ in calls} >= {"GET", "POST", "PUT", "DELETE"}
    assert not problems(calls), "\n".join(problems(calls))


def test_a_run_reads_nothing_twice_between_its_writes(pvesh: Pvesh, sim: Any, paths: InstallPaths) -> None:
    """Each pvesh call is a process (about half a second of Perl on a real host): check() and apply()
    share their reads until the first change, and a refused read is not asked again either."""
    rec = RecordingPvesh(pvesh)
    step = ident(rec, sim, paths, mode="operator")
    assert run_steps([step]).ok
    seen: set[tuple[str, str]] = set()
    for verb, path, params in rec.calls:
        if verb != "get":
            seen.clear()
            continue
        key = (path, repr(sorted(params.items())))
        assert key not in seen, f"read twice without a change in between: {path}"
        seen.add(key)
    again = RecordingPvesh(pvesh)
    assert not run_steps([ident(again, sim, paths, mode="operator")]).changed
    assert len(again.calls) == len({(v, p, repr(sorted(k.items()))) for v, p, k in again.calls})
    assert_calls_in_schema(rec.calls)


def test_acls_added_side_by_side_are_undone_when_one_is_refused(
    pvesh: Pvesh, sim: Any, paths: InstallPaths
) -> None:
    class RefusesStorage(RecordingPvesh):
        def call(self, verb: str, path: str, params: Any = None) -> Any:
            if verb == "set" and path == "/access/acl" and str((params or {}).get("path")) == "/storage":
                self.calls.append((verb, path, dict(params or {})))
                raise PveshError("injected failure", status=500)
            return super().call(verb, path, params)

    failing = RefusesStorage(pvesh)
    result = run_steps([ident(failing, sim, paths, mode="operator")])
    assert not result.ok
    assert our_acls(pvesh) == set()  # every grant made beside the refused one was undone
    assert not any(u["userid"] == "pmcp@pve" for u in pvesh.get("/access/users"))


def test_a_refused_token_undoes_the_identity_and_what_ran_beside_it(
    sim: Any, shim_pvesh: Pvesh, paths: InstallPaths
) -> None:
    """Proxmox refuses to create the token (a node without quorum: pve-access-control src/PVE/API2/User.pm
    generate_token, lock_user_config(..., 'generating token failed'); pve-cluster src/PVE/Cluster.pm
    cfs_lock) while the secrets step runs beside the identity step, as in an install: the role and user
    the identity made are removed, and so is the client token the other branch wrote (declared after)."""
    from pmcp.stack.render import StackConfig
    from pmcp.stack.steps import SecretsStep, StackContext
    from pmcp.steps import Together

    refusal = "generating token failed: cfs-lock 'file-user_cfg' error: no quorum!\n"
    sim.state.inject_errors(500, message=refusal, method="POST", path="/access/users/pmcp@pve/token/mcp")
    identity = ident(shim_pvesh, sim, paths)
    secrets = SecretsStep(StackContext(paths=paths, config=StackConfig(), project="pmcp-test"))
    result = run_steps([Together([identity], [secrets])])
    assert [(s.name, s.status) for s in result.steps] == [
        ("proxmox identity", "failed"),
        ("secrets", "undone"),
    ]
    assert "no quorum" in result.steps[0].error + result.steps[0].detail
    assert "the partial change of this step was undone" in result.steps[0].notes
    assert not paths.client_tokens.exists()  # the other branch's change, undone
    assert "pmcp@pve" not in [u["userid"] for u in shim_pvesh.get("/access/users")]
    for role in (ROLE_NAMES["operator"], ROLE_NAMES["read-only"]):
        with pytest.raises(PveshError):
            shim_pvesh.get(f"/access/roles/{role}")
    assert ("POST", "/access/users/pmcp@pve/token/mcp") in sim.state.requests  # refused, not skipped
