"""One client cannot lock out the others: per-token limits on the MCP endpoint, and read timeouts.

Measured before (issue 11): one token opened 10,000 sessions in 35 s; the SDK's global session cap
then answered 503 to every other handshake-era client for 30 minutes, and memory grew from 84 to
476 MB. A request that sent half its headers held its socket for as long as the client liked.

``ClientGuard`` sits just inside the bearer check (it needs the token's name) and only looks at
``/mcp``:
- it reads the body itself, within ``PMCP_BODY_TIMEOUT`` and ``max_body_bytes`` (408 / 413), and
  hands the same bytes on, so it can see which JSON-RPC methods a request carries;
- token buckets per client token (``PMCP_RATE_*`` per minute, bursts of half that): every
  request, ``initialize``, ``tools/call``, and calls of change tools (the audited ones, so one token
  cannot fill the audit quota fast); over the limit: 429 with ``Retry-After``;
- sessions per token (``PMCP_SESSIONS_PER_TOKEN``): a token at its cap that opens another session
  closes its own least recently used idle one (a DELETE through the SDK, as the client would send);
  only when all of them are busy is it answered 429. Other tokens are never affected. The SDK's own
  global cap (``PMCP_MAX_SESSIONS``) and idle timeout (``PMCP_SESSION_IDLE_TIMEOUT``) stay as the
  last line;
- the client's address for the audit log: the TCP peer, or the last ``X-Forwarded-For`` entry (the
  one Caddy writes) when the peer is a trusted proxy (``PMCP_TRUSTED_PROXIES``).

``guarded_protocol`` is uvicorn's h11 protocol with a deadline on reading a request: headers within
``PMCP_HEADER_TIMEOUT`` of its first byte (or of the connection), the body within
``PMCP_BODY_TIMEOUT`` after them; else 408 and the socket is closed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pmcp.server.auth import authenticated_user
from pmcp.server.config import ServerConfig

log = logging.getLogger("pmcp.limits")

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
RESOLVE_EVERY = 30.0  # seconds a trusted proxy's resolved addresses are kept


class Bucket:
    """A token bucket: ``per_minute`` sustained, bursts of half that (at least 1): an agent's parallel
    tool calls fit in a burst, a loop does not."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 2)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> float:
        """Take one; 0.0 if allowed, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class Session:
    token: str
    last: float = field(default_factory=time.monotonic)
    inflight: int = 0
    host: bytes = b""


class TrustedProxies:
    """Peers whose ``X-Forwarded-For`` is believed: CIDRs, or names resolved in Docker's DNS."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: list[str] = []
        for e in entries:
            try:
                self.networks.append(ipaddress.ip_network(e, strict=False))
            except ValueError:
                self.names.append(e)
        self._resolved: set[str] = set()
        self._at = -math.inf

    def __bool__(self) -> bool:
        return bool(self.networks or self.names)

    def _resolve(self) -> set[str]:
        out: set[str] = set()
        for name in self.names:
            try:
                out |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
            except OSError:
                continue
        return out

    async def trusts(self, peer: str) -> bool:
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if any(ip in net for net in self.networks):
            return True
        if not self.names:
            return False
        if time.monotonic() - self._at > RESOLVE_EVERY or (
            peer not in self._resolved and time.monotonic() - self._at > 1.0
        ):
            self._resolved = await anyio.to_thread.run_sync(self._resolve)
            self._at = time.monotonic()
        return peer in self._resolved


