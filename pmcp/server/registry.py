"""How a tool is declared (once, with its risk) and how every call is wrapped.

A tool is ``async def fn(call: Call, **arguments) -> Reply``. ``register`` turns it into an SDK tool
whose signature is the tool's own arguments (so the SDK derives the input schema with the formats
and descriptions) and whose output schema is the declared pydantic model. The wrapper applies, in
this order: the mode, the audit intent, the tool body, the audit outcome and the metrics, and turns
our own errors into ``ToolError`` so the model reads why (anything else is masked by the SDK).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel

from pmcp.authtokens import NO_LIMITS, TokenLimits
from pmcp.server.approval import InputNeeded, SpentNonces, Verdict, decide, needs_approval
from pmcp.server.audit import AuditLog, AuditUnavailable
from pmcp.server.config import MAX_TASK_TIMEOUT, Mode, ServerConfig
from pmcp.server.limits import DestructiveBudget
from pmcp.server.locator import GuestLocator
from pmcp.server.metrics import Metrics
from pmcp.server.policy import GuestScope, Policy, PolicyError, Risk, check_client_tool
from pmcp.server.proxmox import ProxmoxClient, ProxmoxError, TaskOutcome
from pmcp.server.validate import InvalidArgument

log = logging.getLogger("pmcp.tools")


@dataclass
class Reply:
    """What a tool body returns: the structured result and a short text for the model."""

    data: BaseModel
    text: str


ToolFn = Callable[..., Awaitable[Reply]]


@cache
def _takes_confirm(fn: Callable[..., Any]) -> bool:
    """Read once per tool: ``inspect.signature`` on every call was 0.9% of a list call (py-spy)."""
    return "confirm" in inspect.signature(fn).parameters


@dataclass(frozen=True)
class ToolSpec:
    name: str
    fn: ToolFn
    risk: Risk
    title: str
    output: type[BaseModel]
    idempotent: bool
    mode: Mode | None = None  # None: the risk's mode (policy.REQUIRED_MODE)
    escalate: Callable[[dict[str, Any]], Risk | None] | None = None
    # a higher mode for calls whose arguments need the bigger role (set_guest_config: tags are an
    # operator's VM.Config.Options, CPU and memory the admin role's VM.Config.CPU/Memory)
    mode_of: Callable[[dict[str, Any]], Mode | None] | None = None
    # the body reads the MCP session itself (the client's declared capabilities): never served by
    # the express lane (express.py), which has no session object to give it
    session: bool = False

    @property
    def plans(self) -> bool:
        """A tool with a ``confirm`` argument plans first and asks for approval itself, at the point where
        it acts (tools/common.py ``gate``); any other change tool is asked before its body runs."""
        return _takes_confirm(self.fn)

    def risk_of(self, arguments: dict[str, Any]) -> Risk:
        """The risk of this call: the declared one, or higher when the arguments make it so
        (``guest_power(action=shutdown, force_stop=true)`` can power a guest off like ``action=stop``)."""
        raised = self.escalate(arguments) if self.escalate else None
        return raised if raised is not None and _RISK_RANK[raised] > _RISK_RANK[self.risk] else self.risk

    @property
    def annotations(self) -> ToolAnnotations:
        return ToolAnnotations(
            title=self.title,
            read_only_hint=self.risk is Risk.READ,
            # true too when arguments can make a call destructive (guest_power action=stop)
            destructive_hint=self.risk is Risk.DESTRUCTIVE or self.escalate is not None,
            idempotent_hint=self.idempotent,
            open_world_hint=False,
        )


TOOLS: dict[str, ToolSpec] = {}


def declared() -> dict[str, ToolSpec]:
    """Every tool. The tool modules are imported here, on first use, not when the server starts: their
    pydantic models are part of what ``initialize`` does not need (see app.PolicyFilteredServer)."""
    import pmcp.server.tools  # noqa: F401  (each module declares its tools)

    return TOOLS


_RISK_RANK = {Risk.READ: 0, Risk.CHANGE: 1, Risk.DESTRUCTIVE: 2}


def tool(
    risk: Risk,
    title: str,
    output: type[BaseModel],
    *,
    idempotent: bool = False,
    mode: Mode | None = None,
    escalate: Callable[[dict[str, Any]], Risk | None] | None = None,
    mode_of: Callable[[dict[str, Any]], Mode | None] | None = None,
    session: bool = False,
) -> Callable[[ToolFn], ToolFn]:
    """Declare a tool; the function name is the tool name and its docstring the description.

    ``escalate(arguments)`` names a higher risk for calls whose arguments make them one: the mode
    check, the confirm and the audit then treat that call like a tool of that risk."""

    def decorator(fn: ToolFn) -> ToolFn:
        if fn.__name__ in TOOLS:
            raise ValueError(f"tool {fn.__name__} declared twice")
        TOOLS[fn.__name__] = ToolSpec(
            fn.__name__,
            fn,
            risk,
            title,
            output,
            idempotent or risk is Risk.READ,
            mode,
            escalate,
            mode_of,
            session,
        )
        return fn

    return decorator


@dataclass
class Runtime:
    """Everything a tool body needs, built once per app."""

    config: ServerConfig
    proxmox: ProxmoxClient
    policy: Policy
    audit: AuditLog
    metrics: Metrics
    locator: GuestLocator = field(default_factory=GuestLocator)
    budget: DestructiveBudget = field(default_factory=lambda: DestructiveBudget(10))
    spent: SpentNonces = field(default_factory=SpentNonces)


@dataclass
class Call:
    """One tool call: the runtime, the SDK context (progress), and who is calling."""

    rt: Runtime
    ctx: Context | DirectContext | None
    client: str
    spec: ToolSpec
    limits: TokenLimits = NO_LIMITS  # the client token's own mode, scope and budget
    risk: Risk = Risk.READ
    approval: dict[str, Any] | None = None  # who approved and how: audited with the outcome
    undo: dict[str, Any] | None = None  # the safety snapshot taken before the change (tools/undo.py)
    budget_taken: bool = False  # one of the client's destructive actions of this hour is taken

    async def approve(self, message: str, confirm: bool = False, *, always: bool = True) -> Verdict | None:
        """None when this call needs no approval; else the verdict (the person's answer through
        elicitation, or the policy's fallback). ``always``: the tool plans first whatever its risk."""
        if not needs_approval(self.rt.config, self.risk, always):
            return None
        verdict = await decide(
            self.ctx, self.rt.config, self.rt.spent, message, confirm, has_confirm=self.spec.plans
        )
        self.approval = verdict.record()
        if verdict.accepted and self.risk is Risk.DESTRUCTIVE and not self.budget_taken:
            # the person's accept acts without confirm=true: it counts against the hourly budget here
            self.budget_taken = await spend_budget(self)
        return verdict

    @property
    def px(self) -> ProxmoxClient:
        return self.rt.proxmox

    @property
    def scope(self) -> GuestScope:
        """The guests this client may see and touch (empty: every guest)."""
        return GuestScope(self.limits.tags, self.limits.pools)

    def wait_limit(self, requested: int | None) -> float:
        if requested is None:
            return self.rt.config.task_timeout
        return float(max(0, min(requested, MAX_TASK_TIMEOUT)))

    async def progress(self, done: float, total: float, message: str) -> None:
        if self.ctx is None:
            return
        try:
            await self.ctx.report_progress(done, total, message)
        except Exception:  # a client that went away must not turn a finished task into an error
            log.debug("progress notification not delivered", exc_info=True)

    async def wait(self, upid: str, wait_seconds: int | None) -> TaskOutcome:
        """Wait (bounded) for a task, sending progress notifications while it runs."""
        limit = self.wait_limit(wait_seconds)

        async def report(elapsed: float, message: str) -> None:
            await self.progress(min(elapsed, limit), limit, message)

        return await self.px.wait_task(upid, limit, report)


@dataclass(frozen=True)
class DirectContext:
    """The context of a call the express lane serves (express.py): the request's ASGI scope, which holds
    who is calling (auth layer), and no session: such a call is a read (it waits for no task, so it
    sends no progress) and asks nobody (a read needs no approval)."""

    scope: dict[str, Any]


def _scope(ctx: Context | DirectContext | None) -> dict[str, Any]:
    if isinstance(ctx, DirectContext):
        return ctx.scope
    try:
        request = ctx.request_context.request if ctx is not None else None
    except ValueError:
        request = None
    return getattr(request, "scope", None) or {}


def client_name(ctx: Context | DirectContext | None) -> str:
    return str(_scope(ctx).get("pmcp.client") or "anonymous")


def client_limits(ctx: Context | DirectContext | None) -> TokenLimits:
    """The token's own limits, put in the request scope by the auth layer (pmcp.server.auth)."""
    limits = _scope(ctx).get("pmcp.limits")
    return limits if isinstance(limits, TokenLimits) else NO_LIMITS


def client_address(ctx: Context | DirectContext | None) -> str | None:
    """The client's address (from the trusted proxy's X-Forwarded-For, see pmcp.server.limits)."""
    address = _scope(ctx).get("pmcp.address")
    return str(address) if address else None


def make_handler(spec: ToolSpec, rt: Runtime) -> Callable[..., Awaitable[CallToolResult]]:
    """An SDK tool function with the body's own arguments plus ``ctx``, wrapped by policy and audit."""
    hints = typing.get_type_hints(spec.fn, include_extras=True)
    params = list(inspect.signature(spec.fn).parameters.values())[1:]
    params = [p.replace(annotation=hints[p.name]) for p in params]
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    returns = Annotated[CallToolResult, spec.output]

    async def handler(**kwargs: Any) -> CallToolResult:
        ctx = kwargs.pop("ctx", None)
        return await run_call(spec, rt, ctx, kwargs)

    handler.__name__ = spec.name
    handler.__doc__ = spec.fn.__doc__
    handler.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    handler.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    return handler


async def run_call(
    spec: ToolSpec, rt: Runtime, ctx: Context | DirectContext | None, arguments: dict[str, Any]
) -> CallToolResult | InputRequiredResult:
    risk = spec.risk_of(arguments)
    call = Call(rt, ctx, client_name(ctx), spec, client_limits(ctx), risk)
    started = time.perf_counter()
    outcome = "error"
    audit_id: str | None = None
    upid: str | None = None
    why: str | None = None  # for the audit: why a change was refused or failed
    address = client_address(ctx)
    try:
        try:
            # an escalated call is held to its raised risk's mode (the tool's own mode is for its risk)
            what, mode = (
                (spec.name, spec.mode) if risk is spec.risk else (f"{spec.name} with these arguments", None)
            )
            rt.policy.check_tool(what, risk, mode)
            check_client_tool(what, risk, mode, rt.policy.mode, call.limits.mode, call.client)
            if spec.mode_of and (raised := spec.mode_of(arguments)):  # both must allow the call
                raised_what = f"{spec.name} with these arguments"
                rt.policy.check_tool(raised_what, risk, raised)
                check_client_tool(raised_what, risk, raised, rt.policy.mode, call.limits.mode, call.client)
            call.budget_taken = await take_budget(call, risk, arguments)
        except PolicyError as exc:  # nothing changed, but someone tried: recorded while room is plenty
            await anyio.to_thread.run_sync(
                rt.audit.refused, call.client, spec.name, risk.value, arguments, str(exc), address
            )
            raise
        if risk is not Risk.READ:
            audit_id = await anyio.to_thread.run_sync(
                rt.audit.intent, call.client, spec.name, risk.value, arguments, address
            )
        if not spec.plans:  # with --approval-scope changes: asked before the body (it has no plan)
            shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items() if v is not None)
            verdict = await call.approve(
                f"pmcp: {spec.title} ({spec.name}: {shown or 'no arguments'}).\nApprove this change?",
                always=False,
            )
            if verdict is not None and not verdict.accepted:
                outcome = "declined"
                return CallToolResult(
                    content=[TextContent(type="text", text=declined_text(verdict))], is_error=True
                )
        reply = await spec.fn(call, **arguments)
        outcome = str(getattr(reply.data, "outcome", None) or "ok")
        upid = getattr(reply.data, "upid", None)
        structured = reply.data.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not isinstance(reply.data, spec.output):  # the SDK no longer validates it (app.ensure_tools):
            spec.output.model_validate(structured)  # what is not the declared model still must fit it
        return CallToolResult(
            content=[TextContent(type="text", text=reply.text)], structured_content=structured, is_error=False
        )
    except InputNeeded as need:  # 2026-07 era: the client asks its person, then calls again
        outcome = "approval-asked"
        return need.result
    except (PolicyError, AuditUnavailable) as exc:
        outcome, why = "refused", str(exc)
        raise ToolError(why) from None
    except InvalidArgument as exc:
        outcome, why = "invalid", f"invalid argument: {exc}"
        raise ToolError(why) from None
    except ProxmoxError as exc:
        outcome, why = "proxmox-error", explain(exc)
        raise ToolError(why) from None
    except anyio.get_cancelled_exc_class():
        outcome = "cancelled"  # the client went away; a started task may still be running in Proxmox
        raise
    finally:
        # nothing happened: refused, invalid, declined by the person, or only asked (2026-07, first exchange)
        if call.budget_taken and outcome in ("refused", "invalid", "declined", "approval-asked"):
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(rt.budget.refund, call.client)
        elapsed = time.perf_counter() - started
        rt.metrics.tool_calls.labels(spec.name, outcome).inc()
        rt.metrics.tool_seconds.labels(spec.name).observe(elapsed)
        if audit_id is not None:  # fsync off the event loop; shielded so a cancelled call still records
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    partial(
                        rt.audit.outcome,
                        approval=call.approval,
                        extra={"undo": call.undo} if call.undo else None,
                    ),
                    audit_id,
                    call.client,
                    spec.name,
                    outcome,
                    upid,
                    why,
                )


