"""The HTTP layer over a real socket: auth first, Host/Origin, body limit, health, metrics."""

from __future__ import annotations

import json

import httpx2
import pytest

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def post_init(server, headers=None, body=None) -> httpx2.Response:
    h = MCP_HEADERS | {"Authorization": f"Bearer {server.token}"} | (headers or {})
    return httpx2.post(
        server.url, content=body if body is not None else json.dumps(INIT), headers=h, timeout=30
    )


@pytest.mark.parametrize("path", ["/mcp", "/metrics", "/anything"])
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-0123456789", "Basic Zm9vOmJhcg==", "Bearer x"])
def test_401_with_www_authenticate(server, path, auth):
    headers = {"Authorization": auth} if auth else {}
    r = httpx2.post(server.base + path, json=INIT, headers=MCP_HEADERS | headers, timeout=10)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    # a sent token is named invalid (RFC 6750); no OAuth metadata is offered; the body says where a token is
    assert ('error="invalid_token"' in r.headers["www-authenticate"]) is (auth is not None)
    assert "resource_metadata" not in r.headers["www-authenticate"] and "client-config" in r.text
    assert server.token not in r.text


def test_sse_streams_start_with_a_priming_event_and_retry(server):
    """Issue 14: a 2025-11-25 session's SSE answer starts with an event ID, empty data and `retry`
    (pmcp/server/events.py), so a client can resume a dropped stream with Last-Event-ID. (A request
    that can receive nothing but its answer is one JSON body: framing.py; this one asks for progress.)"""
    r = post_init(
        server, body=json.dumps(INIT | {"params": INIT["params"] | {"protocolVersion": "2025-11-25"}})
    )
    assert r.status_code == 200
    session = {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    post_init(server, session, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    call = {"name": "list_guests", "arguments": {"limit": 1}, "_meta": {"progressToken": "p"}}
    r = post_init(
        server, session, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    first = r.text.split("\r\n\r\n")[0].split("\r\n")
    assert first[0].startswith("id: ") and "data: " in first and "retry: 1000" in first


def test_health_needs_no_auth_and_holds_no_secret(server):
    r = httpx2.get(server.base + "/health", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["proxmox"]["reachable"] is True and body["version"]
    assert body["proxmox"]["tls_verified"] is False  # the test simulator speaks plain http
    assert server.config.proxmox_token_secret not in r.text


def test_well_known_is_404_without_auth(server):
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"):
        assert httpx2.get(server.base + path, timeout=10).status_code == 404


def test_metrics_with_auth(server):
    post_init(server)
    r = httpx2.get(server.base + "/metrics", headers={"Authorization": f"Bearer {server.token}"}, timeout=10)
    assert r.status_code == 200
    assert "pmcp_http_requests_total" in r.text and 'status="401"' in r.text


def test_foreign_origin_is_403(server):
    assert post_init(server, {"Origin": "https://evil.example.net"}).status_code == 403
    assert post_init(server, {"Origin": "https://pve.example.com"}).status_code == 200


def test_public_host_is_accepted_and_unknown_host_refused(server):
    for host in ("pve.example.com", "pve.example.com:443", "pve.example.com:8443"):
        r = post_init(server, {"Host": host})
        assert r.status_code == 200, (host, r.status_code, r.text)
        assert r.headers.get("mcp-session-id")
    assert post_init(server, {"Host": "rebind.evil.example"}).status_code == 421


def test_body_over_1mib_is_413(server):
    big = json.dumps(INIT | {"params": INIT["params"] | {"pad": "x" * (1024 * 1024)}})
    assert post_init(server, body=big).status_code == 413


def test_new_token_works_without_restart_and_sessions_are_bound_to_their_token(server):
    from pmcp import authtokens

    first = post_init(server)
    session = first.headers["mcp-session-id"]
    other = authtokens.add(server.config.auth_token_file, "cursor")
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    headers = MCP_HEADERS | {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
    as_me, as_other = ({"Authorization": f"Bearer {t}"} for t in (server.token, other))
    mine = httpx2.post(server.url, json=listing, headers=headers | as_me)
    theirs = httpx2.post(server.url, json=listing, headers=headers | as_other)
    assert mine.status_code == 200 and "list_guests" in mine.text
    assert theirs.status_code == 404
    assert post_init(server, {"Authorization": f"Bearer {other}"}).status_code == 200
    authtokens.revoke(server.config.auth_token_file, "cursor")
    assert post_init(server, {"Authorization": f"Bearer {other}"}).status_code == 401


def test_scrape_token_reads_metrics_and_nothing_else(make_server, tmp_path):
    """Issue 11, item 8: Prometheus' token (its container holds it) cannot drive the hypervisor."""
    from pmcp import authtokens

    scrape = tmp_path / "prometheus-token"
    scrape.write_text(authtokens.new_token() + "\n")
    with make_server(metrics_token_file=scrape) as served:
        as_scraper = {"Authorization": f"Bearer {scrape.read_text().strip()}"}
        r = httpx2.get(served.base + "/metrics", headers=as_scraper, timeout=10)
        assert r.status_code == 200 and "pmcp_http_requests_total" in r.text
        assert post_init(served, as_scraper).status_code == 401
        assert httpx2.get(served.url, headers=as_scraper, timeout=10).status_code == 401
        # client tokens still read /metrics; a new scrape token is picked up without a restart
        mine = {"Authorization": f"Bearer {served.token}"}
        assert httpx2.get(served.base + "/metrics", headers=mine, timeout=10).status_code == 200
        old = dict(as_scraper)
        scrape.write_text(authtokens.new_token() + "\n")
        assert httpx2.get(served.base + "/metrics", headers=old, timeout=10).status_code == 401


@pytest.mark.parametrize("trusted", [(), ("127.0.0.0/8",), ("localhost",)])
def test_audit_address_believes_x_forwarded_for_only_from_the_proxy(make_server, sim, trusted):
    import anyio

    from .conftest import connect

    vmid = next(int(v) for v, g in sorted(sim.state.world["guests"].items()) if g["type"] == "lxc")

    async def go(served):
        async with connect(served) as client:
            await client.call_tool("set_guest_config", {"vmid": vmid, "description": "xff"})

    with make_server(trusted_proxies=trusted) as served:
        anyio.run(go, served)
        intent = json.loads(served.audit_path.read_text().splitlines()[0])
    # conftest's client sends X-Forwarded-For: 203.0.113.9, 198.51.100.7 (the last is what Caddy adds)
    assert intent["address"] == ("198.51.100.7" if trusted else "127.0.0.1")
