"""Cluster-wide and node endpoints: version, status, resources, nextid, nodes, pools."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pmcp.sim.api.common import Ctx, RawJSON, node_of
from pmcp.sim.errors import ApiError, param_error
from pmcp.sim.generate import GIB, KERNEL, PVE_REPOID, PVE_VERSION
from pmcp.sim.routes import route
from pmcp.sim.tasks import summary


def _version(ctx: Ctx) -> tuple[str, str, str]:
    """(version, release, kernel) of the simulated host."""
    version = ctx.world.get("pve_version", PVE_VERSION)
    return version, version.rsplit(".", 1)[0], ctx.world.get("kernel", KERNEL)


@route("GET", "/version")
def version(ctx: Ctx, p: dict) -> dict:
    version, release, _ = _version(ctx)
    return {"version": version, "release": release, "repoid": PVE_REPOID, "console": "html5"}


@route("GET", "/nodes/{node}/version")
def node_version(ctx: Ctx, p: dict) -> dict:
    node_of(ctx, p["node"])
    version, release, _ = _version(ctx)
    return {"version": version, "release": release, "repoid": PVE_REPOID}


@route("GET", "/cluster/status")
def cluster_status(ctx: Ctx, p: dict) -> list:
    nodes = ctx.world["nodes"]
    out: list[dict[str, Any]] = [
        {
            "type": "cluster",
            "id": "cluster",
            "name": ctx.world["cluster_name"],
            "nodes": len(nodes),
            "quorate": 1,
            "version": len(nodes) + 2,
        }
    ]
    for i, (name, n) in enumerate(nodes.items()):
        out.append(
            {
                "type": "node",
                "id": f"node/{name}",
                "name": name,
                "ip": n["ip"],
                "nodeid": i + 1,
                "online": 1,
                "local": int(i == 0),
                "level": "",
            }
        )
    return out


def guest_figures(g: dict[str, Any], now: float) -> dict[str, Any]:
    """Live-looking numbers for a guest (cpu, memory, disk, uptime, network)."""
    running = g["status"] == "running"
    cfg = g["config"]
    return {
        "cpu": g["cpu_load"] if running else 0,
        "cpus": cfg.get("cores", 1) * cfg.get("sockets", 1),
        "mem": int(g["maxmem"] * g["mem_ratio"]) if running else 0,
        "maxmem": g["maxmem"],
        "disk": int(g["maxdisk"] * g["disk_ratio"]) if g["type"] == "lxc" else 0,
        "maxdisk": g["maxdisk"],
        "uptime": int(now - g["started_at"]) if running and g.get("started_at") else 0,
        "netin": g["netin"],
        "netout": g["netout"],
        "diskread": g["netin"] // 7,
        "diskwrite": g["netout"] // 5,
    }


def guest_resource(g: dict[str, Any], now: float, hastate: str | None = None) -> dict[str, Any]:
    f = guest_figures(g, now)
    cfg = g["config"]
    out = {
        "id": f"{g['type']}/{g['vmid']}",
        "type": g["type"],
        "vmid": g["vmid"],
        "name": cfg.get("name") or cfg.get("hostname") or f"VM {g['vmid']}",
        "node": g["node"],
        # pve-manager PVE/Service/pvestatd.pm update_qemu_status: "my $status = $d->{qmpstatus} ||
        # $d->{status}", so a paused VM is "paused" here (not "running").
        "status": "paused" if g["status"] == "running" and g.get("paused") else g["status"],
        "template": g["template"],
        "maxcpu": f["cpus"],
        **{k: v for k, v in f.items() if k != "cpus"},
        "tags": cfg.get("tags", ""),
    }
    if hastate:  # pve-manager PVE/API2Tools.pm extract_vm_stats: the HA resource's state
        out["hastate"] = hastate
    if g.get("pool"):
        out["pool"] = g["pool"]
    if g.get("lock"):
        out["lock"] = g["lock"]
    return out


def node_resource(name: str, n: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "id": f"node/{name}",
        "type": "node",
        "node": name,
        "status": "online",
        "cpu": n["cpu"],
        "maxcpu": n["maxcpu"],
        "mem": int(n["maxmem"] * n["mem_ratio"]),
        "maxmem": n["maxmem"],
        "disk": n["disk"],
        "maxdisk": n["maxdisk"],
        "uptime": int(now - n["booted_at"]),
        "level": "",
        "cgroup-mode": 2,
    }


def _other_items(ctx: Ctx, now: float) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, permission path, entry) for nodes, storages, pools and SDN zones (a few dozen)."""
    from pmcp.sim.api.storage import storage_status

    world = ctx.world
    items: list[tuple[str, str, dict[str, Any]]] = []
    for name, n in world["nodes"].items():
        items.append(("node", f"/nodes/{name}", node_resource(name, n, now)))
    for sid, s in world["storages"].items():
        for name in world["nodes"]:
            st = storage_status(ctx, name, sid)
            entry = {
                "id": f"storage/{name}/{sid}",
                "type": "storage",
                "storage": sid,
                "node": name,
                "status": "available",
                "content": s["content"],
                "plugintype": s["type"],
                "shared": s["shared"],
                "disk": st["used"],
                "maxdisk": st["total"],
            }
            items.append(("storage", f"/storage/{sid}", entry))
    for pid in world["pools"]:
        items.append(("pool", f"/pool/{pid}", {"id": f"/pool/{pid}", "type": "pool", "pool": pid}))
    for name in world["nodes"]:
        entry = {
            "id": f"sdn/{name}/localnetwork",
            "type": "sdn",
            "sdn": "localnetwork",
            "node": name,
            "status": "ok",
        }
        items.append(("sdn", "/sdn/zones/localnetwork", entry))
    return items


