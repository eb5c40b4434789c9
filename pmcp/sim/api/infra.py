"""Cluster infrastructure reads: backup jobs, replication jobs, Ceph, SDN, a guest's firewall rules and
pending package updates; and downloads of appliance templates and ISOs to a storage. The permission
checks with a `perm` in the schema come from it; the handlers filter what the schema says they filter.

A fresh world has one backup job, no replication job, no SDN zone and no Ceph (a homelab's usual
state); tests add what they need to ``world["backup_jobs"]``, ``world["replication"]``, ``world["sdn"]``,
``world["ceph"]`` and ``world["apt_updates"]``.
"""

from __future__ import annotations

import time
from typing import Any

from pmcp.sim.api.common import Ctx, guest_of, node_of
from pmcp.sim.api.storage import storage_of
from pmcp.sim.errors import ApiError
from pmcp.sim.routes import route
from pmcp.sim.state import SimState
from pmcp.sim.tasks import effect

DEFAULT_JOB = {
    "id": "backup-1a2b3c4d-5e6f",
    "type": "vzdump",
    "enabled": 1,
    "schedule": "sun 01:00",
    "storage": "local",
    "all": 1,
    "mode": "snapshot",
    "compress": "zstd",
}


@route("GET", "/cluster/backup")
def backup_jobs(ctx: Ctx, p: dict) -> list:
    """pve-manager PVE/API2/Backup.pm index (Sys.Audit on /, from the schema)."""
    return [dict(j) for j in ctx.world.setdefault("backup_jobs", [dict(DEFAULT_JOB)])]


@route("GET", "/cluster/replication")
def replication_jobs(ctx: Ctx, p: dict) -> list:
    """pve-manager PVE/API2/ReplicationConfig.pm index: only jobs of guests the caller may VM.Audit."""
    return [dict(j) for j in ctx.world.get("replication", []) if ctx.has(f"/vms/{j['guest']}", "VM.Audit")]


@route("GET", "/cluster/ceph/status")
def ceph_status(ctx: Ctx, p: dict) -> dict:
    """pve-manager PVE/API2/Cluster/Ceph.pm status -> PVE/Ceph/Tools.pm check_ceph_inited: without Ceph
    "binary not installed: /usr/bin/ceph-mon" (HTTP 500)."""
    ceph = ctx.world.get("ceph")
    if not ceph:
        raise ApiError(500, "binary not installed: /usr/bin/ceph-mon")
    return dict(ceph)


def _sdn(ctx: Ctx, kind: str, path: Any) -> list:
    """pve-network PVE/API2/Network/SDN/Zones.pm / Vnets.pm index: entries the caller may SDN.Audit or
    SDN.Allocate on (/sdn/zones/ZONE, /sdn/zones/ZONE/VNET)."""
    items = ctx.world.get("sdn", {}).get(kind, [])
    return [dict(i) for i in items if ctx.has(path(i), "SDN.Audit", "SDN.Allocate")]


@route("GET", "/cluster/sdn/zones")
def sdn_zones(ctx: Ctx, p: dict) -> list:
    return _sdn(ctx, "zones", lambda z: f"/sdn/zones/{z['zone']}")


@route("GET", "/cluster/sdn/vnets")
def sdn_vnets(ctx: Ctx, p: dict) -> list:
    return _sdn(ctx, "vnets", lambda v: f"/sdn/zones/{v['zone']}/{v['vnet']}")


@route("GET", "/nodes/{node}/apt/update")
def apt_updates(ctx: Ctx, p: dict) -> list:
    """pve-manager PVE/API2/APT.pm list_updates (Sys.Modify on /nodes/{node}, from the schema)."""
    node_of(ctx, p["node"])
    return [dict(u) for u in ctx.world.get("apt_updates", {}).get(p["node"], [])]


def _guest_rules(kind: str):
    def rules(ctx: Ctx, p: dict) -> list:
        """pve-firewall PVE/API2/Firewall/Rules.pm (VM.Audit on /vms/{vmid}, from the schema)."""
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        return [{**r, "pos": i} for i, r in enumerate(g.get("firewall_rules", []))]

    return rules


for _kind in ("qemu", "lxc"):
    route("GET", f"/nodes/{{node}}/{_kind}/{{vmid}}/firewall/rules")(_guest_rules(_kind))


# --- downloads ------------------------------------------------------------------------------------

