"""QEMU VMs and LXC containers: lists, status, config, power actions and snapshots."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from pmcp.sim.api import ha
from pmcp.sim.api.cluster import guest_figures
from pmcp.sim.api.common import Ctx, guest_of, node_of, split_list
from pmcp.sim.errors import ApiError, TaskFailed
from pmcp.sim.generate import config_digest
from pmcp.sim.routes import route
from pmcp.sim.state import SimState
from pmcp.sim.tasks import effect

KINDS = {"qemu": ("qm", "VM"), "lxc": ("vz", "CT")}
POWER = {
    "qemu": ("start", "stop", "shutdown", "reboot", "reset", "suspend", "resume"),
    "lxc": ("start", "stop", "shutdown", "reboot", "suspend", "resume"),
}
_CONFIG_SKIP = {"node", "vmid", "digest", "delete", "revert", "skiplock", "force", "background_delay"}


def _name(g: dict[str, Any]) -> str:
    return g["config"].get("name") or g["config"].get("hostname") or f"VM{g['vmid']}"


def _list_entry(g: dict[str, Any], now: float) -> dict[str, Any]:
    f = guest_figures(g, now)
    entry = {
        "vmid": g["vmid"],
        "name": _name(g),
        "status": g["status"],
        **f,
        "tags": g["config"].get("tags", ""),
    }
    if g["type"] == "lxc":
        entry["type"] = "lxc"
        entry["maxswap"] = g["config"].get("swap", 0) * 1024**2
    if g["template"]:
        entry["template"] = 1
    if g["status"] == "running":
        entry["pid"] = 10000 + g["vmid"]
    if g.get("lock"):
        entry["lock"] = g["lock"]
    return entry


def _status_current(g: dict[str, Any], now: float) -> dict[str, Any]:
    entry = _list_entry(g, now)
    entry["ha"] = {"managed": 0}  # replaced by the caller for an HA-managed guest
    if g["type"] == "qemu":
        entry["qmpstatus"] = "paused" if g.get("paused") else g["status"]
        entry["agent"] = 1 if str(g["config"].get("agent", "0")).startswith("1") else 0
        if g["status"] == "running":
            entry["running-machine"] = "pc-i440fx-10.0+pve0"
            entry["running-qemu"] = "10.0.2"
    return entry


def _register(kind: str) -> None:
    prefix, label = KINDS[kind]
    base = f"/nodes/{{node}}/{kind}"

    @route("GET", base)
    def index(ctx: Ctx, p: dict) -> list:
        node_of(ctx, p["node"])
        now = time.time()
        return [
            _list_entry(g, now)
            for g in ctx.world["guests"].values()
            if g["node"] == p["node"] and g["type"] == kind and ctx.has(f"/vms/{g['vmid']}", "VM.Audit")
        ]

    @route("GET", base + "/{vmid}")
    def vmdir(ctx: Ctx, p: dict) -> list:
        guest_of(ctx, p["node"], p["vmid"], kind)
        subdirs = ["config", "pending", "status", "snapshot", "firewall", "rrd", "rrddata"]
        return [{"subdir": s} for s in subdirs]

    @route("GET", base + "/{vmid}/status")
    def statusdir(ctx: Ctx, p: dict) -> list:
        guest_of(ctx, p["node"], p["vmid"], kind)
        return [{"subdir": s} for s in ("current", *POWER[kind])]

    @route("GET", base + "/{vmid}/status/current")
    def current(ctx: Ctx, p: dict) -> dict:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        out = _status_current(g, time.time())
        if res := ha.ha_resource(ctx.world, g):
            out["ha"] = {"managed": 1, "state": res["state"], "group": res.get("group")}
            out["ha"] = {k: v for k, v in out["ha"].items() if v is not None}
        return out

    @route("GET", base + "/{vmid}/config")
    def config(ctx: Ctx, p: dict) -> dict:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        if p.get("snapshot"):
            return dict(_snapshot(g, p["snapshot"])["config"])
        if p.get("current"):
            return dict(g["config"])
        # pve-guest-common AbstractConfig.pm load_current_config: without current=1 the answer holds
        # the pending values (and leaves out pending deletions)
        pending = g.get("pending") or {}
        out = {k: v for k, v in g["config"].items() if k not in pending.get("delete", [])}
        return out | {k: v for k, v in pending.items() if k != "delete"}

    @route("GET", base + "/{vmid}/pending")
    def pending(ctx: Ctx, p: dict) -> list:
        """pve-guest-common GuestHelpers.pm config_with_pending_array: value = current, pending = new,
        delete = 1 for a pending removal."""
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        pend = g.get("pending") or {}
        out = []
        for k in sorted(set(g["config"]) | set(pend) - {"delete"}):
            item: dict[str, Any] = {"key": k}
            if k in g["config"]:  # strings, as the schema's returns say
                item["value"] = str(g["config"][k])
            if k in pend:
                item["pending"] = str(pend[k])
            if k in pend.get("delete", []):
                item["delete"] = 1
            out.append(item)
        return out

    @route("PUT", base + "/{vmid}/config")
    def set_config(ctx: Ctx, p: dict) -> None:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        _update_config(ctx, g, p)

    if kind == "qemu":

        @route("POST", base + "/{vmid}/config")
        def set_config_async(ctx: Ctx, p: dict) -> str:
            g = guest_of(ctx, p["node"], p["vmid"], kind)
            _update_config(ctx, g, p)
            return ctx.state.engine.start(
                p["node"], "qmconfig", str(p["vmid"]), ctx.auth.authid, log=[f"update VM {p['vmid']}: config"]
            )

    for action in POWER[kind]:
        _register_power(kind, base, prefix, label, action)

    @route("DELETE", base + "/{vmid}")
    def destroy(ctx: Ctx, p: dict) -> str:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        if g["status"] == "running" and not p.get("force"):
            raise ApiError(500, f"{label} {p['vmid']} is running - destroy failed")
        if g["config"].get("protection"):
            raise ApiError(500, f"can't remove {label} {p['vmid']} - protection mode enabled")
        if g.get("lock") and not p.get("skiplock"):
            raise ApiError(500, f"{label} is locked ({g['lock']})")
        args = {"vmid": p["vmid"], "purge": p.get("purge", 0)}
        return ctx.state.engine.start(
            p["node"], f"{prefix}destroy", str(p["vmid"]), ctx.auth.authid, "destroy", args,
            guests=(p["vmid"],), lock="destroyed",
        )  # fmt: skip

    @route("POST", base + "/{vmid}/clone")
    def clone(ctx: Ctx, p: dict) -> str:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        if str(p["newid"]) in ctx.world["guests"]:
            raise ApiError(500, f"unable to create {label} {p['newid']}: config file already exists")
        target = p.get("target", p["node"])
        node_of(ctx, target)
        if p.get("pool") and p["pool"] not in ctx.world["pools"]:
            raise ApiError(500, f"pool '{p['pool']}' does not exist")
        if p.get("snapname"):
            _snapshot(g, p["snapname"])
        name_key = "name" if kind == "qemu" else "hostname"
        args = {
            "vmid": p["vmid"],
            "newid": p["newid"],
            "target": target,
            "name": p.get(name_key) or f"Copy-of-{_name(g)}",
            "pool": p.get("pool"),
            "description": p.get("description"),
        }
        ident = str(p["vmid"])
        return ctx.state.engine.start(
            p["node"],
            f"{prefix}clone",
            ident,
            ctx.auth.authid,
            "clone",
            args,
            guests=(p["vmid"],),
            lock="clone",
        )

    @route("POST", base + "/{vmid}/migrate")
    def migrate(ctx: Ctx, p: dict) -> str:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        node_of(ctx, p["target"])
        if p["target"] == p["node"]:
            raise ApiError(400, "Parameter verification failed.", {"target": "target is local node."})
        online = p.get("online") if kind == "qemu" else p.get("restart")
        if g["status"] == "running" and not online:
            what = "--online" if kind == "qemu" else "--restart"
            raise ApiError(500, f"can't migrate running {label} without {what}")
        args = {"vmid": p["vmid"], "target": p["target"]}
        return ctx.state.engine.start(
            p["node"], f"{prefix}migrate", str(p["vmid"]), ctx.auth.authid, "migrate", args,
            guests=(p["vmid"],), lock="migrate",
        )  # fmt: skip

    @route("GET", base + "/{vmid}/feature")
    def feature(ctx: Ctx, p: dict) -> dict:
        """qemu-server API2/Qemu.pm vm_feature / pve-container API2/LXC.pm vm_feature: has_feature over
        every volume (of the snapshot when ``snapname`` is given). Only 'snapshot' is modelled per
        storage; 'clone' and 'copy' answer as a volume on LVM-thin would (yes)."""
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        cfg = _snapshot(g, p["snapname"])["config"] if p.get("snapname") else g["config"]
        ok = not snapshot_blockers(ctx.world, cfg) if p["feature"] == "snapshot" else True
        out: dict[str, Any] = {"hasFeature": int(ok)}
        if kind == "qemu":
            out["nodes"] = [g["node"]]
        return out

    @route("GET", base + "/{vmid}/snapshot")
    def snapshots(ctx: Ctx, p: dict) -> list:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        out = []
        for s in g["snapshots"]:
            entry = {k: s[k] for k in ("name", "description", "snaptime", "parent", "vmstate") if k in s}
            out.append(entry)
        cur: dict[str, Any] = {
            "name": "current",
            "description": "You are here!",
            "running": int(g["status"] == "running"),
            "digest": g["config"].get("digest", ""),
        }
        if parent := g.get("parent") or (g["snapshots"][-1]["name"] if g["snapshots"] else None):
            cur["parent"] = parent
        out.append(cur)
        return out

    @route("POST", base + "/{vmid}/snapshot")
    def snapshot_create(ctx: Ctx, p: dict) -> str:
        guest_of(ctx, p["node"], p["vmid"], kind)
        name = p["snapname"]
        # qemu-server API2/Qemu.pm snapshot: 'current' and (any case) 'pending' are refused at once;
        # pve-container API2/LXC/Snapshot.pm: 'current' and 'vzdump'. A name already used is the
        # worker's die (pve-guest-common AbstractConfig.pm snapshot_prepare): a failed task.
        reserved = ("current", "pending") if kind == "qemu" else ("current", "vzdump")
        if name == "current" or (name.lower() if kind == "qemu" else name) in reserved:
            raise ApiError(500, f"unable to use snapshot name '{name}' (reserved name)")
        args = {
            "vmid": p["vmid"],
            "name": name,
            "description": p.get("description", ""),
            "vmstate": p.get("vmstate", 0),
        }
        return ctx.state.engine.start(
            p["node"], f"{prefix}snapshot", str(p["vmid"]), ctx.auth.authid, "snapshot_create", args,
            guests=(p["vmid"],), lock="snapshot",
        )  # fmt: skip

    @route("GET", base + "/{vmid}/snapshot/{snapname}")
    def snapshot_dir(ctx: Ctx, p: dict) -> list:
        _snapshot(guest_of(ctx, p["node"], p["vmid"], kind), p["snapname"])
        return [{"rollback": {}}, {"config": {}}]

    @route("GET", base + "/{vmid}/snapshot/{snapname}/config")
    def snapshot_config(ctx: Ctx, p: dict) -> dict:
        return dict(_snapshot(guest_of(ctx, p["node"], p["vmid"], kind), p["snapname"])["config"])

    @route("PUT", base + "/{vmid}/snapshot/{snapname}/config")
    def snapshot_config_update(ctx: Ctx, p: dict) -> None:
        snap = _snapshot(guest_of(ctx, p["node"], p["vmid"], kind), p["snapname"])
        if "description" in p:
            snap["description"] = p["description"]
        ctx.state.changed()

    @route("POST", base + "/{vmid}/snapshot/{snapname}/rollback")
    def snapshot_rollback(ctx: Ctx, p: dict) -> str:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        _snapshot(g, p["snapname"])
        args = {"vmid": p["vmid"], "name": p["snapname"], "start": p.get("start", 0)}
        return ctx.state.engine.start(
            p["node"], f"{prefix}rollback", str(p["vmid"]), ctx.auth.authid, "snapshot_rollback", args,
            guests=(p["vmid"],), lock="rollback",
        )  # fmt: skip

    @route("DELETE", base + "/{vmid}/snapshot/{snapname}")
    def snapshot_delete(ctx: Ctx, p: dict) -> str:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        _snapshot(g, p["snapname"])
        args = {"vmid": p["vmid"], "name": p["snapname"]}
        return ctx.state.engine.start(
            p["node"], f"{prefix}delsnapshot", str(p["vmid"]), ctx.auth.authid, "snapshot_delete", args,
            guests=(p["vmid"],), lock="snapshot-delete",
        )  # fmt: skip


_VOLUME_KEY = re.compile(r"^(?:(?:scsi|sata|ide|virtio|efidisk|tpmstate|unused)\d+|rootfs|mp\d+)$")
# pve-storage src/PVE/Storage/*Plugin.pm volume_has_feature, 'snapshot' (stable-8): LVM-thin, ZFS, RBD and
# BTRFS snapshot any volume; directory-like storages (Plugin.pm) only qcow2 files; plain LVM and iSCSI none.
_SNAPSHOT_ANY = {"lvmthin", "zfspool", "zfs", "rbd", "btrfs"}
_SNAPSHOT_QCOW2 = {"dir", "nfs", "cifs", "glusterfs", "cephfs"}


def volumes(cfg: dict[str, Any]) -> dict[str, str]:
    """Config key -> volume ID of every disk (CD-ROMs, ``none`` and bind mounts are not volumes: qemu-server
    QemuConfig.pm has_feature skips drive_is_cdrom; a bind mount names a path, not STORAGE:VOLUME)."""
    out = {}
    for key, value in cfg.items():
        text = str(value)
        if not _VOLUME_KEY.match(key) or "media=cdrom" in text:
            continue
        volid = text.split(",")[0]
        if ":" in volid and not volid.startswith("/"):
            out[key] = volid
    return out


def snapshot_blockers(world: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """The volumes whose storage cannot snapshot them (pve-guest-common AbstractConfig.pm snapshot_prepare:
    'snapshot feature is not available')."""
    out = []
    for key, volid in volumes(cfg).items():
        if key.startswith("unused"):
            continue
        storage = world.get("storages", {}).get(volid.split(":")[0]) or {}
        kind = storage.get("type")
        if kind in _SNAPSHOT_ANY or (kind in _SNAPSHOT_QCOW2 and volid.endswith(".qcow2")):
            continue
        out.append(volid)
    return out


def _snapshot(g: dict[str, Any], name: str) -> dict[str, Any]:
    for s in g["snapshots"]:
        if s["name"] == name:
            return s
    raise ApiError(500, f"snapshot '{name}' does not exist")


# What a running guest takes at once; the rest waits in [PENDING] for the next start.
# qemu-server QemuServer.pm $fast_plug_option + cloud-init options ($confdesc_cloudinit) and
# vmconfig_hotplug_pending (net with the default hotplug 'network,disk,usb'; memory only with
# 'memory', vcpus only with 'cpu'; balloon unless it switches the balloon device on or off; cores and
# sockets never); pve-container LXC/Config.pm $LXC_FASTPLUG_OPTIONS (cores among them) and
# vmconfig_hotplug_pending (memory, swap, net, cpulimit, cpuunits).
_QEMU_FAST = {
    "description", "hookscript", "lock", "migrate_downtime", "migrate_speed", "name", "onboot",
    "protection", "shares", "startup", "tags", "vmstatestorage", "cicustom", "cipassword", "citype",
    "ciupgrade", "ciuser", "nameserver", "searchdomain", "sshkeys",
}  # fmt: skip
_LXC_HOT = {
    "description", "onboot", "startup", "protection", "hostname", "hookscript", "cores", "tags", "lock",
    "memory", "swap", "cpulimit", "cpuunits",
}  # fmt: skip


def _hot(kind: str, cfg: dict[str, Any], key: str, value: Any) -> bool:
    if kind == "lxc":
        return key in _LXC_HOT or key.startswith("net")
    if key in _QEMU_FAST or key.startswith("ipconfig") or key in ("cpuunits", "cpulimit", "agent"):
        return True
    features = str(cfg.get("hotplug", "network,disk,usb"))
    features = "network,disk,usb" if features == "1" else features
    if key.startswith("net"):
        return "network" in features
    if key == "memory":
        return "memory" in features
    if key == "vcpus":
        return "cpu" in features
    if key == "balloon":
        return (str(cfg.get("balloon", "1")) != "0") == (str(value) != "0")
    return False


def apply_pending(g: dict[str, Any]) -> None:
    """qemu-server QemuServer.pm vm_start -> vmconfig_apply_pending; pve-container LXC.pm vm_start
    and lxc-pve-poststop-hook: what waited is applied when the guest (re)starts or a CT stops."""
    pend = g.pop("pending", None) or {}
    for key in pend.pop("delete", []):
        g["config"].pop(key, None)
    g["config"].update(pend)
    _sync_memory(g)
    g["config"]["digest"] = config_digest(g["config"])


def _sync_memory(g: dict[str, Any]) -> None:
    if "memory" in g["config"]:
        g["maxmem"] = int(str(g["config"]["memory"]).split("=")[-1].split(",")[0]) * 1024**2


def _update_config(ctx: Ctx, g: dict[str, Any], p: dict[str, Any]) -> None:
    """A running guest gets the hot-pluggable changes at once and keeps the others pending (what
    qemu-server API2/Qemu.pm update_vm_api and pve-container LXC/Config.pm update_pct_config do:
    write [PENDING], then vmconfig_hotplug_pending); a stopped one gets everything."""
    cfg = g["config"]
    if p.get("digest") and p["digest"] != cfg.get("digest"):
        raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
    if g.get("lock") and not p.get("skiplock"):
        raise ApiError(500, f"VM is locked ({g['lock']})")
    running = g["status"] == "running"
    pend = g.setdefault("pending", {})
    for key in split_list(p.get("delete")):
        if running and not _hot(g["type"], cfg, key, None):
            pend.setdefault("delete", []).append(key)
        else:
            cfg.pop(key, None)
    for key, value in p.items():
        if key in _CONFIG_SKIP:
            continue
        if running and not _hot(g["type"], cfg, key, value):
            pend[key] = value
        else:
            cfg[key] = value
            pend.pop(key, None)
    if not pend:
        g.pop("pending", None)
    _sync_memory(g)
    cfg["digest"] = config_digest(cfg)
    ctx.state.changed()


def _precheck(kind: str, action: str, g: dict[str, Any], p: dict[str, Any]) -> None:
    """The checks the API handler makes before forking its worker: failing them is an immediate
    HTTP 500 with the message, not a failed task (what the worker itself dies of is a failed task).

    qemu-server src/PVE/API2/Qemu.pm vm_reset/vm_reboot/vm_suspend/vm_resume ("VM N not running",
    "VM is paused - cannot shutdown" in vm_shutdown/vm_reboot); pve-container
    src/PVE/API2/LXC/Status.pm vm_start/vm_resume ("CT N already running"),
    vm_stop/vm_shutdown/vm_suspend ("CT N not running") and vm_reboot ("VM N not running", sic).
    """
    vmid = p["vmid"]
    running = g["status"] == "running"
    paused = bool(g.get("paused"))
    if kind == "qemu":
        if action == "shutdown" and running and paused and not p.get("forceStop"):
            raise ApiError(500, "VM is paused - cannot shutdown")
        if action == "reboot" and running and paused:
            raise ApiError(500, "VM is paused - cannot shutdown")
        if action in ("reset", "reboot", "suspend") and not running:
            raise ApiError(500, f"VM {vmid} not running")
        if action == "resume" and not running and g.get("lock") != "suspended":
            raise ApiError(500, f"VM {vmid} not running")
        return
    if action in ("start", "resume") and running:
        raise ApiError(500, f"CT {vmid} already running")
    if action in ("stop", "shutdown", "suspend") and not running:
        raise ApiError(500, f"CT {vmid} not running")
    if action == "reboot" and not running:
        raise ApiError(500, f"VM {vmid} not running")


def _task_type(kind: str, prefix: str, action: str, p: dict[str, Any]) -> str:
    # qemu-server vm_suspend: "my $taskname = $todisk ? 'qmsuspend' : 'qmpause';"
    if kind == "qemu" and action == "suspend":
        return "qmsuspend" if p.get("todisk") else "qmpause"
    return f"{prefix}{action}"


def _register_power(kind: str, base: str, prefix: str, label: str, action: str) -> None:
    @route("POST", f"{base}/{{vmid}}/status/{action}")
    def power(ctx: Ctx, p: dict) -> str:
        g = guest_of(ctx, p["node"], p["vmid"], kind)
        _precheck(kind, action, g, p)
        if action in ("start", "stop", "shutdown") and ha.ha_resource(ctx.world, g) is not None:
            # vm_stop: crm-command stop with timeout 0; vm_shutdown: its timeout, default 60
            timeout = 0 if action == "stop" else (p.get("timeout") if p.get("timeout") is not None else 60)
            return ha.request(ctx, g, action, label, timeout)
        todisk = bool(kind == "qemu" and action == "suspend" and p.get("todisk"))
        args = {"vmid": p["vmid"], "action": action, "label": label, "kind": kind, "todisk": todisk}
        if kind == "qemu" and action == "shutdown" and g.get("paused") and p.get("forceStop"):
            args["action"] = "stop"  # vm_shutdown: "VM is paused - stop instead of shutdown" (a warning)
            args["warn"] = "VM is paused - stop instead of shutdown"
        log = {
            "start": [f"starting {label} {p['vmid']}"] if kind == "qemu" else [],
            "shutdown": [f"shutting down {label} {p['vmid']}"],
        }.get(action, [])
        # A VM suspended to disk carries the lock 'suspended', which start and resume may pass
        # (qemu-server QemuServer.pm vm_start: check_lock unless $has_suspended_lock).
        resumable = kind == "qemu" and action in ("start", "resume") and g.get("lock") == "suspended"
        return ctx.state.engine.start(
            p["node"], _task_type(kind, prefix, action, p), str(p["vmid"]), ctx.auth.authid, "power",
            args, log, guests=() if p.get("skiplock") or resumable else (p["vmid"],),
        )  # fmt: skip


@effect("power")
def _power(state: SimState, a: dict[str, Any]) -> list[str]:
    """What the worker does (its die is a failed task); qemu-server QemuServer.pm vm_start ("VM N
    already running", "you can't start a vm if it's a template"), _do_vm_stop (a stopped VM: nothing
    to do, task OK), vm_reboot (only if running), vm_resume (running: "job done"); pve-container
    Status.pm vm_suspend (lxc-checkpoint -s: checkpoint to /var/lib/vz/dump, the CT is stopped) and
    vm_resume (lxc-checkpoint -r: fails without a checkpoint)."""
    g = state.world["guests"].get(str(a["vmid"]))
    if g is None:
        raise TaskFailed(f"Configuration file for {a['label']} {a['vmid']} does not exist")
    running = g["status"] == "running"
    action, who, kind = a["action"], f"{a['label']} {a['vmid']}", a.get("kind", "qemu")
    lines = [f"WARN: {a['warn']}"] if a.get("warn") else []
    if action == "start" or (action == "resume" and kind == "qemu" and g.get("lock") == "suspended"):
        if g["template"]:
            raise TaskFailed(f"you can't start a {'vm' if kind == 'qemu' else 'CT'} if it's a template")
        if running:
            raise TaskFailed(f"{who} already running")
        g.update(status="running", started_at=time.time(), paused=False)
        if g.get("lock") == "suspended":
            g.pop("lock", None)
        else:
            apply_pending(g)
        return lines
    if action in ("stop", "shutdown"):
        g.update(status="stopped", started_at=None, paused=False)
        if kind == "lxc":
            apply_pending(g)
        return lines
    if action == "reboot":
        if running:
            g.update(started_at=time.time(), paused=False)
            apply_pending(g)
        return lines
    if action == "reset":
        if not running:
            raise TaskFailed(f"{who} not running")
        g.update(started_at=time.time(), paused=False)
        return lines
    if kind == "lxc":
        dump = "/var/lib/vz/dump"
        if action == "suspend":
            if not running:
                raise TaskFailed(f"{who} not running")
            g.update(status="stopped", started_at=None, paused=False, checkpoint=True)
            return lines
        if not g.get("checkpoint"):  # resume
            raise TaskFailed(
                f"command 'lxc-checkpoint -n {a['vmid']} -r --foreground -D {dump}' failed: exit code 1"
            )
        g.update(status="running", started_at=time.time(), checkpoint=False)
        return lines
    if not running:
        raise TaskFailed(f"{who} not running")
    if action == "suspend":
        if a.get("todisk"):
            g.update(status="stopped", started_at=None, paused=False, lock="suspended")
            return [*lines, "State saved, quitting"]
        g["paused"] = True
    elif action == "resume":
        g["paused"] = False
    return lines


@effect("snapshot_create")
def _snapshot_create(state: SimState, a: dict[str, Any]) -> list[str]:
    g = state.world["guests"][str(a["vmid"])]
    # pve-guest-common src/PVE/AbstractConfig.pm snapshot_prepare, in this order
    if g["config"].get("template"):
        raise TaskFailed("you can't take a snapshot if it's a template")
    if any(s["name"] == a["name"] for s in g["snapshots"]):
        raise TaskFailed(f"snapshot name '{a['name']}' already used")
    if snapshot_blockers(state.world, g["config"]):
        raise TaskFailed("snapshot feature is not available")
    snap: dict[str, Any] = {"name": a["name"], "description": a["description"], "snaptime": int(time.time())}
    parent = g.get("parent") or (g["snapshots"][-1]["name"] if g["snapshots"] else None)
    if parent:
        snap["parent"] = parent
    if g["type"] == "qemu":
        snap["vmstate"] = int(bool(a.get("vmstate")) and g["status"] == "running")
    snap["config"] = {k: v for k, v in g["config"].items() if k != "digest"}
    data = g.setdefault("disk_data", {})  # what each volume holds (SimState.write_disk changes it)
    snap["disk_data"] = {v: data.get(v, 0) for v in volumes(snap["config"]).values()}
    g["snapshots"].append(snap)
    g["parent"] = a["name"]
    return [f"snapshotting '{a['name']}'"]


@effect("snapshot_rollback")
def _snapshot_rollback(state: SimState, a: dict[str, Any]) -> list[str]:
    g = state.world["guests"][str(a["vmid"])]
    snap = next((s for s in g["snapshots"] if s["name"] == a["name"]), None)
    if snap is None:
        raise TaskFailed(f"snapshot '{a['name']}' does not exist")
    if g["config"].get("template"):
        raise TaskFailed("you can't rollback if vm is a template")
    g["config"] = _rollback_config(g["config"], snap["config"], g["type"])
    # each volume returns to its state at the snapshot (PVE::Storage::volume_snapshot_rollback), size included
    data = g.setdefault("disk_data", {})
    for volid in volumes(snap["config"]).values():
        data[volid] = snap.get("disk_data", {}).get(volid, 0)
    boot = next((g["config"][k] for k in BOOT_KEYS if k in g["config"]), None)
    if boot and (m := re.search(r"(?:^|,)size=(\d+)([KMGT])?", str(boot))):
        g["maxdisk"] = int(m[1]) * {None: 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m[2]]
    g.pop("pending", None)  # pve-guest-common AbstractConfig.pm __snapshot_apply_config: a new config
    g["parent"] = a["name"]
    if snap.get("vmstate") or a.get("start"):
        g.update(status="running", started_at=time.time(), paused=False)
    else:
        g.update(status="stopped", started_at=None, paused=False)
    return [f"rolling back to snapshot '{a['name']}'"]


BOOT_KEYS = ("scsi0", "virtio0", "sata0", "ide0", "rootfs")


def _rollback_config(current: dict[str, Any], snap: dict[str, Any], kind: str) -> dict[str, Any]:
    """pve-guest-common src/PVE/AbstractConfig.pm snapshot_rollback: the volumes of the current config that
    the snapshot does not use become unusedN (qemu-server QemuConfig.pm / pve-container LXC/Config.pm
    __snapshot_rollback_get_unused, add_unused_volume); then __snapshot_apply_config keeps the current
    description and unusedN keys and copies everything else from the snapshot (__snapshot_copy_config).
    qemu-server QemuConfig.pm __snapshot_rollback_hook gives the VM a new vmgenid."""
    keep = {k: v for k, v in current.items() if k == "description" or k.startswith("unused")}
    in_snap = set(volumes(snap).values())
    for volid in volumes(current).values():
        if volid in in_snap or volid in keep.values():
            continue
        n = 0
        while f"unused{n}" in keep:
            n += 1
        keep[f"unused{n}"] = volid
    skip = {"description", "digest", "lock", "snapstate", "snaptime", "vmstate"}
    cfg = {k: v for k, v in snap.items() if k not in skip and not k.startswith("unused")} | keep
    if kind == "qemu" and cfg.get("vmgenid"):
        cfg["vmgenid"] = str(uuid.uuid4())
    cfg["digest"] = config_digest(cfg)
    return cfg


@effect("snapshot_delete")
def _snapshot_delete(state: SimState, a: dict[str, Any]) -> list[str]:
    g = state.world["guests"][str(a["vmid"])]
    snap = next((s for s in g["snapshots"] if s["name"] == a["name"]), None)
    if snap is None:
        raise TaskFailed(f"snapshot '{a['name']}' does not exist")
    for s in g["snapshots"]:
        if s.get("parent") == a["name"]:
            if snap.get("parent"):
                s["parent"] = snap["parent"]
            else:
                s.pop("parent", None)
    if g.get("parent") == a["name"]:
        g["parent"] = snap.get("parent")
    g["snapshots"].remove(snap)
    return [f"deleting snapshot '{a['name']}'"]


@effect("destroy")
def _destroy(state: SimState, a: dict[str, Any]) -> list[str]:
    g = state.world["guests"].pop(str(a["vmid"]), None)
    if g is None:
        raise TaskFailed(f"Configuration file for {a['vmid']} does not exist")
    if a.get("purge"):
        state.world["acls"] = [e for e in state.world["acls"] if e["path"] != f"/vms/{a['vmid']}"]
        state.changed(access=True)
    return [
        f'  Logical volume "vm-{a["vmid"]}-disk-0" successfully removed.',
        f"purging {a['vmid']} from related configurations..",
    ]


@effect("clone")
def _clone(state: SimState, a: dict[str, Any]) -> list[str]:
    src = state.world["guests"].get(str(a["vmid"]))
    if src is None:
        raise TaskFailed(f"unable to find configuration file for {a['vmid']}")
    if str(a["newid"]) in state.world["guests"]:
        raise TaskFailed(f"unable to create VM {a['newid']}: config file already exists")
    new = json.loads(json.dumps(src))
    cfg = new["config"]
    cfg["name" if new["type"] == "qemu" else "hostname"] = a["name"]
    # every disk of the clone is a new volume vm-NEWID-disk-N, also when the source is a template whose
    # disks are base-VMID-disk-N: a full clone allocates it (qemu-server PVE/QemuServer.pm clone_disk ->
    # vdisk_alloc), a linked one on lvmthin names it with find_free_diskname (pve-storage
    # LvmThinPlugin.pm clone_image)
    for key, value in list(cfg.items()):
        if isinstance(value, str):
            for old in (f"vm-{a['vmid']}-disk", f"base-{a['vmid']}-disk"):
                value = value.replace(old, f"vm-{a['newid']}-disk")
            cfg[key] = value
    if a.get("description"):
        cfg["description"] = a["description"]
    cfg.pop("template", None)
    cfg["digest"] = config_digest(cfg)
    new.update(
        vmid=a["newid"], node=a["target"], status="stopped", started_at=None, template=0,
        snapshots=[], pool=a.get("pool"), parent=None, paused=False,
    )  # fmt: skip
    new.pop("lock", None)
    state.world["guests"][str(a["newid"])] = new
    state.changed(access=bool(a.get("pool")))
    return [f"create full clone of drive scsi0 (local-lvm:vm-{a['vmid']}-disk-0)"]


@effect("migrate")
def _migrate(state: SimState, a: dict[str, Any]) -> list[str]:
    g = state.world["guests"].get(str(a["vmid"]))
    if g is None:
        raise TaskFailed(f"Configuration file for {a['vmid']} does not exist")
    source = g["node"]
    g["node"] = a["target"]
    state.world["layout"] = state.world.get("layout", 0) + 1
    return [
        f"starting migration of VM {a['vmid']} to node '{a['target']}'",
        f"migration finished ({source} -> {a['target']})",
    ]


_register("qemu")
_register("lxc")
