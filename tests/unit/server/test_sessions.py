"""Handshake-era sessions outlive the server process that opened them (pmcp/server/sessions.py).

Two real servers (uvicorn, real sockets) share one session directory, as the old, standby and new
server containers of an install do during `pmcp update`; the official SDK client in handshake mode
("legacy") holds ONE session while its requests are sent to one server, then the other.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from pmcp import authtokens
from pmcp.server.config import Mode, ServerConfig

from .test_http_security import INIT, MCP_HEADERS
from .test_tools import guests_where, structured


@dataclass
class Node:
    url: str
    app: Any


@contextmanager
def node(sim: Any, tokens: Path, sessions: Path | None, audit: Path) -> Iterator[Node]:
    """One server process's worth: its own app (own SDK session manager), a shared token file and dir."""
    from pmcp.demo import uvicorn_thread
    from pmcp.server.app import create_app

    config = ServerConfig(
        proxmox_url=sim.url,
        proxmox_token_id=sim.root_token_id,
        proxmox_token_secret=sim.root_token_secret,
        auth_token_file=tokens,
        mode=Mode.ADMIN,
        audit_log=audit,
        task_timeout=15.0,
        session_dir=sessions,
    )
    app = create_app(config)
    with uvicorn_thread(app, "127.0.0.1", 0) as port:
        yield Node(f"http://127.0.0.1:{port}/mcp", app)


