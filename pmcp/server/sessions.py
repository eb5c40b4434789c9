"""Handshake-era sessions that outlive a server process, so `pmcp update` does not end them.

Claude Code, Cursor, VS Code and mcp-remote speak the 2025-11 handshake era: one ``initialize``, then
``Mcp-Session-Id`` on every request for hours. The SDK keeps a session in the memory of the process
that answered ``initialize``; during an update three processes serve in turn (old, standby, new), so
without this module every request that reached another process answered 404 "Session not found"
(measured: 81 of 328 calls of one looping client failed across one `pmcp update`).

What a session is, server-side, is small and fixed at ``initialize``: the client's declared
capabilities and info, the negotiated protocol version and the token that opened it. That is written
once, as ``<PMCP_SESSION_DIR>/<id>.json`` (0600, in a directory of the install's data that every server
container of the install mounts), before the ``initialize`` answer leaves the server. A server that
gets a request for a session it does not hold but finds on disk re-creates the SDK transport and a
born-initialized connection for it (``_restore``), and serves the request as if it had been there
all along. Why a file and not a session id that is itself a signed record: a signed id cannot be
ended (DELETE) or expire on the other servers without shared state anyway, and a file needs no key.

Binding and revocation: the record holds the name and the SHA-256 of the token that opened the
session; a request with another token (even under the same name, after a rotation) gets the SDK's
404, exactly as for a session that does not exist. A revoked token is refused by the auth layer
(401) before this module is reached. DELETE removes the record, so the session ends everywhere;
a record that nobody used for the idle timeout is expired. Live sessions are touched every
``TOUCH_SECONDS`` by the server that holds them.

Draining (``drain()``, SIGUSR1 from the update switch once the server is fenced): every open GET
stream is closed (the SDK client reconnects it after 1 s, through Caddy, to a server that restores
the session) while tool calls in flight finish on this server with their progress notifications; the
switch stops the server once its connections are done.

This reaches into the SDK session manager's registry (``_server_instances``, ``_session_owners``,
``_task_group``): version 2.3 exposes no hook for "unknown session id". tests/unit/server/
test_sessions.py fails if a later SDK changes that registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import Connection
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import InitializeRequestParams
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pmcp.files import atomic_write
from pmcp.server.framing import AdaptiveTransport

log = logging.getLogger("pmcp.sessions")

RECORD_VERSION = 1
SESSION_ID = re.compile(r"[0-9a-f]{32}")  # the SDK's uuid4().hex; anything else never touches the disk
TOUCH_SECONDS = 60.0  # a live session's record is refreshed this often (expiry is the idle timeout)
DEFAULT_TTL = 24 * 3600.0  # records of sessions with no idle timeout are still swept after a day
DRAIN_SIGNAL = signal.SIGUSR1
DRAIN_POLL = 0.2  # while draining, GET streams opened since (a race with the fence) are closed too
MAX_CAPTURE = 256 * 1024  # an initialize body is a few hundred bytes; the SDK limits bodies to 1 MiB
_SESSION_HEADER = MCP_SESSION_ID_HEADER.lower().encode()
MCP_PATHS = ("/mcp", "/mcp/")


@dataclass
class SessionRecord:
    """What a server needs to serve a session it did not open (no secret: a token's SHA-256)."""

    id: str
    client: str
    token_sha256: str
    protocol_version: str
    params: dict[str, Any]
    created: float

    def to_json(self) -> str:
        return json.dumps({"v": RECORD_VERSION, **asdict(self)}, sort_keys=True)


class SessionStore:
    """One JSON file per session in a directory shared by every server of the install."""

    def __init__(self, directory: Path, ttl: float | None) -> None:
        self.directory = directory
        self.ttl = ttl or DEFAULT_TTL

    def path(self, session_id: str) -> Path | None:
        return self.directory / f"{session_id}.json" if SESSION_ID.fullmatch(session_id) else None

    def save(self, record: SessionRecord) -> bool:
        path = self.path(record.id)
        if path is None:
            return False
        try:
            atomic_write(path, record.to_json(), 0o600)
        except OSError as exc:
            log.warning("session %s not recorded in %s (%s): it ends with this server", record.id[:8],
                        self.directory, exc.strerror)  # fmt: skip
            return False
        return True

    def load(self, session_id: str) -> SessionRecord | None:
        """The record, or None when there is none, it is unreadable, or it expired (then removed)."""
        path = self.path(session_id)
        if path is None:
            return None
        try:
            age = time.time() - path.stat().st_mtime
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if age > self.ttl:
            path.unlink(missing_ok=True)
            return None
        if not isinstance(data, dict) or data.pop("v", None) != RECORD_VERSION:
            return None
        try:
            return SessionRecord(**data)
        except TypeError:
            return None

    def exists(self, session_id: str) -> bool:
        path = self.path(session_id)
        return path is not None and path.exists()

    def delete(self, session_id: str) -> None:
        path = self.path(session_id)
        if path is not None:
            path.unlink(missing_ok=True)

    def touch(self, session_ids: list[str]) -> None:
        for sid in session_ids:
            path = self.path(sid)
            if path is not None:
                with contextlib.suppress(OSError):
                    os.utime(path)

    def sweep(self) -> int:
        """Remove expired records (any server may: the one holding a live session keeps it fresh)."""
        removed, now = 0, time.time()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                if not entry.name.endswith(".json"):
                    continue
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > self.ttl:
                        os.unlink(entry.path)
                        removed += 1
        return removed


def token_sha256(scope: Scope) -> str:
    """SHA-256 of the bearer token a request presents ("" without one)."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return hashlib.sha256(token.strip().encode()).hexdigest()
    return ""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class SessionContinuity:
    """ASGI layer in front of the SDK's Streamable HTTP app: records, restores and drains sessions."""

    def __init__(
        self,
        app: ASGIApp,
        manager: StreamableHTTPSessionManager,
        store: SessionStore | None,
        express: Any = None,
    ) -> None:
        self.app = app
        self.manager = manager
        self.store = store
        self.express = express  # given to restored sessions' transports, as adaptive() gives new ones
        self.draining = anyio.Event()
        self.restored = 0
        self._bound: dict[str, str] = {}  # session id -> token sha256, for sessions recorded or restored here
        self._loop: Any = None

    # --- requests ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining.is_set() and scope["type"] == "http":
            send = _closing(send)
        if scope["type"] != "http" or self.store is None or scope.get("path") not in MCP_PATHS:
            await self.app(scope, receive, send)
            return
        sid = _header(scope, _SESSION_HEADER)
        if sid is None:
            if scope.get("method") == "POST":
                await self._maybe_record(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if not await self._admit(sid, scope, receive, send):
            return
        if scope.get("method") != "DELETE":
            await self.app(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if 200 <= status < 300:  # the client ended its session: it ends on every server
            self.store.delete(sid)
            self._bound.pop(sid, None)

    async def _admit(self, sid: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Restore a session held elsewhere; refuse one whose token or record is gone. True: go on."""
        assert self.store is not None
        presented = token_sha256(scope)
        if sid in self.manager._server_instances:
            bound = self._bound.get(sid)
            if bound is None:
                return True  # not recorded (the store was not writable): the SDK's own binding holds
            if not self.store.exists(sid):  # ended (DELETE) or expired on another server
                await self._forget(sid)
                await _not_found(scope, receive, send)
                return False
            if not hmac.compare_digest(bound, presented):  # another token, even under the same name
                await _not_found(scope, receive, send)
                return False
            return True
        record = self.store.load(sid)
        if record is None:
            return True  # unknown: the SDK answers 404
        if not hmac.compare_digest(record.token_sha256, presented):
            log.warning("session %s presented with another token than the one that opened it", sid[:8])
            await _not_found(scope, receive, send)
            return False
        if not await self._restore(record, scope):
            await _busy(scope, receive, send)
            return False
        return True

    async def _maybe_record(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request without a session id; if it opened a session (initialize), record it first."""
        chunks: list[bytes] = []
        size = 0

        async def capture() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request" and size <= MAX_CAPTURE:
                body = message.get("body", b"")
                size += len(body)
                chunks.append(body)
            return message

        async def record_then_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                sid = next(
                    (v.decode("latin-1") for k, v in message.get("headers", []) if k == _SESSION_HEADER), None
                )
                if sid and size <= MAX_CAPTURE:
                    self._record(sid, b"".join(chunks), scope)
            await send(message)

        await self.app(scope, capture, record_then_send)

    def _record(self, sid: str, body: bytes, scope: Scope) -> None:
        assert self.store is not None
        try:
            message = json.loads(body)
            if not isinstance(message, dict) or message.get("method") != "initialize":
                return
            params = InitializeRequestParams.model_validate(message.get("params") or {}, by_name=False)
        except (ValueError, ValidationError):
            return
        requested = params.protocol_version
        record = SessionRecord(
            id=sid,
            client=str(scope.get("pmcp.client") or "anonymous"),
            token_sha256=token_sha256(scope),
            protocol_version=requested
            if requested in HANDSHAKE_PROTOCOL_VERSIONS
            else LATEST_HANDSHAKE_VERSION,
            params=params.model_dump(by_alias=True, mode="json", exclude_none=True),
            created=time.time(),
        )
        if self.store.save(record):
            self._bound[sid] = record.token_sha256

    async def _restore(self, record: SessionRecord, scope: Scope) -> bool:
        """Re-create the SDK transport and an initialized connection for a recorded session."""
        m = self.manager
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        async with m._session_creation_lock:
            if record.id in m._server_instances:
                return True
            if m._task_group is None:
                return False
            if m.max_sessions is not None and len(m._server_instances) >= m.max_sessions:
                log.warning("not restoring session %s: %d sessions are open", record.id[:8], m.max_sessions)
                return False
            try:
                params = InitializeRequestParams.model_validate(record.params, by_name=False)
            except ValidationError:
                return False
            transport = AdaptiveTransport(
                mcp_session_id=record.id,
                is_json_response_enabled=m.json_response,
                event_store=m.event_store,
                security_settings=m.security_settings,
                retry_interval=m.retry_interval,
                idle_timeout=m.session_idle_timeout,
            )
            transport.express = self.express
            transport.opened = record.protocol_version  # born initialized (_serve_restored)
            m._server_instances[record.id] = transport
            if requestor is not None:
                m._session_owners[record.id] = requestor
            self._bound[record.id] = record.token_sha256
            try:
                await m._task_group.start(self._serve_restored, transport, record, params)
            except BaseException:
                await m._discard_session(record.id, transport)
                raise
        self.restored += 1
        log.info("session %s restored (opened elsewhere by %s)", record.id[:8], record.client)
        return True

    async def _serve_restored(
        self,
        transport: AdaptiveTransport,
        record: SessionRecord,
        params: InitializeRequestParams,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The SDK's per-session server task (streamable_http_manager.run_server), but born initialized."""
        m = self.manager
        async with transport.connect() as (read_stream, write_stream):
            task_status.started()
            try:
                idle_scope = transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                        read_stream, write_stream, inline_methods=frozenset({"initialize"})
                    )
                    connection = Connection.for_loop(
                        dispatcher, session_id=record.id, protocol_version_hint=record.protocol_version
                    )
                    connection.client_params = params
                    connection.initialized.set()
                    await serve_connection(
                        m.app, dispatcher, connection=connection, lifespan_state=m._lifespan_state
                    )
            except Exception:
                log.exception("restored session %s crashed", record.id[:8])
            finally:
                await m._discard_session(record.id, transport)

    async def _forget(self, sid: str) -> None:
        transport = self.manager._server_instances.get(sid)
        self._bound.pop(sid, None)
        if transport is not None:
            await self.manager._discard_session(sid, transport)

    # --- lifecycle: touch, sweep, drain -------------------------------------------------------------

    def drain(self) -> None:
        """Stop holding clients here: close GET streams now and while draining; calls in flight finish."""
        if not self.draining.is_set():
            log.info(
                "draining: %d session(s) move to the other server(s)", len(self.manager._server_instances)
            )
            self.draining.set()

    def request_drain(self) -> None:
        """``drain()`` from another thread (tests, an embedding program)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.drain)

    def _close_get_streams(self) -> None:
        for transport in list(self.manager._server_instances.values()):
            with contextlib.suppress(Exception):
                transport.close_standalone_sse_stream()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run inside the session manager's run(): the touch/sweep loop and the drain signal."""
        if self.store is None or self.manager.stateless:
            yield
            return
        with contextlib.suppress(OSError):
            self.store.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        import asyncio

        self._loop = asyncio.get_running_loop()
        handler = False
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            self._loop.add_signal_handler(DRAIN_SIGNAL, self.drain)
            handler = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_records)
            tg.start_soon(self._drain_loop)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                if handler:
                    with contextlib.suppress(Exception):
                        self._loop.remove_signal_handler(DRAIN_SIGNAL)

    async def _keep_records(self) -> None:
        assert self.store is not None
        while True:
            live = [sid for sid in list(self.manager._server_instances) if sid in self._bound]
            await anyio.to_thread.run_sync(self.store.touch, live)
            await anyio.to_thread.run_sync(self.store.sweep)
            await anyio.sleep(TOUCH_SECONDS)

    async def _drain_loop(self) -> None:
        await self.draining.wait()
        while True:
            self._close_get_streams()
            await anyio.sleep(DRAIN_POLL)


def _closing(send: Send) -> Send:
    """While draining, every answer ends its connection (``Connection: close``): a client's next request
    opens a new one, which the other server can take (under systemd both accept from one socket), so
    none is sent down a keep-alive connection just as this server closes it."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return wrapped


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The SDK's own answer for an unknown session, so a wrong token learns nothing more."""
    await _jsonrpc_error(scope, receive, send, 404, -32600, "Session not found")


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    await _jsonrpc_error(scope, receive, send, 503, -32603, "Too many open sessions")


async def _jsonrpc_error(
    scope: Scope, receive: Receive, send: Send, status: int, code: int, message: str
) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