class ClientGuard:
    """Per-token limits on ``/mcp`` (see the module docstring); every other path passes untouched."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.proxies = TrustedProxies(config.trusted_proxies)
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.sessions: dict[str, Session] = {}
        self.opening: dict[str, int] = {}  # sessions being opened right now, per token
        self._warned: dict[str, float] = {}
        self._lock = anyio.Lock()
        self.rates = {
            "requests": config.rate_requests,
            "initialize": config.rate_initialize,
            "tool-calls": config.rate_tool_calls,
            "changes": config.rate_changes,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["pmcp.address"] = await self.address(scope)
        if scope.get("path") not in ("/mcp", "/mcp/"):
            await self.app(scope, receive, send)
            return
        token = str(scope.get("pmcp.client") or "anonymous")
        body = b""
        if scope.get("method") == "POST":
            read = await self._read_body(receive, send)
            if read is None:
                return
            body = read
        methods, tools = _methods(body)
        kinds = {"requests": 1, "initialize": int("initialize" in methods)}
        kinds |= {"tool-calls": len(tools), "changes": _changes(tools)}  # a batch counts every call
        for kind, count in kinds.items():
            wait = max((self._take(token, kind) for _ in range(count)), default=0.0)
            if wait:
                self._warn_once(token, f"client {token} over its {kind} limit ({self.rates[kind]}/min)")
                await _reply(send, 429, f"rate limit: too many {kind} for this client", wait)
                return
        sid = _header(scope, b"mcp-session-id")
        opening = (
            sid is None
            and "initialize" in methods
            and (_header(scope, b"mcp-protocol-version") or HANDSHAKE_VERSIONS[-1]) in HANDSHAKE_VERSIONS
        )
        if opening and not await self._admit(token):
            await _reply(
                send,
                429,
                f"this client already has {self.config.sessions_per_token} busy sessions "
                "(PMCP_SESSIONS_PER_TOKEN); close one or retry later",
                30,
            )
            return
        await self._serve(scope, _replay(body, receive), send, token, sid, opening)

    async def address(self, scope: Scope) -> str | None:
        """The TCP peer, or the last X-Forwarded-For entry (the one the proxy wrote) from a trusted proxy."""
        peer = (scope.get("client") or (None,))[0]
        forwarded = _header(scope, b"x-forwarded-for")
        if peer and forwarded and self.proxies and await self.proxies.trusts(peer):
            try:
                return str(ipaddress.ip_address(forwarded.split(",")[-1].strip()))
            except ValueError:
                return peer
        return peer

    def _warn_once(self, token: str, message: str) -> None:
        """One log line per token and minute: a flood of refused requests must not flood the log."""
        now = time.monotonic()
        if now - self._warned.get(token, -math.inf) >= 60:
            self._warned[token] = now
            log.warning("%s (further ones this minute are not logged)", message)

    def _take(self, token: str, kind: str) -> float:
        rate = self.rates[kind]
        if rate <= 0:
            return 0.0
        bucket = self.buckets.get((token, kind))
        if bucket is None:
            bucket = self.buckets[(token, kind)] = Bucket(rate)
        return bucket.take()

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 408 (too slow), 413 (too big) or a disconnect."""
        chunks: list[bytes] = []
        size = 0
        limit = self.config.max_body_bytes
        with anyio.move_on_after(self.config.body_timeout) as scope:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await _reply(send, 413, f"request body larger than {limit} bytes", None)
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        assert scope.cancel_called
        await _reply(send, 408, f"request body not received within {self.config.body_timeout:g} s", None)
        return None

    async def _admit(self, token: str) -> bool:
        """Room for one more session of ``token``: forget expired ones, close its LRU idle one at the cap."""
        now = time.monotonic()
        idle = self.config.session_idle_timeout
        victim: tuple[str, Session] | None = None
        async with self._lock:
            for sid, s in list(self.sessions.items()):
                if s.inflight == 0 and now - s.last > idle:
                    del self.sessions[sid]  # the SDK has reaped it (same idle timeout)
            mine = [(sid, s) for sid, s in self.sessions.items() if s.token == token]
            if len(mine) + self.opening.get(token, 0) < self.config.sessions_per_token:
                self.opening[token] = self.opening.get(token, 0) + 1
                return True
            quiet = [(sid, s) for sid, s in mine if s.inflight == 0]
            if not quiet:
                return False
            victim = min(quiet, key=lambda item: item[1].last)
            del self.sessions[victim[0]]
            self.opening[token] = self.opening.get(token, 0) + 1
        self._warn_once(
            token, f"client {token} at its session cap: closing its least recently used idle ones"
        )
        await self._close(victim[0], victim[1], token)
        return True

    async def _close(self, sid: str, session: Session, token: str) -> None:
        """End a session through the SDK the way a client does: DELETE with its id and credential."""
        headers = [
            (b"host", session.host or b"127.0.0.1"),
            (b"mcp-session-id", sid.encode()),
            (b"mcp-protocol-version", HANDSHAKE_VERSIONS[-1].encode()),
        ]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "pmcp.client": token,
            "pmcp.address": None,
        }
        scope["user"] = authenticated_user(token)
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError

        async def discard(message: Message) -> None:
            return None

        with anyio.move_on_after(5):
            await self.app(scope, receive, discard)

    def _opened(self, token: str) -> None:
        """An admitted opening request is over (its session registered, or refused): release its slot."""
        left = self.opening.get(token, 0) - 1
        if left > 0:
            self.opening[token] = left
        else:
            self.opening.pop(token, None)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, token: str, sid: str | None, opening: bool
    ) -> None:
        status = 0
        pending = opening  # holds an admission slot until its session is registered
        session = self.sessions.get(sid) if sid else None
        if session is not None:
            session.inflight += 1

        async def watch(message: Message) -> None:
            nonlocal status, session, pending
            if message["type"] == "http.response.start":
                status = message["status"]
                known = sid
                for k, v in message.get("headers", []):
                    if k.lower() == b"mcp-session-id":
                        known = v.decode("latin-1")
                # registered before the client can see the id, so its next request is counted
                if 200 <= status < 300 and known and session is None and known not in self.sessions:
                    host = (_header(scope, b"host") or "").encode()
                    session = self.sessions[known] = Session(token, time.monotonic(), 1, host)
                if pending:
                    pending = False
                    self._opened(token)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if pending:
                self._opened(token)
            if session is not None:
                session.inflight -= 1
                session.last = time.monotonic()
            if sid and (status == 404 or (scope.get("method") == "DELETE" and 200 <= status < 300)):
                self.sessions.pop(sid, None)


