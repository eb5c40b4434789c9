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