def _guest_fragments(ctx: Ctx, now: float, root: bool) -> list[str]:
    """Serialised resource entries of the guests the caller may see, fast at 5,000 guests.

    Each guest's entry is re-serialised only when something it shows changed (its signature);
    ``uptime`` goes last so the cached text takes the current value without re-encoding.
    """
    cache = ctx.state.fragments
    ha = ctx.world.get("ha", {})
    out: list[str] = []
    append = out.append
    pool_audit: dict[str, bool] = {}
    for g in ctx.world["guests"].values():
        vmid = g["vmid"]
        if not root and not ctx.has(f"/vms/{vmid}", "VM.Audit"):
            continue
        started = g.get("started_at")
        status = g["status"]
        hastate = (ha.get(f"{'vm' if g['type'] == 'qemu' else 'ct'}:{vmid}") or {}).get("state")
        sig = (
            hastate,
            status,
            g.get("paused"),
            started,
            g["node"],
            g.get("pool"),
            g.get("lock"),
            g["config"].get("digest"),
            g["template"],
        )
        uptime = int(now - started) if started and status == "running" else 0
        pool = g.get("pool")
        if pool and not root and pool not in pool_audit:
            pool_audit[pool] = ctx.has(f"/pool/{pool}", "Pool.Audit")  # once per pool and answer
        if pool and not root and not pool_audit[pool]:
            # pve-manager PVE/API2/Cluster.pm resources: the pool is left out of a guest's entry for
            # a caller without Pool.Audit on /pool/NAME (rare: serialised for this caller alone)
            entry = guest_resource(g, now, hastate) | {"uptime": uptime}
            del entry["pool"]
            append(json.dumps(entry, separators=(",", ":")))
            continue
        hit = cache.get(vmid)
        if hit is None or hit[0] != sig:
            entry = guest_resource(g, now, hastate)
            del entry["uptime"]
            hit = (sig, json.dumps(entry, separators=(",", ":"))[:-1] + ',"uptime":')
            cache[vmid] = hit
        append(f"{hit[1]}{uptime}}}")
    return out


_RESOURCE_PRIVS = {
    "node": ("Sys.Audit",),
    "storage": ("Datastore.Audit", "Datastore.AllocateSpace"),
    "pool": ("Pool.Audit",),
    "sdn": ("SDN.Audit",),
    "vm": ("VM.Audit",),
}


def _is_unrestricted_root(ctx: Ctx) -> bool:
    if not ctx.auth.is_root:
        return False
    if not ctx.auth.tokenid:
        return True
    return not ctx.world["users"]["root@pam"]["tokens"].get(ctx.auth.tokenid, {}).get("privsep", 1)


