"""JSON or SSE, chosen per request, for the 2025-11 handshake era's POSTs.

The SDK fixes the framing per session (``json_response``). SSE is what carries
``notifications/progress`` while a Proxmox task runs, so the server used it for every answer. But a
request that carries no ``progressToken`` can receive no progress (the SDK's ``report_progress`` is a
no-op then, and pmcp sends no other notification or server request inside a call), so its SSE stream
only ever holds the one answer, and it costs twice: the SDK's SSE machinery (a task group, two memory
streams, sse-starlette), and a client that stops reading after the answer (the SDK client does)
drops the chunked stream, so every call opened a new TCP connection. Measured with the SDK client at
50 guests (bench_peers.py): `list_guests` p50 15.0 ms with SSE, see BENCHMARKS.md for JSON.

So a POST is answered as one JSON body (the SDK's JSON-response path) when it is a single request
without ``params._meta.progressToken`` and is not a call of a change tool: those wait for a Proxmox
task for up to ``PMCP_TASK_TIMEOUT``, and an SSE stream keeps a proxy or client from seeing a silent
connection for minutes (sse-starlette pings it). Everything else keeps SSE. The 2026-07 era's
single-exchange path already does the same on its own (JSON unless something is emitted first).

The SDK reads ``is_json_response_enabled`` in the request's own task (accept check, metadata, the
branch in ``_handle_post_request``), so a context variable set around that call decides it for this
request only; the session's message router reads the default (SSE), which routes nothing for a
request that emits nothing. ``adaptive(manager)`` makes the session manager create this transport;
sessions.py restores sessions with it. tests/unit/server/test_framing.py fails if the SDK changes.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from mcp.server.streamable_http import (
    CONTENT_TYPE_JSON,
    MCP_SESSION_ID_HEADER,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import INTERNAL_ERROR
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger("pmcp.framing")

_JSON: ContextVar[bool] = ContextVar("pmcp_json_response", default=False)


def parse(body: bytes) -> Any:
    """The POSTed JSON, or None when it is not JSON (the SDK answers the parse error)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def answer_as_json(message: Any) -> bool:
    """True for a single JSON-RPC request that cannot receive progress and never waits for a task."""
    if not isinstance(message, dict) or "id" not in message or not isinstance(message.get("method"), str):
        return False  # a batch, a notification or a response: the SDK answers 202 or an error
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    if isinstance(meta, dict) and meta.get("progressToken") is not None:
        return False
    if message["method"] == "tools/call":
        return not _may_wait(params.get("name"), params.get("arguments"))
    return True


def _may_wait(name: Any, arguments: Any) -> bool:
    """Anything but a read: the risk of this call, raised by its arguments (``guest_power`` ``stop``)."""
    from pmcp.server.policy import Risk
    from pmcp.server.registry import declared

    spec = declared().get(name) if isinstance(name, str) else None
    if spec is None:
        return True
    try:
        return spec.risk_of(arguments if isinstance(arguments, dict) else {}) is not Risk.READ
    except Exception:  # arguments the tool will refuse: SSE, as before this module
        return True


class AdaptiveTransport(StreamableHTTPServerTransport):
    """The SDK's transport with the JSON/SSE choice made per POST (see the module docstring), and the
    express lane for what qualifies (express.py)."""

    express: Any = None  # the app's express.Express; None: every request goes the SDK's way
    opened: str | None = None  # the protocol version a successful initialize negotiated for this session

    @property  # type: ignore[override]
    def is_json_response_enabled(self) -> bool:
        return _JSON.get()

    @is_json_response_enabled.setter
    def is_json_response_enabled(self, value: bool) -> None:
        """The SDK's constructor sets the session-wide flag; the choice is per request here."""

    async def _handle_post_request(
        self, scope: Scope, request: Request, receive: Receive, send: Send
    ) -> None:
        body = await request.body()  # Starlette keeps it: the SDK's own read gets the same bytes
        message = parse(body)
        as_json = answer_as_json(message)
        express = self.express
        if as_json and express and express.takes(message, self.opened) and self._plain_post(request):
            await self._answer_express(message, scope, receive, send)
            return
        if self.opened is None and isinstance(message, dict) and message.get("method") == "initialize":
            send = self._watch_initialize(send)
        token = _JSON.set(as_json)
        try:
            await super()._handle_post_request(scope, request, receive, send)
        finally:
            _JSON.reset(token)

    def _plain_post(self, request: Request) -> bool:
        """The transport's own checks of a JSON-answered POST, passed: else the SDK answers the error."""
        has_json, _ = check_accept_headers(request)
        return (
            has_json
            and self._check_content_type(request)
            and self.mcp_session_id is not None
            and request.headers.get(MCP_SESSION_ID_HEADER) == self.mcp_session_id
        )

    async def _answer_express(self, message: Any, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self.express.answer(message, scope)
        except Exception:  # as the SDK's own POST handler answers what it did not expect
            log.exception("Error handling POST request (express)")
            error = self._create_error_response(
                "Error handling POST request", HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR
            )
            await error(scope, receive, send)
            return
        headers = {"Content-Type": CONTENT_TYPE_JSON, MCP_SESSION_ID_HEADER: self.mcp_session_id or ""}
        await Response(body, status_code=200, headers=headers)(scope, receive, send)

    def _watch_initialize(self, send: Send) -> Send:
        """Note the version a successful ``initialize`` answer negotiated (its JSON body): from then on
        the session's requests may take the express lane, as the SDK's runner lets them through."""

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.body" and self.opened is None:
                answer = parse(message.get("body", b""))
                result = answer.get("result") if isinstance(answer, dict) else None
                if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                    self.opened = result["protocolVersion"]
            await send(message)

        return watched


def adaptive(manager: StreamableHTTPSessionManager, express: Any = None) -> None:
    """Make ``manager`` open every new session with an ``AdaptiveTransport`` (with ``express``)."""
    admit = manager._admit_session

    def admit_adaptive(requestor: Any) -> StreamableHTTPServerTransport | None:
        transport = admit(requestor)
        if transport is not None:
            transport.__class__ = AdaptiveTransport  # same attributes, created a moment ago, not yet used
            transport.express = express
        return transport

    manager._admit_session = admit_adaptive  # type: ignore[method-assign]
