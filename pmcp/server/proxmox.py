"""The Proxmox API client: token auth, verified TLS, timeouts, safe retries, honest task outcomes.

Requests go out on the server's own event loop over kept-alive TLS connections, straight to the node:
no HTTP proxy is taken from the environment (the API is this host's or its cluster's; a Docker
daemon configured with a proxy puts HTTP(S)_PROXY into every container). URLs are built here from
validated segments only (``validate.api_path``), and every failure becomes one ``ProxmoxError``
carrying the HTTP status and Proxmox's own message. Only GETs are retried: repeating a POST could
start a second task.

What a call no longer pays (issue 16, measured with bench/bench_peers.py, see BENCHMARKS.md):
- no thread hand-off: before, each call ran proxmoxer's requests session in a worker thread
  (``anyio.to_thread``). Measured against the simulator at 50 guests, one ``/cluster/resources``:
  requests in a thread 1.19-1.65 ms and 1.10-1.34 ms CPU, httpx2 on the loop 0.98-1.22 ms and
  0.87-0.91 ms CPU; requests also re-read the proxy variables of the environment on every call.
- no client layer over the connection pool: httpcore2's pool (the transport under httpx2, which the
  MCP SDK depends on: nothing new in the file) is called directly, without httpx2's request and
  response models, auth and redirect layers: 0.45 against 0.64 ms (median of 1,000) for that GET.
- identical reads in flight are one request (``_Flight``): see ``ProxmoxClient.call``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

import anyio
from pydantic_core import from_json

from pmcp import __version__, pvetls
from pmcp.server import validate
from pmcp.server.config import ServerConfig
from pmcp.server.metrics import Metrics

if TYPE_CHECKING:
    import httpcore2

log = logging.getLogger("pmcp.proxmox")

RETRY_STATUSES = frozenset({502, 503, 504, 595, 596})
RETRY_DELAYS = (0.2, 0.6)
CONNECT_TIMEOUT = 5.0
REACHABLE_TIMEOUT = 2.0
LOG_TAIL_LINES = 12
# pveproxy drops a kept-alive connection after 5 s idle (pve-http-server src/PVE/APIServer/AnyEvent.pm,
# `new`: `$self->{timeout} = 5`); reusing one it is about to close costs a failed attempt, so idle
# connections are let go a second earlier. A handful suffices: pveproxy serves each on one worker.
KEEPALIVE_SECONDS = 4.0
MAX_CONNECTIONS = 16

ProgressFn = Callable[[float, str], Awaitable[None]]


class ProxmoxError(Exception):
    """A Proxmox API call failed; ``status`` is the HTTP status (0: no answer) and ``message`` says why."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.errors = errors or {}
        detail = "; ".join(f"{k}: {v}" for k, v in self.errors.items())
        super().__init__(f"Proxmox API error {status}: {message}" + (f" ({detail})" if detail else ""))


@dataclass
class TaskOutcome:
    """How a Proxmox task ended, read from its status and log (never assumed from a UPID)."""

    outcome: Literal["ok", "failed", "running"]
    upid: str
    node: str
    task_type: str
    exitstatus: str | None = None
    log_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Answer:
    """What Proxmox answered (status, reason, body), before it is decoded for one caller."""

    status: int
    reason: str
    body: bytes


@dataclass
class _Flight:
    """One GET on its way; callers asking the same while it is out wait for its answer."""

    epoch: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    answer: _Answer | None = None
    error: ProxmoxError | None = None  # None with no answer: the first caller was cancelled


