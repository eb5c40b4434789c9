"""What the agent may do: the mode, protected guests, and confirmation for destructive calls.

Enforced in the server (not only hinted by annotations): a tool outside the mode is neither listed
nor callable, and no change or destructive tool touches a protected guest in any mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pmcp.server.config import Mode, ServerConfig

PROTECTED_TAG = "pmcp-protected"


class Risk(StrEnum):
    """Declared once per tool; drives annotations, the mode check, confirmation and auditing."""

    READ = "read"
    CHANGE = "change"
    DESTRUCTIVE = "destructive"


REQUIRED_MODE = {Risk.READ: Mode.READ_ONLY, Risk.CHANGE: Mode.OPERATOR, Risk.DESTRUCTIVE: Mode.ADMIN}
_RANK = {Mode.READ_ONLY: 0, Mode.OPERATOR: 1, Mode.ADMIN: 2}


class PolicyError(Exception):
    """A call the policy refuses; the message says which setting would allow it."""


class Policy:
    def __init__(self, config: ServerConfig) -> None:
        self.mode = config.mode
        self.protected = config.protected

    def allows(self, risk: Risk, mode: Mode | None = None) -> bool:
        """``mode`` raises a tool above its risk's mode when its privileges are bigger than its risk
        (cloning needs VM.Allocate, which also allows deleting: an admin tool, though not destructive)."""
        return _RANK[self.mode] >= _RANK[mode or REQUIRED_MODE[risk]]

    def check_tool(self, tool: str, risk: Risk, mode: Mode | None = None) -> None:
        if not self.allows(risk, mode):
            need = (mode or REQUIRED_MODE[risk]).value
            raise PolicyError(
                f"{tool} is a {risk.value} tool for PMCP_MODE={need} and this server runs in "
                f"PMCP_MODE={self.mode.value}; an administrator enables it with PMCP_MODE={need} (or higher) "
                "and a server restart"
            )

    def protection_reason(self, vmid: int, tags: Iterable[str]) -> str | None:
        if vmid in self.protected:
            return f"guest {vmid} is listed in PMCP_PROTECTED"
        if PROTECTED_TAG in {t.strip().lower() for t in tags}:
            return f"guest {vmid} carries the tag '{PROTECTED_TAG}'"
        return None

    def check_guest(self, tool: str, vmid: int, tags: Iterable[str]) -> None:
        reason = self.protection_reason(vmid, tags)
        if reason:
            raise PolicyError(
                f"refused: {reason}, so {tool} may not touch it in any mode. To allow it, an administrator "
                f"removes it from PMCP_PROTECTED or removes the '{PROTECTED_TAG}' tag in Proxmox"
            )


def split_tags(text: str | None) -> list[str]:
    """Proxmox returns tags as one string separated by ';', ',' or spaces."""
    if not text:
        return []
    return [t for t in text.replace(",", ";").replace(" ", ";").split(";") if t]


# Per-client limits (a client token's own mode and guest scope, pmcp.authtokens.TokenLimits). Kept
# apart from Policy: the install's policy is one object; these differ per request.


def client_mode(server: Mode, token_mode: str | None) -> Mode:
    """The mode a client acts in: its token's, never above the server's (the lower of the two)."""
    if token_mode is None:
        return server
    wanted = Mode(token_mode)
    return wanted if _RANK[wanted] < _RANK[server] else server


def client_allows(server: Mode, token_mode: str | None, risk: Risk, mode: Mode | None = None) -> bool:
    return _RANK[client_mode(server, token_mode)] >= _RANK[mode or REQUIRED_MODE[risk]]


def check_client_tool(
    tool: str, risk: Risk, mode: Mode | None, server: Mode, token_mode: str | None, client: str
) -> None:
    """Refuse a tool above the client token's own mode (the server's mode is checked before)."""
    if client_allows(server, token_mode, risk, mode):
        return
    need = (mode or REQUIRED_MODE[risk]).value
    raise PolicyError(
        f"{tool} is a {risk.value} tool for mode {need} and this client's token ({client!r}) is limited "
        f"to mode {client_mode(server, token_mode).value}; an administrator raises it with `pmcp "
        f"client-config --token-name {client} --mode {need}` (at most the server's PMCP_MODE="
        f"{server.value})"
    )


class GuestScope:
    """The guests a client token may see and touch: any listed tag, or any listed pool (a pool nested
    below a listed one counts, as an ACL on /pool/NAME propagates to /pool/NAME/SUB). Empty: every
    guest. Tags compare without case, as Proxmox treats them (pve-manager sorts and matches tags
    case-insensitively unless the datacenter's tag-style says otherwise)."""

    def __init__(self, tags: Iterable[str] = (), pools: Iterable[str] = ()) -> None:
        self.tags = frozenset(t.lower() for t in tags)
        self.pools = tuple(pools)

    def __bool__(self) -> bool:
        return bool(self.tags or self.pools)

    def contains(self, tags: Iterable[str], pool: str | None) -> bool:
        if not self:
            return True
        if self.tags & {t.strip().lower() for t in tags}:
            return True
        return bool(pool) and any(pool == p or pool.startswith(p + "/") for p in self.pools)

    def contains_item(self, item: dict[str, object]) -> bool:
        """A `/cluster/resources` guest entry (tags as Proxmox's one string, pool when it has one)."""
        if not self:  # before the tags are split: list_guests asks this of every guest of the cluster
            return True
        tags = item.get("tags")
        pool = item.get("pool")
        return self.contains(
            split_tags(tags if isinstance(tags, str) else None), pool if isinstance(pool, str) else None
        )

    def describe(self) -> str:
        parts = [f"tag {t}" for t in sorted(self.tags)] + [f"pool {p}" for p in self.pools]
        return " or ".join(parts) if parts else "every guest"

    def refusal(self, vmid: int, client: str) -> PolicyError:
        """The one answer for a VMID outside the scope, whether or not such a guest exists."""
        return PolicyError(
            f"vmid {vmid}: not in this client's scope ({self.describe()}); list_guests shows the guests "
            f"it may use. An administrator changes the scope with `pmcp client-config --token-name "
            f"{client} --scope …`"
        )
