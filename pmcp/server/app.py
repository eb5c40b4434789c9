"""The ASGI app: auth (outermost), then /health, /metrics, /.well-known and the MCP endpoint.

Transport choices (the lead copies these into ARCHITECTURE.md):
- Streamable HTTP at ``/mcp``, framed per request (framing.py): a request that may receive
  ``notifications/progress`` (it carries a ``progressToken``) or may wait for a Proxmox task (a change
  tool) is answered as an SSE stream, which is what carries the progress; with a JSON answer the SDK
  has nowhere to put a notification and silently drops it. Every other request gets one JSON body.
- Stateful sessions (``stateless_http=False``): the SDK's session manager serves both protocol eras
  on the one endpoint. A request whose ``MCP-Protocol-Version`` header is a 2026-07-28-era version
  goes to the SDK's single-exchange (stateless, ``server/discover``) path; no header or a
  handshake-era version (2025-06-18, 2025-11-25) gets ``initialize`` + ``Mcp-Session-Id`` + GET
  stream, which Claude Code, mcp-remote and the Inspector use.
- The session manager's lifespan is entered in THIS app's lifespan: a mounted app's own lifespan
  never runs.
- Host/Origin checks use the SDK's ``TransportSecuritySettings`` with loopback plus
  ``PMCP_ALLOWED_HOSTS`` (with and without port), so requests proxied by Caddy with the public
  Host header are not refused with 421. A foreign Origin gets 403; bodies over 1 MiB get 413.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ListToolsResult
from mcp_types import Tool as MCPTool
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from pmcp import __version__
from pmcp.server import outputs
from pmcp.server.approval import SpentNonces, request_state_security
from pmcp.server.audit import AuditLog
from pmcp.server.auth import AuthMiddleware, ScrapeToken, TokenStore
from pmcp.server.compact import compact, inline_single_refs
from pmcp.server.config import ServerConfig
from pmcp.server.events import RETRY_MS, StreamEvents
from pmcp.server.express import Express
from pmcp.server.framing import adaptive
from pmcp.server.limits import ClientGuard, DestructiveBudget
from pmcp.server.metrics import Metrics
from pmcp.server.policy import Policy, client_allows
from pmcp.server.proxmox import ProxmoxClient
from pmcp.server.registry import Runtime, declared, make_handler
from pmcp.server.sessions import SessionContinuity, SessionStore
from pmcp.server.validate import plain_errors

log = logging.getLogger("pmcp.server")

HEALTH_CACHE_SECONDS = 5.0

INSTRUCTIONS = """Proxmox VE through pmcp. Start with cluster_overview, then list_guests (filtered, sorted,
paginated: read `total`, page with `offset`). Guests are addressed by VMID alone; guest_info shows one
(status, config, network, snapshots), cluster_info the infrastructure (HA, Ceph, SDN, firewall, pools, backup
jobs, templates, updates). Change tools wait for the Proxmox task and report outcome ok / failed (with exit
status and log tail) / running (follow with tasks upid=...), with the guest's state after the action.
Destructive calls and every call that creates or consumes resources (create_guest, set_guest_config with
hardware or grow_disk, migrate_guest, convert_to_template, delete_guest, download_template, guest_power
stop/reset/force_stop or tag=, snapshot rollback/delete, undo_last_change, backup_guest mode=stop) need
approval: when the client can ask its user (MCP elicitation), the server shows them the plan and acts only
if they accept (confirm does not replace that); otherwise nothing changes without confirm=true (the JSON
boolean): call once without it, show the plan to the user, then confirm. Before a change of a guest's
configuration or disks the server takes a safety snapshot; undo_last_change rolls back to it.
Guests listed in PMCP_PROTECTED or tagged pmcp-protected are never changed.
`capabilities` says what this server and its token may do, and this client's own limits (its mode, the
guests in its scope, the destructive actions left this hour); audit=N: what was done."""


UNSERVED_METHODS = (
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
)


class PolicyFilteredServer(MCPServer):
    """Lists only the tools the configured mode allows (calls to others are refused with the reason).

    Tools are added on first need (a tools/list or tools/call), not at start: the SDK derives two JSON
    schemas per tool when one is added, which is most of ``create_app`` (measured 0.15-0.2 s of a 0.9 s
    start for 35 tools) and nothing ``initialize`` needs. It is done once, without an await, so two
    requests cannot both do it."""

    def __init__(self, policy: Policy, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy
        self._rt: Runtime | None = rt
        # The SDK registers prompt and resource handlers on every server, so `initialize` advertised both
        # capabilities with nothing behind them, and an unknown prompt answered JSON-RPC error code 0 with
        # a traceback on the console. Without the handlers the capabilities are not advertised
        # (lowlevel Server.get_capabilities derives them from the handlers) and such calls get -32601.
        for method in UNSERVED_METHODS:
            self._lowlevel_server._request_handlers.pop(method, None)

    def ensure_tools(self) -> None:
        rt, self._rt = self._rt, None
        if rt is None:
            return
        schemas = outputs.kept()
        for spec in declared().values():
            # Added without the SDK's output derivation (structured_output=False), then given the
            # schema kept in tool_outputs.json (outputs.py: deriving it was half of this loop). Without
            # an output model the SDK does not validate a returned CallToolResult's structured content
            # again (func_metadata.convert_result); ours was dumped from that very model a moment before
            # (registry.run_call validates only what is not that model), so that pass only cost: 40
            # guest items per list_guests call. The schema is published all the same.
            self.add_tool(
                make_handler(spec, rt),
                name=spec.name,
                title=spec.title,
                description=" ".join(
                    (spec.fn.__doc__ or "").split()
                ),  # no docstring indentation in tools/list
                annotations=spec.annotations,
                structured_output=False,
            )
            tool = self._tool_manager.get_tool(spec.name)
            assert tool is not None
            schema = schemas.get(spec.name)
            if schema is None:  # a tool added since the file was written (test_outputs fails on it)
                schema = outputs.derive(spec.output)
            tool.fn_metadata.output_schema = schema

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> Any:
        """Arguments that fail the input schema are said in the model's terms (validate.plain_errors),
        not as pydantic's report, whose first line alone reached the client."""
        self.ensure_tools()
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(f"invalid argument: {plain_errors(exc.__cause__.errors())}") from None
            raise

    async def list_tools(self) -> list[MCPTool]:
        self.ensure_tools()
        listed = await super().list_tools()
        specs = declared()
        return [
            t.model_copy(
                update={
                    "input_schema": inline_single_refs(compact(t.input_schema)),
                    "output_schema": inline_single_refs(compact(t.output_schema)),
                }
            )
            for t in listed
            if t.name in specs and self._policy.allows(specs[t.name].risk, specs[t.name].mode)
        ]

    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        """Per client token: a token limited below the server's mode is not shown the tools it may
        not call. Cheap: the list is filtered per request anyway, and the token's limits arrive with
        the request (auth layer), so no per-session state is kept; a session is bound to one token,
        so its list stays the same for its life. The SDK 2.3 offers no public per-request hook for
        tools/list: this overrides MCPServer's handler (the unit tests fail if a later SDK drops it)."""
        result = await super()._handle_list_tools(ctx, params)
        request = getattr(ctx, "request", None)
        limits = (getattr(request, "scope", None) or {}).get("pmcp.limits")
        token_mode = getattr(limits, "mode", None)
        if token_mode is None:
            return result
        mode, specs = self._policy.mode, declared()
        result.tools = [
            t for t in result.tools if client_allows(mode, token_mode, specs[t.name].risk, specs[t.name].mode)
        ]
        return result

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        self.ensure_tools()
        return super()._tool_input_schema(name)