def guarded_protocol(header_timeout: float, body_timeout: float) -> type:
    """uvicorn's h11 protocol with a read deadline per request (see the module docstring)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _read_timer: Any = None
        _waiting: str = ""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm("headers", header_timeout)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:
                self._arm("headers", header_timeout)
            elif state is h11.SEND_BODY:
                self._arm("body", body_timeout)
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE:
                self._disarm()  # uvicorn's keep-alive timer now watches the idle connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, what: str, seconds: float) -> None:
            if self._read_timer is not None and self._waiting == what:
                return  # the deadline runs from the first byte, later bytes do not extend it
            self._disarm()
            self._waiting = what
            self._read_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
            self._read_timer, self._waiting = None, ""

        def _expired(self) -> None:
            self._read_timer = None
            if self.transport.is_closing():
                return
            log.info("closing a connection whose request %s did not arrive in time", self._waiting)
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            self.transport.close()

    return GuardedH11Protocol


class PathOnlyAccessLog(logging.Filter):
    """uvicorn's access log without query strings (they may carry anything a client put there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _methods(body: bytes) -> tuple[set[str], list[str]]:
    """The JSON-RPC methods in a body (one message or a batch) and the tools it calls."""
    if not body:
        return set(), []
    try:
        parsed = json.loads(body)
    except ValueError:
        return set(), []
    messages = parsed if isinstance(parsed, list) else [parsed]
    methods: set[str] = set()
    tools: list[str] = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("method"), str):
            continue
        methods.add(m["method"])
        if m["method"] == "tools/call":
            params = m.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            tools.append(name if isinstance(name, str) else "")
    return methods, tools


def _changes(tools: list[str]) -> int:
    """How many of the called tools change something (the audited ones)."""
    from pmcp.server.policy import Risk
    from pmcp.server.registry import declared

    specs = declared()
    return sum(1 for name in tools if name in specs and specs[name].risk is not Risk.READ)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the already-read body once, then whatever the connection says next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send: Send, status: int, message: str, retry_after: float | None) -> None:
    payload = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": message}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    if status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class DestructiveBudget:
    """How many destructive actions each client token took in the last hour (a sliding window).

    A destructive call that acts (``confirm: true``) takes one; a plan takes none, and a call refused
    before anything happened (protection, scope, bad argument) gives its one back. Counted per token
    name across all its sessions and both protocol eras. With ``directory`` (the install's sessions
    directory, shared by every server of the install) the times are kept in ``budget-NAME`` files
    (0600, under ``flock``), so a restart, and the old and new server of an update serving side by
    side, share one count; without it they are kept in this process only. Wall-clock times, a time in
    the future (a clock set back) counts as now. At most ``limit`` times per token are kept."""

    WINDOW = 3600.0

    def __init__(self, default: int, directory: Path | None = None) -> None:
        self.default = default
        self.directory = directory
        self._used: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def limit(self, per_hour: int | None) -> int:
        return self.default if per_hour is None else per_hour

    def take(self, token: str, per_hour: int | None) -> float | None:
        """Record one action: None when allowed, else the seconds until the next one is."""
        limit = self.limit(per_hour)

        def change(used: list[float], now: float) -> float | None:
            if limit <= 0:  # a budget of 0: none, ever (until an administrator raises it)
                return math.inf
            if len(used) < limit:
                used.append(now)
                return None
            return self.WINDOW - (now - used[len(used) - limit])

        return self._with(token, change)

    def refund(self, token: str) -> None:
        self._with(token, lambda used, now: used.pop() if used else None)

    def remaining(self, token: str, per_hour: int | None) -> tuple[int, int, float | None]:
        """(limit, left now, seconds until the oldest counted action leaves the window)."""
        limit = self.limit(per_hour)
        used = self._with(token, lambda used, now: [now - t for t in used])
        oldest = self.WINDOW - used[0] if used else None
        return limit, max(0, limit - len(used)), oldest

    def _with(self, token: str, change: Callable[[list[float], float], Any]) -> Any:
        """Run ``change(times, now)`` on the token's times of the last hour, then keep them."""
        with self._lock:
            now = time.time()
            if self.directory is not None:
                try:
                    return self._with_file(token, change, now)
                except OSError as exc:
                    log.warning(
                        "budget file in %s not usable (%s): counting in this process only",
                        self.directory,
                        exc.strerror,
                    )
                    self.directory = None
            used = self._recent(self._used.get(token, []), now)
            result = change(used, now)
            self._used[token] = used
            return result

    def _recent(self, times: Iterable[float], now: float) -> list[float]:
        return sorted(min(t, now) for t in times if now - t < self.WINDOW)

    def _with_file(self, token: str, change: Callable[[list[float], float], Any], now: float) -> Any:
        import fcntl

        assert self.directory is not None
        path = self.directory / f"budget-{token}"  # token names are [A-Za-z0-9][A-Za-z0-9_.-]*
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the other servers of the install wait here
            with os.fdopen(os.dup(fd), "r+", encoding="utf-8") as fh:
                try:
                    times = [float(t) for t in json.loads(fh.read() or "[]")]
                except (ValueError, TypeError):
                    times = []  # a damaged file: counting starts again, logged once
                    log.warning("%s was not a list of times; the budget count starts again", path)
                used = self._recent(times, now)
                result = change(used, now)
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(used))
            return result
        finally:
            os.close(fd)
