"""Change a guest's hardware and cloud-init: CPU, memory, balloon, its first network device, cloud-init
user, SSH keys and IP, and say truthfully what a running guest took at once and what waits for its next
start.

Proxmox decides that, not pmcp: a running guest's PUT config writes the change to [PENDING] and then
hot-plugs what it can (qemu-server QemuServer.pm vmconfig_hotplug_pending: network devices, balloon,
cloud-init; memory and vCPUs only with those hotplug features; cores and sockets never; pve-container
LXC/Config.pm vmconfig_hotplug_pending: cores, memory, swap, network). So the answer is read back from
GET .../pending after the change: a key still carrying a `pending` value waits for a restart.

Admin mode: the privileges (VM.Config.CPU, VM.Config.Memory, VM.Config.Network, VM.Config.Cloudinit) are
the admin role's; the change is planned first (current -> new, what applies live) and made with confirm.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from pmcp.server import validate
from pmcp.server.config import Mode
from pmcp.server.policy import Risk, split_tags
from pmcp.server.registry import Call, Reply, tool
from pmcp.server.tools.common import (
    ActionResult,
    Confirm,
    Guest,
    Vmid,
    WaitSeconds,
    gate,
    guest_label,
    guest_path,
    resolve_guest,
)
from pmcp.server.tools.provision import _after, resize_disk
from pmcp.server.tools.undo import blocker, take, undo_sentence

IPCONFIG_RE = re.compile(
    r"^(?:(?:ip=(?:dhcp|(?:\d{1,3}\.){3}\d{1,3}/\d{1,2})(?:,gw=(?:\d{1,3}\.){3}\d{1,3})?)"
    r"(?:,ip6=(?:dhcp|auto|[0-9a-fA-F:]+/\d{1,3})(?:,gw6=[0-9a-fA-F:]+)?)?"
    r"|ip6=(?:dhcp|auto|[0-9a-fA-F:]+/\d{1,3})(?:,gw6=[0-9a-fA-F:]+)?)$"
)
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSH_KEY_RE = re.compile(
    r"^(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+(?: [^\r\n]*)?$"
)
BRIDGE_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$"  # a Linux interface name (15 characters)


def cloudinit_params(ciuser: str | None, ssh_keys: list[str] | None, ipconfig0: str | None) -> dict[str, Any]:
    """Validated cloud-init keys as the API takes them (shared with clone and create)."""
    out: dict[str, Any] = {}
    if ciuser is not None:
        if not USER_RE.match(ciuser):
            raise validate.InvalidArgument("ciuser: a Linux user name (lower case, digits, '_' or '-')")
        out["ciuser"] = ciuser
    if ssh_keys:
        for key in ssh_keys:
            if not SSH_KEY_RE.match(key.strip()):
                raise validate.InvalidArgument("ssh_keys: each item must be one OpenSSH public key line")
        # format 'urlencoded' (pve-common JSONSchema pve_verify_urlencoded): spaces and newlines too
        out["sshkeys"] = quote("\n".join(k.strip() for k in ssh_keys) + "\n", safe="")
    if ipconfig0 is not None:
        if not IPCONFIG_RE.match(ipconfig0):
            raise validate.InvalidArgument("ipconfig0: 'ip=dhcp' or 'ip=ADDRESS/PREFIX[,gw=GATEWAY]'")
        out["ipconfig0"] = ipconfig0
    return out


def _net_with(current: str, bridge: str | None, vlan: int | None) -> str:
    """net0 with another bridge and/or VLAN tag, keeping the model, MAC and every other option."""
    parts = [p for p in current.split(",") if p]
    if bridge is not None:
        parts = [p for p in parts if not p.startswith("bridge=")] + [f"bridge={bridge}"]
    if vlan is not None:
        parts = [p for p in parts if not p.startswith("tag=")] + ([f"tag={vlan}"] if vlan else [])
    return ",".join(parts)


class ConfigChange(BaseModel):
    key: str
    old: str | None = None
    new: str | None = None
    applies: str = Field(description="'now' (live or stopped guest) or 'next start' (pending)")


class ConfigResult(ActionResult):
    changes: list[ConfigChange] | None = None


def _memory_mib(value: Any) -> int | None:
    if value is None:
        return None
    m = re.search(r"(\d+)", str(value).split("current=")[-1])
    return int(m[1]) if m else None


HARDWARE = ("cores", "sockets", "memory_mib", "balloon_mib", "swap_mib", "bridge", "vlan", "ciuser",
            "ssh_keys", "ipconfig0", "grow_disk")  # fmt: skip
GROW_PATTERN = r"^(?:(?:scsi|sata|ide|virtio)\d{1,2}|rootfs|mp\d{1,3}):\+?\d+(?:\.\d+)?[KMGT]?$"


def _hardware(arguments: dict[str, Any]) -> Mode | None:
    """Tags and notes need the operator's VM.Config.Options; the rest the admin role's VM.Config.CPU,
    Memory, Network and Cloudinit (qemu-server API2/Qemu.pm $check_vm_modify_config_perm)."""
    return Mode.ADMIN if any(arguments.get(k) is not None for k in HARDWARE) else None


# tags and notes (operator) and hardware (admin) in one tool: the mode is per call (_hardware).
@tool(Risk.CHANGE, "Set CPU, memory, network, cloud-init, tags, notes", ConfigResult, idempotent=True,
      mode_of=_hardware)  # fmt: skip
async def set_guest_config(
    call: Call,
    vmid: Vmid,
    tags: Annotated[
        list[Annotated[str, Field(pattern=validate.TAG_PATTERN, max_length=64)]] | None,
        Field(max_length=32, description="The complete new tag list ([] removes all)"),
    ] = None,
    description: Annotated[
        str | None, Field(max_length=validate.MAX_DESCRIPTION, description="New notes ('' removes them)")
    ] = None,
    cores: Annotated[int | None, Field(ge=1, le=512, description="CPU cores (per socket for VMs)")] = None,
    sockets: Annotated[int | None, Field(ge=1, le=4, description="VMs: CPU sockets")] = None,
    memory_mib: Annotated[int | None, Field(ge=16, le=4_194_304, description="Memory in MiB")] = None,
    balloon_mib: Annotated[
        int | None, Field(ge=0, le=4_194_304, description="VMs: balloon minimum in MiB (0: off)")
    ] = None,
    swap_mib: Annotated[int | None, Field(ge=0, le=4_194_304, description="Containers: swap in MiB")] = None,
    bridge: Annotated[
        str | None, Field(pattern=BRIDGE_PATTERN, description="net0's bridge, e.g. vmbr1")
    ] = None,
    vlan: Annotated[int | None, Field(ge=0, le=4094, description="net0's VLAN tag (0: none)")] = None,
    ciuser: Annotated[str | None, Field(description="VMs: cloud-init user")] = None,
    ssh_keys: Annotated[list[str] | None, Field(description="VMs: cloud-init SSH public keys")] = None,
    ipconfig0: Annotated[str | None, Field(description="VMs: cloud-init 'ip=dhcp' or 'ip=A/N,gw=G'")] = None,
    grow_disk: Annotated[
        str | None,
        Field(pattern=GROW_PATTERN, description="Alone: 'scsi0:+10G' adds 10 GiB, 'rootfs:64G' sets"),
    ] = None,
    confirm: Confirm = False,
    wait_seconds: WaitSeconds = None,
) -> Reply:
    """Set tags and notes (at once), or CPU, memory, net0, cloud-init, or grow a disk (planned first); says
    what applies now and what at the next start."""
    given = dict(locals())  # the arguments (a comprehension has its own locals() on Python 3.11)
    if grow_disk is not None:  # a task of its own (PUT .../resize), so alone
        if any(given[k] is not None for k in (*HARDWARE[:-1], "tags", "description")):
            raise validate.InvalidArgument("grow_disk: give it alone (it is a task of its own)")
        disk, size = grow_disk.split(":", 1)
        return await resize_disk(call, vmid, disk, size, confirm, wait_seconds)
    guest = await resolve_guest(call, vmid)
    call.rt.policy.check_guest(call.spec.name, guest.vmid, guest.tags)
    meta: dict[str, Any] = {}
    if tags is not None:
        meta["tags"] = validate.tags(tags) if tags else None
    if description is not None:
        meta["description"] = validate.description(description) if description else None
    if _hardware(given) is None:
        if not meta:
            raise validate.InvalidArgument("give at least one setting to change")
        return await _metadata(call, guest, meta, confirm)
    vm = guest.type == "qemu"
    if not vm and (sockets or balloon_mib is not None or ciuser or ssh_keys or ipconfig0):
        raise validate.InvalidArgument(
            "sockets, balloon_mib and cloud-init (ciuser, ssh_keys, ipconfig0) are VM settings; "
            f"{guest_label(guest)} is a container (its address is part of net0)"
        )
    if vm and swap_mib is not None:
        raise validate.InvalidArgument(f"swap_mib: {guest_label(guest)} is a VM; swap is a container setting")
    config = await call.px.get(guest_path(guest, "config")) or {}
    params: dict[str, Any] = {}
    for key, value in (("cores", cores), ("sockets", sockets), ("balloon", balloon_mib), ("swap", swap_mib)):
        if value is not None:
            params[key] = value
    if memory_mib is not None:
        params["memory"] = str(memory_mib) if vm else memory_mib
    if bridge is not None or vlan is not None:
        if "net0" not in config:
            raise validate.InvalidArgument(f"bridge, vlan: {guest_label(guest)} has no net0 to change")
        params["net0"] = _net_with(str(config["net0"]), bridge, vlan)
    params |= cloudinit_params(ciuser, ssh_keys, ipconfig0)
    balloon = params.get("balloon", config.get("balloon"))
    memory = _memory_mib(params.get("memory", config.get("memory")))
    if vm and balloon and memory and int(balloon) > memory:
        raise validate.InvalidArgument(f"balloon_mib: {balloon} is more than the memory ({memory} MiB)")
    shown = {k: ("<hidden>" if k == "sshkeys" else str(v)) for k, v in (params | meta).items()}
    running = guest.status == "running"
    planned = ", ".join(
        f"{k} {'<hidden>' if k == 'sshkeys' else config.get(k, '-')} -> {v}" for k, v in shown.items()
    )
    when = (
        "it is running: Proxmox applies what it can hot-plug now and the rest at its next start"
        if running
        else "it is stopped: everything applies now"
    )
    reason = await blocker(call, guest)  # a safety snapshot first, where Proxmox can take one (undo.py)
    undo = f"set_guest_config again with the old values above. {undo_sentence(reason)}"
    stop = await gate(
        call, guest, "change configuration", f"{guest_label(guest)}: {planned}; {when}", undo, confirm
    )
    if stop is not None:
        return stop
    snap = await take(call, guest) if reason is None else None
    put = {k: v for k, v in (params | meta).items() if v is not None}
    if gone := [k for k, v in meta.items() if v is None]:
        put["delete"] = ",".join(gone)
    put["digest"] = config.get("digest")  # refused if someone changed the config since we read it
    await call.px.put(guest_path(guest, "config"), **put)
    pending = {
        str(p.get("key")): p
        for p in await call.px.get(guest_path(guest, "pending")) or []
        if isinstance(p, dict)
    }
    changes = []
    for key, new in shown.items():
        waits = "pending" in pending.get(key, {})
        old = "<hidden>" if key == "sshkeys" else config.get(key)
        changes.append(
            ConfigChange(
                key=key,
                old=None if old is None else str(old),
                new=new,
                applies="next start" if waits else "now",
            )
        )
    now = [c.key for c in changes if c.applies == "now"]
    later = [c.key for c in changes if c.applies != "now"]
    text = f"{guest_label(guest)}: " + "; ".join(
        x
        for x in (
            f"applied now: {', '.join(now)}" if now else "",
            f"pending until the next start (a reboot through Proxmox applies it): {', '.join(later)}"
            if later
            else "",
        )
        if x
    )
    cloud = [k for k in now if k in ("ciuser", "sshkeys", "ipconfig0")]
    if cloud and running:
        text += f". Cloud-init reads {', '.join(cloud)} at boot: the running OS sees it after a reboot"
    if snap:
        text += f". Safety snapshot first: {snap} (undo_last_change)"
    result = ConfigResult(
        outcome="ok",
        action="change configuration",
        guest=await _after(call, guest),
        changes=changes,
        safety_snapshot=snap,
    )
    return Reply(result, text + ".")


async def _metadata(call: Call, guest: Guest, meta: dict[str, Any], confirm: bool) -> Reply:
    """Tags and notes change nothing a guest runs on: applied at once, without a plan (asked only with
    --approval-scope changes). A tag change takes a safety snapshot first; the description alone does
    not, since a rollback keeps it (tools/undo.py)."""
    params: dict[str, Any] = {k: v for k, v in meta.items() if v is not None}
    if gone := [k for k, v in meta.items() if v is None]:
        params["delete"] = ",".join(gone)
    retag = "tags" in meta and sorted(split_tags(meta["tags"])) != sorted(guest.tags)
    reason = await blocker(call, guest) if retag else "the description alone is kept by a rollback"
    effect = f"{', '.join(meta)} of {guest_label(guest)} change"
    stop = await gate(call, guest, "set metadata", effect, undo_sentence(reason), confirm, always=False)
    if stop is not None:
        return stop
    snap = await take(call, guest) if retag and reason is None else None
    await call.px.put(guest_path(guest, "config"), **params)
    changed = " and ".join("notes" if k == "description" else k for k in meta)
    result = ConfigResult(
        outcome="ok",
        action="set metadata",
        guest=await _after(call, guest),
        detail=f"{changed} updated",
        changes=[
            ConfigChange(key=k, new=None if v is None else str(v), applies="now") for k, v in meta.items()
        ],
        safety_snapshot=snap,
    )
    note = f" Safety snapshot first: {snap} (undo_last_change reverts the tags)." if snap else ""
    return Reply(result, f"Updated the {changed} of {guest_label(guest)}.{note}")
