"""Where each guest lives (VMID -> node and type), so a one-guest call does not list the whole cluster.

A tool gets only the cluster-unique VMID; the API wants `/nodes/{node}/{qemu|lxc}/{vmid}/...`. Listing
`/cluster/resources` to find the node costs O(guests): measured (issue 16) at 5,000 guests `guest_status`
took 88 ms against 1.1 ms for the direct call, and every power, snapshot and config tool paid it first.

The map is only a hint about *where to ask*; it is never the answer. A hit is confirmed by the guest's
own `status/current` on that node, which is also where the fresh name, state, tags and template flag
come from (qemu-server PVE/QemuServer.pm `vmstatus` and pve-container PVE/LXC.pm `vmstatus` both set
name, tags and template), so the protection check never reads a stale tag. When the guest has moved,
was deleted or changed type, that node answers 500 "Configuration file 'nodes/N/qemu-server/V.conf'
does not exist" (PVE::QemuConfig->load_config / PVE::LXC::Config->load_config); any error other than
401 drops the entry and the authoritative cluster listing decides — so a call never acts on a wrong node.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from pmcp.server import validate
from pmcp.server.proxmox import ProxmoxClient, ProxmoxError

GuestKey = tuple[str, str]  # (node, "qemu" | "lxc")
MAX_ENTRIES = 100_000  # a bound, far above any real cluster (PVE allows VMIDs up to 999,999,999)


class GuestLocator:
    """VMID -> (node, type), filled from every cluster listing a tool makes and refreshed on a miss."""

    def __init__(self) -> None:
        self._where: dict[int, GuestKey] = {}
        self._lock = threading.Lock()

    def remember(self, items: Iterable[dict[str, Any]]) -> None:
        """Record the guests of a `/cluster/resources` answer (list_guests, cluster_overview, a refresh)."""
        fresh = {}
        for item in items:
            vmid, node, kind = item.get("vmid"), item.get("node"), item.get("type")
            if isinstance(vmid, int) and isinstance(node, str) and kind in ("qemu", "lxc"):
                fresh[vmid] = (node, kind)
        with self._lock:
            if len(self._where) + len(fresh) > MAX_ENTRIES:
                self._where.clear()
            self._where.update(fresh)

    def forget(self, vmid: int) -> None:
        with self._lock:
            self._where.pop(vmid, None)

    def where(self, vmid: int) -> GuestKey | None:
        with self._lock:
            return self._where.get(vmid)

    async def current(self, px: ProxmoxClient, vmid: int) -> tuple[GuestKey, dict[str, Any]] | None:
        """The guest's live status from the node the map names, or None when the map cannot say."""
        hint = self.where(vmid)
        if hint is None:
            return None
        node, kind = hint
        try:
            path = validate.api_path("nodes", validate.node(node), kind, vmid, "status", "current")
            status = await px.get(path)
        except ProxmoxError as exc:
            if exc.status == 401:
                raise
            self.forget(vmid)
            return None
        if not isinstance(status, dict):
            self.forget(vmid)
            return None
        return hint, status

    async def listing(self, px: ProxmoxClient) -> list[dict[str, Any]]:
        """The authoritative cluster listing of guests; it refreshes the whole map as a side effect."""
        answer = await px.get("/cluster/resources", type="vm") or []
        items = [i for i in answer if i.get("type") in ("qemu", "lxc")]
        self.remember(items)
        return items
