"""`pmcp install` end to end: the CLI contract (dry-run, JSON, exit codes) and the failure paths: a server
that fails its health check is undone with its log tail, an interrupted install is finished by a re-run.
Runs against the simulator service (the demo layout), with the real engine and compose."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import demo_opts, pmcp_cli, project_services, step_statuses

pytestmark = [pytest.mark.docker, pytest.mark.dist, pytest.mark.slow]


def test_dry_run_json_changes_nothing_and_fails_clearly_off_proxmox(tmp_path: Path) -> None:
    """Off a Proxmox host, `install --dry-run --json` stops at preflight with the fix, writes nothing."""
    prefix = tmp_path / "inst"
    proc = pmcp_cli(
        "install",
        "--prefix",
        str(prefix),
        "--dry-run",
        "--json",
        "--agent-user",
        "",
        env={"PMCP_PVESH": "false", "PMCP_PVEVERSION": "false"},
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr  # the host is not ready (README: exit codes)
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["data"]["dry_run"] is True and out["command"] == "install"
    pre = out["steps"][0]  # preflight comes first: a host that fails it gets no install dir
    assert pre["name"] == "preflight" and pre["status"] == "failed" and pre["fix"]
    assert out["error"]["message"].startswith("preflight: ") and out["error"]["fix"] == pre["fix"]
    assert "Traceback" not in proc.stderr and out["error"]["message"] in proc.stderr
    assert not prefix.exists()


def test_failing_health_check_is_undone_and_rerun_recovers(stack_env: dict[str, str], tmp_path: Path) -> None:
    """A server that exits (bad configuration): install fails at the stack step with the log tail, the
    stack is removed; fixing the option and re-running completes from where it stopped."""
    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall

    prefix = tmp_path / "bad"
    opts = demo_opts(prefix, health_timeout=60.0)
    opts.extra_env = {"PMCP_MODE": "bogus-mode"}
    try:
        res = install(opts, kind="demo")
        assert not res.ok
        failed = next(s for s in res.run.steps if s.status == "failed")
        assert failed.name == "stack", res.to_dict()
        assert "mcp-server" in failed.error and failed.fix
        assert "bogus" in failed.detail or "mode" in failed.detail.lower(), failed.detail
        assert "undone" in " ".join(failed.notes)
        assert project_services(prefix) == ["pve-sim"]  # the failed step's containers are gone
        opts.extra_env = {}
        again = install(opts, kind="demo")
        assert again.ok, again.to_dict()
        st = step_statuses(again)
        assert st["simulator"] == "ok" and st["proxmox identity"] == "ok" and st["stack"] == "changed"
    finally:
        uninstall(prefix, purge=True)
    assert not prefix.exists()


def test_a_failed_stack_undoes_the_firewall_rules_made_beside_it(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The Proxmox firewall is on, so both firewall steps add a rule while the stack step waits for the
    server beside them; the server exits (a bad mode). The rules made beside the failed step are removed
    again (declared after it: one step after another they would never have been made), the stack's
    containers too, and what came before (the identity) stays. A re-run finishes."""
    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall
    from pmcp.sim.client import DEFAULT_ROOT_TOKEN, call
    from pmcp.stack import render

    prefix = tmp_path / "fw"
    opts = demo_opts(prefix, health_timeout=60.0)
    opts.sim.firewall = True
    opts.extra_env = {"PMCP_MODE": "bogus-mode"}
    api = f"https://127.0.0.1:{opts.sim.port}/api2/json"

    def pmcp_rules() -> list[str]:
        ca = str(prefix / render.SIM_CA)
        nodes = [n["node"] for n in call(api, "GET", "/nodes", DEFAULT_ROOT_TOKEN, None, ca)[1]["data"]]
        return [
            str(r.get("comment"))
            for node in nodes
            for r in call(api, "GET", f"/nodes/{node}/firewall/rules", DEFAULT_ROOT_TOKEN, None, ca)[1][
                "data"
            ]
            if str(r.get("comment", "")).startswith("pmcp")
        ]

    try:
        res = install(opts, kind="demo")
        assert not res.ok
        names, st = [s.name for s in res.run.steps], step_statuses(res)
        assert st["stack"] == "failed" and names.index("stack") < names.index("api firewall"), names
        beside = {s.name: s for s in res.run.steps if s.name in ("api firewall", "firewall")}
        assert beside["api firewall"].status == "undone", res.to_dict()
        assert all(s.status == "undone" for s in beside.values()), res.to_dict()
        assert all("undone: stack failed beside it" in s.notes for s in beside.values())
        assert "ran beside stack" in beside["api firewall"].notes
        assert pmcp_rules() == []  # made, then removed again
        assert st["proxmox identity"] == "changed"  # declared before the failed step: kept
        assert project_services(prefix) == ["pve-sim"]  # the failed step's own undo
        opts.extra_env = {}
        again = install(opts, kind="demo")
        assert again.ok, again.to_dict()
        st = step_statuses(again)
        assert st["proxmox identity"] == "ok" and st["stack"] == st["api firewall"] == "changed", st
        assert sorted(pmcp_rules()) == ["pmcp-mcp https", "pmcp-proxmox-api"]
    finally:
        uninstall(prefix, purge=True)
    assert not prefix.exists()