@route("GET", "/cluster/resources")
def cluster_resources(ctx: Ctx, p: dict) -> RawJSON:
    """Every resource the caller may see, fast at 5,000 guests.

    Guests are serialised once and reused until they change; the whole answer is kept for the
    same caller and filter until the state changes or a second passes.
    """
    want = p.get("type")
    now = time.time()
    key = ("resources", ctx.auth.authid, want, int(now))
    cached = ctx.state.cache.get(key)
    if cached is not None:
        return cached
    root = _is_unrestricted_root(ctx)
    parts: list[str] = []
    if want != "vm":
        others = [
            entry
            for kind, path, entry in _other_items(ctx, now)
            if (not want or kind == want) and (root or ctx.has(path, *_RESOURCE_PRIVS[kind]))
        ]
        if others:
            parts.append(json.dumps(others, separators=(",", ":"))[1:-1])
    if want in (None, "vm"):
        parts.extend(_guest_fragments(ctx, now, root))
    raw = RawJSON(("[" + ",".join(parts) + "]").encode())
    for k in [k for k in ctx.state.cache if isinstance(k, tuple) and k[0] == "resources" and k[3] != key[3]]:
        del ctx.state.cache[k]
    ctx.state.cache[key] = raw
    return raw


@route("GET", "/cluster/tasks")
def cluster_tasks(ctx: Ctx, p: dict) -> list:
    """pve-manager PVE/API2/Cluster.pm tasks: everything with Sys.Audit on /, else the tasks whose
    user -- after a token's ``USER@REALM!TOKEN`` is split into ``user`` and ``tokenid`` -- is the
    caller. A token's own tasks have user ``USER@REALM``, so a token without Sys.Audit on / sees
    none of them here (/nodes/{node}/tasks shows them)."""
    everything = ctx.has("/", "Sys.Audit")
    out = []
    for t in sorted(ctx.world["tasks"].values(), key=lambda t: t["starttime"], reverse=True):
        entry = summary(t, listing=True)
        if everything or entry["user"] == ctx.auth.authid:
            out.append(entry)
    return out[:500]


@route("GET", "/cluster/nextid")
def nextid(ctx: Ctx, p: dict) -> int:
    guests = ctx.world["guests"]
    if "vmid" in p:
        if str(p["vmid"]) in guests:
            raise param_error({"vmid": f"VM {p['vmid']} already exists"})
        return p["vmid"]
    vmid = 100
    while str(vmid) in guests:
        vmid += 1
    return vmid


@route("GET", "/cluster/options")
def cluster_options(ctx: Ctx, p: dict) -> dict:
    return dict(ctx.world["cluster_options"])


@route("PUT", "/cluster/options")
def set_cluster_options(ctx: Ctx, p: dict) -> None:
    opts = ctx.world["cluster_options"]
    for k in [d for d in str(p.pop("delete", "")).split(",") if d]:
        opts.pop(k, None)
    opts.update(p)
    ctx.state.changed()


@route("GET", "/nodes")
def nodes(ctx: Ctx, p: dict) -> list:
    now = time.time()
    out = []
    for name, n in ctx.world["nodes"].items():
        entry = node_resource(name, n, now)
        entry["ssl_fingerprint"] = ":".join(f"{b:02X}" for b in hashlib.sha256(name.encode()).digest())
        if not ctx.has(f"/nodes/{name}", "Sys.Audit"):
            entry = {k: entry[k] for k in ("id", "type", "node", "status")}
        out.append(entry)
    return out


@route("GET", "/nodes/{node}/status")
def node_status(ctx: Ctx, p: dict) -> dict:
    n = node_of(ctx, p["node"])
    version, _, kernel = _version(ctx)
    now = time.time()
    used = int(n["maxmem"] * n["mem_ratio"])
    sockets = 1 if n["maxcpu"] <= 32 else 2
    return {
        "cpu": n["cpu"],
        "wait": 0.0012,
        "idle": 0,
        "uptime": int(now - n["booted_at"]),
        "loadavg": [f"{n['cpu'] * n['maxcpu'] * f:.2f}" for f in (1.0, 0.9, 0.8)],
        "kversion": f"Linux {kernel} #1 SMP PREEMPT_DYNAMIC PMX {kernel} (2026-05-01T10:00Z) x86_64",
        "pveversion": f"pve-manager/{version}/{PVE_REPOID}",
        "cpuinfo": {
            "model": n["cpu_model"],
            "cpus": n["maxcpu"],
            "sockets": sockets,
            "cores": n["maxcpu"] // (2 * sockets),
            "mhz": "3250.000",
            "hvm": "1",
            "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr",
            "user_hz": 100,
        },
        "memory": {
            "total": n["maxmem"],
            "used": used,
            "free": n["maxmem"] - used,
            "available": n["maxmem"] - used,
        },
        "swap": {"total": 8 * GIB, "used": 0, "free": 8 * GIB},
        "rootfs": {
            "total": n["maxdisk"],
            "used": n["disk"],
            "free": n["maxdisk"] - n["disk"],
            "avail": n["maxdisk"] - n["disk"],
        },
        "ksm": {"shared": 0},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {
            "sysname": "Linux",
            "release": kernel,
            "version": f"#1 SMP PREEMPT_DYNAMIC PMX {kernel} (2026-05-01T10:00Z)",
            "machine": "x86_64",
        },
    }


