"""Storages, their content, and vzdump (which really adds a backup volume to the target storage)."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from pmcp.sim.api.common import Ctx, node_of, split_list
from pmcp.sim.errors import ApiError, TaskFailed, perm_error
from pmcp.sim.generate import GIB, backup_name
from pmcp.sim.routes import route
from pmcp.sim.state import SimState
from pmcp.sim.tasks import effect

_EXT = {"zstd": ".zst", "gzip": ".gz", "1": ".lzo", "lzo": ".lzo", "0": ""}


def storage_of(ctx: Ctx, sid: str) -> dict[str, Any]:
    s = ctx.world["storages"].get(sid)
    if s is None:
        raise ApiError(500, f"storage '{sid}' does not exist")
    return s


def content_key(world: dict[str, Any], node: str, sid: str) -> str:
    return sid if world["storages"][sid]["shared"] else f"{node}/{sid}"


def volumes(world: dict[str, Any], node: str, sid: str) -> list[dict[str, Any]]:
    """Stored volumes plus the guests' disks (derived, so 5,000 guests cost nothing until listed)."""
    vols = list(world["content"].get(content_key(world, node, sid), []))
    if "images" in world["storages"][sid]["content"]:
        for g in world["guests"].values():
            if g["node"] == node:
                vols.append(
                    {
                        "volid": f"{sid}:vm-{g['vmid']}-disk-0",
                        "content": "images" if g["type"] == "qemu" else "rootdir",
                        "format": "raw",
                        "size": g["maxdisk"],
                        "used": int(g["maxdisk"] * g["disk_ratio"]),
                        "vmid": g["vmid"],
                        "ctime": 0,
                    }
                )
    return vols


def _guest_disks_used(ctx: Ctx) -> dict[str, int]:
    """Bytes the guests' disks use per node; recomputed when guests appear, vanish or move."""
    guests = ctx.world["guests"]
    sig = (len(guests), ctx.world.get("layout", 0))
    hit = ctx.state.sums.get("guest-disks")
    if hit is None or hit[0] != sig:
        used: dict[str, int] = {}
        for g in guests.values():
            used[g["node"]] = used.get(g["node"], 0) + int(g["maxdisk"] * g["disk_ratio"])
        hit = (sig, used)
        ctx.state.sums["guest-disks"] = hit
    return hit[1]


def _content_used(ctx: Ctx, ckey: str) -> int:
    """Bytes of stored volumes; volumes are only added or removed, so the count is the signature."""
    vols = ctx.world["content"].get(ckey, [])
    hit = ctx.state.sums.get(("content", ckey))
    if hit is None or hit[0] != len(vols):
        hit = (len(vols), sum(int(v.get("used", v["size"])) for v in vols))
        ctx.state.sums[("content", ckey)] = hit
    return hit[1]


def storage_status(ctx: Ctx, node: str, sid: str) -> dict[str, Any]:
    s = ctx.world["storages"][sid]
    used = _content_used(ctx, content_key(ctx.world, node, sid))
    if "images" in s["content"]:
        used += _guest_disks_used(ctx).get(node, 0)
    used += 2 * GIB
    total = s["total"] * GIB
    used = min(used, total)
    return {
        "type": s["type"],
        "content": s["content"],
        "shared": s["shared"],
        "active": 1,
        "enabled": 1,
        "total": total,
        "used": used,
        "avail": total - used,
    }


@route("GET", "/storage")
def storage_index(ctx: Ctx, p: dict) -> list:
    out = []
    for sid, s in ctx.world["storages"].items():
        if p.get("type") and s["type"] != p["type"]:
            continue
        if not ctx.has(f"/storage/{sid}", "Datastore.Audit", "Datastore.AllocateSpace"):
            continue
        entry = {"storage": sid, **{k: v for k, v in s.items() if k != "total"}, "digest": "0" * 40}
        out.append(entry)
    return out


@route("GET", "/storage/{storage}")
def storage_read(ctx: Ctx, p: dict) -> dict:
    s = storage_of(ctx, p["storage"])
    return {"storage": p["storage"], **{k: v for k, v in s.items() if k != "total"}, "digest": "0" * 40}


@route("GET", "/nodes/{node}/storage")
def node_storage(ctx: Ctx, p: dict) -> list:
    node_of(ctx, p["node"])
    want = set(split_list(p.get("content")))
    out = []
    for sid, s in ctx.world["storages"].items():
        if p.get("storage") and sid != p["storage"]:
            continue
        if want and not want & set(s["content"].split(",")):
            continue
        if not ctx.has(f"/storage/{sid}", "Datastore.Audit", "Datastore.AllocateSpace"):
            continue
        st = storage_status(ctx, p["node"], sid)
        out.append({"storage": sid, **st, "used_fraction": round(st["used"] / st["total"], 6)})
    return out


