"""Every way to make a guest in one tool: clone a template, restore a backup to a new VMID, a container
from a CT template, a VM from an ISO or blank. One tool with a `source` argument instead of four (issue
14: what a model reads of tools/list stays small); each source takes only the arguments that apply and
names the others it was given.

All four create, so all four answer with a plan first (what, where, how much) and act with confirm=true.
They need VM.Allocate on the new guest, which in Proxmox also allows deleting it (qemu-server
API2/Qemu.pm destroy_vm), so this is an admin tool. New guests get sane defaults: VMs 2 cores, 2048 MiB,
32 GiB (virtio-scsi, guest agent on, l26), containers 1 core, 512 MiB, 8 GiB, unprivileged (a
privileged one needs Sys.Modify on /, which pmcp never holds), net0 on vmbr0 with DHCP.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field

from pmcp.server import validate
from pmcp.server.config import Mode
from pmcp.server.policy import Risk
from pmcp.server.proxmox import ProxmoxError
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    ActionResult,
    Confirm,
    Guest,
    Node,
    StorageId,
    check_may_create,
    gate,
    guest_label,
    guest_path,
    resolve_guest,
    task_result,
)
from pmcp.server.tools.configure import BRIDGE_PATTERN, IPCONFIG_RE, cloudinit_params
from pmcp.server.tools.provision import GIB, Name, WaitLong, _after, _disks, _next_id, _size_of

VOLUME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9._-]*:(?:backup|iso|vztmpl)/[A-Za-z0-9._+-]+$"


def _given(**values: Any) -> list[str]:
    return [k for k, v in values.items() if v not in (None, False, [])]


def _refuse(source: str, names: list[str]) -> None:
    if names:
        raise validate.InvalidArgument(f"{', '.join(names)}: not used when creating {source}")


@tool(Risk.CHANGE, "Create a guest", ActionResult, mode=Mode.ADMIN)
async def create_guest(
    call: Call,
    source: Annotated[
        int | Annotated[str, Field(pattern=VOLUME_PATTERN)] | None,
        Field(
            description="A template's VMID (clone), a backup volume (restore to a new VMID), a CT "
            "template volume (new container) or an ISO volume (new VM); none: a blank VM",
        ),
    ] = None,
    name: Name | None = None,
    node: Node | None = None,
    newid: Annotated[int | None, Field(ge=100, le=999_999_999, description="Default: next free")] = None,
    storage: StorageId | None = None,
    full: Annotated[bool | None, Field(description="Clone: full copy (default) or linked")] = None,
    cores: Annotated[int | None, Field(ge=1, le=512)] = None,
    memory_mib: Annotated[int | None, Field(ge=16, le=4_194_304)] = None,
    disk_gib: Annotated[int | None, Field(ge=1, le=65_536)] = None,
    bridge: Annotated[str | None, Field(pattern=BRIDGE_PATTERN)] = None,
    ciuser: Annotated[str | None, Field(description="Clone: cloud-init user")] = None,
    ssh_keys: Annotated[list[str] | None, Field(description="SSH public keys (clone, container)")] = None,
    ipconfig0: Annotated[
        str | None, Field(description="'ip=dhcp' or 'ip=A/N,gw=G' (clone, container)")
    ] = None,
    start_after: bool = False,
    confirm: Confirm = False,
    wait_seconds: WaitLong = None,
) -> Reply:
    """Create a VM or container: clone a template, restore a backup to a NEW VMID, a CT from a CT template,
    a VM from an ISO or blank. Without confirm=true: the plan."""
    check_may_create(call)  # a scoped client's new guest would be outside its scope
    hw = _given(cores=cores, memory_mib=memory_mib, disk_gib=disk_gib, bridge=bridge)
    if isinstance(source, int):
        _refuse("a clone (it copies its source's hardware)", hw + _given(start_after=start_after))
        return await _clone(call, validate.vmid(source), name, newid, node, full, storage, ciuser,
                            ssh_keys, ipconfig0, confirm, wait_seconds)  # fmt: skip
    _refuse("anything but a clone", _given(full=full, ciuser=ciuser))
    if source is not None and ":backup/" in source:
        _refuse("a restore (the backup holds its hardware)", hw + _given(name=name, ssh_keys=ssh_keys,
                ipconfig0=ipconfig0))  # fmt: skip
        return await _restore(call, source, node, newid, storage, start_after, confirm, wait_seconds)
    if name is None or node is None:
        raise validate.InvalidArgument("name, node: a new guest needs both")
    ct = source is not None and ":vztmpl/" in source
    if not ct:
        _refuse(
            "a VM from an ISO or blank (no cloud-init drive)", _given(ssh_keys=ssh_keys, ipconfig0=ipconfig0)
        )
    return await _new(call, source, ct, name, validate.node(node), newid, storage, cores, memory_mib,
                      disk_gib, bridge, ssh_keys, ipconfig0, start_after, confirm, wait_seconds)  # fmt: skip


async def _clone(
    call: Call, vmid: int, name: str | None, newid: int | None, target_node: str | None, full: bool | None,
    storage: str | None, ciuser: str | None, ssh_keys: list[str] | None, ipconfig0: str | None,
    confirm: bool, wait_seconds: int | None,
) -> Reply:  # fmt: skip
    if name is None:
        raise validate.InvalidArgument("name: the clone needs a name")
    src = await resolve_guest(call, vmid)
    config = await call.px.get(guest_path(src, "config")) or {}
    ci = cloudinit_params(ciuser, ssh_keys, ipconfig0)
    if src.type == "lxc" and ci:
        raise validate.InvalidArgument("ciuser, ssh_keys and ipconfig0 are cloud-init settings of VMs")
    linked = full is False
    if linked and not src.template:
        raise validate.InvalidArgument(
            f"full: a linked clone needs a template; {guest_label(src)} is not one"
        )
    if not src.template and src.status == "running" and src.type == "lxc":
        raise validate.InvalidArgument(f"{guest_label(src)} is running: stop it or clone from a snapshot")
    new = validate.vmid(newid) if newid is not None else await _next_id(call)
    target = validate.node(target_node) if target_node else src.node
    size = sum(_size_of(v) for v in _disks(config).values())
    where = f"storage {validate.storage(storage)}" if storage else "the source's storage"
    space = "shared with the template" if linked else f"{size / GIB:.1f} GiB"
    effect = (
        f"{'linked' if linked else 'full'} clone of {guest_label(src)} as {new} '{name}' "
        f"on node {target}, disks on {where} ({space})"
    )
    if ci:
        effect += "; then cloud-init: " + ", ".join(
            "SSH keys" if k == "sshkeys" else f"{k} {v}" for k, v in ci.items()
        )
    stop = await gate(call, src, f"clone {src.vmid} to {new}", effect, f"delete_guest {new}", confirm)
    if stop is not None:
        return stop
    params: dict[str, Any] = {"newid": new, "target": target}
    params["name" if src.type == "qemu" else "hostname"] = name
    if storage and not linked:
        params["storage"] = validate.storage(storage)
    # qemu-server clone_vm: `full // !is_template` — a template clones LINKED unless told otherwise
    params["full"] = not linked
    upid = await call.px.post(guest_path(src, "clone"), **params)
    outcome = await call.wait(str(upid), wait_seconds)
    clone = Guest(vmid=new, name=name, node=target, type=src.type, status="stopped")
    if outcome.outcome == "ok" and ci:
        await call.px.put(guest_path(clone, "config"), **ci)
    result, text = task_result(f"clone {src.vmid} to {new} of", clone, outcome)
    if outcome.outcome == "ok":
        result.guest = await _after(call, clone)
    return Reply(result, text)


async def _restore(
    call: Call, volume: str, node: str | None, newid: int | None, storage: str | None, start_after: bool,
    confirm: bool, wait_seconds: int | None,
) -> Reply:  # fmt: skip
    m = re.search(r"vzdump-(qemu|lxc)-(\d+)-", volume)
    if not m:
        raise validate.InvalidArgument("source: not a vzdump backup name (vzdump-qemu-… or vzdump-lxc-…)")
    if node is None:
        raise validate.InvalidArgument("node: name the node to restore on")
    kind, origin = m[1], int(m[2])
    node = validate.node(node)
    new = validate.vmid(newid) if newid is not None else await _next_id(call)
    if any(g.get("vmid") == new for g in await call.rt.locator.listing(call.px)):
        raise validate.InvalidArgument(
            f"newid: {new} exists; restoring over a guest is not offered. Pick a free VMID (or omit newid)"
        )
    label = "VM" if kind == "qemu" else "container"
    effect = f"backup {volume} (of {origin}) is restored as {label} {new} on {node}"
    effect += (
        f", disks on storage {validate.storage(storage)}" if storage else ", disks on their original storage"
    )
    stop = await gate(call, None, f"restore to {new}", effect, f"delete_guest {new}", confirm)
    if stop is not None:
        return stop
    params: dict[str, Any] = {"vmid": new}
    if storage:
        params["storage"] = validate.storage(storage)
    if start_after:
        params["start"] = True
    if kind == "qemu":
        params["archive"] = volume
    else:
        params.update(ostemplate=volume, restore=True)
    upid = await call.px.post(validate.api_path("nodes", node, kind), **params)
    restored = Guest(vmid=new, node=node, type=kind, status="stopped")  # type: ignore[arg-type]
    result, text = task_result(f"restore {volume} to", restored, await call.wait(str(upid), wait_seconds))
    if result.outcome == "ok":
        result.guest = await _after(call, restored)
    return Reply(result, text)


async def _disk_storage(call: Call, node: str, content: str) -> str:
    """The first active storage of the node that holds `content` (images for VMs, rootdir for CTs)."""
    for s in await call.px.get(validate.api_path("nodes", node, "storage"), content=content) or []:
        if s.get("active", 1) and s.get("storage"):
            return validate.storage(s["storage"])
    raise validate.InvalidArgument(f"storage: node {node} has no active storage for {content}; name one")


async def _new(
    call: Call, source: str | None, ct: bool, name: str, node: str, newid: int | None, storage: str | None,
    cores: int | None, memory_mib: int | None, disk_gib: int | None, bridge: str | None,
    ssh_keys: list[str] | None, ipconfig0: str | None, start_after: bool, confirm: bool, wait: int | None,
) -> Reply:  # fmt: skip
    kind = "lxc" if ct else "qemu"
    store = (
        validate.storage(storage)
        if storage
        else await _disk_storage(call, node, "rootdir" if ct else "images")
    )
    new = validate.vmid(newid) if newid is not None else await _next_id(call)
    cores = cores or (1 if ct else 2)
    memory = memory_mib or (512 if ct else 2048)
    disk = disk_gib or (8 if ct else 32)
    net_bridge = bridge or "vmbr0"
    if ipconfig0 is not None and not IPCONFIG_RE.match(ipconfig0):
        raise validate.InvalidArgument("ipconfig0: 'ip=dhcp' or 'ip=ADDRESS/PREFIX[,gw=GATEWAY]'")
    params: dict[str, Any] = {"vmid": new, "cores": cores, "memory": memory if ct else str(memory)}
    if ct:
        net0 = f"name=eth0,bridge={net_bridge},{ipconfig0 or 'ip=dhcp'}"
        params |= {"hostname": name, "ostemplate": source, "rootfs": f"{store}:{disk}", "swap": 512,
                   "unprivileged": True, "net0": net0}  # fmt: skip
        if ssh_keys:
            cloudinit_params(None, ssh_keys, None)  # validates each key; pve-container takes them plain
            params["ssh-public-keys"] = "\n".join(k.strip() for k in ssh_keys)
    else:
        params |= {"name": name, "ostype": "l26", "scsihw": "virtio-scsi-single", "agent": "1",
                   "scsi0": f"{store}:{disk},iothread=1", "net0": f"virtio,bridge={net_bridge}",
                   "boot": "order=scsi0;ide2;net0" if source else "order=scsi0;net0"}  # fmt: skip
        if source:
            params["ide2"] = f"{source},media=cdrom"
    what = "container" if ct else "VM"
    boot = f" from {source}" if source else " (blank: no OS yet)"
    effect = (
        f"new {what} {new} '{name}' on {node}{boot}: {cores} core(s), {memory} MiB, {disk} GiB on "
        f"{store}, net0 on {net_bridge}" + (f" ({ipconfig0 or 'ip=dhcp'})" if ct else "")
    )
    stop = await gate(call, None, f"create {what} {new}", effect, f"delete_guest {new}", confirm)
    if stop is not None:
        return stop
    if start_after:
        params["start"] = True
    upid = await call.px.post(validate.api_path("nodes", node, kind), **params)
    made = Guest(vmid=new, name=name, node=node, type=kind, status="stopped")  # type: ignore[arg-type]
    result, text = task_result(f"create {what} {new} as", made, await call.wait(str(upid), wait))
    if result.outcome == "ok":
        result.guest = await _after(call, made)
    return Reply(result, text)


_EXT = {".iso": "iso", ".img": "iso", ".tar.gz": "vztmpl", ".tar.xz": "vztmpl", ".tar.zst": "vztmpl"}
URL_RE = re.compile(r"^https?://[^\s/?#]+/(?:[^\s?#]*/)?(?P<file>[A-Za-z0-9._+-]+)(?:\?[^\s#]*)?$")


@tool(Risk.CHANGE, "Download an ISO or container template", ActionResult, mode=Mode.ADMIN)
async def download_template(
    call: Call,
    node: Node,
    storage: StorageId,
    source: Annotated[
        str, Field(max_length=1024, description="A template name from Proxmox's index, or an https URL (ISO)")
    ],
    confirm: Confirm = False,
    wait_seconds: WaitLong = None,
) -> Reply:
    """Download a CT template from Proxmox's index, or an ISO or template from a URL, to a storage. Without
    confirm=true: the plan."""
    node, storage = validate.node(node), validate.storage(storage)
    m = URL_RE.match(source)
    if m:
        content = next((c for ext, c in _EXT.items() if m["file"].endswith(ext)), None)
        if content is None:
            raise validate.InvalidArgument(
                "source: the URL's file must end in .iso, .img or .tar.{gz,xz,zst}"
            )
        what, path = (
            f"{m['file']} from {source}",
            validate.api_path("nodes", node, "storage", storage, "download-url"),
        )
        params: dict[str, Any] = {"url": source, "content": content, "filename": m["file"]}
    else:
        index = await call.px.get(validate.api_path("nodes", node, "aplinfo")) or []
        found = next((a for a in index if a.get("template") == source), None)
        if found is None:
            close = [
                str(a.get("template")) for a in index if source.lower() in str(a.get("template")).lower()
            ]
            raise validate.InvalidArgument(
                f"source: {source!r} is neither an http(s) URL nor a template in Proxmox's index"
                + (f"; matching: {', '.join(close[:8])}" if close else "")
            )
        size = f" ({int(found['size']) / 1e6:.0f} MB)" if isinstance(found.get("size"), int) else ""
        what, path = f"{source}{size}", validate.api_path("nodes", node, "aplinfo")
        params = {"storage": storage, "template": source}
    effect = f"{what} is downloaded to storage {storage} on {node}"
    undo = f"delete the file from {storage} (Proxmox's web UI: Storage > Content)"
    stop = await gate(call, None, "download", effect, undo, confirm)
    if stop is not None:
        return stop
    try:
        upid = await call.px.post(path, **params)
    except ProxmoxError as exc:
        if exc.status == 403 and m:  # pve-storage API2/Storage/Status.pm download_url (schema permissions)
            raise validate.InvalidArgument(
                f"Proxmox refused it ({exc.message.strip()}): a download from a URL also needs "
                f"Sys.AccessNetwork on /nodes/{node} (it lets the node reach any address), which pmcp's "
                "role does not hold; an administrator downloads it (Storage > ISO Images > Download "
                "from URL) or grants that privilege"
            ) from None
        raise
    result, text = task_result(
        f"download {what} to {storage} on", None, await call.wait(str(upid), wait_seconds)
    )
    return Reply(result, text)