def _pool_members(ctx: Ctx, poolid: str, kind: str | None = None) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    if kind in (None, "qemu", "lxc"):
        for g in ctx.world["guests"].values():
            if g.get("pool") == poolid and kind in (None, g["type"]):
                out.append(guest_resource(g, now))
    if kind in (None, "storage"):
        for sid in ctx.world["pools"][poolid].get("storage", []):
            out.append({"id": f"storage/{sid}", "type": "storage", "storage": sid})
    return out


def _pool(ctx: Ctx, poolid: str) -> dict[str, Any]:
    pool = ctx.world["pools"].get(poolid)
    if pool is None:
        raise ApiError(500, f"pool '{poolid}' does not exist")
    return pool


@route("GET", "/pools")
def pools(ctx: Ctx, p: dict) -> list:
    out = []
    for pid, pool in ctx.world["pools"].items():
        if p.get("poolid") and pid != p["poolid"]:
            continue
        if not ctx.has(f"/pool/{pid}", "Pool.Audit", "Pool.Allocate"):
            continue
        entry: dict[str, Any] = {"poolid": pid, "comment": pool.get("comment", "")}
        if p.get("poolid"):
            entry["members"] = _pool_members(ctx, pid, p.get("type"))
        out.append(entry)
    if p.get("poolid") and not out:
        _pool(ctx, p["poolid"])
    return out


@route("GET", "/pools/{poolid}")
def pool_read(ctx: Ctx, p: dict) -> dict:
    pool = _pool(ctx, p["poolid"])
    return {"comment": pool.get("comment", ""), "members": _pool_members(ctx, p["poolid"], p.get("type"))}


@route("POST", "/pools")
def pool_create(ctx: Ctx, p: dict) -> None:
    if p["poolid"] in ctx.world["pools"]:
        raise ApiError(500, f"pool '{p['poolid']}' already exists")
    ctx.world["pools"][p["poolid"]] = {"comment": p.get("comment", "")}
    ctx.state.changed(access=True)


@route("PUT", "/pools")
def pool_update(ctx: Ctx, p: dict) -> None:
    pool = _pool(ctx, p["poolid"])
    if "comment" in p:
        pool["comment"] = p["comment"]
    remove = bool(p.get("delete"))
    for vmid in [v for v in str(p.get("vms", "")).split(",") if v]:
        g = ctx.world["guests"].get(vmid)
        if g is None:
            raise ApiError(500, f"VM {vmid} does not exist")
        ctx.require(f"/vms/{vmid}", "VM.Allocate")
        if remove:
            if g.get("pool") == p["poolid"]:
                g["pool"] = None
        elif g.get("pool") and g["pool"] != p["poolid"] and not p.get("allow-move"):
            raise ApiError(500, f"VM {vmid} is already a pool member")
        else:
            g["pool"] = p["poolid"]
    storages = pool.setdefault("storage", [])
    for sid in [s for s in str(p.get("storage", "")).split(",") if s]:
        if remove and sid in storages:
            storages.remove(sid)
        elif not remove and sid not in storages:
            storages.append(sid)
    ctx.state.changed(access=True)


@route("DELETE", "/pools")
def pool_delete(ctx: Ctx, p: dict) -> None:
    _pool(ctx, p["poolid"])
    if any(g.get("pool") == p["poolid"] for g in ctx.world["guests"].values()):
        raise ApiError(500, "pool not empty")
    del ctx.world["pools"][p["poolid"]]
    ctx.state.changed(access=True)
