"""The whole stack without Proxmox: install against the simulator service, verify, re-run, tear down.

Real engine, real compose (v1 here; v2 in test_compose_v2.py), real Caddy, the real MCP server in its
image, the SDK client.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from pmcp.files import atomic_write
from tests.e2e.conftest import DemoStack, pmcp_cli, project_containers, step_statuses

pytestmark = [pytest.mark.docker, pytest.mark.dist, pytest.mark.slow]


def test_install_succeeds_and_verifies(demo_stack: DemoStack) -> None:
    res = demo_stack.result
    assert res.ok, "\n".join(f"{s.name}: {s.error}\n{s.detail}" for s in res.run.steps if s.error)
    st = step_statuses(res)
    for name in ("files", "simulator", "proxmox identity", "secrets", "stack"):
        assert st[name] == "changed", (name, st)
    assert st["image"] in ("changed", "ok")  # "ok" when an earlier stack built the same image
    assert st["verify"] == "ok"
    checks = {r["check"]: r["result"] for r in res.verify}
    for name in ("mcp session", "auth required", "tls", "mcp-server hardening", "caddy hardening"):
        assert checks[name] == "pass", (name, res.verify)
    # the images run are the ones install recorded, and the MCP image holds this pmcp file (issue 11)
    assert checks["mcp-server image"] == "pass" and checks["caddy image"] == "pass", res.verify
    assert "mcp-server pmcp file" not in checks and checks["audit log space"] in ("pass", "warn")
    assert checks["audit log chain"] == "pass", res.verify
    assert res.url.startswith("https://localhost:") and res.url.endswith("/mcp")
    data = res.to_dict()
    assert data["ok"] and data["changed"] and Path(data["transcript"]).exists()
    from pmcp import authtokens
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(demo_stack.prefix)
    dumped = json.dumps(data)
    for secret in [
        *authtokens.load(paths.client_tokens).values(),
        paths.proxmox_token_secret.read_text().strip(),
    ]:
        assert secret not in dumped


def test_secrets_are_private_files_not_env(demo_stack: DemoStack) -> None:
    from pmcp import authtokens
    from pmcp import record as statefile
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(demo_stack.prefix)
    gid = statefile.load(paths)["config"]["gid"]
    # root's, read by the containers through their group (the mcp-server just did: verify passed)
    for secret in (paths.client_tokens, paths.proxmox_token_secret, paths.audit_key):
        st = secret.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o640), secret
    dst = paths.secrets_dir.stat()
    assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode)) == (0, gid, 0o750)
    checks = {r["check"]: r["result"] for r in demo_stack.result.verify}
    assert checks["container ids"] == "pass" and checks["token scope"] == "pass"
    assert checks["acl change refused"] == "pass" and checks["protected guests"] == "pass"
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
    assert (
        authtokens.load(paths.client_tokens) == tokens and paths.proxmox_token_secret.read_bytes() == secret
    )


def test_verify_cli_json(demo_stack: DemoStack) -> None:
    proc = pmcp_cli("verify", "--prefix", str(demo_stack.prefix), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["ok"] and envelope["command"] == "verify" and envelope["error"] is None
    report = envelope["data"]
    assert report["ok"] and any(
        c["check"] == "mcp session" and c["result"] == "pass" for c in report["checks"]
    )


def test_status_cli(demo_stack: DemoStack) -> None:
    proc = pmcp_cli("status", "--prefix", str(demo_stack.prefix), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = json.loads(proc.stdout)["data"]
    assert st["healthy"] and st["services"]["mcp-server"]["health"] == "healthy"
    assert st["services"]["caddy"]["status"] == "running"


def test_audit_records_the_client_address_caddy_saw(demo_stack: DemoStack) -> None:
    """Through Caddy, the audit's address is the client's (X-Forwarded-For, believed from Caddy only),
    not Caddy's own; a call the read-only mode refuses is recorded too (issue 11, item 8)."""
    import anyio
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    from pmcp.lifecycle.verify import load_target
    from pmcp.paths import InstallPaths
    from pmcp.stack import engine

    t = load_target(demo_stack.prefix)

    async def go() -> bool:
        headers = {"Authorization": f"Bearer {t.token}", "X-Forwarded-For": "203.0.113.66"}
        async with (
            httpx2.AsyncClient(headers=headers, verify=t.ssl_context(), timeout=60) as http,
            Client(streamable_http_client(t.url, http_client=http)) as client,
        ):
            result = await client.call_tool("guest_power", {"action": "start", "vmid": 100})
            return bool(result.is_error)

    assert anyio.run(go)  # read-only: refused
    audit = InstallPaths.at(demo_stack.prefix).audit_log.read_text().splitlines()
    record = json.loads(audit[-1])
    assert record["phase"] == "refused" and record["tool"] == "guest_power"
    caddy = engine.project_containers(engine.client(), t.project)["caddy"]
    caddy_ips = {n["IPAddress"] for n in caddy.attrs["NetworkSettings"]["Networks"].values()}
    assert record["address"] and record["address"] not in caddy_ips, (record, caddy_ips)
    assert record["address"] != "203.0.113.66"  # Caddy does not pass on what a client claims
    # sealed with the install's key, which the server read from its secrets mount (never the log)
    key = InstallPaths.at(demo_stack.prefix).audit_key.read_text().strip()
    assert record["seq"] >= 1 and key not in "\n".join(audit)
    proc = pmcp_cli("audit", "verify", "--prefix", str(demo_stack.prefix), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["data"]["last_seq"] == record["seq"]


def test_wrong_client_token_is_refused(demo_stack: DemoStack) -> None:
    from pmcp.lifecycle.verify import check_mcp, load_target

    target = load_target(demo_stack.prefix)
    target.token = "not-the-token-" + "x" * 20
    row = check_mcp(target)
    assert row.result == "fail" and "401" in row.detail


def test_logs_cli(demo_stack: DemoStack) -> None:
    proc = pmcp_cli("logs", "--prefix", str(demo_stack.prefix), "--tail", "5", "mcp-server")
    assert proc.returncode == 0, proc.stderr


def test_demo_stack_rerun_writes_json_info(demo_stack: DemoStack, tmp_path: Path) -> None:
    """`demo_stack()` as the CLI calls it, on the running stack: nothing changes, json-info is written."""
    from pmcp.lifecycle.demo_stack import demo_stack as run_demo_stack

    o = demo_stack.opts
    info = tmp_path / "info.json"
    before = sorted(project_containers(demo_stack.prefix))
    ports = {"https_port": o.https_port, "server_port": o.server_port, "sim_port": o.sim.port}
    res = run_demo_stack(str(demo_stack.prefix), False, o.mode, None, str(info), o.sim.guests, **ports)
    assert res.ok and res.code == 0, res.to_dict()
    assert not res.changed, [s.to_dict() for s in res.steps if s.status != "ok"]
    data = json.loads(info.read_text())
    assert set(data) == {"url", "token", "ca_file", "prefix"}
    assert stat.S_IMODE(info.stat().st_mode) == 0o600
    assert Path(data["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert sorted(project_containers(demo_stack.prefix)) == before


def test_upstream_switch_is_a_caddy_reload(demo_stack: DemoStack) -> None:
    """The mechanism `pmcp update` uses: rewrite caddy.d/upstream.caddy, reload Caddy (not restart)."""
    from pmcp.lifecycle.verify import _post_status, load_target
    from pmcp.paths import InstallPaths
    from pmcp.stack import engine, render

    paths = InstallPaths.at(demo_stack.prefix)
    target = load_target(demo_stack.prefix)
    c = engine.client()
    caddy = engine.project_containers(c, target.project)["caddy"]
    started = caddy.attrs["State"]["StartedAt"]
    upstream = paths.prefix / "caddy.d" / "upstream.caddy"
    try:
        atomic_write(upstream, render.upstream_text("pve-sim:8006"), 0o644)
        engine.reload_caddy(c, target.project)
        assert _post_status(target, target.token) == 502
    finally:
        atomic_write(upstream, render.upstream_text(render.UPSTREAM_DEFAULT), 0o644)
        engine.reload_caddy(c, target.project)
    assert _post_status(target, None) == 401
    caddy.reload()
    assert caddy.attrs["State"]["StartedAt"] == started and caddy.attrs["RestartCount"] == 0


def test_the_server_starts_from_bytecode_compiled_into_its_image(demo_stack: DemoStack) -> None:
    """The image unpacks and compiles the file at build time (Dockerfile): a start reads .pyc files from
    the read-only image instead of unpacking into a tmpfs and compiling every module again."""
    from pmcp.lifecycle.verify import load_target
    from pmcp.stack import engine

    target = load_target(demo_stack.prefix)
    server = engine.project_containers(engine.client(), target.project)["mcp-server"]
    assert "SHIV_ROOT=/opt/pmcp" in server.attrs["Config"]["Env"]
    assert not any(m.startswith("/run/shiv") for m in server.attrs["HostConfig"].get("Tmpfs") or {})
    code = (
        "import glob, sys; sys.path.insert(0, glob.glob('/opt/pmcp/*/site-packages')[0]); "
        "import mcp, pmcp.server.app; "
        "pyc = glob.glob('/opt/pmcp/*/site-packages/mcp/**/__pycache__/*.pyc', recursive=True); "
        "print(len(pyc), mcp.__file__)"
    )
    rc, out = server.exec_run(["python3", "-c", code])
    assert rc == 0, out.decode()
    count, where = out.decode().split()
    assert int(count) > 50 and where.startswith("/opt/pmcp/"), out.decode()


def test_zz_down_removes_everything_identity_first(demo_stack: DemoStack) -> None:
    """Last in the module: `--down` undoes every step; the Proxmox identity is gone while the simulator
    still runs; no file, container or image is left."""
    from pmcp.lifecycle.demo_stack import demo_stack as run_demo_stack
    from pmcp.lifecycle.uninstall import uninstall

    prefix, port = demo_stack.prefix, demo_stack.opts.sim.port
    assert "pmcp@pve" in _sim_users(port, prefix)
    from pmcp import record as statefile
    from pmcp.paths import InstallPaths

    image = statefile.load(InstallPaths.at(prefix))["mcp_image"]
    seen: list[str] = []

    def on_step(r) -> None:  # type: ignore[no-untyped-def]
        if r.name == "proxmox identity" and r.status == "undone":
            seen.extend(_sim_users(port, prefix))

    res = uninstall(prefix, purge=True, report=on_step)
    assert res.ok, res.to_dict()
    assert seen and "pmcp@pve" not in seen, seen
    assert not prefix.exists()
    assert project_containers(prefix) == []
    users = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"ancestor={image}"], capture_output=True, text=True
    )
    if not users.stdout.strip():  # another stack may share the image: then docker keeps it, rightly
        assert subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0
    again = run_demo_stack(str(prefix), True, "read-only", None, None, 5)  # --down again: a no-op, said
    assert again.ok and not again.changed and not again.steps and "nothing to remove" in again.text[0]


def _sim_users(port: int, prefix: Path) -> list[str]:
    from pmcp.stack.render import SIM_CA

    env = {"PMCP_SIM_URL": f"https://127.0.0.1:{port}", "PMCP_SIM_CA_FILE": str(prefix / SIM_CA)}
    proc = pmcp_cli("sim", "pvesh", "get", "/access/users", "--output-format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    return [u["userid"] for u in json.loads(proc.stdout)]
