"""What every handler needs: the request context and PVE's "does it exist" answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pmcp.sim import access
from pmcp.sim.access import Auth
from pmcp.sim.errors import ApiError, not_found
from pmcp.sim.state import SimState


@dataclass
class Ctx:
    """One request: the state (lock held by the server) and the authenticated caller."""

    state: SimState
    auth: Auth

    @property
    def world(self) -> dict[str, Any]:
        return self.state.world

    def has(self, path: str, *privs: str, any_: bool = True) -> bool:
        return access.has(self.state, self.auth, path, privs, any_=any_)

    def require(self, path: str, *privs: str, any_: bool = False) -> None:
        access.require(self.state, self.auth, path, privs, any_=any_)


class RawJSON:
    """An already-serialised ``data`` value (for big cached answers such as /cluster/resources)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def node_of(ctx: Ctx, node: str) -> dict[str, Any]:
    n = ctx.world["nodes"].get(node)
    if n is None:
        why = f"failed to get address info for: {node}: Name or service not known"
        raise ApiError(500, f"hostname lookup '{node}' failed - {why}")
    return n


def guest_of(ctx: Ctx, node: str, vmid: int, kind: str) -> dict[str, Any]:
    """The guest, as PVE finds it: its config file on that node, else 500 'does not exist'."""
    node_of(ctx, node)
    g = ctx.world["guests"].get(str(vmid))
    if g is None or g["node"] != node or g["type"] != kind:
        where = "qemu-server" if kind == "qemu" else "lxc"
        raise not_found(f"Configuration file 'nodes/{node}/{where}/{vmid}.conf' does not exist")
    return g


def split_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        value = ",".join(value)
    return [v for v in str(value).replace(";", ",").replace(" ", ",").split(",") if v]
