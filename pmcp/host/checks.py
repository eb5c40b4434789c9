"""One verification result, shared by the `verify` checks so the CLI prints one table (check, result, fix)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""
    warn: bool = False  # ok, but out of step: `verify` shows "warn" with the fix

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
