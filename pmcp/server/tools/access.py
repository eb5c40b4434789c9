"""What this server may do (token permissions, mode, protected guests) and the audit log."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

import anyio
from pydantic import BaseModel, Field

from pmcp.server.approval import can_elicit
from pmcp.server.policy import PROTECTED_TAG, Risk, client_allows, client_mode
from pmcp.server.registry import TOOLS, Call, Reply, tool
from pmcp.server.tools.common import scope_vmids, vmid_visible

SCOPED_SCAN = 10_000  # records read (from the log's tail) to find a scoped client's own


class Scope(BaseModel):
    tags: list[str]
    pools: list[str]


class Budget(BaseModel):
    per_hour: int
    remaining: int
    next_freed_in_seconds: int | None = Field(
        None, description="When the oldest destructive action of the last hour stops counting"
    )


class ClientLimits(BaseModel):
    """This client's own token: its mode (at most the server's), guest scope and hourly budget."""

    name: str
    mode: str
    token_mode: str | None = Field(None, description="The mode set on the token (None: the server's)")
    scope: Scope | None = Field(None, description="Only guests with one of these tags or in these pools")
    destructive_budget: Budget


class AuditBreak(BaseModel):
    kind: str = Field(description="edited, missing, reordered, truncated or unchained")
    file: str
    line: int
    message: str


class AuditStatus(BaseModel):
    enabled: bool
    verified: bool | None = Field(None, description="whether the whole HMAC chain holds (None: no log)")
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_time: str | None = None
    last_time: str | None = None
    files: int = 0
    archived: int = Field(0, description="records in rotated files an administrator archived")
    dropped: int = Field(0, description="refused-call records left out because room was short")
    unchained: int = Field(0, description="records older than the chain (written before it existed)")
    breaks_at: AuditBreak | None = None
    seconds: float = 0.0


class Capabilities(BaseModel):
    mode: str
    token: str
    client: ClientLimits
    tools_available: list[str]
    tools_disabled: list[str]
    protected_vmids: list[int]
    protected_tag: str
    permissions: dict[str, dict[str, int]]
    approval: dict[str, Any] = {}  # who approves what (pmcp.server.approval), and the undo retention
    audit_entries: list[dict[str, Any]] | None = Field(None, description="With audit=N: newest first")
    audit_status: AuditStatus | None = Field(None, description="With verify_audit: the HMAC chain's state")


async def client_limits(call: Call) -> ClientLimits:
    limits = call.limits
    per_hour, left, freed = await anyio.to_thread.run_sync(
        call.rt.budget.remaining, call.client, limits.budget
    )
    return ClientLimits(
        name=call.client,
        mode=client_mode(call.rt.policy.mode, limits.mode).value,
        token_mode=limits.mode,
        scope=Scope(tags=list(limits.tags), pools=list(limits.pools)) if limits.scoped else None,
        destructive_budget=Budget(
            per_hour=per_hour,
            remaining=left,
            next_freed_in_seconds=math.ceil(freed) if freed is not None else None,
        ),
    )


# what the server may do and what was done, in one tool (issue 14: tools/list stays small)
@tool(Risk.READ, "Capabilities and audit log", Capabilities, session=True)  # can_elicit(call.ctx)
async def capabilities(
    call: Call,
    audit: Annotated[int, Field(ge=0, le=200, description="Also the last N audit log entries")] = 0,
    audit_tool: Annotated[str | None, Field(max_length=64, description="Only that tool's")] = None,
    verify_audit: Annotated[bool, Field(description="Also verify the audit chain")] = False,
) -> Reply:
    """What this server and this client may do: modes, tools, scope, destructive actions left,
    privileges; audit=N: who did what."""
    raw = await call.px.get("/access/permissions") or {}
    inside = await scope_vmids(call)
    perms = {
        str(path): {str(p): int(v) for p, v in privs.items()}
        for path, privs in raw.items()
        if isinstance(privs, dict)
        # a scoped client is not told about guests outside its scope, not even their ACL paths
        and (not str(path).startswith("/vms/") or vmid_visible(str(path)[5:], inside))
    }
    policy = call.rt.policy
    me = await client_limits(call)
    allowed = {n for n, s in TOOLS.items() if client_allows(policy.mode, call.limits.mode, s.risk, s.mode)}
    available = sorted(allowed)
    disabled = sorted(set(TOOLS) - allowed)
    data = Capabilities(
        mode=policy.mode.value,
        token=call.rt.config.proxmox_token_id,
        client=me,
        tools_available=available,
        tools_disabled=disabled,
        protected_vmids=sorted(v for v in policy.protected if vmid_visible(v, inside)),
        protected_tag=PROTECTED_TAG,
        permissions=perms,
        approval={
            "policy": call.rt.config.approval.value,
            "scope": call.rt.config.approval_scope.value,
            "this_client_can_be_asked": can_elicit(call.ctx),
            "safety_snapshots_kept": call.rt.config.undo_keep,
        },
    )
    budget = me.destructive_budget
    lines = [
        f"Mode {data.mode}: {len(available)} tools enabled for this client"
        + (f", {len(disabled)} need a higher mode ({', '.join(disabled)})." if disabled else "."),
        f"This client ({me.name}): mode {me.mode}"
        + (
            " (the server's)"
            if not me.token_mode
            else f" (its token's; the server's is {data.mode})"
            if me.token_mode == me.mode
            else f" (its token asks for {me.token_mode}; the server's is lower)"
        )
        + f"; guests: {call.scope.describe()}; destructive actions left this hour: "
        + f"{budget.remaining} of {budget.per_hour}"
        + (
            f" (one more in {budget.next_freed_in_seconds} s)"
            if budget.remaining < budget.per_hour and budget.next_freed_in_seconds is not None
            else ""
        )
        + ".",
        f"Protected guests: {data.protected_vmids or 'none by VMID'} and any tagged '{PROTECTED_TAG}'.",
        "Approval: "
        + (
            "this client asks its user (MCP elicitation) before destructive calls"
            if data.approval["this_client_can_be_asked"]
            else "this client cannot ask its user; "
            + ("such calls are refused" if data.approval["policy"] == "elicit" else "confirm=true approves")
        )
        + ("; every change is asked." if data.approval["scope"] == "changes" else "."),
        f"Proxmox token {data.token} privileges:",
    ]
    lines += [
        f"- {path}: {', '.join(sorted(p for p, v in privs.items() if v is not None))}"
        for path, privs in perms.items()
    ]
    text = "\n".join(lines)[:6000]
    if audit:
        entries = await audit_log(call, audit, audit_tool)
        data.audit_entries = entries.data.entries  # type: ignore[attr-defined]
        text += "\n" + entries.text
    if verify_audit:  # audit_status and audit_log are part of this tool (issue 14: tools/list stays small)
        status = await audit_status(call)
        data.audit_status = status.data  # type: ignore[assignment]
        text += "\n" + status.text
    return Reply(data, text)


class AuditEntries(BaseModel):
    returned: int
    entries: list[dict[str, Any]]


async def audit_log(call: Call, limit: int, tool_name: str | None) -> Reply:
    """Recent entries of this server's audit log: who (client token name) did what, when, and the outcome
    (a client whose token is scoped to some guests sees its own entries only)."""
    if not call.rt.audit.enabled:
        return Reply(
            AuditEntries(returned=0, entries=[]), "The audit log is off (PMCP_AUDIT_LOG is not set)."
        )
    if call.scope:  # a scoped client reads its own records only: others name guests outside its scope
        mine = call.rt.audit.recent(SCOPED_SCAN, tool_name)
        entries = [e for e in mine if e.get("client") == call.client][:limit]
    else:
        entries = call.rt.audit.recent(limit, tool_name)
    # the MAC proves nothing to a reader without the key (audit_status verifies): not worth the context
    entries = [{k: v for k, v in e.items() if k != "mac"} for e in entries]
    lines = [f"{len(entries)} audit entries, newest first."]
    for e in entries:
        what = e.get("outcome") if e.get("phase") == "outcome" else e.get("phase", "intent")
        # a checkpoint or cut record has no client or tool: it reads as its phase
        parts = (e.get("time"), e.get("client"), e.get("tool"), what, e.get("upid"))
        lines.append("- " + " ".join(str(x) for x in parts if x))
    return Reply(AuditEntries(returned=len(entries), entries=entries), "\n".join(lines))


async def audit_status(call: Call) -> Reply:
    """Whether this server's audit log verifies: every record's HMAC chain (edited, deleted, reordered
    or cut records are found), how many records, first and last time, and where it breaks if it does."""
    audit = call.rt.audit
    if not audit.enabled:
        return Reply(AuditStatus(enabled=False), "The audit log is off (PMCP_AUDIT_LOG is not set).")
    started = time.perf_counter()
    v = await anyio.to_thread.run_sync(audit.verify)
    p = v.problem
    data = AuditStatus(
        enabled=True,
        verified=v.ok,
        records=v.records,
        first_seq=v.first_seq,
        last_seq=v.last_seq,
        first_time=v.first_time,
        last_time=v.last_time,
        files=len(v.files),
        archived=v.archived,
        dropped=v.dropped,
        unchained=v.unchained,
        breaks_at=AuditBreak(kind=p.kind, file=p.file, line=p.line, message=p.message) if p else None,
        seconds=round(time.perf_counter() - started, 3),
    )
    text = v.summary[0].upper() + v.summary[1:] + "."
    if p:
        text += " An administrator runs `pmcp audit verify` on the host and compares with an exported copy."
    return Reply(data, text)
