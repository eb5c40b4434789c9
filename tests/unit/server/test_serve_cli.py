"""`pmcp serve` as the container runs it: configured from the environment only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anyio
import httpx2

from pmcp import authtokens
from pmcp.demo import free_port

from .conftest import Served, connect


def _env(sim, tmp_path, **extra: str) -> dict[str, str]:
    secret = tmp_path / "proxmox-token"
    secret.write_text(sim.root_token_secret)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PMCP_", "PROXMOX_"))}
    return (
        base
        | {
            "PROXMOX_URL": sim.url,
            "PROXMOX_TOKEN_ID": sim.root_token_id,
            "PROXMOX_TOKEN_SECRET_FILE": str(secret),
        }
        | extra
    )


def test_serve_refuses_public_bind_without_token_file(sim, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=_env(sim, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2  # a bad configuration: README, exit codes
    assert "PMCP_AUTH_TOKEN_FILE" in proc.stderr and "refusing" in proc.stderr and "fix:" in proc.stderr


def test_serve_from_environment(tmp_path):
    from pmcp.sim.testing import running_sim

    with running_sim(nodes=2, guests=10, tls=True) as tls_sim:
        _serve_and_call(tls_sim, tmp_path)


def _serve_and_call(sim, tmp_path):
    tokens = tmp_path / "tokens"
    token = authtokens.add(tokens, "claude")
    port = free_port()
    env = _env(
        sim,
        tmp_path,
        PROXMOX_CA_FILE=sim.ca_file,
        PMCP_AUTH_TOKEN_FILE=str(tokens),
        PMCP_ALLOWED_HOSTS="pve.example.com",
        PMCP_MODE="operator",
        PMCP_AUDIT_LOG=str(tmp_path / "audit" / "audit.jsonl"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmcp", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                proxmox = httpx2.get(base + "/health", timeout=2).json()["proxmox"]
                if proxmox["reachable"] and proxmox["tls_verified"]:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)

        async def go():
            async with connect(Served(base, base + "/mcp", token, None, sim), mode="auto") as client:
                return [t.name for t in (await client.list_tools()).tools]

        names = anyio.run(go)
        assert "guest_power" in names and "delete_guest" not in names
        httpx2.get(base + "/health?probe=query-string-not-logged", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), err  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Application shutdown complete" in err
    assert token not in out + err and sim.root_token_secret not in out + err
    assert '"GET /health HTTP/1.1" 200' in out + err  # the access log: paths only (issue 11, item 8)
    assert "query-string-not-logged" not in out + err