APPLIANCES = (  # a few of http://download.proxmox.com/images/aplinfo-pve-9.dat, as GET aplinfo lists them
    ("system", "debian-12-standard_12.12-1_amd64.tar.zst", "Debian 12 Bookworm (standard)", 129_000_000),
    ("system", "debian-13-standard_13.1-2_amd64.tar.zst", "Debian 13 Trixie (standard)", 131_000_000),
    ("system", "ubuntu-24.04-standard_24.04-2_amd64.tar.zst", "Ubuntu 24.04 Noble (standard)", 141_000_000),
    ("system", "alpine-3.22-default_20250617_amd64.tar.xz", "Alpine Linux 3.22 (default)", 3_000_000),
)


@route("GET", "/nodes/{node}/aplinfo")
def aplinfo(ctx: Ctx, p: dict) -> list:
    """pve-manager PVE/API2/Nodes.pm aplinfo: the appliance index (no permission check)."""
    node_of(ctx, p["node"])
    return [
        {
            "type": "lxc",
            "section": section,
            "template": name,
            "headline": headline,
            "package": name.split("_")[0],
            "os": name.split("-")[0],
            "source": "http://download.proxmox.com/images/system/" + name,
            "infopage": "https://pve.proxmox.com/wiki/Linux_Container",
            "size": size,
        }
        for section, name, headline, size in APPLIANCES
    ]


def _download(ctx: Ctx, node: str, sid: str, content: str, filename: str, size: int) -> str:
    storage = storage_of(ctx, sid)
    if content not in str(storage["content"]).split(","):
        raise ApiError(500, f"storage '{sid}' is not configured for content-type '{content}'")
    volid = f"{sid}:{content}/{filename}"
    args = {"node": node, "storage": sid, "volid": volid, "content": content, "size": size}
    return ctx.state.engine.start(
        node, "download", filename, ctx.auth.authid, "download", args, [f"downloading {volid}"]
    )


@route("POST", "/nodes/{node}/aplinfo")
def apl_download(ctx: Ctx, p: dict) -> str:
    """pve-manager PVE/API2/Nodes.pm apl_download: Datastore.AllocateTemplate on the storage (schema);
    an unknown template is a parameter error; a storage without vztmpl content refuses (HTTP 500)."""
    node_of(ctx, p["node"])
    found = next((a for a in APPLIANCES if a[1] == p["template"]), None)
    if found is None:
        raise ApiError(400, "Parameter verification failed.", {"template": "no such template"})
    storage = storage_of(ctx, p["storage"])
    if "vztmpl" not in str(storage["content"]).split(","):
        raise ApiError(500, f"storage '{p['storage']}' does not support templates")
    return _download(ctx, p["node"], p["storage"], "vztmpl", found[1], found[3])


@route("POST", "/nodes/{node}/storage/{storage}/download-url")
def download_url(ctx: Ctx, p: dict) -> str:
    """pve-storage PVE/API2/Storage/Status.pm download_url: Datastore.AllocateTemplate on the storage
    and Sys.Audit+Sys.Modify on / or Sys.AccessNetwork on the node (schema); the content type must be
    configured; the file name's extension must fit the content ("wrong file extension")."""
    node_of(ctx, p["node"])
    ext = {"iso": (".iso", ".img"), "vztmpl": (".tar.gz", ".tar.xz", ".tar.zst")}.get(p["content"])
    if ext is None or not p["filename"].endswith(ext):
        raise ApiError(400, "Parameter verification failed.", {"filename": "wrong file extension"})
    return _download(ctx, p["node"], p["storage"], p["content"], p["filename"], 700_000_000)


@effect("download")
def _download_effect(state: SimState, a: dict[str, Any]) -> list[str]:
    world = state.world
    key = a["storage"] if world["storages"][a["storage"]]["shared"] else f"{a['node']}/{a['storage']}"
    items = world["content"].setdefault(key, [])
    items[:] = [v for v in items if v["volid"] != a["volid"]]  # a download replaces a file of that name
    fmt = "iso" if a["content"] == "iso" else ("tzst" if a["volid"].endswith("zst") else "txz")
    items.append({"volid": a["volid"], "content": a["content"], "format": fmt, "size": a["size"],
                  "ctime": int(time.time())})  # fmt: skip
    state.changed()
    return [f"download of {a['volid']} finished"]