class ProxmoxClient:
    """The server's one Proxmox identity (the configured API token) and its connections.

    Every request carries the same credentials, which is what makes sharing an identical read safe:
    there is no other identity in this process whose answer could differ."""

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        if config.proxmox_ca_file:
            verify: bool | str = str(config.proxmox_ca_file)
        else:
            verify = not config.proxmox_tls_insecure
        if verify is False:
            log.warning("PROXMOX_TLS_INSECURE=1: the Proxmox certificate is NOT verified")
        self._ssl: ssl.SSLContext | None = None
        if isinstance(verify, str):
            # an unusable PROXMOX_CA_FILE still fails the start, not the first call. Our own context
            # (pmcp.pvetls): Python 3.13's strict X.509 refuses the Proxmox CA most hosts have (no
            # keyUsage); verification and the hostname check stay on.
            self._ssl = pvetls.context(verify)
        self._verify = verify
        self._base = config.proxmox_api
        self._extensions = {"sni_hostname": config.proxmox_tls_name} if config.proxmox_tls_name else {}
        user = config.token_user
        self._headers = [
            # proxmoxer's header (backends/https.py ProxmoxHTTPApiTokenAuth), what pveproxy reads
            # (pve-access-control src/PVE/AccessControl.pm, the PVEAPIToken= form)
            (
                b"Authorization",
                f"PVEAPIToken={user}!{config.token_name}={config.proxmox_token_secret}".encode(),
            ),
            (b"Accept", b"application/json"),
            (b"User-Agent", f"pmcp/{__version__}".encode()),
        ]
        self._http: httpcore2.AsyncConnectionPool | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._flights: dict[tuple[str, str, float | None, bool], _Flight] = {}
        self._epoch = 0  # requests answered so far (any method): a read joins only a flight younger than all

    def _pool(self) -> httpcore2.AsyncConnectionPool:
        """The connection pool of the running loop, made on first use: httpcore2 is not imported before
        the first Proxmox call (the server's start does not wait for it). A pool belongs to one loop;
        the server has one, a test harness may run calls on several."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            import httpcore2

            if self._verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = self._ssl or pvetls.context(None)  # the system store (PROXMOX_TLS_NAME: public CA)
            self._http = httpcore2.AsyncConnectionPool(
                ssl_context=context,
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_SECONDS,
            )
            self._http_loop = loop
        return self._http

    def _extensions_for(self, timeout: float | None) -> dict[str, Any]:
        """``timeout`` bounds the connect as well as the read when given (a probe that must answer fast)."""
        read = timeout or self.config.proxmox_timeout
        connect = min(CONNECT_TIMEOUT, timeout) if timeout else CONNECT_TIMEOUT
        times = {"connect": connect, "read": read, "write": read, "pool": read}
        return {"timeout": times, **self._extensions}

    async def aclose(self) -> None:
        if self._http is not None and self._http_loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = None

    @property
    def tls_verified(self) -> bool:
        """False for plain http (loopback simulator only) or PROXMOX_TLS_INSECURE=1: `verify` warns."""
        return self.config.proxmox_url.startswith("https://") and self._verify is not False

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        retry: bool = True,
    ) -> Any:
        """One API call; ``path`` must come from ``validate.api_path``. Returns ``data``.

        ``timeout`` bounds the connect as well as the read when given (a probe that must answer fast);
        ``retry=False``: one attempt, even for a GET.

        A GET identical to one already in flight (path, parameters, timeout, retry) waits for that
        one's answer instead of sending its own, when nothing was answered since that one left
        (``epoch``): an answer that arrived since (a change, a task's end) may be what this
        caller knows, and the flight may predate it, so it sends its own. Only while in flight:
        nothing is kept after, so the answer is as fresh as an own request sent at the same time.
        Never a write. Each caller decodes its own copy of the body (no shared objects). Measured
        (bench_peers.py, 4 clients listing at 50 guests): see ARCHITECTURE.md."""
        if not path.startswith("/") or ".." in path.split("/"):
            raise ValueError("path must be built by validate.api_path")
        clean = {k: _wire(v) for k, v in (params or {}).items() if v is not None}
        if method != "GET":
            # A change, once sent, is waited for even when its caller is cancelled (the client went
            # away), as the thread it ran in before was: never cut off half-written, and bounded by the
            # timeouts. The caller's cancellation takes effect at its next await.
            with anyio.CancelScope(shield=True):
                answer = await self._send(method, path, clean, timeout, retry=False)
            return _decode(answer)
        key = (path, repr(sorted(clean.items())), timeout, retry)
        while True:
            flight = self._flights.get(key)
            if flight is None or flight.epoch != self._epoch:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise ProxmoxError(flight.error.status, flight.error.message, flight.error.errors)
            if flight.answer is not None:
                if self.metrics:
                    self.metrics.proxmox_shared.inc()
                return _decode(flight.answer)
            # the first caller was cancelled (its client went away): ask again, perhaps first this time
        flight = self._flights[key] = _Flight(self._epoch)
        try:
            flight.answer = await self._send(method, path, clean, timeout, retry)
        except ProxmoxError as exc:
            flight.error = exc
            raise
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()
        return _decode(flight.answer)

    async def _send(
        self, method: str, path: str, clean: dict[str, Any], timeout: float | None, retry: bool
    ) -> _Answer:
        """The request with its retries; an answer with any HTTP status, or ProxmoxError (status 0)
        when none came."""
        import httpcore2

        pool = self._pool()
        attempts = len(RETRY_DELAYS) + 1 if method == "GET" and retry else 1
        url = self._base + path
        headers = self._headers
        body: bytes | None = None
        if method in ("GET", "DELETE"):
            if clean:  # as httpx2 wrote it (spaces as %20); pveproxy decodes either
                url += "?" + urlencode(clean, doseq=True, quote_via=quote)
        else:  # a form, as proxmoxer and pvesh send parameters (pve-http-server reads both)
            body = urlencode(clean, doseq=True).encode()
            headers = [*headers, (b"Content-Type", b"application/x-www-form-urlencoded")]
        extensions = self._extensions_for(timeout)
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                resp = await pool.request(method, url, headers=headers, content=body, extensions=extensions)
            except (*_http_errors(httpcore2), OSError) as exc:
                self._count_error(0)
                if _tls_failure(exc):
                    raise ProxmoxError(
                        0,
                        "TLS verification of the Proxmox certificate failed: PROXMOX_CA_FILE does not trust "
                        "what port 8006 serves (a new certificate?); re-run `pmcp install`, which checks it",
                    ) from None
                if attempt + 1 < attempts:
                    await anyio.sleep(RETRY_DELAYS[attempt])
                    continue
                raise ProxmoxError(
                    0, f"no answer from Proxmox at {self.config.proxmox_url} ({type(exc).__name__})"
                ) from None
            finally:
                self._epoch += 1
                if self.metrics:
                    self.metrics.proxmox_seconds.labels(method).observe(time.perf_counter() - started)
            if resp.status >= 400:
                self._count_error(resp.status)
                if resp.status in RETRY_STATUSES and attempt + 1 < attempts:
                    await anyio.sleep(RETRY_DELAYS[attempt])
                    continue
            reason = resp.extensions.get("reason_phrase", b"")
            return _Answer(resp.status, reason.decode("latin-1", "replace"), resp.content)
        raise AssertionError("unreachable")

    def _count_error(self, status: int) -> None:
        if self.metrics:
            self.metrics.proxmox_errors.labels(str(status)).inc()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params)

    async def post(self, path: str, **params: Any) -> Any:
        return await self.call("POST", path, params)

    async def put(self, path: str, **params: Any) -> Any:
        return await self.call("PUT", path, params)

    async def delete(self, path: str, **params: Any) -> Any:
        return await self.call("DELETE", path, params)

    async def reachable(self) -> bool:
        """One bounded probe: /health must answer within the container healthcheck's 3 s even when the
        API does not answer at all (a firewall that drops), or the server is marked unhealthy for
        something it cannot fix, and install stops before the step that fixes the firewall."""
        try:
            await self.call("GET", "/version", timeout=REACHABLE_TIMEOUT, retry=False)
        except ProxmoxError as exc:
            return exc.status not in (0,) and exc.status < 500
        return True

    async def task_log_tail(self, node: str, upid: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        path = validate.api_path("nodes", validate.node(node), "tasks", validate.upid(upid), "log")
        try:
            entries = await self.get(path, start=0, limit=5000) or []
        except ProxmoxError as exc:
            return [f"(task log unavailable: {exc.message})"]
        text = [str(e.get("t", "")) for e in entries if isinstance(e, dict)]
        return text[-lines:]

    async def wait_task(self, upid: str, timeout: float, progress: ProgressFn | None = None) -> TaskOutcome:
        """Poll a task until it stops or ``timeout`` passes. ``ok`` only with exitstatus OK/WARNINGS."""
        upid = validate.upid(upid)
        node = validate.upid_node(upid)
        task_type = upid.split(":")[5]
        path = validate.api_path("nodes", node, "tasks", upid, "status")
        started = time.monotonic()
        delay = 0.1
        unreadable: str | None = None
        while True:
            elapsed = time.monotonic() - started
            try:
                status = await self.get(path) or {}
                unreadable = None
            except ProxmoxError as exc:  # the task was started: keep its UPID, never turn this into an error
                status, unreadable = {}, f"(task status unreadable: {exc.message})"
                if exc.status not in (0, *RETRY_STATUSES):
                    return TaskOutcome("running", upid, node, task_type, None, [unreadable], elapsed)
            if status.get("status") == "stopped":
                exitstatus = status.get("exitstatus")
                elapsed = time.monotonic() - started
                if isinstance(exitstatus, str) and (exitstatus == "OK" or exitstatus.startswith("WARNINGS")):
                    tail = await self.task_log_tail(node, upid, 3) if exitstatus != "OK" else []
                    return TaskOutcome("ok", upid, node, task_type, exitstatus, tail, round(elapsed, 2))
                tail = await self.task_log_tail(node, upid)
                return TaskOutcome("failed", upid, node, task_type, str(exitstatus), tail, round(elapsed, 2))
            if elapsed >= timeout:
                note = [unreadable] if unreadable else []
                return TaskOutcome("running", upid, node, task_type, None, note, round(elapsed, 2))
            if progress is not None:
                await progress(elapsed, f"{task_type} running for {elapsed:.1f}s")
            await anyio.sleep(min(delay, max(0.05, timeout - elapsed)))
            delay = min(delay * 1.6, 2.0)


def _http_errors(httpcore2: Any) -> tuple[type[BaseException], ...]:
    """What httpcore2 raises when no answer came (its own classes; the ssl error is their cause)."""
    return (
        httpcore2.TimeoutException,
        httpcore2.NetworkError,
        httpcore2.ProtocolError,
        httpcore2.UnsupportedProtocol,
        httpcore2.ProxyError,
    )


def _wire(value: Any) -> Any:
    if isinstance(value, bool):
        return 1 if value else 0
    return value


def _tls_failure(exc: BaseException) -> bool:
    """httpcore2 wraps the ssl module's verification error in a ConnectError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _decode(answer: _Answer) -> Any:
    """``data`` of a successful answer, else the ProxmoxError it says."""
    if answer.status < 400:
        try:
            # pydantic-core's parser, not json.loads: measured 16 ms against 28 ms for a 5,000-guest
            # /cluster/resources (1.7 MB), most of what pmcp adds to that listing
            return from_json(answer.body).get("data")
        except ValueError:
            raise ProxmoxError(answer.status, "Proxmox answered with something that is not JSON") from None
    raise _error_from(answer)


def _error_from(answer: _Answer) -> ProxmoxError:
    message = ""
    errors: dict[str, str] = {}
    try:
        body = from_json(answer.body)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or "").strip()
        if isinstance(body.get("errors"), dict):
            errors = {str(k): str(v).strip() for k, v in body["errors"].items()}
    if not message:
        message = (answer.reason or "").strip() or f"HTTP {answer.status}"
    return ProxmoxError(answer.status, message[:500], errors)
