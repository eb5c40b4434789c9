"""The simulator's HTTP(S) server: ``/api2/json/...`` like pveproxy, plus ``/_sim/...`` test controls.

Standard library only (``http.server``), so ``pmcp sim serve`` needs nothing beyond Python.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pmcp.sim import access, hostfw, routes, schema
from pmcp.sim.api.common import Ctx, RawJSON
from pmcp.sim.errors import ApiError
from pmcp.sim.state import SimState

API_PREFIX = "/api2/json"
MAX_LOGGED = 100_000  # requests kept in the log of a long-running simulator


def _merge(target: dict[str, Any], pairs: dict[str, list[str]]) -> None:
    for k, values in pairs.items():
        target[k] = values[0] if len(values) == 1 else values


def dispatch(
    state: SimState,
    method: str,
    path: str,
    params: dict[str, Any],
    auth_header: str | None,
    cookie: str | None = None,
    csrf: str | None = None,
) -> Any:
    """Answer one API call (path without the /api2/json prefix); raises ApiError like PVE."""
    routes._load_handlers()
    hit = routes.match(method, path)
    if hit is None:
        raise ApiError(501, f"Method '{method} {path}' not implemented")
    template, path_params = hit
    with state.lock:
        state.engine.tick()
        endpoint = schema.endpoints()[(method, template)]
        try:
            auth = access.authenticate(state, auth_header, cookie, csrf, method)
        except ApiError:
            if endpoint.permissions.get("user") != "world":
                raise
            auth = access.Auth("")
        if not endpoint.allowtoken and auth.tokenid:
            raise ApiError(403, "Permission check failed (not available with API token, need proper ticket)")
        # pve-manager PVE/HTTPServer.pm rest_handler: token allowed, then check_api2_permissions on
        # the raw (unverified) parameters, and only then the handler, which verifies them
        # (pve-common RESTHandler.pm handle): a caller without the privilege gets 403, not 400.
        raw = {**params, **path_params}
        access.check(state, auth, endpoint.permissions, raw)
        p = schema.verify(endpoint, raw)
        return routes.ROUTES[(method, template)](Ctx(state, auth), p)


def _control(state: SimState, method: str, path: str, params: dict[str, Any], auth_header: str | None) -> Any:
    """``/_sim/...``: out-of-process test controls, for the root credential only (health is open)."""
    if path == "/_sim/health":
        return "ok"
    with state.lock:
        auth = access.authenticate(state, auth_header)
    if (auth.userid, auth.tokenid) != (state.root_userid, state.root_tokenid):
        raise ApiError(403, "Permission check failed (/_sim needs the simulator's root credential)")
    if (method, path) == ("GET", "/_sim/requests"):
        with state.lock:
            return [list(r) for r in state.requests]
    if (method, path) == ("DELETE", "/_sim/requests"):
        state.clear_requests()
        return None
    if (method, path) == ("POST", "/_sim/fail-next"):
        state.fail_next(str(params["type"]), str(params.get("message", "simulated failure")))
        return None
    if (method, path) == ("POST", "/_sim/latency"):
        state.inject_latency(float(params.get("seconds", 0)))
        return None
    if (method, path) == ("POST", "/_sim/errors"):
        state.inject_errors(
            int(params.get("status", 500)),
            int(params.get("count", 1)),
            params.get("message"),
            params.get("method"),
            params.get("path"),
        )
        return None
    if (method, path) == ("POST", "/_sim/reset"):
        state.reset_controls()
        state.clear_requests()
        return None
    raise ApiError(501, f"Method '{method} {path}' not implemented")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    state: SimState
    verbose = False

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _params(self) -> dict[str, Any]:
        url = urlsplit(self.path)
        params: dict[str, Any] = {}
        _merge(params, parse_qs(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype == "application/json":
                data = json.loads(body or b"{}")
                params.update({k: (int(v) if isinstance(v, bool) else v) for k, v in data.items()})
            else:
                _merge(params, parse_qs(body.decode(), keep_blank_values=True))
        return params

    def _handle(self, method: str) -> None:
        state = self.state
        path = urlsplit(self.path).path
        status, reason, body = 200, "OK", b""
        try:
            params = self._params()
            if path.startswith("/_sim/"):
                data = _control(state, method, path, params, self.headers.get("Authorization"))
                body = b'{"data":' + json.dumps(data).encode() + b"}"
            elif path.startswith(API_PREFIX + "/") or path == API_PREFIX:
                api_path = path[len(API_PREFIX) :].rstrip("/") or "/"
                with state.lock:
                    state.requests.append((method, api_path))
                    state.calls.append((method, api_path, tuple(sorted(params))))
                    if len(state.requests) > MAX_LOGGED:
                        del state.requests[: MAX_LOGGED // 2]
                        del state.calls[: MAX_LOGGED // 2]
                if state.latency:
                    time.sleep(state.latency)
                injected = state.take_error(method, api_path)
                if injected:
                    raise ApiError(injected[0], injected[1] or f"injected error {injected[0]}")
                data = dispatch(
                    state,
                    method,
                    api_path,
                    params,
                    self.headers.get("Authorization"),
                    self.headers.get("Cookie"),
                    self.headers.get("CSRFPreventionToken"),
                )
                if isinstance(data, RawJSON):
                    body = b'{"data":' + data.data + b"}"
                else:
                    body = json.dumps({"data": data}, separators=(",", ":")).encode()
                if method != "GET":
                    state.save()
            else:
                raise ApiError(404, "Not Found")
        except ApiError as e:
            status, reason = e.status, e.reason
            body = b"" if e.empty else json.dumps(e.body()).encode()
        except (ValueError, KeyError) as e:
            status, reason = 400, "Bad Request"
            body = json.dumps({"data": None, "message": f"bad request: {e}\n"}).encode()
        except Exception as e:  # pragma: no cover - a bug in the simulator must not kill the server
            status, reason = 500, "Internal Server Error"
            body = json.dumps(
                {"data": None, "message": f"simulator error: {type(e).__name__}: {e}\n"}
            ).encode()
        reason = reason.replace("\r", " ").replace("\n", " ")[:200]
        self.send_response(status, reason.encode("latin-1", "replace").decode("latin-1"))
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            super().log_message(format, *args)


DROP_HOLD_SECONDS = 300.0


class SimServer(ThreadingHTTPServer):
    """The listening socket stays plain: each connection's thread first asks the modelled host firewall
    (pmcp.sim.hostfw) whether the source may reach 8006, then does the TLS handshake itself (so one
    slow or dropped client never holds the accept loop)."""

    daemon_threads = True
    allow_reuse_address = True
    tls_context: ssl.SSLContext | None = None
    state: SimState | None = None
    lo: tuple[str, ...] = hostfw.LOOPBACK

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.state is not None and not self._admitted(client_address[0]):
            _hold_dropped(request)
            return
        if self.tls_context is not None:
            try:
                request.settimeout(30)
                request = self.tls_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError):
                return
            try:
                super().finish_request(request, client_address)
            finally:
                with contextlib.suppress(OSError):
                    request.close()
            return
        super().finish_request(request, client_address)

    def _admitted(self, source: str) -> bool:
        state = self.state
        assert state is not None
        with state.lock:
            node = next(iter(state.world["nodes"]), "")
            return hostfw.admits(state.world, node, source, self.lo)


def _hold_dropped(conn: socket.socket) -> None:
    """What a DROP looks like from the client: no answer at all, until it gives up."""
    conn.settimeout(DROP_HOLD_SECONDS)
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def make_server(
    state: SimState,
    host: str = "127.0.0.1",
    port: int = 8006,
    verbose: bool = False,
    tls_context: ssl.SSLContext | None = None,
    lo: tuple[str, ...] = hostfw.LOOPBACK,
) -> SimServer:
    handler = type("SimHandler", (_Handler,), {"state": state, "verbose": verbose})
    server = SimServer((host, port), handler)
    server.state = state
    server.tls_context = tls_context
    server.lo = tuple(lo)
    return server


def default_gateway() -> str | None:
    """The IPv4 default gateway (from /proc/net/route): in a container, the host."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    return None


def start_ticker(state: SimState, stop: threading.Event, interval: float = 0.05) -> threading.Thread:
    """Complete due tasks and persist the state even when no request arrives."""

    def run() -> None:
        saved = 0.0
        while not stop.wait(interval):
            try:
                state.tick()
                if state.dirty and time.monotonic() - saved >= 1.0:
                    state.save()
                    saved = time.monotonic()
            except Exception as e:  # keep serving; say why the state could not be saved
                print(f"pmcp sim: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                saved = time.monotonic() + 30

    t = threading.Thread(target=run, name="pmcp-sim-ticker", daemon=True)
    t.start()
    return t