def build_mcp(rt: Runtime) -> PolicyFilteredServer:
    """The MCP server; its tools are added on the first request that needs them (see above)."""
    return PolicyFilteredServer(
        rt.policy,
        rt,
        name="pmcp",
        title="Proxmox VE (pmcp)",
        version=__version__,
        instructions=INSTRUCTIONS,
        request_state_security=request_state_security(rt.config),  # one key for the install's servers
    )


def create_app(config: ServerConfig, *, proxmox: ProxmoxClient | None = None) -> Starlette:
    """The whole server as one ASGI app (run it with uvicorn); ``proxmox`` is injectable for tests."""
    metrics = Metrics()
    rt = Runtime(
        config=config,
        proxmox=proxmox or ProxmoxClient(config, metrics),
        policy=Policy(config),
        audit=AuditLog(
            config.audit_log,
            max_bytes=config.audit_max_bytes,
            file_bytes=config.audit_file_bytes,
            min_free=config.audit_min_free,
            key=config.audit_key,
        ),
        metrics=metrics,
        budget=DestructiveBudget(config.destructive_per_hour, config.session_dir),
        # shared by the install's servers: an approval spent on one is spent on all (approval.py)
        spent=SpentNonces(config.session_dir / "approvals" if config.session_dir else None),
    )
    mcp = build_mcp(rt)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=config.transport_hosts(),
        allowed_origins=config.transport_origins(),
    )
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=False,  # per request instead: framing.py
        stateless_http=False,
        transport_security=security,
        max_request_body_size=config.max_body_bytes,
        session_idle_timeout=config.session_idle_timeout,
        max_sessions=config.max_sessions,
        event_store=StreamEvents(),  # SSE priming event with an ID and the retry field (events.py)
        retry_interval=RETRY_MS,
    )
    manager = mcp.session_manager
    express = Express(mcp, enabled=config.express)  # reads without the SDK's dispatcher (express.py)
    adaptive(manager, express)  # JSON answers where no progress can be sent (framing.py)
    store = SessionStore(config.session_dir, manager.session_idle_timeout) if config.session_dir else None
    # sessions survive an update (sessions.py)
    sessions = SessionContinuity(mcp_app, manager, store, express)
    health_cache: dict[str, Any] = {"at": 0.0, "reachable": False}

    async def health(request: Request) -> Response:
        now = time.monotonic()
        if now - health_cache["at"] > HEALTH_CACHE_SECONDS:
            health_cache["reachable"] = await rt.proxmox.reachable()
            health_cache["at"] = now
        reachable = health_cache["reachable"]
        return JSONResponse(
            {
                "status": "ok" if reachable else "degraded",
                "version": __version__,
                "mode": config.mode.value,
                "proxmox": {"reachable": reachable, "tls_verified": rt.proxmox.tls_verified},
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager.run(), sessions.running():
            if config.session_dir is not None:
                await warm_up(mcp, rt)
            log.info("pmcp %s serving /mcp in %s mode", __version__, config.mode.value)
            try:
                yield
            finally:
                await rt.proxmox.aclose()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Mount("/", app=sessions),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(ClientGuard, config=config)  # inside auth: limits are per client token
    app.add_middleware(
        AuthMiddleware,
        tokens=TokenStore(config.auth_token_file),
        metrics=metrics,
        scrape=ScrapeToken(config.metrics_token_file),
    )
    app.state.runtime = rt
    app.state.sessions = sessions
    app.state.mcp = mcp
    app.state.express = express
    return app


async def warm_up(mcp: PolicyFilteredServer, rt: Runtime) -> None:
    """An installed server (one with a session directory: it takes over from another during an update)
    does, before it takes its first connection, what its first request would otherwise pay for: the
    tools and their schemas, and the Proxmox session (imports, TLS handshake). Lifespan startup runs
    before uvicorn accepts, and meanwhile the old server answers. Measured with the systemd runtime's
    shared socket: clients that reached the new server first waited for exactly this (update gap ~1 s).
    A bare `pmcp serve` keeps answering `initialize` first (issue 16's start target)."""
    started = time.monotonic()
    mcp.ensure_tools()
    await mcp.list_tools()
    reachable = await rt.proxmox.reachable()
    log.info("warmed up in %.2f s (Proxmox %s)", time.monotonic() - started,
             "reachable" if reachable else "not reachable yet")  # fmt: skip
