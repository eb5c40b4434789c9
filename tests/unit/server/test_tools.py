"""Every tool against the simulator, through the SDK client over real HTTP, in both protocol eras."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

import pmcp.server.tools  # noqa: F401  (declares the tools)
from pmcp.server.config import Mode
from pmcp.server.registry import TOOLS

from .conftest import connect

READ = {n for n, s in TOOLS.items() if s.risk.value == "read"}
CHANGE = {n for n, s in TOOLS.items() if s.risk.value == "change"}
# change tools whose privileges belong to admin (VM.Allocate also deletes; VM.Config.Disk also detaches)
ADMIN_CHANGE = {n for n, s in TOOLS.items() if s.risk.value == "change" and s.mode == Mode.ADMIN}
DESTRUCTIVE = {n for n, s in TOOLS.items() if s.risk.value == "destructive"}
# destructive tools operator mode holds the privileges of (undo: a rollback to pmcp's own safety snapshot)
OPERATOR_DESTRUCTIVE = {n for n in DESTRUCTIVE if TOOLS[n].mode == Mode.OPERATOR}


def run(fn, *args):
    return anyio.run(fn, *args)


def structured(result) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text if result.content else result
    assert result.structured_content is not None
    assert result.content and result.content[0].text
    return result.structured_content


def error_text(result) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


def guests_where(sim, **match) -> list[int]:
    out = []
    for vmid, g in sorted(sim.state.world["guests"].items(), key=lambda kv: int(kv[0])):
        if (
            all(g.get(k) == v for k, v in match.items())
            and not g.get("template")
            and "pmcp-protected" not in str(g.get("config", {}).get("tags", ""))
        ):
            out.append(int(vmid))
    return out


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_initialize_and_list_tools_both_eras(server, mode):
    async def go():
        async with connect(server, mode=mode) as client:
            tools = (await client.list_tools()).tools
            return client.protocol_version, tools

    version, tools = run(go)
    assert version == ("2025-11-25" if mode == "legacy" else version)
    if mode == "auto":
        assert version >= "2026"
    assert {t.name for t in tools} == set(TOOLS)
    for t in tools:
        assert t.output_schema and t.input_schema["type"] == "object" and t.description
        ann = t.annotations
        assert ann.read_only_hint is (t.name in READ)
        # arguments that make a call destructive (guest_power action=stop) make the tool's hint so
        assert ann.destructive_hint is (t.name in DESTRUCTIVE or TOOLS[t.name].escalate is not None)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(Mode.READ_ONLY, READ), (Mode.OPERATOR, READ | (CHANGE - ADMIN_CHANGE) | OPERATOR_DESTRUCTIVE)],
)
def test_mode_limits_listing_and_calls(make_server, mode, expected):
    async def go(served):
        async with connect(served, mode="auto") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            refused = await client.call_tool("guest_power", {"action": "stop", "vmid": 100, "confirm": True})
            return names, refused

    with make_server(mode=mode) as served:
        names, refused = run(go, served)
    assert names == expected
    assert "PMCP_MODE=admin" in error_text(refused)


def test_read_tools_against_sim(server, sim):
    vmid = guests_where(sim)[0]
    node = sim.state.world["guests"][str(vmid)]["node"]

    async def go():
        out = {}
        async with connect(server) as client:
            out["cluster_overview"] = await client.call_tool("cluster_overview", {})
            out["node_status"] = await client.call_tool("cluster_overview", {"node": node})
            out["list_guests"] = await client.call_tool("list_guests", {})
            out["guest_status"] = await client.call_tool("guest_info", {"vmid": vmid})
            out["guest_config"] = await client.call_tool("guest_info", {"show": "config", "vmid": vmid})
            out["list_snapshots"] = await client.call_tool("guest_info", {"show": "snapshots", "vmid": vmid})
            out["list_backups"] = await client.call_tool("list_storage", {"content": "backup", "vmid": vmid})
            out["list_storage"] = await client.call_tool("list_storage", {})
            storages = structured(out["list_storage"])["storages"]
            sid = next(s["storage"] for s in storages if s["node"] == node)
            out["list_storage"] = await client.call_tool("list_storage", {"node": node, "storage": sid})
            out["tasks"] = await client.call_tool("tasks", {"node": node})
            out["capabilities"] = await client.call_tool("capabilities", {})
            out["audit_log"] = await client.call_tool("capabilities", {"audit": 5})
        return out

    out = run(go)
    data = {k: structured(v) for k, v in out.items()}
    ov = data["cluster_overview"]
    assert len(ov["nodes"]) == 3 and ov["guests"]["vms"] + ov["guests"]["containers"] == 50
    assert data["list_guests"]["total"] == 50 and data["list_guests"]["returned"] == 40
    assert data["guest_status"]["guest"]["vmid"] == vmid
    assert data["guest_config"]["config"]
    assert data["capabilities"]["permissions"] and data["capabilities"]["mode"] == "admin"
    assert "audit_entries" not in data["capabilities"] and isinstance(
        data["audit_log"]["audit_entries"], list
    )


def test_list_guests_filters_and_pages(server, sim):
    async def go():
        async with connect(server, mode="auto") as client:
            page1 = structured(await client.call_tool("list_guests", {"limit": 20}))
            page3 = structured(await client.call_tool("list_guests", {"limit": 20, "offset": 40}))
            lxc = structured(await client.call_tool("list_guests", {"type": "lxc", "detail": True}))
            return page1, page3, lxc

    page1, page3, lxc = run(go)
    assert page1["total"] == 50 and page1["returned"] == 20 and page1["next_offset"] == 20
    assert page3["returned"] == 10 and "next_offset" not in page3
    n_lxc = sum(1 for g in sim.state.world["guests"].values() if g["type"] == "lxc")
    assert lxc["total"] == n_lxc and all(g["type"] == "lxc" and "maxmem" in g for g in lxc["guests"])


def test_change_tools_report_outcomes_and_audit(server, sim):
    vmid = guests_where(sim, type="qemu", status="running")[0]
    snap = "pmcp_test_snap"

    async def go():
        r = {}
        async with connect(server) as client:
            r["create_snapshot"] = await client.call_tool(
                "snapshot", {"action": "create", "vmid": vmid, "name": snap}
            )
            r["suspend_guest"] = await client.call_tool("guest_power", {"action": "suspend", "vmid": vmid})
            r["resume_guest"] = await client.call_tool("guest_power", {"action": "resume", "vmid": vmid})
            r["reboot_guest"] = await client.call_tool("guest_power", {"action": "reboot", "vmid": vmid})
            r["backup_guest"] = await client.call_tool("backup_guest", {"vmid": vmid})
            r["shutdown_guest"] = await client.call_tool(
                "guest_power", {"action": "shutdown", "vmid": vmid, "timeout": 30}
            )
            r["start_guest"] = await client.call_tool("guest_power", {"action": "start", "vmid": vmid})
            r["reset_guest"] = await client.call_tool(
                "guest_power", {"action": "reset", "vmid": vmid, "confirm": True}
            )
            r["rollback_snapshot"] = await client.call_tool(
                "snapshot", {"action": "rollback", "vmid": vmid, "name": snap, "confirm": True}
            )
            r["delete_snapshot"] = await client.call_tool(
                "snapshot", {"action": "delete", "vmid": vmid, "name": snap, "confirm": True}
            )
            r["set_guest_config"] = await client.call_tool(
                "set_guest_config", {"vmid": vmid, "tags": ["web", "prod"], "description": "set by test"}
            )
            r["stop_guest"] = await client.call_tool(
                "guest_power", {"action": "stop", "vmid": vmid, "confirm": True}
            )
            r["start_again"] = await client.call_tool("guest_power", {"action": "start", "vmid": vmid})
        return r

    results = {k: structured(v) for k, v in run(go).items()}
    # the rollback (a snapshot without RAM state) leaves the VM stopped: stop has nothing to do
    assert results["stop_guest"]["detail"] == "already stopped; nothing was done"
    for name, data in results.items():
        assert data["outcome"] == "ok", (name, data)
        if name not in ("set_guest_config", "stop_guest"):
            assert data["upid"].startswith("UPID:") and data["exitstatus"] == "OK"
    g = sim.state.guest(vmid)
    assert g["status"] == "running"
    assert g["config"]["tags"] == "web;prod" and g["config"]["description"] == "set by test"
    records = [json.loads(x) for x in server.audit_path.read_text().splitlines()]
    start = [r for r in records if r["tool"] == "guest_power"]
    assert {r["phase"] for r in start} == {"intent", "outcome"}
    assert all(r["client"] == "claude" for r in records)
    assert any(
        r.get("upid", "").startswith("UPID:") and r["outcome"] == "ok"
        for r in start
        if r["phase"] == "outcome"
    )
    assert server.token not in server.audit_path.read_text()
    assert server.config.proxmox_token_secret not in server.audit_path.read_text()


def test_task_tools_and_running_outcome(server, sim):
    vmid = guests_where(sim, type="lxc", status="running")[0]

    async def go():
        async with connect(server) as client:
            first = structured(
                await client.call_tool(
                    "snapshot", {"action": "create", "vmid": vmid, "name": "quick", "wait_seconds": 0}
                )
            )
            status = structured(await client.call_tool("tasks", {"upid": first["upid"]}))
            await anyio.sleep(1.0)
            done = structured(await client.call_tool("tasks", {"upid": first["upid"]}))
            log = structured(await client.call_tool("tasks", {"log_lines": 100, "upid": first["upid"]}))
            tasks = structured(await client.call_tool("tasks", {"vmid": vmid}))
            return first, status, done, log, tasks

    first, status, done, log, tasks = run(go)
    assert first["outcome"] == "running" and "tasks" in first["follow_up"]
    assert status["outcome"] == "running"
    assert done["outcome"] == "ok" and done["exitstatus"] == "OK"
    assert log["log"]
    assert any(t["upid"] == first["upid"] for t in tasks["tasks"])


def test_injected_task_failure_is_reported_failed(server, sim):
    vmid = guests_where(sim, type="qemu", status="stopped")[0]
    sim.state.fail_next("qmstart", "disk image missing: vm-disk-0")

    async def go():
        async with connect(server) as client:
            return await client.call_tool("guest_power", {"action": "start", "vmid": vmid})

    data = structured(run(go))
    assert data["outcome"] == "failed"
    assert "disk image missing" in data["exitstatus"]
    assert data["log_tail"] and any("disk image missing" in line for line in data["log_tail"])
    assert sim.state.guest(vmid)["status"] == "stopped"
    outcome = [json.loads(x) for x in server.audit_path.read_text().splitlines()][-1]
    assert outcome["phase"] == "outcome" and outcome["outcome"] == "failed"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_progress_notifications_reach_the_client(server, sim, mode):
    vmid = guests_where(sim, type="qemu", status="running")[-1]
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress, total, message):
        seen.append((progress, total, message))

    async def go():
        async with connect(server, mode=mode) as client:
            return await client.call_tool(
                "snapshot",
                {"action": "create", "vmid": vmid, "name": f"progress_{mode}"},
                progress_callback=on_progress,
            )

    assert structured(run(go))["outcome"] == "ok"
    assert seen, "no progress notification arrived"
    assert all(total == 15.0 for _, total, _ in seen) and "running" in (seen[-1][2] or "")


def test_destructive_without_confirm_returns_plan_and_changes_nothing(server, sim):
    vmid = guests_where(sim, type="qemu", status="running")[1]
    before = len(sim.state.world["tasks"])

    async def go():
        async with connect(server) as client:
            return await client.call_tool("guest_power", {"action": "stop", "vmid": vmid})

    data = structured(run(go))
    assert data["outcome"] == "plan" and data["plan"]["undo"] and "confirm=true" in data["plan"]["to_proceed"]
    assert "running" in data["plan"]["effect"]
    assert sim.state.guest(vmid)["status"] == "running"
    assert len(sim.state.world["tasks"]) == before


def test_protected_guests_are_refused_in_admin_mode(make_server, sim):
    by_id, by_tag = guests_where(sim, type="qemu", status="running")[2:4]

    async def go(served):
        async with connect(served) as client:
            await client.call_tool("set_guest_config", {"vmid": by_tag, "tags": ["pmcp-protected"]})
            return [
                await client.call_tool("guest_power", {"action": "stop", "vmid": by_id, "confirm": True}),
                await client.call_tool("guest_power", {"action": "shutdown", "vmid": by_tag}),
                await client.call_tool("snapshot", {"action": "create", "vmid": by_tag, "name": "nope"}),
            ]

    with make_server(protected=frozenset({by_id})) as served:
        results = run(go, served)
    assert "PMCP_PROTECTED" in error_text(results[0])
    assert "pmcp-protected" in error_text(results[1]) and "pmcp-protected" in error_text(results[2])
    assert sim.state.guest(by_id)["status"] == "running" and sim.state.guest(by_tag)["status"] == "running"


BAD_CALLS = [
    ("cluster_overview", {"node": "../access/users"}),
    ("cluster_overview", {"node": "pve1/../../access/users"}),
    ("cluster_overview", {"node": "pve1\x00"}),
    ("guest_info", {"vmid": "100/../../"}),
    ("guest_info", {"vmid": "100\x00"}),
    ("guest_info", {"vmid": 99}),
    ("list_storage", {"node": "pve1", "storage": "../../access"}),
    ("snapshot", {"action": "create", "vmid": 100, "name": "a/../../b"}),
    ("snapshot", {"action": "create", "vmid": 100, "name": "snap\x00x"}),
    ("snapshot", {"action": "create", "vmid": 100, "name": "x" * 100_000}),
    ("tasks", {"upid": "UPID:../../access:1:2:3:4:5:6:"}),
    ("tasks", {"log_lines": 100, "upid": "x" * 100_000}),
    ("list_guests", {"tag": "a;b"}),
    ("guest_info", {"show": "network", "vmid": "100/../agent/exec"}),
    ("metrics_history", {"node": "../access/users"}),
    ("metrics_history", {"node": "pve1", "vmid": 100}),
    ("metrics_history", {"vmid": 100, "timeframe": "../../"}),
    ("recent_events", {"hours": 100_000}),
    ("create_guest", {"source": 100, "name": "../../x"}),
    ("create_guest", {"source": 100, "name": "ok", "node": "../access"}),
    ("create_guest", {"source": "local:iso/../../etc/passwd", "name": "ok", "node": "pve1"}),
    ("set_guest_config", {"vmid": 100, "grow_disk": "scsi0/../../x:+1G"}),
    ("set_guest_config", {"vmid": 100, "grow_disk": "scsi0:-1G"}),
    ("set_guest_config", {"vmid": 100, "grow_disk": "scsi0:+1G", "cores": 2}),
    ("migrate_guest", {"vmid": 100, "target_node": "pve1/../.."}),
    ("convert_to_template", {"vmid": "100/../"}),
    ("create_guest", {"source": "local:backup/../../etc/passwd", "node": "pve1"}),
    ("delete_guest", {"vmid": 99}),
]


def test_path_injection_never_reaches_the_simulator(server, sim):
    async def go():
        async with connect(server) as client:
            sim.state.clear_requests()
            return [await client.call_tool(name, args) for name, args in BAD_CALLS]

    results = run(go)
    assert sim.state.requests == []
    for (name, _), r in zip(BAD_CALLS, results, strict=True):
        assert r.is_error, name


def test_ten_megabyte_argument_is_refused_before_parsing(server, sim):
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "tools/call",
            "params": {"name": "cluster_overview", "arguments": {"node": "x" * 10_000_000}},
        }
    )
    sim.state.clear_requests()
    r = httpx2.post(
        server.url,
        content=body,
        headers={
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        timeout=60,
    )
    assert r.status_code == 413
    assert sim.state.requests == []


def test_proxmox_errors_reach_the_model_readably(server, sim):
    sim.state.inject_errors(403, 1)

    async def go():
        async with connect(server) as client:
            return await client.call_tool("list_guests", {})

    try:
        text = error_text(run(go))
    finally:
        sim.state.reset_controls()
    assert "403" in text and "capabilities" in text
    assert server.config.proxmox_token_secret not in text


def test_bad_calls_name_real_tools():
    assert {name for name, _ in BAD_CALLS} <= set(TOOLS)


def test_get_is_retried_but_post_is_not(server, sim):
    from pmcp.server import validate
    from pmcp.server.proxmox import ProxmoxClient, ProxmoxError

    px = ProxmoxClient(server.config)
    vmid = guests_where(sim, type="lxc", status="stopped")[0]
    node = sim.state.world["guests"][str(vmid)]["node"]
    try:
        sim.state.clear_requests()
        sim.state.inject_errors(503, 2)
        assert anyio.run(px.call, "GET", "/version")["version"]
        assert [m for m, _ in sim.state.requests] == ["GET", "GET", "GET"]
        sim.state.clear_requests()
        sim.state.inject_errors(503, 1)
        with pytest.raises(ProxmoxError) as err:
            anyio.run(px.call, "POST", validate.api_path("nodes", node, "lxc", vmid, "status", "start"))
        assert err.value.status == 503
        assert [m for m, _ in sim.state.requests] == ["POST"]
        assert sim.state.guest(vmid)["status"] == "stopped"
    finally:
        sim.state.reset_controls()


def test_tls_is_verified_with_the_ca_file(tmp_path):
    from pmcp.server.config import ServerConfig
    from pmcp.server.proxmox import ProxmoxClient, ProxmoxError
    from pmcp.sim.testing import running_sim

    with running_sim(nodes=1, guests=2, tls=True) as tsim:
        assert tsim.url.startswith("https://")
        base = {"proxmox_url": tsim.url, "proxmox_token_id": tsim.root_token_id}
        good = ProxmoxClient(
            ServerConfig(
                **base, proxmox_token_secret=tsim.root_token_secret, proxmox_ca_file=Path(tsim.ca_file)
            )
        )
        assert anyio.run(good.call, "GET", "/version")["version"] and good.tls_verified
        unverified = ProxmoxClient(ServerConfig(**base, proxmox_token_secret=tsim.root_token_secret))
        with pytest.raises(ProxmoxError, match="PROXMOX_CA_FILE"):
            anyio.run(unverified.call, "GET", "/version")
        wrong = ProxmoxClient(
            ServerConfig(**base, proxmox_token_secret="not-the-secret", proxmox_ca_file=Path(tsim.ca_file))
        )
        with pytest.raises(ProxmoxError) as err:
            anyio.run(wrong.call, "GET", "/version")
        assert err.value.status == 401 and "not-the-secret" not in str(err.value)


def test_least_privilege_token_gets_readable_403(make_server, sim):
    assert sim.request("POST", "/access/users", params={"userid": "auditor@pve"})[0] == 200
    status, body = sim.request("POST", "/access/users/auditor@pve/token/mcp", params={"privsep": 0})
    assert status == 200
    acl = {"path": "/", "roles": "PVEAuditor", "users": "auditor@pve"}
    assert sim.request("PUT", "/access/acl", params=acl)[0] == 200
    vmid = guests_where(sim, type="qemu", status="stopped")[-1]

    async def go(served):
        async with connect(served) as client:
            caps = await client.call_tool("capabilities", {})
            start = await client.call_tool("guest_power", {"action": "start", "vmid": vmid})
            return caps, start

    overrides = {"proxmox_token_id": "auditor@pve!mcp", "proxmox_token_secret": body["data"]["value"]}
    with make_server(mode=Mode.OPERATOR, **overrides) as served:
        caps, start = run(go, served)
    perms = structured(caps)["permissions"]
    assert "VM.Audit" in perms["/"] and "VM.PowerMgmt" not in perms["/"]
    text = error_text(start)
    assert "403" in text and "VM.PowerMgmt" in text and "capabilities" in text
    assert sim.state.guest(vmid)["status"] == "stopped"


def test_a_guest_hidden_by_its_noaccess_acl_is_named_as_protected(make_server, sim):
    """pmcp install gives each protected guest a NoAccess ACL: the token no longer sees it, and the
    agent is told why rather than "no such guest"."""
    hidden = guests_where(sim, type="qemu", pool=None)[0]
    sim.request("POST", "/access/users", params={"userid": "hid@pve"})
    secret = sim.request("POST", "/access/users/hid@pve/token/tk", params={"privsep": 1})[1]["data"]["value"]
    for kind, who in (("users", "hid@pve"), ("tokens", "hid@pve!tk")):
        sim.request("PUT", "/access/acl", params={"path": "/", "roles": "PVEVMAdmin", kind: who})
    sim.request(
        "PUT", "/access/acl", params={"path": f"/vms/{hidden}", "roles": "NoAccess", "tokens": "hid@pve!tk"}
    )

    async def go(served):
        async with connect(served) as client:
            return await client.call_tool("guest_power", {"action": "stop", "vmid": hidden, "confirm": True})

    with make_server(
        protected=frozenset({hidden}), proxmox_token_id="hid@pve!tk", proxmox_token_secret=secret
    ) as served:
        result = run(go, served)
    assert "PMCP_PROTECTED" in error_text(result)


def test_hard_stops_need_admin_mode_and_confirm(make_server, sim):
    """Issue 11, item 5: shutdown_guest(force_stop=true) and backup_guest(mode=stop) cause stop_guest's
    downtime, so they are in its risk class: refused in operator mode, a plan without confirm."""
    vmid = guests_where(sim, type="qemu", status="running")[4]
    hard_shutdown = {"vmid": vmid, "timeout": 1, "force_stop": True}
    stop_backup = {"vmid": vmid, "mode": "stop"}

    async def go(served, calls):
        async with connect(served) as client:
            return [await client.call_tool(name, args) for name, args in calls]

    tasks = len(sim.state.world["tasks"])
    with make_server(mode=Mode.OPERATOR) as served:
        refused = run(
            go,
            served,
            [("guest_power", {"action": "shutdown"} | hard_shutdown), ("backup_guest", stop_backup)],
        )
        records = [json.loads(x) for x in served.audit_path.read_text().splitlines()]
    for r in refused:
        assert "PMCP_MODE=admin" in error_text(r) and "with these arguments" in error_text(r)
    # the refusals are recorded (item 8), with who asked and from where; nothing else was
    assert [(r["phase"], r["tool"], r["risk"]) for r in records] == [
        ("refused", "guest_power", "destructive"),
        ("refused", "backup_guest", "destructive"),
    ]
    assert all(r["client"] == "claude" and r["address"] == "127.0.0.1" for r in records)

    with make_server(mode=Mode.ADMIN) as served:
        plans = run(
            go,
            served,
            [("guest_power", {"action": "shutdown"} | hard_shutdown), ("backup_guest", stop_backup)],
        )
        for p in plans:
            data = structured(p)
            assert data["outcome"] == "plan" and "confirm=true" in data["plan"]["to_proceed"]
        assert sim.state.guest(vmid)["status"] == "running"
        assert len(sim.state.world["tasks"]) == tasks  # nothing reached Proxmox
        [done] = run(
            go, served, [("guest_power", {"action": "shutdown"} | hard_shutdown | {"confirm": True})]
        )
        assert structured(done)["outcome"] == "ok" and sim.state.guest(vmid)["status"] == "stopped"
        intent = [json.loads(x) for x in served.audit_path.read_text().splitlines()][-2]
        assert intent["phase"] == "intent" and intent["risk"] == "destructive"
    with make_server(mode=Mode.OPERATOR) as served:  # a clean shutdown stays an operator's tool
        [clean] = run(go, served, [("guest_power", {"action": "start", "vmid": vmid})])
        [clean] = run(go, served, [("guest_power", {"action": "shutdown", "vmid": vmid, "timeout": 30})])
        assert structured(clean)["outcome"] == "ok"
        [snap] = run(go, served, [("backup_guest", {"vmid": vmid})])
        assert structured(snap)["outcome"] == "ok"


@pytest.mark.parametrize("value", ["true", 1, "yes", "True", [True]])
def test_confirm_is_only_the_json_boolean_true(server, sim, value):
    vmid = guests_where(sim, type="qemu", status="running")[5]
    before = len(sim.state.world["tasks"])

    async def go():
        async with connect(server) as client:
            return [
                await client.call_tool("guest_power", {"action": "stop", "vmid": vmid, "confirm": value}),
                await client.call_tool(
                    "guest_power", {"action": "shutdown", "vmid": vmid, "force_stop": value, "confirm": True}
                ),
            ]

    for result in run(go):
        assert result.is_error
    assert sim.state.guest(vmid)["status"] == "running"
    assert len(sim.state.world["tasks"]) == before


def test_smuggled_proxmox_parameter_does_not_raise_the_risk_or_reach_proxmox(make_server, sim):
    """`forceStop` (Proxmox's own name) next to the tool's arguments is dropped by the schema: the call
    stays a clean shutdown in operator mode, and `force_stop` as a string is refused."""
    vmid = guests_where(sim, type="lxc", status="running")[3]

    async def go(served):
        async with connect(served) as client:
            return [
                await client.call_tool(
                    "guest_power", {"action": "shutdown", "vmid": vmid, "force_stop": "true"}
                ),
                await client.call_tool(
                    "guest_power", {"action": "shutdown", "vmid": vmid, "timeout": 30, "forceStop": True}
                ),
            ]

    with make_server(mode=Mode.OPERATOR) as served:
        as_string, smuggled = run(go, served)
        intents = [json.loads(x) for x in served.audit_path.read_text().splitlines()]
    assert as_string.is_error
    assert structured(smuggled)["outcome"] == "ok"
    [intent] = [r for r in intents if r["phase"] == "intent"]
    assert intent["risk"] == "change" and intent["arguments"]["force_stop"] is False
    assert "forceStop" not in intent["arguments"]


def test_convert_to_template_plans_then_converts(server, sim):
    """Irreversible, so without confirm only the plan; with it, the stopped VM is a template."""
    vmid = guests_where(sim, type="qemu", status="stopped")[0]
    guest = sim.state.guest(vmid)
    saved = dict(guest)
    guest["snapshots"] = []  # Proxmox refuses a VM with snapshots (the seeded ones have some)

    async def go(args):
        async with connect(server) as client:
            return await client.call_tool("convert_to_template", args)

    try:
        plan = run(go, {"vmid": vmid})
        assert "becomes a template" in plan.content[0].text and not guest["template"]
        done = run(go, {"vmid": vmid, "confirm": True})
        assert structured(done)["outcome"] == "ok", done.content[0].text
        assert sim.state.guest(vmid)["template"]
    finally:  # the simulator is shared by the module: the next tests find the world as seeded
        sim.state.guest(vmid).clear()
        sim.state.guest(vmid).update(saved)


def test_list_guests_sorts_shows_numbers_and_says_plainly_what_is_wrong(server, sim):
    """Issue 14: sort by a number, the numbers and a readable uptime in the text, an unknown node and
    an offset past the end said plainly (not "0 guests match" / "showing 0-60")."""

    async def go():
        async with connect(server) as client:
            return [
                await client.call_tool(
                    "list_guests", {"sort": "mem", "status": "running", "limit": 5, "detail": True}
                ),
                await client.call_tool("list_guests", {"node": "nosuchnode"}),
                await client.call_tool("list_guests", {"offset": 10_000}),
            ]

    by_mem, unknown, past = run(go)
    guests = structured(by_mem)["guests"]
    mems = [g["mem"] for g in guests]
    assert len(mems) == 5 and mems == sorted(mems, reverse=True) and mems[0] > 0
    text = by_mem.content[0].text
    assert "cpu mem(GiB used/max) uptime" in text and "%/" in text
    assert any(part.endswith(("m", "h")) and part[0].isdigit() for part in text.split())
    assert "no node 'nosuchnode'" in error_text(unknown) and "pve1" in error_text(unknown)
    assert "past the end" in error_text(past) and "last page starts at offset" in error_text(past)


def test_argument_errors_are_said_in_the_models_terms(server):
    """Issue 14: not pydantic's report ("1 validation error for list_guestsArguments", of which the
    client got only that first line), but the field and the rule."""

    async def go():
        async with connect(server) as client:
            return [
                await client.call_tool("list_guests", {"limit": 0}),
                await client.call_tool("guest_power", {"vmid": 100, "action": "explode"}),
                await client.call_tool("guest_info", {}),
            ]

    texts = [error_text(r) for r in run(go)]
    assert texts[0].endswith("invalid argument: limit: must be at least 1")
    assert "action: must be one of 'start'" in texts[1]
    assert texts[2].endswith("invalid argument: vmid: is required")
    assert not any("validation error" in t or "Arguments" in t for t in texts)