@route("GET", "/nodes/{node}/storage/{storage}")
def storage_dir(ctx: Ctx, p: dict) -> list:
    node_of(ctx, p["node"])
    storage_of(ctx, p["storage"])
    return [{"subdir": s} for s in ("content", "status", "rrd", "rrddata", "prunebackups")]


@route("GET", "/nodes/{node}/storage/{storage}/status")
def storage_status_ep(ctx: Ctx, p: dict) -> dict:
    node_of(ctx, p["node"])
    storage_of(ctx, p["storage"])
    return storage_status(ctx, p["node"], p["storage"])


@route("GET", "/nodes/{node}/storage/{storage}/content")
def storage_content(ctx: Ctx, p: dict) -> list:
    node_of(ctx, p["node"])
    storage_of(ctx, p["storage"])
    # pve-storage src/PVE/API2/Storage/Content.pm index: each volume passes check_volume_access or
    # is left out, silently (a backup needs VM.Backup, a disk VM.Config.Disk -- not VM.Audit).
    out = []
    for v in volumes(ctx.world, p["node"], p["storage"]):
        if p.get("content") and v["content"] != p["content"]:
            continue
        if "vmid" in p and v.get("vmid") != p["vmid"]:
            continue
        if _volume_access_denied(ctx, p["storage"], v) is None:
            out.append(dict(v))
    return out


