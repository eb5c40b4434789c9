"""The whole stack without Proxmox: install against the simulator service, verify, re-run, tear down.

Real engine, real compose (v1 here), real Caddy, the real MCP server in its image, the SDK client.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import DemoStack, demo_opts, pmcp_cli, project_containers

pytestmark = [pytest.mark.docker, pytest.mark.dist, pytest.mark.slow]


def _statuses(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.name: s.status for s in result.run.steps}


def test_install_succeeds_and_verifies(demo_stack: DemoStack) -> None:
    res = demo_stack.result
    assert res.ok, "\n".join(f"{s.name}: {s.error}\n{s.detail}" for s in res.run.steps if s.error)
    st = _statuses(res)
    for name in ("files", "image", "simulator", "proxmox identity", "secrets", "stack"):
        assert st[name] == "changed", (name, st)
    assert st["verify"] == "ok"
    checks = {r["check"]: r["result"] for r in res.verify}
    for name in ("mcp session", "auth required", "tls", "mcp-server hardening", "caddy hardening"):
        assert checks[name] == "pass", (name, res.verify)
    assert res.url.startswith("https://localhost:") and res.url.endswith("/mcp")
    data = res.to_dict()
    assert data["ok"] and data["changed"] and Path(data["transcript"]).exists()
    from pmcp import authtokens
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(demo_stack.prefix)
    dumped = json.dumps(data)
    for secret in [*authtokens.load(paths.client_tokens).values(), paths.proxmox_token_secret.read_text().strip()]:
        assert secret not in dumped


def test_secrets_are_private_files_not_env(demo_stack: DemoStack) -> None:
    from pmcp import authtokens
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(demo_stack.prefix)
    for secret in (paths.client_tokens, paths.proxmox_token_secret):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    env = paths.env_file.read_text()
    for token in authtokens.load(paths.client_tokens).values():
        assert token not in env
    assert paths.proxmox_token_secret.read_text().strip() not in env
    transcript = Path(demo_stack.result.transcript).read_text()
    assert paths.proxmox_token_secret.read_text().strip() not in transcript


def test_second_install_changes_nothing(demo_stack: DemoStack) -> None:
    from pmcp import authtokens
    from pmcp.lifecycle.install import install
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(demo_stack.prefix)
    before_ids = sorted(project_containers(demo_stack.prefix))
    tokens = authtokens.load(paths.client_tokens)
    secret = paths.proxmox_token_secret.read_bytes()
    again = install(demo_stack.opts, kind="demo")
    assert again.ok, again.to_dict()
    assert not again.run.changed, [s for s in again.run.steps if s.status != "ok"]
    assert all(s.status == "ok" for s in again.run.steps)
    assert sorted(project_containers(demo_stack.prefix)) == before_ids  # nothing restarted or recreated
    assert authtokens.load(paths.client_tokens) == tokens and paths.proxmox_token_secret.read_bytes() == secret


def test_verify_cli_json(demo_stack: DemoStack) -> None:
    proc = pmcp_cli("verify", "--prefix", str(demo_stack.prefix), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and any(c["check"] == "mcp session" and c["result"] == "pass" for c in report["checks"])


def test_status_cli(demo_stack: DemoStack) -> None:
    proc = pmcp_cli("status", "--prefix", str(demo_stack.prefix), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = json.loads(proc.stdout)
    assert st["healthy"] and st["services"]["mcp-server"]["health"] == "healthy"
    assert st["services"]["caddy"]["status"] == "running"


def test_wrong_client_token_is_refused(demo_stack: DemoStack) -> None:
    from pmcp.lifecycle.verify import check_mcp, load_target

    target = load_target(demo_stack.prefix)
    target.token = "not-the-token-" + "x" * 20
    row = check_mcp(target)
    assert row.result == "fail" and "401" in row.detail


def test_logs_cli(demo_stack: DemoStack) -> None:
    proc = pmcp_cli("logs", "--prefix", str(demo_stack.prefix), "--tail", "5", "mcp-server")
    assert proc.returncode == 0, proc.stderr


def test_demo_stack_cli_json_info_and_down(stack_env: dict[str, str], tmp_path: Path) -> None:
    """`demo_stack()` as the CLI calls it: json-info, then --down leaves nothing (identity gone first)."""
    from pmcp.lifecycle.demo_stack import demo_stack
    from tests.e2e.conftest import free_port

    prefix = tmp_path / "demo"
    info = tmp_path / "info.json"
    ports = {"https_port": free_port(), "server_port": free_port(), "sim_port": free_port()}
    code = demo_stack(str(prefix), False, "read-only", None, str(info), 5, False, **ports)
    try:
        assert code == 0
        data = json.loads(info.read_text())
        assert set(data) == {"url", "token", "ca_file", "prefix"}
        assert stat.S_IMODE(info.stat().st_mode) == 0o600
        assert Path(data["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        users = _sim_users(ports["sim_port"], prefix)
        assert "pmcp@pve" in users
    finally:
        seen: list[str] = []
        from pmcp.lifecycle.uninstall import uninstall

        def on_step(r) -> None:  # type: ignore[no-untyped-def]
            if r.name == "proxmox identity" and r.status == "undone":
                seen.extend(_sim_users(ports["sim_port"], prefix))

        res = uninstall(prefix, purge=True, report=on_step)
    assert res.ok, res.to_dict()
    assert "pmcp@pve" not in seen and seen, seen  # the identity was removed while the simulator still ran
    assert not prefix.exists()
    assert project_containers(prefix) == []


def _services(prefix: Path) -> list[str]:
    from pmcp.stack.compose import project_name

    out = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.service"}}',
         "--filter", f"label=com.docker.compose.project={project_name(prefix)}"],
        capture_output=True, text=True, check=False,
    ).stdout
    return sorted(out.split())


def _sim_users(port: int, prefix: Path) -> list[str]:
    from pmcp.stack.render import SIM_CA

    env = {"PMCP_SIM_URL": f"https://127.0.0.1:{port}", "PMCP_SIM_CA_FILE": str(prefix / SIM_CA)}
    proc = pmcp_cli("sim", "pvesh", "get", "/access/users", "--output-format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    return [u["userid"] for u in json.loads(proc.stdout)]


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
        assert _services(prefix) == ["pve-sim"]  # the failed step's containers are gone
        opts.extra_env = {}
        again = install(opts, kind="demo")
        assert again.ok, again.to_dict()
        st = _statuses(again)
        assert st["simulator"] == "ok" and st["proxmox identity"] == "ok" and st["stack"] == "changed"
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
        st = _statuses(again)
        assert st["files"] == "ok" and st["proxmox identity"] == "ok" and st["stack"] == "changed"
    finally:
        uninstall(prefix, purge=True)
