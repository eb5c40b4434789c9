"""Approval by the person, not the model: MCP elicitation in both protocol eras, and the policy without it.

``confirm: true`` is an argument, so the model types it: a model that has decided to act can confirm its own
plan. Elicitation is answered by the client's user interface (the person sees the plan and accepts,
declines or cancels), which the model cannot do in their place. So when the client declared the
elicitation capability, a call that needs approval is asked through it whatever ``confirm`` says. When it
did not, ``PMCP_APPROVAL`` decides: ``confirm`` falls back to the model's ``confirm: true``, ``elicit``
refuses the call.

The two eras carry the question differently (MCP spec, "Elicitation"; SEP-2322 for 2026-07-28):
- 2025-11 sessions: an ``elicitation/create`` request on the tool call's own SSE stream, answered by the
  client while the call waits (``ServerSession.elicit_form``).
- 2026-07-28 single exchanges have no back-channel: the call ends with an ``input_required`` result carrying
  the question and an opaque ``requestState``; the client asks its person and calls the tool again with the
  answer and the state. The SDK seals the state (AES-GCM, bound to the tool name and arguments:
  mcp/server/request_state.py), so a client cannot forge it or move it to other arguments; the nonce in it
  is spent once here, so one "accept" approves one call, and the digest of the question makes a plan that
  changed in between (the guest moved, a snapshot appeared) be asked again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mcp.server.request_state import RequestStateSecurity
from mcp_types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from mcp_types.version import is_version_at_least

from pmcp.server.config import Approval, ApprovalScope, ServerConfig
from pmcp.server.policy import PolicyError, Risk

ELICIT_KEY = "pmcp-approval"
# No fields: the person only accepts, declines or cancels what the message shows.
SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
INPUT_REQUIRED_VERSION = "2026-07-28"  # first revision whose tools/call elicits through input_required
STATE_TTL = 600.0  # the SDK's request-state lifetime (RequestStateSecurity ttl)
KEEP_SPENT = STATE_TTL + 60  # a spent nonce is remembered while its state could still be opened
NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")  # secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Verdict:
    """What happened to a call that needed approval."""

    by: str  # "person" (elicitation) or "model" (confirm: true)
    how: str  # "elicitation" or "confirm"
    answer: str  # "accept", "decline", "cancel"; "plan": not confirmed, nothing asked

    @property
    def accepted(self) -> bool:
        return self.answer == "accept"

    def record(self) -> dict[str, str]:
        """The audit's ``approval`` field."""
        return {"by": self.by, "how": self.how, "answer": self.answer}


class InputNeeded(Exception):
    """2026-07 era: this round ends with the question; the client calls again with the answer."""

    def __init__(self, result: InputRequiredResult) -> None:
        super().__init__("input required")
        self.result = result