class Switchable(httpx2.AsyncBaseTransport):
    """Sends every request to the server named by ``target``: what Docker's DNS alias does in an update."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        to = httpx2.URL(self.target)
        request.url = request.url.copy_with(host=to.host, port=to.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def pair(sim: Any, tmp_path: Path) -> Iterator[tuple[Node, Node, str, Path]]:
    tokens = tmp_path / "tokens"
    token = authtokens.add(tokens, "claude")
    shared = tmp_path / "sessions"
    with (
        node(sim, tokens, shared, tmp_path / "a.jsonl") as a,
        node(sim, tokens, shared, tmp_path / "b.jsonl") as b,
    ):
        yield a, b, token, tokens


def _post(url: str, token: str, body: dict[str, Any], sid: str | None = None) -> httpx2.Response:
    headers = MCP_HEADERS | {"Authorization": f"Bearer {token}"}
    if sid:
        headers |= {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    return httpx2.post(url, content=json.dumps(body), headers=headers, timeout=30)


def _open(url: str, token: str) -> str:
    r = _post(url, token, INIT)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    assert (
        _post(url, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid).status_code == 202
    )
    return sid


LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def test_one_session_moves_between_servers_and_outlives_the_first(pair, sim):
    a, b, token, _ = pair
    vmid = guests_where(sim, type="qemu", status="running")[0]
    route = Switchable(a.url)

    async def go() -> list[str]:
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        seen = []
        async with (
            httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {token}"}, transport=route, timeout=30
            ) as http,
            Client(streamable_http_client(a.url, http_client=http), mode="legacy") as client,
        ):
            for target in (a.url, b.url, a.url, b.url):
                route.target = target
                data = structured(await client.call_tool("guest_info", {"vmid": vmid}))
                seen.append(f"{target}:{data['status']}")
            assert client.protocol_version == "2025-11-25"
            records.extend(store.directory.glob("*.json"))
            texts.extend(p.read_text() for p in records)
            modes.extend(p.stat().st_mode & 0o777 for p in records)
        return seen

    store = a.app.state.sessions.store
    records: list[Path] = []
    texts: list[str] = []
    modes: list[int] = []
    assert len(anyio.run(go)) == 4
    assert b.app.state.sessions.restored == 1 and a.app.state.sessions.restored == 0
    # the reads took the express lane on both, the restored session's too (express.py)
    assert a.app.state.express.served >= 2 and b.app.state.express.served >= 2
    assert len(records) == 1 and modes == [0o600]
    record = json.loads(texts[0])
    assert record["client"] == "claude" and token not in texts[0]
    assert record["params"]["clientInfo"]["name"] and record["protocol_version"] == "2025-11-25"
    assert not list(store.directory.glob("*.json"))  # the client's DELETE on leaving ended it


def test_a_session_is_bound_to_its_token_and_revocation_is_immediate(pair):
    a, b, token, tokens = pair
    sid = _open(a.url, token)
    other = authtokens.add(tokens, "cursor")
    assert _post(b.url, other, LIST, sid).status_code == 404  # not the token that opened it
    assert _post(b.url, token, LIST, sid).status_code == 200  # restored on b
    assert _post(a.url, other, LIST, sid).status_code == 404  # and on a, where it was opened
    authtokens.save(tokens, {"cursor": other, "claude": authtokens.new_token()})  # same name, new token
    assert _post(b.url, authtokens.load(tokens)["claude"], LIST, sid).status_code == 404
    authtokens.revoke(tokens, "claude")
    assert _post(a.url, token, LIST, sid).status_code == 401
    assert _post(b.url, token, LIST, sid).status_code == 401


def test_delete_ends_the_session_on_every_server(pair):
    a, b, token, _ = pair
    sid = _open(a.url, token)
    assert _post(b.url, token, LIST, sid).status_code == 200
    headers = MCP_HEADERS | {"Authorization": f"Bearer {token}", "Mcp-Session-Id": sid}
    assert httpx2.delete(b.url, headers=headers, timeout=10).status_code == 200
    assert _post(a.url, token, LIST, sid).status_code == 404
    assert _post(b.url, token, LIST, sid).status_code == 404


def test_unknown_expired_and_malformed_ids_are_404(pair):
    a, b, token, _ = pair
    assert _post(b.url, token, LIST, "0" * 32).status_code == 404
    assert _post(b.url, token, LIST, "../../etc/passwd").status_code == 404
    sid = _open(a.url, token)
    store = a.app.state.sessions.store
    path = store.path(sid)
    old = time.time() - store.ttl - 5
    os.utime(path, (old, old))
    assert _post(b.url, token, LIST, sid).status_code == 404  # idle too long: expired everywhere
    assert not path.exists()


def test_without_a_session_dir_sessions_stay_in_memory(sim, tmp_path):
    tokens = tmp_path / "tokens"
    token = authtokens.add(tokens, "claude")
    with (
        node(sim, tokens, None, tmp_path / "a.jsonl") as a,
        node(sim, tokens, None, tmp_path / "b.jsonl") as b,
    ):
        sid = _open(a.url, token)
        assert _post(a.url, token, LIST, sid).status_code == 200
        assert _post(b.url, token, LIST, sid).status_code == 404


def test_drain_closes_get_streams_and_lets_calls_in_flight_finish(pair, sim):
    a, _, token, _ = pair
    vmid = guests_where(sim, type="qemu", status="running")[1]
    progress: list[float] = []
    ended: dict[str, float] = {}

    async def go() -> dict[str, Any]:
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        sid = _open(a.url, token)
        headers = {"Authorization": f"Bearer {token}", "Mcp-Session-Id": sid, "Accept": "text/event-stream"}

        async def get_stream() -> None:
            async with (
                httpx2.AsyncClient(timeout=30) as http,
                http.stream("GET", a.url, headers=headers) as r,
            ):
                assert r.status_code == 200
                async for _ in r.aiter_bytes():
                    pass
            ended["get"] = time.monotonic()

        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            Client(streamable_http_client(a.url, http_client=http), mode="legacy") as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(get_stream)
            await anyio.sleep(0.3)

            async def drain_soon() -> None:
                await anyio.sleep(0.8)
                ended["drain"] = time.monotonic()
                a.app.state.sessions.request_drain()

            tg.start_soon(drain_soon)
            result = await client.call_tool(
                "guest_power",
                {"action": "reboot", "vmid": vmid, "wait_seconds": 20},
                progress_callback=on_progress,
            )
            ended["call"] = time.monotonic()
            return structured(result)

    saved = sim.state.task_seconds
    sim.state.task_seconds = 2.5
    try:
        data = anyio.run(go)
    finally:
        sim.state.task_seconds = saved
    assert data["outcome"] == "ok"
    assert progress, "no progress notification during the drain"
    assert ended["get"] - ended["drain"] < 1.0  # the GET stream was closed at once
    assert ended["call"] > ended["drain"] + 1.0  # the call went on after the drain began, and finished
