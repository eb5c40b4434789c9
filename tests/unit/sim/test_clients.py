"""Real clients drive the simulator: proxmoxer (with Tasks.blocking_status, over verified TLS) and
`pmcp sim pvesh` / `pveversion` / `serve` as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pmcp.sim.testing import RunningSim, call, running_sim
from tests.support.ports import free_port

proxmoxer = pytest.importorskip("proxmoxer")


def pmcp(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pmcp", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def prox(sim: RunningSim) -> proxmoxer.ProxmoxAPI:
    user, token_name = sim.root_token_id.split("!")
    host, port = sim.url.split("//")[1].rsplit(":", 1)
    return proxmoxer.ProxmoxAPI(
        host, port=int(port), user=user, token_name=token_name, token_value=sim.root_token_secret,
        verify_ssl=sim.ca_file or False, service="PVE",
    )  # fmt: skip


def test_proxmoxer_over_verified_tls_with_blocking_status() -> None:
    from proxmoxer.core import ResourceException
    from proxmoxer.tools import Tasks

    with running_sim(nodes=2, guests=12, seed=5, task_seconds=0.2, tls=True) as sim:
        assert sim.url.startswith("https://") and Path(sim.ca_file).exists()
        px = prox(sim)
        assert px.version.get()["release"] == "9.1"
        vm = next(
            v for v in px.nodes("pve1").qemu.get() if v["status"] == "stopped" and not v.get("template")
        )
        upid = px.nodes("pve1").qemu(vm["vmid"]).status.start.post()
        status = Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.05)
        assert status["status"] == "stopped" and status["exitstatus"] == "OK"
        assert px.nodes("pve1").qemu(vm["vmid"]).status.current.get()["status"] == "running"
        assert Tasks.decode_upid(upid)["type"] == "qmstart"
        sim.state.fail_next("qmshutdown", "VM quit/powerdown failed - got timeout")
        upid = px.nodes("pve1").qemu(vm["vmid"]).status.shutdown.post(timeout=30)
        status = Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.05)
        assert status["exitstatus"] == "VM quit/powerdown failed - got timeout"
        with pytest.raises(ResourceException) as err:
            px.nodes("pve1").qemu("abc").status.current.get()
        assert err.value.status_code == 400 and "vmid" in str(err.value.errors)
        resources = px.cluster.resources.get(type="vm")
        assert len(resources) == 12


def test_https_refuses_a_client_without_the_ca() -> None:
    import ssl
    import urllib.error

    with running_sim(nodes=1, guests=1, tls=True) as sim:
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            call(sim.api_url, "GET", "/version", sim.root_token, ca_file=None)
        assert call(sim.api_url, "GET", "/version", sim.root_token, ca_file=sim.ca_file)[0] == 200


def test_pvesh_subprocess_like_the_installer_uses_it(sim: RunningSim) -> None:
    env = sim.env()
    r = pmcp("sim", "pvesh", "get", "/version", "--output-format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"].startswith("9.")
    privs = "VM.Audit,VM.PowerMgmt,Sys.Audit"
    r = pmcp("sim", "pvesh", "create", "/access/roles", "--roleid", "ShimRole", "--privs", privs, env=env)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    r = pmcp("sim", "pvesh", "create", "/access/roles", "--roleid", "ShimRole", "--privs", privs, env=env)
    assert r.returncode == 255 and r.stderr.strip() == "create role failed: role 'ShimRole' already exists"
    assert pmcp("sim", "pvesh", "create", "/access/users", "--userid", "pvesh@pve", env=env).returncode == 0
    r = pmcp(
        "sim",
        "pvesh",
        "create",
        "/access/users/pvesh@pve/token/mcp",
        "--privsep",
        "1",
        "--output-format",
        "json",
        env=env,
    )
    token = json.loads(r.stdout)
    assert token["full-tokenid"] == "pvesh@pve!mcp" and len(token["value"]) == 36
    r = pmcp(
        "sim", "pvesh", "set", "/access/acl", "--path", "/", "--roles", "ShimRole",
        "--users", "pvesh@pve", "--tokens", "pvesh@pve!mcp", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = pmcp(
        "sim",
        "pvesh",
        "get",
        "/access/permissions",
        "--userid",
        "pvesh@pve!mcp",
        "--output-format",
        "json",
        env=env,
    )
    assert set(json.loads(r.stdout)["/"]) == set(privs.split(","))
    r = pmcp("sim", "pvesh", "get", "/nodes/pve1/qemu/abc/config", env=env)
    assert r.returncode == 255
    assert r.stderr.splitlines() == [
        "400 Parameter verification failed.",
        "vmid: type check ('integer') failed - got 'abc'",
        "pvesh get <api_path> [OPTIONS] [FORMAT_OPTIONS]",
    ]
    r = pmcp("sim", "pvesh", "get", "/version", env={**env, "PMCP_SIM_ROOT_TOKEN": "root@pam!pmcp-sim=wrong"})
    assert r.returncode == 255 and "Authentication failed!" in r.stderr


def test_pveversion() -> None:
    nobody = {"PMCP_SIM_URL": f"http://127.0.0.1:{free_port()}"}
    r = pmcp("sim", "pveversion", env=nobody)
    assert r.returncode == 0 and r.stdout.startswith("pve-manager/9.1.")
    r = pmcp("sim", "pveversion", env={**nobody, "PMCP_SIM_PVE_VERSION": "8.4.1"})
    assert r.stdout.startswith("pve-manager/8.4.1/")
    assert "proxmox-ve: 9." in pmcp("sim", "pveversion", "-v", env=nobody).stdout


def test_serve_subprocess_persists_identity_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "sim-state.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PMCP_SIM_URL": url}

    def start() -> subprocess.Popen[str]:
        argv = ["sim", "serve", "--port", str(port), "--guests", "5", "--state", str(state)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "pmcp", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if call(url, "GET", "/_sim/health", None, timeout=1)[0] == 200:
                    return proc
            except OSError:
                time.sleep(0.05)
        proc.kill()
        raise AssertionError(proc.communicate()[1])

    proc = start()
    try:
        assert (
            pmcp("sim", "pvesh", "create", "/access/users", "--userid", "keep@pve", env=env).returncode == 0
        )
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "api2/json" in out and "PVEAPIToken=root@pam!pmcp-sim" in out
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    proc = start()
    try:
        r = pmcp("sim", "pvesh", "get", "/access/users/keep@pve", "--output-format", "json", env=env)
        assert r.returncode == 0, r.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_serve_tls_subprocess_with_pvesh_verifying_the_ca(tmp_path: Path) -> None:
    port = free_port()
    tls_dir = tmp_path / "tls"
    argv = ["sim", "serve", "--port", str(port), "--guests", "3", "--tls", "--tls-dir", str(tls_dir)]
    proc = subprocess.Popen([sys.executable, "-m", "pmcp", *argv], stdout=subprocess.PIPE, text=True)
    try:
        ca = tls_dir / "pve-root-ca.pem"
        env = {"PMCP_SIM_URL": f"https://127.0.0.1:{port}", "PMCP_SIM_CA_FILE": str(ca)}
        deadline = time.monotonic() + 20
        r = None
        while time.monotonic() < deadline:
            r = pmcp("sim", "pvesh", "get", "/version", "--output-format", "json", env=env)
            if r.returncode == 0:
                break
            time.sleep(0.2)
        assert r is not None and r.returncode == 0, r.stderr
        assert oct((tls_dir / "pve-ssl.key").stat().st_mode & 0o777) == "0o600"
        r = pmcp("sim", "pvesh", "get", "/version", env={**env, "PMCP_SIM_CA_FILE": ""})
        assert r.returncode == 255 and "CERTIFICATE_VERIFY_FAILED" in r.stderr
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "pve-root-ca.pem" in out


def test_routes_json_lists_what_is_served() -> None:
    from pmcp.sim.routes import all_routes

    r = pmcp("sim", "routes", "--json")
    assert r.returncode == 0, r.stderr
    routes = json.loads(r.stdout)["data"]["routes"]
    assert [(x["method"], x["path"]) for x in routes] == all_routes()


def test_proxmoxer_password_session_and_password_change() -> None:
    from proxmoxer.core import ResourceException

    with running_sim(nodes=1, guests=2, tls=True) as sim:
        host, port = sim.url.split("//")[1].rsplit(":", 1)
        assert (
            sim.request("POST", "/access/users", params={"userid": "sess@pve", "password": "first-pass"})[0]
            == 200
        )

        def login(password: str) -> proxmoxer.ProxmoxAPI:
            return proxmoxer.ProxmoxAPI(
                host, port=int(port), user="sess@pve", password=password, verify_ssl=sim.ca_file
            )

        px = login("first-pass")
        assert px.version.get()["release"] == "9.1"
        px.access.password.put(userid="sess@pve", password="second-pass")
        with pytest.raises(proxmoxer.AuthenticationError):
            login("first-pass")
        assert login("second-pass").version.get()
        with pytest.raises(ResourceException) as err:
            px.access.password.put(userid="root@pam", password="stolen-root")
        assert err.value.status_code == 403


def test_ticket_needs_csrf_for_changes(sim: RunningSim) -> None:
    import urllib.error
    import urllib.request

    from pmcp.sim.state import DEFAULT_ROOT_PASSWORD

    status, body = call(
        sim.api_url, "POST", "/access/ticket", None, {"username": "root@pam", "password": "nope"}
    )
    assert status == 401
    params = {"username": "root", "realm": "pam", "password": DEFAULT_ROOT_PASSWORD}
    status, body = call(sim.api_url, "POST", "/access/ticket", None, params)
    assert status == 200 and body["data"]["username"] == "root@pam"
    cookie = f"PVEAuthCookie={body['data']['ticket']}"
    req = urllib.request.Request(sim.api_url + "/access/roles", data=b"roleid=NoCsrf", method="POST")
    req.add_header("Cookie", cookie)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401
    req.add_header("CSRFPreventionToken", body["data"]["CSRFPreventionToken"])
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_pveversion_follows_the_simulator() -> None:
    with running_sim(nodes=1, guests=1, pve_version=8) as sim8:
        r = pmcp("sim", "pveversion", env=sim8.env())
        assert r.stdout.startswith("pve-manager/8.4.1/") and "6.8.12" in r.stdout
