"""Fixtures: the simulator, the real server on a free loopback port, and the SDK's own client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pmcp import authtokens
from pmcp.server.config import Mode, ServerConfig


@dataclass
class Served:
    base: str
    url: str
    token: str
    config: ServerConfig
    sim: Any
    app: Any = None

    @property
    def audit_path(self) -> Path:
        assert self.config.audit_log is not None
        return self.config.audit_log


@pytest.fixture(scope="session")
def sim() -> Iterator[Any]:
    from pmcp.sim import testing  # a broken simulator fails these tests: it never skips them

    with testing.running_sim(nodes=3, guests=50, seed=1, task_seconds=0.3, tls=False) as s:
        yield s


@contextmanager
def serve(sim: Any, workdir: Path, mode: Mode = Mode.ADMIN, **overrides: Any) -> Iterator[Served]:
    from pmcp.demo import uvicorn_thread
    from pmcp.server.app import create_app
    from pmcp.server.serve import http_options

    workdir.mkdir(parents=True, exist_ok=True)
    tokens = workdir / "tokens"
    token = authtokens.add(tokens, "claude")
    settings: dict[str, Any] = {
        "proxmox_url": sim.url,
        "proxmox_token_id": sim.root_token_id,
        "proxmox_token_secret": sim.root_token_secret,
        "auth_token_file": tokens,
        "allowed_hosts": ("pve.example.com",),
        "mode": mode,
        "audit_log": workdir / "audit.jsonl",
        "task_timeout": 15.0,
        # the suite opens many sessions from one token in seconds; the limits have their own tests
        "rate_initialize": 0,
        "rate_tool_calls": 0,
        "rate_changes": 0,
        "rate_requests": 0,
    } | overrides
    config = ServerConfig(**settings)
    app = create_app(config)
    with uvicorn_thread(app, "127.0.0.1", 0, **http_options(config)) as port:
        base = f"http://127.0.0.1:{port}"
        yield Served(base, base + "/mcp", token, config, sim, app)


@pytest.fixture(scope="module")
def server(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(sim, tmp_path_factory.mktemp("server")) as s:
        yield s


@pytest.fixture
def make_server(sim: Any, tmp_path: Path):
    """A server with other settings (mode, protected guests) for one test."""

    def make(**kwargs: Any):
        return serve(sim, tmp_path / f"srv{len(list(tmp_path.iterdir()))}", **kwargs)

    return make


@asynccontextmanager
async def connect(
    served: Served, mode: str = "legacy", token: str | None = None, **kwargs: Any
) -> AsyncIterator[Any]:
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    # a spoofed X-Forwarded-For on every call: believed only from a trusted proxy (test_http_security)
    headers = {
        "Authorization": f"Bearer {token or served.token}",
        "X-Forwarded-For": "203.0.113.9, 198.51.100.7",
    }
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(served.url, http_client=http), mode=mode, **kwargs) as client,
    ):
        call = client.call_tool

        async def recorded(name: str, arguments: dict[str, Any] | None = None, **kw: Any) -> Any:
            result = await call(name, arguments, **kw)
            CALLS.setdefault(name, []).append(not result.is_error)
            return result

        client.call_tool = recorded
        yield client


def mode_token(sim: Any, mode: str, path: str = "/") -> tuple[str, str]:
    """A privilege-separated token made as install makes it: the mode's role
    (pmcp.host.pve.mode_privileges) on ``path`` for both the user and the token."""
    import uuid

    from pmcp.host.pve import ROLE_NAMES, mode_privileges

    valid = sim.request("GET", "/access/roles/Administrator")[1]["data"]
    role = ROLE_NAMES[mode]
    if sim.request("GET", f"/access/roles/{role}")[0] != 200:
        privs = ",".join(mode_privileges(mode, valid))
        assert sim.request("POST", "/access/roles", params={"roleid": role, "privs": privs})[0] == 200
    userid = f"t{uuid.uuid4().hex[:8]}@pve"
    assert sim.request("POST", "/access/users", params={"userid": userid})[0] == 200
    status, body = sim.request("POST", f"/access/users/{userid}/token/mcp", params={"privsep": 1})
    assert status == 200, body
    for kind, who in (("users", userid), ("tokens", f"{userid}!mcp")):
        assert sim.request("PUT", "/access/acl", params={"path": path, "roles": role, kind: who})[0] == 200
    return f"{userid}!mcp", body["data"]["value"]


def free_guests(served: Served, kind: str, status: str) -> list[int]:
    """VMIDs of the shared world's guests of a kind and state that a test may change: no template, no
    lock, not protected."""
    return [
        int(v)
        for v, g in sorted(served.sim.state.world["guests"].items(), key=lambda kv: int(kv[0]))
        if g["type"] == kind
        and g["status"] == status
        and not g["template"]
        and not g.get("lock")
        and "pmcp-protected" not in str(g["config"].get("tags", ""))
    ]


# Every tool call the server tests make through `connect`: tool name -> [answered without error, ...].
# test_tools.py's last test reads it to prove each tool was really called, and answered.
CALLS: dict[str, list[bool]] = {}
