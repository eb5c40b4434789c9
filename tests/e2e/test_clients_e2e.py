"""The generated Claude Code configuration, driven by the real MCP SDK client against a running server.

`pmcp serve` runs as a subprocess (the command the container runs) against the simulator; the client
uses exactly the URL and headers of the generated `.mcp.json`, with `${PMCP_TOKEN}` expanded the way
Claude Code expands it. Revoking the token then locks that client out without restarting the server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pmcp import authtokens
from pmcp.cli import main
from pmcp.paths import InstallPaths
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def expand(value: str, env: dict[str, str]) -> str:
    """Claude Code's expansion in .mcp.json: ``${VAR}`` and ``${VAR:-default}``."""

    def one(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3)
        if name in env:
            return env[name]
        if default is None:
            raise KeyError(f"{name} is not set")
        return default

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", one, value)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[InstallPaths, str]]:
    """`pmcp serve` against the simulator, authenticating with the install's client-token file."""
    from pmcp.sim.testing import running_sim

    paths = InstallPaths.at(tmp_path / "prefix")
    authtokens.add(paths.client_tokens, "claude")
    secret = paths.secrets_dir / "proxmox-token"
    with running_sim(nodes=1, guests=5, seed=1, task_seconds=0.1) as sim:
        secret.write_text(sim.root_token_secret + "\n")
        secret.chmod(0o600)
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PROXMOX_URL": sim.url,
            "PROXMOX_TOKEN_ID": sim.root_token_id,
            "PROXMOX_TOKEN_SECRET_FILE": str(secret),
            "PMCP_AUTH_TOKEN_FILE": str(paths.client_tokens),
            "PMCP_MODE": "read-only",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "pmcp", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        out = proc.stdout.read().decode() if proc.stdout else ""  # type: ignore[union-attr]
                        pytest.fail(f"pmcp serve did not come up:\n{out[-3000:]}")
                    time.sleep(0.05)
            paths.state_file.write_text(json.dumps({"url": f"{base}/mcp"}))
            yield paths, base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def client_config(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["client-config", *args])
    return result.exit_code, result.stdout, result.stderr


async def session(url: str, headers: dict[str, str]) -> tuple[list[str], str]:
    """initialize (the handshake Claude Code does), tools/list and one read tool."""
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        tools = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool("cluster_overview", {})
        assert not result.is_error, result.content
        return tools, result.content[0].text


def status_without_sdk(url: str, headers: dict[str, str]) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_generated_claude_code_config_connects(server: tuple[InstallPaths, str], tmp_path: Path) -> None:
    import anyio

    paths, base = server
    token = authtokens.load(paths.client_tokens)["claude"]
    mcp_json = tmp_path / "project" / ".mcp.json"
    code, out, err = client_config("--prefix", str(paths.prefix), "-o", str(mcp_json))
    assert code == 0, err
    assert token not in mcp_json.read_text() + out + err

    entry: dict[str, Any] = json.loads(mcp_json.read_text())["mcpServers"]["pmcp"]
    assert entry["type"] == "http" and entry["url"] == f"{base}/mcp"
    headers = {k: expand(v, {"PMCP_TOKEN": token}) for k, v in entry["headers"].items()}
    tools, text = anyio.run(session, entry["url"], headers)
    assert "cluster_overview" in tools and text

    # The `claude mcp add` line carries the same URL and header.
    code, out, _ = client_config("--prefix", str(paths.prefix), "--json")
    command = json.loads(out)["data"]["clients"][0]["snippets"][0]["text"]
    argv = shlex.split(command)
    assert argv[6] == entry["url"]
    name, _, value = argv[argv.index("--header") + 1].partition(": ")
    assert {name: expand(value, {"PMCP_TOKEN": token})} == headers

    assert status_without_sdk(entry["url"], {}) == 401
    assert status_without_sdk(entry["url"], {"Authorization": "Bearer wrong-token-0123456789"}) == 401

    code, out, _ = client_config("--prefix", str(paths.prefix), "--revoke", "claude")
    assert code == 0 and "no restart" in out
    assert status_without_sdk(entry["url"], headers) == 401  # same server process, token gone


def test_new_token_file_works_at_once(server: tuple[InstallPaths, str], tmp_path: Path) -> None:
    import anyio

    paths, _ = server
    cursor_json = tmp_path / "cursor-mcp.json"
    code, _, err = client_config(
        "--prefix", str(paths.prefix), "--client", "cursor", "--new-token", "cursor", "-o", str(cursor_json)
    )
    assert code == 0, err
    entry = json.loads(cursor_json.read_text())["mcpServers"]["pmcp"]
    tools, _ = anyio.run(session, entry["url"], entry["headers"])
    assert "cluster_overview" in tools


@pytest.mark.docker
def test_claude_code_config_through_caddy_with_exported_ca(demo_stack: Any, tmp_path: Path) -> None:
    """The real stack: Caddy's internal CA, exported with --ca-cert and trusted the way Node's
    NODE_EXTRA_CA_CERTS makes Claude Code trust it (added to the default roots)."""
    import ssl

    import anyio

    failed = [s for s in demo_stack.result.run.steps if s.status == "failed"]
    if failed:
        pytest.fail(f"the demo stack did not come up: {failed[0].name}: {failed[0].error} {failed[0].detail}")
    prefix = str(demo_stack.prefix)
    paths = InstallPaths.at(prefix)
    tokens = authtokens.load(paths.client_tokens)
    token_name = next(iter(sorted(tokens)))
    ca = tmp_path / "pmcp-ca.crt"
    mcp_json = tmp_path / ".mcp.json"
    code, _, err = client_config(
        "--prefix", prefix, "--token-name", token_name, "--ca-cert", str(ca), "-o", str(mcp_json)
    )
    assert code == 0, err
    assert f"NODE_EXTRA_CA_CERTS={ca}" in err
    entry = json.loads(mcp_json.read_text())["mcpServers"]["pmcp"]
    assert entry["url"].startswith("https://"), entry
    headers = {k: expand(v, {"PMCP_TOKEN": tokens[token_name]}) for k, v in entry["headers"].items()}

    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=str(ca))
    tools, text = anyio.run(session_tls, entry["url"], headers, ctx)
    assert "cluster_overview" in tools and text


async def session_tls(url: str, headers: dict[str, str], ctx: Any) -> tuple[list[str], str]:
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, verify=ctx) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        tools = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool("cluster_overview", {})
        assert not result.is_error, result.content
        return tools, result.content[0].text