def _find_volume(ctx: Ctx, node: str, sid: str, volume: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    volid = volume if ":" in volume else f"{sid}:{volume}"
    stored = ctx.world["content"].get(content_key(ctx.world, node, sid), [])
    for v in stored:
        if v["volid"] == volid:
            return stored, v
    for v in volumes(ctx.world, node, sid):
        if v["volid"] == volid:
            return [], v
    raise ApiError(500, f"volume '{volid}' does not exist")


def _volume_access_denied(ctx: Ctx, sid: str, vol: dict[str, Any]) -> str | None:
    """pve-storage src/PVE/Storage.pm check_volume_access (8 and 9 alike): Datastore.Allocate on the
    storage sees everything; iso/vztmpl/import need Datastore.AllocateSpace or Datastore.Audit; a
    backup Datastore.AllocateSpace plus VM.Backup on its guest; a disk image Datastore.Audit plus
    VM.Config.Disk on its guest; anything else is refused. Returns the 403 message, or None."""
    storage = f"/storage/{sid}"
    if ctx.has(storage, "Datastore.Allocate"):
        return None
    kind, owner = vol["content"], vol.get("vmid")
    if kind in ("iso", "vztmpl", "import"):
        ok = ctx.has(storage, "Datastore.AllocateSpace", "Datastore.Audit")
        return None if ok else f"{storage}, Datastore.AllocateSpace|Datastore.Audit"
    if kind == "backup" and owner:
        needs = [(storage, "Datastore.AllocateSpace"), (f"/vms/{owner}", "VM.Backup")]
    elif kind in ("images", "rootdir") and owner:
        needs = [(storage, "Datastore.Audit"), (f"/vms/{owner}", "VM.Config.Disk")]
    else:
        return f"missing privileges to access {vol['volid']}"
    for path, priv in needs:
        if not ctx.has(path, priv):
            return f"{path}, {priv}"
    return None


def _check_volume_access(ctx: Ctx, sid: str, vol: dict[str, Any]) -> None:
    if why := _volume_access_denied(ctx, sid, vol):
        if why.startswith("missing privileges"):
            raise ApiError(500, why)
        raise perm_error(why)


@route("GET", "/nodes/{node}/storage/{storage}/content/{volume}")
def volume_attributes(ctx: Ctx, p: dict) -> dict:
    node_of(ctx, p["node"])
    storage_of(ctx, p["storage"])
    _, v = _find_volume(ctx, p["node"], p["storage"], p["volume"])
    _check_volume_access(ctx, p["storage"], v)  # Content.pm info: "You need read access for the volume."
    path = f"/var/lib/vz/{v['volid'].split(':', 1)[1]}"
    out = {"format": v["format"], "path": path, "size": v["size"], "used": v.get("used", v["size"])}
    if v.get("notes"):
        out["notes"] = v["notes"]
    out["protected"] = int(bool(v.get("protected")))
    return out


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
def volume_delete(ctx: Ctx, p: dict) -> str:
    node_of(ctx, p["node"])
    storage_of(ctx, p["storage"])
    stored, v = _find_volume(ctx, p["node"], p["storage"], p["volume"])
    # pve-storage Content.pm delete: a guest's backup with Datastore.AllocateSpace + VM.Backup,
    # anything else with Datastore.Allocate.
    if v["content"] == "backup" and v.get("vmid"):
        ctx.require(f"/storage/{p['storage']}", "Datastore.AllocateSpace")
        ctx.require(f"/vms/{v['vmid']}", "VM.Backup")
    else:
        ctx.require(f"/storage/{p['storage']}", "Datastore.Allocate")
    if not stored:
        raise ApiError(
            500, f"unable to delete volume '{v['volid']}' - volume is in use by guest {v.get('vmid')}"
        )
    if v.get("protected"):
        raise ApiError(500, "backup is protected, cannot remove")
    args = {"key": content_key(ctx.world, p["node"], p["storage"]), "volid": v["volid"]}
    return ctx.state.engine.start(
        p["node"], "imgdel", "", ctx.auth.authid, "volume_delete", args, [f"Removed volume '{v['volid']}'"]
    )


@effect("volume_delete")
def _volume_delete(state: SimState, a: dict[str, Any]) -> list[str]:
    stored = state.world["content"].get(a["key"], [])
    state.world["content"][a["key"]] = [v for v in stored if v["volid"] != a["volid"]]
    return []


def _default_backup_storage(ctx: Ctx) -> str:
    """/etc/vzdump.conf's ``storage``, else ``local`` (pve-manager PVE/API2/VZDump.pm defaults)."""
    return str(ctx.world.get("vzdump_defaults", {}).get("storage") or "local")


@route("GET", "/nodes/{node}/vzdump/defaults")
def vzdump_defaults(ctx: Ctx, p: dict) -> dict:
    """pve-manager PVE/API2/VZDump.pm defaults: the configured defaults, ``storage`` falling back to
    ``local``, readable with Datastore.Audit or Datastore.AllocateSpace on that storage."""
    node_of(ctx, p["node"])
    out: dict[str, Any] = dict(ctx.world.get("vzdump_defaults", {}))
    out["storage"] = p.get("storage") or _default_backup_storage(ctx)
    ctx.require(f"/storage/{out['storage']}", "Datastore.Audit", "Datastore.AllocateSpace", any_=True)
    return out


_NOTES_VARS = ("cluster", "guestname", "node", "vmid")


def _verify_notes_template(template: str) -> None:
    """pve-manager PVE/VZDump.pm $verify_notes_template: one line; only ``\\n`` and ``\\\\``
    escapes; only {{cluster}}, {{guestname}}, {{node}}, {{vmid}}."""
    if "\n" in template:
        raise ApiError(400, "Parameter verification failed.", {"notes-template": "contains a line feed\n"})
    bad = [
        f"escape sequence '\\{m.group(1)}' at char {m.start()}"
        for m in re.finditer(r"\\(.)", template)
        if m.group(1) not in ("n", "\\")
    ]
    bad += [
        f"variable '{m.group(1)}' at char {m.start(1)}"
        for m in re.finditer(r"\{\{([^\s{}]+)\}\}", template)
        if m.group(1) not in _NOTES_VARS
    ]
    if bad:
        msg = "found unknown: " + ", ".join(bad) + "\n"
        raise ApiError(400, "Parameter verification failed.", {"notes-template": msg})


@route("POST", "/nodes/{node}/vzdump")
def vzdump(ctx: Ctx, p: dict) -> str:
    """Back up guests of this node into a storage with ``backup`` content (default ``local``).

    pve-manager PVE/API2/VZDump.pm vzdump: guests on other nodes are skipped, and with none left on
    this node the answer is "OK" (no task); Datastore.AllocateSpace on the storage is checked before
    the task, VM.Backup per guest inside it (PVE/VZDump.pm exec_backup: the task fails)."""
    node = p["node"]
    node_of(ctx, node)
    if p.get("stdout"):
        raise ApiError(
            400,
            "Parameter verification failed.",
            {"stdout": "option is only allowed on the command line interface."},
        )
    if p.get("notes-template"):
        _verify_notes_template(p["notes-template"])
    sid = p.get("storage") or _default_backup_storage(ctx)
    s = storage_of(ctx, sid)
    if "backup" not in s["content"].split(","):
        raise ApiError(500, f"storage '{sid}' does not support backups")
    guests = ctx.world["guests"]
    if p.get("all"):
        excluded = set(split_list(p.get("exclude")))
        vmids = [g["vmid"] for g in guests.values() if g["node"] == node and str(g["vmid"]) not in excluded]
    else:
        vmids = [int(v) for v in split_list(p.get("vmid"))]
        if not vmids:
            raise ApiError(
                400, "Parameter verification failed.", {"vmid": "property is missing and it is not optional"}
            )
        # get_included_guests: guests of other nodes are skipped; unknown IDs stay, to fail visibly
        vmids = [v for v in vmids if str(v) not in guests or guests[str(v)]["node"] == node]
        if not vmids:
            return "OK"
    ctx.require(f"/storage/{sid}", "Datastore.AllocateSpace")
    denied = [v for v in vmids if str(v) in guests and not ctx.has(f"/vms/{v}", "VM.Backup")]
    args = {
        "node": node,
        "storage": sid,
        "vmids": vmids,
        "compress": str(p.get("compress", "zstd")),
        "mode": p.get("mode", "snapshot"),
        "notes": p.get("notes-template", "{{guestname}}"),
        "protected": p.get("protected", 0),
        "denied": denied if not p.get("all") else [],
    }
    if p.get("all"):  # exec_backup: with --all, guests without VM.Backup are skipped silently
        args["vmids"] = [v for v in vmids if v not in denied]
    opts = " ".join(f"--{k} {v}" for k, v in sorted(p.items()) if k not in ("node", "vmid"))
    log = [f"INFO: starting new backup job: vzdump {' '.join(map(str, vmids))} {opts} --node {node}".rstrip()]
    ident = str(vmids[0]) if len(vmids) == 1 else ""
    local = tuple(v for v in vmids if str(v) in guests)
    return ctx.state.engine.start(
        node, "vzdump", ident, ctx.auth.authid, "vzdump", args, log, guests=local, lock="backup"
    )


def remember_backup_config(world: dict[str, Any], volid: str, guest: dict[str, Any]) -> None:
    """vzdump stores the guest's configuration inside the archive; keep it beside the volume so a
    restore brings back the configuration of the moment of the backup, not of today."""
    world.setdefault("backup_configs", {})[volid] = copy.deepcopy(
        {k: v for k, v in guest.items() if k not in ("snapshots", "lock")}
    )


@effect("vzdump")
def _vzdump(state: SimState, a: dict[str, Any]) -> list[str]:
    world = state.world
    key = a["storage"] if world["storages"][a["storage"]]["shared"] else f"{a['node']}/{a['storage']}"
    content = world["content"].setdefault(key, [])
    lines: list[str] = []
    done = 0
    if a.get("denied"):
        raise TaskFailed(f"Permission check failed (/vms/{a['denied'][0]}, VM.Backup)")
    for vmid in a["vmids"]:
        g = world["guests"].get(str(vmid))
        if g is None or g["node"] != a["node"]:
            lines.append(f"ERROR: Backup of VM {vmid} failed - unable to find VM '{vmid}'")
            continue
        ctime = int(time.time())
        existing = {v["volid"] for v in content}
        while True:
            name = backup_name(g["type"], vmid, ctime)
            ext = _EXT.get(a["compress"], ".zst")
            if ext != ".zst":
                name = name[: -len(".zst")] + ext
            volid = f"{a['storage']}:backup/{name}"
            if volid not in existing:
                break
            ctime += 1
        guestname = g["config"].get("name") or g["config"].get("hostname") or str(vmid)
        kind = "qemu" if g["type"] == "qemu" else "lxc"
        lines += [
            f"INFO: Starting Backup of VM {vmid} ({kind})",
            f"INFO: Backup started at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ctime))}",
            f"INFO: backup mode: {a['mode']}",
            f"INFO: creating vzdump archive '/var/lib/vz/dump/{name}'",
        ]
        size = int(g["maxdisk"] * g["disk_ratio"] * 0.3)
        remember_backup_config(world, volid, g)
        content.append(
            {
                "volid": volid,
                "content": "backup",
                "format": name.split(f"-{vmid}-", 1)[1].split(".", 1)[1],
                "subtype": kind,
                "vmid": vmid,
                "size": size,
                "ctime": ctime,
                "notes": _render_notes(a["notes"], guestname, vmid, a["node"], world["cluster_name"]),
                "protected": int(bool(a.get("protected"))),
            }
        )
        lines.append(f"INFO: Finished Backup of VM {vmid} (00:00:01)")
        done += 1
    state.changed()
    if done < len(a["vmids"]):
        lines.append("INFO: Backup job finished with errors")
        raise TaskFailed("job errors", lines)
    lines.append("INFO: Backup job finished successfully")
    return lines


def _render_notes(template: str, guestname: str, vmid: int, node: str, cluster: str) -> str:
    """pve-manager PVE/VZDump.pm $generate_notes: the four variables, ``\\n`` a line break."""
    values = {"guestname": guestname, "vmid": str(vmid), "node": node, "cluster": cluster}
    text = re.sub(r"\{\{(cluster|guestname|node|vmid)\}\}", lambda m: values[m.group(1)], template)
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)
