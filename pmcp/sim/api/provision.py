"""Growing disks, turning guests into templates, migration preconditions and restoring backups.

Each handler follows the Proxmox source it cites: which failures are an immediate HTTP 500 (checks run
before `fork_worker`) and which are a failed task (checks inside the worker).
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from pmcp.sim.api.common import Ctx, guest_of, node_of
from pmcp.sim.api.storage import storage_of
from pmcp.sim.errors import ApiError, TaskFailed, perm_error
from pmcp.sim.generate import config_digest
from pmcp.sim.routes import route
from pmcp.sim.state import SimState
from pmcp.sim.tasks import effect

SIZE_RE = re.compile(r"^(\+)?(\d+(?:\.\d+)?)([KMGT])?$")
UNITS = {None: 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
DISK_RE = re.compile(r"^(?:(?:scsi|sata|ide|virtio|efidisk|tpmstate)\d+|rootfs|mp\d+)$")
BOOT_DISKS = ("scsi0", "virtio0", "sata0", "ide0", "rootfs")


def _size_of(value: str) -> int | None:
    m = re.search(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT])?", value)
    return int(float(m[1]) * UNITS[m[2]]) if m else None


def _human(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return str(size)


# --- resize ---------------------------------------------------------------------------------------


def _register_resize(kind: str) -> None:
    @route("PUT", f"/nodes/{{node}}/{kind}/{{vmid}}/resize")
    def resize(ctx: Ctx, p: dict) -> str:
        """qemu-server PVE/API2/Qemu.pm resize_vm and pve-container PVE/API2/LXC.pm resize_vm: every
        check (disk exists, not a cdrom, no shrinking, lock) runs inside the 'resize' worker, so a bad
        request is a failed task, not an HTTP error; an equal size ends OK without a change."""
        guest_of(ctx, p["node"], p["vmid"], kind)
        if p.get("skiplock") and ctx.auth.authid != "root@pam":
            raise ApiError(
                400, "Parameter verification failed.", {"skiplock": "Only root may use this option."}
            )
        args = {"vmid": p["vmid"], "disk": p["disk"], "size": p["size"], "digest": p.get("digest")}
        log = [f"update VM {p['vmid']}: resize --disk {p['disk']} --size {p['size']}"]
        return ctx.state.engine.start(
            p["node"], "resize", str(p["vmid"]), ctx.auth.authid, "resize", args, log
        )


@effect("resize")
def _resize(state: SimState, a: dict[str, Any]) -> list[str]:
    g = state.world["guests"].get(str(a["vmid"]))
    if g is None:
        raise TaskFailed(f"Configuration file for {a['vmid']} does not exist")
    cfg = g["config"]
    if a.get("digest") and a["digest"] != cfg.get("digest"):
        raise TaskFailed("checksum mismatch (file change by other user?)")
    if g.get("lock"):
        raise TaskFailed(f"VM is locked ({g['lock']})")
    disk = a["disk"]
    value = cfg.get(disk)
    if not value or not DISK_RE.match(disk):
        raise TaskFailed(f"disk '{disk}' does not exist")
    if "media=cdrom" in str(value):
        raise TaskFailed("you can't resize a cdrom")
    size = _size_of(str(value))
    if size is None:
        raise TaskFailed(f"Could not determine current size of volume '{str(value).split(',')[0]}'")
    m = SIZE_RE.match(str(a["size"]))
    if not m:
        raise TaskFailed("internal error")
    new = int(float(m[2]) * UNITS[m[3]]) + (size if m[1] else 0)
    if new < size:
        raise TaskFailed("shrinking disks is not supported")
    if new == size:
        return []
    cfg[disk] = re.sub(r"size=[^,]+", f"size={_human(new)}", str(value))
    cfg["digest"] = config_digest(cfg)
    if disk in BOOT_DISKS:
        g["maxdisk"] = new
    state.changed()
    return [f"Image resized to {new} bytes"]


# --- templates ------------------------------------------------------------------------------------


@route("POST", "/nodes/{node}/qemu/{vmid}/template")
def qemu_template(ctx: Ctx, p: dict) -> str:
    """qemu-server PVE/API2/Qemu.pm 'template': $load_and_check runs before fork_worker('qmtemplate')."""
    g = guest_of(ctx, p["node"], p["vmid"], "qemu")
    _template_checks(g, "VM")
    return ctx.state.engine.start(
        p["node"], "qmtemplate", str(p["vmid"]), ctx.auth.authid, "template", {"vmid": p["vmid"]}
    )


@route("POST", "/nodes/{node}/lxc/{vmid}/template")
def lxc_template(ctx: Ctx, p: dict) -> None:
    """pve-container PVE/API2/LXC.pm 'template': synchronous (returns null), same checks."""
    g = guest_of(ctx, p["node"], p["vmid"], "lxc")
    _template_checks(g, "CT")
    _make_template(ctx.state, g)


def _template_checks(g: dict[str, Any], label: str) -> None:
    if g.get("lock"):
        raise ApiError(500, f"{label} is locked ({g['lock']})")
    if g["snapshots"]:
        raise ApiError(500, f"unable to create template, because {label} contains snapshots")
    if g["template"]:
        raise ApiError(500, "you can't convert a template to a template")
    if g["status"] == "running":
        raise ApiError(500, f"you can't convert a {label} to template if {label} is running")


def _make_template(state: SimState, g: dict[str, Any]) -> None:
    g["template"] = 1
    g["config"]["template"] = 1
    for key, value in list(g["config"].items()):
        if isinstance(value, str):
            g["config"][key] = value.replace(f"vm-{g['vmid']}-disk", f"base-{g['vmid']}-disk")
    g["config"]["digest"] = config_digest(g["config"])
    state.changed()


@effect("template")
def _template(state: SimState, a: dict[str, Any]) -> list[str]:
    g = state.world["guests"].get(str(a["vmid"]))
    if g is None:
        raise TaskFailed(f"Configuration file for {a['vmid']} does not exist")
    _make_template(state, g)
    return [f'  Renamed "vm-{a["vmid"]}-disk-0" to "base-{a["vmid"]}-disk-0" in volume group "pve"']


# --- migration precondition -----------------------------------------------------------------------


@route("GET", "/nodes/{node}/qemu/{vmid}/migrate")
def migrate_precondition(ctx: Ctx, p: dict) -> dict:
    """qemu-server PVE/API2/Qemu.pm migrate_vm_precondition: running state, nodes that may take the VM
    (online, not this one), and local resources (local disks, passthrough) that block migration."""
    g = guest_of(ctx, p["node"], p["vmid"], "qemu")
    online = [
        n
        for n, info in ctx.world["nodes"].items()
        if n != p["node"] and info.get("status", "online") == "online"
    ]
    local_disks = []
    for key, value in g["config"].items():
        if DISK_RE.match(key) and isinstance(value, str) and value.split(":")[0] in ("local", "local-lvm"):
            local_disks.append(
                {
                    "volid": value.split(",")[0],
                    "drivename": key,
                    "size": _size_of(value) or 0,
                    "cdrom": int("media=cdrom" in value),
                    "is_unused": int(key.startswith("unused")),
                }
            )
    local_resources = [k for k in g["config"] if re.match(r"^(hostpci|usb)\d+$", k)]
    out: dict[str, Any] = {
        "running": int(g["status"] == "running"),
        "allowed_nodes": [] if local_resources else online,
        "not_allowed_nodes": {},
        "local_disks": local_disks,
        "local_resources": local_resources,
        "mapped-resources": [],
        "mapped-resource-info": {},
    }
    if str(ctx.world.get("pve_version", "9")).startswith("9"):
        out["has-dbus-vmstate"] = 0  # PVE 9 (schema 9.1): a running VM's D-Bus VMstate helper
    return out


# --- restore --------------------------------------------------------------------------------------


def _archive(ctx: Ctx, volid: str, kind: str) -> dict[str, Any]:
    """pve-storage PVE/Storage.pm check_volume_access for a backup: Datastore.AllocateSpace on the
    storage and VM.Backup on the guest it belongs to (or Datastore.Allocate), else 403."""
    sid = volid.split(":", 1)[0]
    storage_of(ctx, sid)
    for key, items in ctx.world["content"].items():
        if key.split("/")[-1] != sid:
            continue
        for item in items:
            if item["volid"] == volid and item.get("content") == "backup":
                if not ctx.has(f"/storage/{sid}", "Datastore.Allocate"):
                    ctx.require(f"/storage/{sid}", "Datastore.AllocateSpace")
                    ctx.require(f"/vms/{item['vmid']}", "VM.Backup")
                if item.get("subtype") != kind:
                    what = "qemu" if kind == "qemu" else "lxc"
                    raise ApiError(500, f"archive '{volid}' is not a {what} backup")
                return item
    raise ApiError(500, f"volume '{volid}' does not exist")


def _restore_perms(ctx: Ctx, p: dict) -> None:
    """qemu-server create_vm: VM.Allocate on the new /vms/{vmid} (or on the pool), Datastore.AllocateSpace
    on the target storage; otherwise 403."""
    if p.get("storage"):
        ctx.require(f"/storage/{p['storage']}", "Datastore.AllocateSpace")
    if ctx.has(f"/vms/{p['vmid']}", "VM.Allocate"):
        return
    if p.get("pool") and ctx.has(f"/pool/{p['pool']}", "VM.Allocate"):
        return
    raise perm_error(f"/vms/{p['vmid']}, VM.Allocate")


def _restore(ctx: Ctx, p: dict, kind: str, volid: str) -> str:
    node_of(ctx, p["node"])
    _restore_perms(ctx, p)
    item = _archive(ctx, volid, kind)
    label, verb = ("VM", "qmrestore") if kind == "qemu" else ("CT", "vzrestore")
    existing = ctx.world["guests"].get(str(p["vmid"]))
    if existing is not None:
        if not p.get("force"):
            where = existing["node"]
            raise ApiError(
                500,
                f"unable to restore {label} {p['vmid']} - "
                f"{label} {p['vmid']} already exists on node '{where}'",
            )
        if existing["config"].get("protection"):
            raise ApiError(500, f"unable to restore {label} {p['vmid']} - protection mode enabled")
        if existing["status"] == "running":
            raise ApiError(500, f"unable to restore {label} {p['vmid']} - vm is running")
    args = {
        "vmid": p["vmid"],
        "node": p["node"],
        "volid": volid,
        "source": item["vmid"],
        "kind": kind,
        "storage": p.get("storage"),
        "unique": p.get("unique", 0),
        "start": p.get("start", 0),
    }
    return ctx.state.engine.start(
        p["node"], verb, str(p["vmid"]), ctx.auth.authid, "restore", args,
        [f"restore vma archive: {volid}"], lock="create",
    )  # fmt: skip


# --- create ---------------------------------------------------------------------------------------

# qemu-server API2/Qemu.pm $check_vm_modify_config_perm: the privilege each config key needs on the new
# guest (disks, cdrom and tags are checked elsewhere; unknown keys are root@pam's alone).
_QEMU_KEY_PRIVS = {
    **dict.fromkeys(("cores", "cpu", "cpulimit", "cpuunits", "numa", "sockets", "vcpus"), "VM.Config.CPU"),
    **dict.fromkeys(("memory", "balloon", "shares"), "VM.Config.Memory"),
    **dict.fromkeys(("acpi", "hotplug", "kvm", "machine", "scsihw", "smbios1", "tablet", "vga"),
                    "VM.Config.HWType"),
    **dict.fromkeys(("agent", "bios", "description", "name", "onboot", "ostype", "protection"),
                    "VM.Config.Options"),
    **dict.fromkeys(("boot", "bootdisk"), "VM.Config.Disk"),
    **dict.fromkeys(("ciuser", "cipassword", "sshkeys", "nameserver", "searchdomain"), "VM.Config.Cloudinit"),
}  # fmt: skip
_CREATE_META = {"node", "vmid", "start", "pool", "storage", "unique", "force", "archive", "restore"}
_ALLOC_RE = re.compile(r"^(?P<storage>[a-zA-Z][a-zA-Z0-9._-]*):(?P<size>\d+)(?:,|$)")


def _create_perms(ctx: Ctx, p: dict, kind: str) -> None:
    """VM.Allocate on the new guest (or its pool), then each key's privilege (qemu-server create_vm ->
    $check_vm_modify_config_perm; pve-container create_vm -> PVE::LXC::check_ct_modify_config_perm),
    Datastore.AllocateSpace where a disk is allocated, the ISO or template readable
    (PVE::Storage::check_volume_access), SDN.Use on the bridge (PVE::GuestHelpers check_vnet_access)."""
    _restore_perms(ctx, p)
    vm = f"/vms/{p['vmid']}"
    for key, value in p.items():
        if key in _CREATE_META:
            continue
        text = str(value)
        if kind == "qemu" and key in _QEMU_KEY_PRIVS:
            ctx.require(vm, _QEMU_KEY_PRIVS[key])
        elif kind == "lxc" and key in ("cores", "cpulimit", "cpuunits"):
            ctx.require(vm, "VM.Config.CPU")
        elif kind == "lxc" and key in ("memory", "swap"):
            ctx.require(vm, "VM.Config.Memory")
        elif key.startswith("net"):
            ctx.require(vm, "VM.Config.Network")
            bridge = re.search(r"(?:^|,)bridge=([^,]+)", text)
            if bridge:
                ctx.require(f"/sdn/zones/localnetwork/{bridge[1]}", "SDN.Use")
        elif DISK_RE.match(key) and (m := _ALLOC_RE.match(text)):
            storage_of(ctx, m["storage"])
            ctx.require(f"/storage/{m['storage']}", "Datastore.AllocateSpace")
            ctx.require(vm, "VM.Config.Disk")
        elif key in ("ostemplate", "ide2") and ":" in text and not text.startswith("none"):
            _volume(ctx, text.split(",")[0])
            if key == "ide2":
                ctx.require(vm, "VM.Config.CDROM")


def _volume(ctx: Ctx, volid: str) -> dict[str, Any]:
    """An ISO or container template: readable with Datastore.Audit or AllocateSpace on its storage
    (pve-storage Storage.pm check_volume_access), else 403; missing -> 500 as PVE says it."""
    sid = volid.split(":", 1)[0]
    storage_of(ctx, sid)
    if not ctx.has(f"/storage/{sid}", "Datastore.Audit", "Datastore.AllocateSpace"):
        raise perm_error(f"/storage/{sid}, Datastore.Audit|Datastore.AllocateSpace")
    for key, items in ctx.world["content"].items():
        if key.split("/")[-1] == sid:
            for item in items:
                if item["volid"] == volid:
                    return item
    raise ApiError(500, f"volume '{volid}' does not exist")


def _create(ctx: Ctx, p: dict, kind: str) -> str:
    node_of(ctx, p["node"])
    _create_perms(ctx, p, kind)
    label = "VM" if kind == "qemu" else "CT"
    existing = ctx.world["guests"].get(str(p["vmid"]))
    if existing is not None:  # qemu-server create_vm / pve-container create_vm, before the worker
        raise ApiError(
            500, f"unable to create {label} {p['vmid']} - {label} {p['vmid']} already exists on node "
            f"'{existing['node']}'",
        )  # fmt: skip
    if kind == "lxc" and not str(p.get("ostemplate", "")).split(":", 1)[-1].startswith("vztmpl/"):
        raise ApiError(400, "Parameter verification failed.", {"ostemplate": "not a container template"})
    config = {k: v for k, v in p.items() if k not in _CREATE_META and k != "ostemplate"}
    verb = "qmcreate" if kind == "qemu" else "vzcreate"
    args = {"vmid": p["vmid"], "node": p["node"], "kind": kind, "config": config, "start": p.get("start", 0),
            "pool": p.get("pool")}  # fmt: skip
    return ctx.state.engine.start(
        p["node"], verb, str(p["vmid"]), ctx.auth.authid, "create", args, [f"create {label} {p['vmid']}"],
        lock="create",
    )  # fmt: skip


@route("POST", "/nodes/{node}/qemu")
def create_qemu(ctx: Ctx, p: dict) -> str:
    """qemu-server create_vm: a restore with `archive`, else a new VM from its config keys."""
    if p.get("archive"):
        return _restore(ctx, p, "qemu", p["archive"])
    return _create(ctx, p, "qemu")


@route("POST", "/nodes/{node}/lxc")
def create_lxc(ctx: Ctx, p: dict) -> str:
    """pve-container create_vm: restore=1 restores the backup named by `ostemplate`, else a new
    container from the template `ostemplate`. Privileged containers need Sys.Modify on / (schema)."""
    if p.get("restore"):
        return _restore(ctx, p, "lxc", p["ostemplate"])
    if not p.get("unprivileged"):
        ctx.require("/", "Sys.Modify")
    return _create(ctx, p, "lxc")


@effect("create")
def _create_effect(state: SimState, a: dict[str, Any]) -> list[str]:
    """The worker allocates each `STORAGE:SIZE` disk as vm-VMID-disk-N (size in GiB) and writes the config."""
    cfg: dict[str, Any] = {}
    maxdisk, n = 0, 0
    for key, value in a["config"].items():
        text = str(value)
        if DISK_RE.match(key) and (m := _ALLOC_RE.match(text)):
            rest = text[m.end() :]
            text = f"{m['storage']}:vm-{a['vmid']}-disk-{n},{rest + ',' if rest else ''}size={m['size']}G"
            maxdisk += int(m["size"]) * UNITS["G"]
            n += 1
        cfg[key] = text if isinstance(value, str) or text != str(value) else value
    cfg["digest"] = config_digest(cfg)
    mem = int(str(cfg.get("memory", 512 if a["kind"] == "lxc" else 2048)).split("=")[-1])
    start = bool(a.get("start"))
    state.world["guests"][str(a["vmid"])] = {
        "vmid": a["vmid"], "type": a["kind"], "node": a["node"], "status": "running" if start else "stopped",
        "pool": a.get("pool"), "template": 0, "config": cfg, "snapshots": [], "maxmem": mem * 1024**2,
        "maxdisk": maxdisk, "cpu_load": 0.01 if start else 0, "mem_ratio": 0.2, "disk_ratio": 0.1,
        "uptime": 0, "netin": 0, "netout": 0, "started_at": time.time() if start else None,
    }  # fmt: skip
    state.changed(access=bool(a.get("pool")))
    return [f"{a['kind']} {a['vmid']} created"]


@effect("restore")
def _restore_effect(state: SimState, a: dict[str, Any]) -> list[str]:
    world = state.world
    saved = world.get("backup_configs", {}).get(a["volid"])
    source = world["guests"].get(str(a["source"]))
    if saved is None and source is None:
        raise TaskFailed(f"unable to read the configuration in archive '{a['volid']}'")
    template = copy.deepcopy(saved or source)
    cfg = template["config"]
    for key, value in list(cfg.items()):
        if isinstance(value, str):
            value = value.replace(f"vm-{a['source']}-disk", f"vm-{a['vmid']}-disk")
            value = value.replace(f"base-{a['source']}-disk", f"vm-{a['vmid']}-disk")
            if a.get("storage") and DISK_RE.match(key):
                value = re.sub(r"^[^:]+:", f"{a['storage']}:", value)
            cfg[key] = value
    cfg.pop("template", None)
    cfg["digest"] = config_digest(cfg)
    start = bool(a.get("start"))
    template.update(
        vmid=a["vmid"], node=a["node"], status="running" if start else "stopped",
        started_at=time.time() if start else None, template=0, snapshots=[], parent=None, paused=False,
    )  # fmt: skip
    template.pop("lock", None)
    world["guests"][str(a["vmid"])] = template
    state.changed()
    return [f"restore of '{a['volid']}' to {a['vmid']} finished"]


_register_resize("qemu")
_register_resize("lxc")