def acts_destructively(risk: Risk, arguments: dict[str, Any]) -> bool:
    """A destructive call that acts rather than plans: what a client's hourly budget counts."""
    return risk is Risk.DESTRUCTIVE and arguments.get("confirm") is True


async def take_budget(call: Call, risk: Risk, arguments: dict[str, Any]) -> bool:
    """Take one of the client's destructive actions for this hour, or refuse with when to retry."""
    if not acts_destructively(risk, arguments):
        return False
    return await spend_budget(call)


async def spend_budget(call: Call) -> bool:
    """Take one destructive action of the client's hour (True), or raise PolicyError with when to retry."""
    # off the event loop: the count may be a file shared with the install's other servers (flock)
    wait = await anyio.to_thread.run_sync(call.rt.budget.take, call.client, call.limits.budget)
    if wait is None:
        return True
    limit = call.rt.budget.limit(call.limits.budget)
    fix = (
        f"an administrator raises it with `pmcp client-config --token-name {call.client} --budget N` "
        "(or PMCP_DESTRUCTIVE_PER_HOUR for every token without its own)"
    )
    if limit == 0:
        raise PolicyError(
            f"refused: this client's token ({call.client!r}) may take no destructive action; {fix}"
        )
    minutes = max(1, math.ceil(wait / 60))
    raise PolicyError(
        f"refused: this client's token ({call.client!r}) has taken its {limit} destructive actions of the "
        f"last hour; the next one is possible in {minutes} min (retry after {math.ceil(wait)} s). "
        f"Nothing was changed. If more are needed, {fix}"
    )


def declined_text(verdict: Verdict) -> str:
    what = "declined" if verdict.answer == "decline" else "cancelled"
    return (
        f"Nothing done: the person {what} this in the client's approval prompt (MCP elicitation). "
        "Do not retry it unless they ask for it."
    )


def explain(exc: ProxmoxError) -> str:
    hint = ""
    if exc.status == 403:
        hint = " The pmcp API token lacks this privilege; call `capabilities` to see what it may do."
    elif exc.status == 401:
        hint = (
            " Proxmox rejected the API token; the administrator should check PROXMOX_TOKEN_ID and its secret."
        )
    elif exc.status == 0:
        hint = " Check that Proxmox is up; `pmcp status` on the host shows the connection."
    return f"{exc}.{hint}"