def test_interrupted_install_rerun_recovers(stack_env: dict[str, str], tmp_path: Path) -> None:
    """Ctrl-C right after the image step: nothing half-done is left, and the next run finishes the job."""
    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall

    prefix = tmp_path / "intr"
    opts = demo_opts(prefix)

    def interrupt(r) -> None:  # type: ignore[no-untyped-def]
        if r.name == "proxmox identity":
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            install(opts, report=interrupt, kind="demo")
        again = install(opts, kind="demo")
        assert again.ok, again.to_dict()
        st = step_statuses(again)
        assert st["files"] == "ok" and st["proxmox identity"] == "ok" and st["stack"] == "changed"

        # Changed options on a running stack: your own certificate. Caddy is recreated, the server is not.
        server_before = _container_id(prefix, "mcp-server")
        cert, key = _self_signed(tmp_path, "localhost")
        opts.tls_cert, opts.tls_key = str(cert), str(key)
        changed = install(opts, kind="demo")
        assert changed.ok, changed.to_dict()
        st = step_statuses(changed)
        assert st["files"] == "changed" and st["stack"] == "changed" and st["image"] == "ok"
        assert _container_id(prefix, "mcp-server") == server_before
        tls = next(r for r in changed.verify if r["check"] == "tls")
        assert tls["result"] == "pass", tls
        assert any("backups" in str(p) for p in prefix.iterdir())
    finally:
        uninstall(prefix, purge=True)


def _container_id(prefix: Path, service: str) -> str:
    from pmcp.stack.compose import project_name

    return subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={project_name(prefix)}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_agent_account_contained_then_restored(stack_env: dict[str, str], tmp_path: Path) -> None:
    """A real account with blanket sudo and the docker group: install takes both away (verified by the
    escalation battery), uninstall gives back exactly what was there. In a private copy of /etc (own mount
    namespace): never the test machine's own accounts and sudoers."""
    from tests.support.private_etc import in_private_etc

    in_private_etc(_agent_account_contained_then_restored, tmp_path)


def _agent_account_contained_then_restored(tmp_path: Path) -> None:
    import grp

    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall
    from tests.support.accounts import temp_account

    prefix = tmp_path / "agent"
    with temp_account(groups=("docker",)) as acct:
        blanket = acct.sudoers_file(f"90-test-{acct.name}", f"{acct.name} ALL=(ALL) NOPASSWD:ALL\n")
        before = blanket.read_text()
        opts = demo_opts(prefix, agent_user=acct.name)
        try:
            res = install(opts, kind="demo")
            assert res.ok, res.to_dict()
            assert step_statuses(res)["agent account"] == "changed"
            agent_rows = [r for r in res.verify if r["check"].startswith("agent:")]
            assert agent_rows and all(r["result"] == "pass" for r in agent_rows), agent_rows
            assert acct.name not in grp.getgrnam("docker").gr_mem
            assert acct.name not in (blanket.read_text() if blanket.exists() else "")
        finally:
            undone = uninstall(prefix)
        assert undone.ok, undone.to_dict()
        assert blanket.read_text() == before
        assert acct.name in grp.getgrnam("docker").gr_mem
        assert (prefix / "audit").is_dir()  # the audit log is kept without --purge, with its chain's key
        assert [p.name for p in (prefix / "secrets").iterdir()] == ["audit-key"]
        assert not (prefix / "docker-compose.yml").exists()


def test_public_host_name_through_caddy_is_not_refused(stack_env: dict[str, str], tmp_path: Path) -> None:
    """Behind Caddy the public Host header reaches the server; the SDK's default allowlist (localhost only)
    would answer 421. Install with this machine's own name as the public name, and verify (a real MCP
    session with that Host, SNI and certificate) must pass."""
    import socket

    from pmcp.lifecycle.install import install
    from pmcp.lifecycle.uninstall import uninstall

    name = socket.gethostname()
    assert name not in ("localhost", "127.0.0.1") and socket.gethostbyname(name), name
    prefix = tmp_path / "named"
    opts = demo_opts(prefix, public_names=[name, "localhost"])
    try:
        res = install(opts, kind="demo")
        assert res.ok, res.to_dict()
        assert res.url.startswith(f"https://{name}:"), res.url
        checks = {r["check"]: (r["result"], r.get("detail", "")) for r in res.verify}
        assert checks["mcp session"][0] == "pass" and name in checks["mcp session"][1], checks
    finally:
        undone = uninstall(prefix, purge=True)
    assert undone.ok, undone.to_dict()