@dataclass
class SpentNonces:
    """The approvals already used (2026-07 era), so a replayed request state approves nothing twice.

    Every server of an install opens the same sealed state (``request_state_security``), so the record is
    shared too: one file per nonce, created with O_EXCL in ``directory`` (the install's sessions
    directory, mounted in every server), which the kernel makes a single winner of. Without a directory
    (one process: the demo, tests) it is kept in memory."""

    directory: Path | None = None
    _seen: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def spend(self, nonce: str) -> bool:
        if not NONCE.fullmatch(nonce):
            return False
        if self.directory is not None:
            return self._spend_file(nonce)
        now = time.monotonic()
        with self._lock:
            for old in [n for n, t in self._seen.items() if t < now]:
                del self._seen[old]
            if nonce in self._seen:
                return False
            self._seen[nonce] = now + KEEP_SPENT
            return True

    def _spend_file(self, nonce: str) -> bool:
        assert self.directory is not None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.close(os.open(self.directory / nonce, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        limit = time.time() - KEEP_SPENT  # a state older than this is refused by the SDK anyway
        for old in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < limit:
                    old.unlink()
        return True


def request_state_security(config: ServerConfig) -> RequestStateSecurity:
    """How the SDK seals the 2026-07 request state. Its default key lives in one process, so an answer that
    reached another server of the install (old, standby and new take turns during ``pmcp update``) was
    refused as "Invalid or expired requestState". Every server of an install holds the Proxmox token
    secret, so the key is derived from it (HKDF with its own label: the key does not reveal the secret; a
    rotated token only makes questions in flight be asked again). The state is bound to the client token's
    name as well (the SDK binds only its own OAuth principal, which pmcp does not use), so one client cannot
    send another's approval."""
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"pmcp/request-state/v1").derive(
        config.proxmox_token_secret.encode()
    )
    return RequestStateSecurity(keys=[key], ttl=STATE_TTL, bind_principal=_client_token)


def _client_token(ctx: Any) -> str | None:
    scope = getattr(ctx.request, "scope", None) or {}
    return str(scope.get("pmcp.client") or "") or None


def needs_approval(config: ServerConfig, risk: Risk, always: bool) -> bool:
    """A destructive call, one whose tool always plans first (it creates or consumes resources), or any
    change when the administrator chose ``--approval-scope changes``."""
    if risk is Risk.READ:
        return False
    return always or risk is Risk.DESTRUCTIVE or config.approval_scope is ApprovalScope.CHANGES


def can_elicit(ctx: Any) -> bool:
    """Whether the client declared form elicitation (a bare ``elicitation: {}`` is form support, as the
    SDK's resolver reads it: mcp/server/mcpserver/resolve.py _require_capability)."""
    try:
        caps = ctx.client_capabilities if ctx is not None else None
    except ValueError:  # outside a request
        return False
    elicitation = caps.elicitation if caps is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _modern(ctx: Any) -> bool:
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION)


def _digest(message: str) -> str:
    return hashlib.sha256(message.encode()).hexdigest()[:32]


async def decide(
    ctx: Any, config: ServerConfig, spent: SpentNonces, message: str, confirm: bool, *, has_confirm: bool
) -> Verdict:
    """Ask the person (elicitation) or apply the policy. Raises ``PolicyError`` when the policy refuses and
    ``InputNeeded`` when a 2026-07 round must end with the question."""
    if can_elicit(ctx):
        answer = await _ask(ctx, spent, message)
        return Verdict("person", "elicitation", answer)
    if config.approval is Approval.ELICIT:
        raise PolicyError(
            "refused: this server needs the approval of the person through MCP elicitation "
            "(PMCP_APPROVAL=elicit) and this client did not declare the elicitation capability, so nothing "
            "was done. Use a client that supports elicitation, or an administrator runs "
            "`pmcp install --approval confirm` to accept confirm=true from the model"
        )
    if not has_confirm:  # a change tool without a plan: the fallback is pmcp's behaviour before approval
        return Verdict("model", "none", "accept")
    return Verdict("model", "confirm", "accept" if confirm else "plan")


async def _ask(ctx: Any, spent: SpentNonces, message: str) -> str:
    if not _modern(ctx):
        result = await ctx.session.elicit_form(
            message=message, requested_schema=SCHEMA, related_request_id=ctx.request_id
        )
        return str(result.action)
    q = _digest(message)
    state = _state(ctx.request_state)
    answer = (ctx.input_responses or {}).get(ELICIT_KEY)
    if state.get("q") == q and isinstance(answer, ElicitResult) and spent.spend(str(state.get("nonce"))):
        return str(answer.action)
    request = ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=SCHEMA))
    raise InputNeeded(
        InputRequiredResult(
            input_requests={ELICIT_KEY: request},
            request_state=json.dumps({"nonce": secrets.token_urlsafe(16), "q": q}),
        )
    )


def _state(text: str | None) -> dict[str, Any]:
    """The state this server minted last round (the SDK has already checked its seal)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
