"""Bearer-token authentication: the outermost layer of the app.

Tokens come from ``PMCP_AUTH_TOKEN_FILE`` (``NAME:TOKEN`` lines, see ``pmcp.authtokens``); the file
is re-read when its size, mtime or inode changes, so adding or revoking a client needs no restart.
The presented token is compared with EVERY known token by ``hmac.compare_digest`` (no early exit),
so timing says nothing about which token or how much of it matched.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from pathlib import Path

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pmcp import authtokens
from pmcp.server.metrics import Metrics

log = logging.getLogger("pmcp.auth")

PUBLIC_PATHS = frozenset({"/health"})
SCRAPE_CLIENT = "metrics-scrape"


class TokenStore:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: list[tuple[str, bytes]] = []
        self._limits: dict[str, authtokens.TokenLimits] = {}

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _reload(self) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            if self._stamp is not None:
                log.error("token file %s is gone: every request is refused", self.path)
            self._stamp, self._tokens, self._limits = None, [], {}
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        skipped: list[str] = []
        try:
            entries = authtokens.load_entries(self.path, skipped)
            for why in skipped:
                log.error("token file %s: %s; that client is refused (update pmcp)", self.path, why)
        except (OSError, authtokens.TokenFileError) as exc:
            log.error("token file %s unreadable (%s): every request is refused", self.path, exc)
            entries = {}
        self._stamp = stamp
        self._tokens = [(name, e.token.encode()) for name, e in entries.items()]
        self._limits = {name: e.limits for name, e in entries.items()}
        log.info("loaded %d client token(s)", len(self._tokens))

    def match(self, presented: str) -> str | None:
        """The name of the token that matches, or None; constant-time over all tokens."""
        return self.match_limits(presented)[0]

    def match_limits(self, presented: str) -> tuple[str | None, authtokens.TokenLimits]:
        """The matching token's name and its own limits (mode, scope, budget), read with it from the
        same version of the file, so a changed line never pairs an old name with new limits."""
        with self._lock:
            self._reload()
            tokens = list(self._tokens)
            limits = self._limits
        given = presented.encode()
        found: str | None = None
        for name, token in tokens:
            if hmac.compare_digest(given, token) and found is None:
                found = name
        return found, limits.get(found, authtokens.NO_LIMITS) if found else authtokens.NO_LIMITS


class ScrapeToken:
    """The bare bearer token Prometheus scrapes ``/metrics`` with (``PMCP_METRICS_TOKEN_FILE``).

    It is good for ``/metrics`` only: the MCP endpoint answers it 401, so the scrape secret, which
    Prometheus' container also holds, cannot drive the hypervisor. Re-read when the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = b""

    def matches(self, presented: str) -> bool:
        if self.path is None:
            return False
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp != self._stamp:
                    self._token = self.path.read_text(encoding="utf-8").strip().encode()
                    self._stamp = stamp
            except OSError:
                self._stamp, self._token = None, b""
            token = self._token
        return len(token) >= 16 and hmac.compare_digest(presented.encode(), token)


def authenticated_user(name: str) -> AuthenticatedUser:
    """The SDK's user for a client token name (sessions are bound to it)."""
    return AuthenticatedUser(AccessToken(token=name, client_id=name, scopes=[]))


class AuthMiddleware:
    """Refuse every request but ``/health`` without a valid bearer token; count every answer.

    ``/.well-known/*`` answers 404 before auth: clients probe it for OAuth metadata, and a 401 there
    would send them into an OAuth flow this server does not offer.
    """

    def __init__(
        self, app: ASGIApp, tokens: TokenStore, metrics: Metrics, scrape: ScrapeToken | None = None
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.metrics = metrics
        self.scrape = scrape or ScrapeToken(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        status_seen = 0

        async def counting_send(message: Message) -> None:
            nonlocal status_seen
            if message["type"] == "http.response.start":
                status_seen = message["status"]
            await send(message)

        try:
            if path.startswith("/.well-known/"):
                await _json(counting_send, 404, {"error": "not_found"})
            elif path in PUBLIC_PATHS:
                await self.app(scope, receive, counting_send)
            else:
                name, limits = self._authenticate(scope, path)
                if name is None:
                    # RFC 6750 3.1: invalid_token when one was sent; no OAuth metadata is named, so
                    # clients do not start an OAuth flow this server does not offer
                    sent = any(k == b"authorization" for k, _ in scope.get("headers", []))
                    challenge = b'Bearer realm="pmcp"' + (b', error="invalid_token"' if sent else b"")
                    hint = "`pmcp client-config --show-token` on the host prints a valid one"
                    await _json(
                        counting_send,
                        401,
                        {"error": "unauthorized", "message": f"send Authorization: Bearer <token>; {hint}"},
                        [(b"www-authenticate", challenge)],
                    )
                else:
                    scope["pmcp.client"] = name
                    scope["pmcp.limits"] = limits  # the token's own mode, scope, budget
                    scope["user"] = authenticated_user(name)
                    await self.app(scope, receive, counting_send)
        finally:
            self.metrics.observe_http(path, status_seen)

    def _authenticate(self, scope: Scope, path: str) -> tuple[str | None, authtokens.TokenLimits]:
        none = authtokens.NO_LIMITS
        if not self.tokens.enabled:
            return "anonymous", none
        header = b""
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                header = value
                break
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, none
        name, limits = self.tokens.match_limits(token.strip())
        if name is None and path == "/metrics" and self.scrape.matches(token.strip()):
            return SCRAPE_CLIENT, none
        return name, limits


async def _json(
    send: Send, status: int, body: dict[str, str], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": payload})
