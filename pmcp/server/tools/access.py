"""What this server may do (token permissions, mode, protected guests) and the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from pmcp.server.policy import PROTECTED_TAG, Risk
from pmcp.server.registry import TOOLS, Call, Reply, tool


class Capabilities(BaseModel):
    mode: str
    token: str
    tools_available: list[str]
    tools_disabled: list[str]
    protected_vmids: list[int]
    protected_tag: str
    permissions: dict[str, dict[str, int]]


@tool(Risk.READ, "Capabilities", Capabilities)
async def capabilities(call: Call) -> Reply:
    """What this server may do: its mode, which tools are enabled, protected guests, and the
    Proxmox privileges of its API token per path (from /access/permissions)."""
    raw = await call.px.get("/access/permissions") or {}
    perms = {
        str(path): {str(p): int(v) for p, v in privs.items()}
        for path, privs in raw.items()
        if isinstance(privs, dict)
    }
    policy = call.rt.policy
    available = sorted(n for n, s in TOOLS.items() if policy.allows(s.risk, s.mode))
    disabled = sorted(n for n, s in TOOLS.items() if not policy.allows(s.risk, s.mode))
    data = Capabilities(
        mode=policy.mode.value,
        token=call.rt.config.proxmox_token_id,
        tools_available=available,
        tools_disabled=disabled,
        protected_vmids=sorted(policy.protected),
        protected_tag=PROTECTED_TAG,
        permissions=perms,
    )
    lines = [
        f"Mode {data.mode}: {len(available)} tools enabled"
        + (f", {len(disabled)} need a higher PMCP_MODE ({', '.join(disabled)})." if disabled else "."),
        f"Protected guests: {data.protected_vmids or 'none by VMID'} and any tagged '{PROTECTED_TAG}'.",
        f"Proxmox token {data.token} privileges:",
    ]
    lines += [
        f"- {path}: {', '.join(sorted(p for p, v in privs.items() if v is not None))}"
        for path, privs in perms.items()
    ]
    return Reply(data, "\n".join(lines)[:6000])


class AuditEntries(BaseModel):
    returned: int
    entries: list[dict[str, Any]]


@tool(Risk.READ, "Audit log", AuditEntries)
async def audit_log(
    call: Call,
    limit: Annotated[int, Field(ge=1, le=200, description="How many entries, newest first")] = 20,
    tool_name: Annotated[str | None, Field(max_length=64, description="Only entries of this tool")] = None,
) -> Reply:
    """Recent entries of this server's audit log: who (client token name) did what, when, and the outcome."""
    if not call.rt.audit.enabled:
        return Reply(
            AuditEntries(returned=0, entries=[]), "The audit log is off (PMCP_AUDIT_LOG is not set)."
        )
    entries = call.rt.audit.recent(limit, tool_name)
    lines = [f"{len(entries)} audit entries, newest first."]
    for e in entries:
        what = e.get("outcome") if e.get("phase") == "outcome" else e.get("phase", "intent")
        lines.append(
            f"- {e.get('time')} {e.get('client')} {e.get('tool')} {what} {e.get('upid') or ''}".rstrip()
        )
    return Reply(AuditEntries(returned=len(entries), entries=entries), "\n".join(lines))
