"""The Proxmox API client: token auth, verified TLS, timeouts, safe retries, honest task outcomes.

Requests go through proxmoxer's HTTPS backend session (it owns the ``PVEAPIToken`` header and the
TLS settings), but URLs are built here from validated segments only (``validate.api_path``), and
every failure becomes one ``ProxmoxError`` carrying the HTTP status and Proxmox's own message.
Only GETs are retried: repeating a POST could start a second task.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic_core import from_json

from pmcp import pvetls
from pmcp.server import validate
from pmcp.server.config import ServerConfig
from pmcp.server.metrics import Metrics

if TYPE_CHECKING:
    import requests

log = logging.getLogger("pmcp.proxmox")

RETRY_STATUSES = frozenset({502, 503, 504, 595, 596})
RETRY_DELAYS = (0.2, 0.6)
CONNECT_TIMEOUT = 5.0
REACHABLE_TIMEOUT = 2.0
LOG_TAIL_LINES = 12

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


class ProxmoxClient:
    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        if config.proxmox_ca_file:
            verify: bool | str = str(config.proxmox_ca_file)
        else:
            verify = not config.proxmox_tls_insecure
        if verify is False:
            log.warning("PROXMOX_TLS_INSECURE=1: the Proxmox certificate is NOT verified")
        if isinstance(verify, str):
            pvetls.context(verify)  # an unusable PROXMOX_CA_FILE still fails the start, not the first call
        self._verify = verify
        self._session_lock = threading.Lock()
        self._session_obj: requests.Session | None = None
        self._base = config.proxmox_api

    @property
    def _session(self) -> requests.Session:
        """The HTTPS session, made on first use: requests, urllib3 and proxmoxer are not imported before
        the first Proxmox call (measured: ~0.1 s of the server's start, before any request needs them)."""
        if self._session_obj is None:
            with self._session_lock:
                if self._session_obj is None:
                    self._session_obj = self._new_session()
        return self._session_obj

    def _new_session(self) -> requests.Session:
        from proxmoxer.backends.https import Backend

        config, verify = self.config, self._verify
        host = config.proxmox_url.split("://", 1)[1]
        backend = Backend(
            host,
            user=config.token_user,
            token_name=config.token_name,
            token_value=config.proxmox_token_secret,
            verify_ssl=verify,
            timeout=(CONNECT_TIMEOUT, config.proxmox_timeout),
        )
        session = backend.get_session()
        if verify is not False:
            # Our own TLS context (pmcp.pvetls): Python 3.13's strict X.509 refuses the Proxmox CA that
            # most hosts have (no keyUsage); verification and the hostname check stay on.
            session.mount("https://", pvetls.adapter(verify, config.proxmox_tls_name))
        return session

    @property
    def tls_verified(self) -> bool:
        """False for plain http (loopback simulator only) or PROXMOX_TLS_INSECURE=1: `verify` warns."""
        return self.config.proxmox_url.startswith("https://") and self._verify is not False

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        retry: bool = True,
    ) -> Any:
        """One API call (sync); ``path`` must come from ``validate.api_path``. Returns ``data``.

        ``timeout`` bounds the connect as well as the read when given (a probe that must answer fast);
        ``retry=False``: one attempt, even for a GET."""
        if not path.startswith("/") or ".." in path.split("/"):
            raise ValueError("path must be built by validate.api_path")
        session = self._session
        import requests

        clean = {k: _wire(v) for k, v in (params or {}).items() if v is not None}
        attempts = len(RETRY_DELAYS) + 1 if method == "GET" and retry else 1
        read_timeout = timeout or self.config.proxmox_timeout
        connect_timeout = min(CONNECT_TIMEOUT, timeout) if timeout else CONNECT_TIMEOUT
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # urllib3's InsecureRequestWarning: logged once above
                    resp = session.request(
                        method,
                        self._base + path,
                        params=clean if method in ("GET", "DELETE") else None,
                        data=clean if method in ("POST", "PUT") else None,
                        timeout=(connect_timeout, read_timeout),
                    )
            except requests.exceptions.SSLError:
                self._count_error(0)
                raise ProxmoxError(
                    0,
                    "TLS verification of the Proxmox certificate failed: PROXMOX_CA_FILE does not trust what "
                    "port 8006 serves (a new certificate?); re-run `pmcp install`, which checks it",
                ) from None
            except requests.exceptions.RequestException as exc:
                self._count_error(0)
                if attempt + 1 < attempts:
                    time.sleep(RETRY_DELAYS[attempt])
                    continue
                raise ProxmoxError(
                    0, f"no answer from Proxmox at {self.config.proxmox_url} ({type(exc).__name__})"
                ) from None
            finally:
                if self.metrics:
                    self.metrics.proxmox_seconds.labels(method).observe(time.perf_counter() - started)
            if resp.status_code < 400:
                try:
                    # pydantic-core's parser, not requests' json.loads: measured 16 ms against 28 ms for a
                    # 5,000-guest /cluster/resources (1.7 MB), most of what pmcp adds to that listing
                    return from_json(resp.content).get("data")
                except ValueError:
                    raise ProxmoxError(
                        resp.status_code, "Proxmox answered with something that is not JSON"
                    ) from None
            self._count_error(resp.status_code)
            if resp.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                time.sleep(RETRY_DELAYS[attempt])
                continue
            raise _error_from(resp)
        raise AssertionError("unreachable")

    def _count_error(self, status: int) -> None:
        if self.metrics:
            self.metrics.proxmox_errors.labels(str(status)).inc()

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        retry: bool = True,
    ) -> Any:
        return await anyio.to_thread.run_sync(lambda: self.request(method, path, params, timeout, retry))

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


def _wire(value: Any) -> Any:
    if isinstance(value, bool):
        return 1 if value else 0
    return value


def _error_from(resp: requests.Response) -> ProxmoxError:
    message = ""
    errors: dict[str, str] = {}
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or "").strip()
        if isinstance(body.get("errors"), dict):
            errors = {str(k): str(v).strip() for k, v in body["errors"].items()}
    if not message:
        message = (resp.reason or "").strip() or f"HTTP {resp.status_code}"
    return ProxmoxError(resp.status_code, message[:500], errors)
