"""A realistic, deterministic Proxmox VE cluster made from a seed.

Times are relative to a fixed epoch, not the wall clock, so the same seed gives the same world.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import Any

from pmcp.sim.privileges import builtin_roles_for

EPOCH = 1_780_000_000  # 2026-05-28: the generated world's "now" for ctimes and snapshot times
GIB = 1024**3
PVE_VERSION = "9.1.2"
PVE8_VERSION = "8.4.1"
KERNEL8 = "6.8.12-9-pve"
PVE_REPOID = "9b3c2e5a8d1f47c6"
KERNEL = "6.17.2-1-pve"

ROLES = ("web", "db", "cache", "app", "api", "worker", "proxy", "mail", "dns", "ci", "monitor", "files")
ENVS = ("prod", "stage", "dev", "lab")
TAGS = ("prod", "staging", "dev", "critical", "backup", "linux", "windows", "k8s", "ha", "legacy")
POOLS = ("production", "development", "lab")
ISOS = (
    ("debian-13.1.0-amd64-netinst.iso", 754 * 1024**2),
    ("ubuntu-24.04.3-live-server-amd64.iso", 3_100 * 1024**2),
    ("virtio-win-0.1.271.iso", 708 * 1024**2),
    ("proxmox-backup-server_4.0-1.iso", 1_400 * 1024**2),
)
TEMPLATES = (
    ("debian-13-standard_13.1-2_amd64.tar.zst", 128 * 1024**2),
    ("ubuntu-24.04-standard_24.04-2_amd64.tar.zst", 142 * 1024**2),
    ("alpine-3.22-default_20250617_amd64.tar.xz", 3 * 1024**2),
)


def mac(rng: random.Random) -> str:
    return "BC:24:11:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))


def config_digest(config: dict[str, Any]) -> str:
    text = "".join(f"{k}: {config[k]}\n" for k in sorted(config) if k != "digest")
    return hashlib.sha1(text.encode()).hexdigest()


def qemu_config(
    rng: random.Random, vmid: int, name: str, tags: list[str], cores: int, mem_mib: int, disk_gib: int
):
    windows = "windows" in tags
    cfg: dict[str, Any] = {
        "name": name,
        "ostype": "win11" if windows else "l26",
        "cores": cores,
        "sockets": 1,
        "memory": str(mem_mib),
        "cpu": "x86-64-v2-AES",
        "scsihw": "virtio-scsi-single",
        "scsi0": f"local-lvm:vm-{vmid}-disk-0,iothread=1,size={disk_gib}G",
        "ide2": "none,media=cdrom",
        "net0": f"virtio={mac(rng)},bridge=vmbr0,firewall=1",
        "boot": "order=scsi0;ide2;net0",
        "agent": "1",
        "numa": 0,
        "onboot": int(rng.random() < 0.6),
        "smbios1": f"uuid={uuid.UUID(int=rng.getrandbits(128), version=4)}",
        "vmgenid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "meta": f"creation-qemu=10.0.2,ctime={EPOCH - rng.randrange(400 * 86400)}",
    }
    if tags:
        cfg["tags"] = ";".join(tags)
    return cfg


def lxc_config(
    rng: random.Random, vmid: int, name: str, tags: list[str], cores: int, mem_mib: int, disk_gib: int
):
    cfg: dict[str, Any] = {
        "hostname": name,
        "arch": "amd64",
        "ostype": rng.choice(("debian", "ubuntu", "alpine")),
        "cores": cores,
        "memory": mem_mib,
        "swap": 512,
        "rootfs": f"local-lvm:vm-{vmid}-disk-0,size={disk_gib}G",
        "net0": f"name=eth0,bridge=vmbr0,firewall=1,hwaddr={mac(rng)},ip=dhcp,type=veth",
        "unprivileged": 1,
        "features": "nesting=1",
        "onboot": int(rng.random() < 0.6),
    }
    if tags:
        cfg["tags"] = ";".join(tags)
    return cfg


def generate(nodes: int = 3, guests: int = 50, seed: int = 1, pve_major: int = 9) -> dict[str, Any]:
    """The initial world: nodes, guests, storages and content, pools, users, roles, ACLs, firewall.

    ``pve_major=8`` pretends to be Proxmox VE 8.4 (its 42 privileges and built-in roles).
    """
    rng = random.Random(seed)
    node_names = [f"pve{i + 1}" for i in range(nodes)]
    world: dict[str, Any] = {
        "version": 1,
        "seed": seed,
        "pve_version": PVE_VERSION if pve_major >= 9 else PVE8_VERSION,
        "kernel": KERNEL if pve_major >= 9 else KERNEL8,
        "cluster_name": "pmcp-sim",
        "nodes": {},
        "guests": {},
        "storages": {},
        "content": {},
        "pools": {p: {"comment": f"{p.capitalize()} guests"} for p in POOLS},
        "groups": {"admins": {"comment": "Cluster administrators"}},
        "users": {},
        "roles": {},
        "acls": [],
        "firewall": {
            "cluster": {"options": {"enable": 0, "policy_in": "DROP", "policy_out": "ACCEPT"}, "rules": []},
            "nodes": {},
        },
        "cluster_options": {"keyboard": "en-us", "console": "html5"},
        "next_pid": 4000 + rng.randrange(1000),
    }
    for i, name in enumerate(node_names):
        maxcpu = rng.choice((16, 32, 48, 64))
        maxmem = rng.choice((128, 256, 384, 512)) * GIB
        world["nodes"][name] = {
            "ip": f"10.0.0.{11 + i}",
            "maxcpu": maxcpu,
            "maxmem": maxmem,
            "maxdisk": 100 * GIB,
            "disk": rng.randrange(8, 30) * GIB,
            "cpu": round(rng.uniform(0.02, 0.45), 4),
            "mem_ratio": round(rng.uniform(0.2, 0.7), 3),
            "uptime": rng.randrange(3, 200) * 86400 + rng.randrange(86400),
            "cpu_model": rng.choice(("AMD EPYC 9354P 32-Core Processor", "Intel(R) Xeon(R) Gold 6430")),
        }
        world["firewall"]["nodes"][name] = {"options": {"enable": 1, "log_level_in": "nolog"}, "rules": []}

    world["storages"] = {
        "local": {
            "type": "dir",
            "content": "iso,vztmpl,backup",
            "shared": 0,
            "path": "/var/lib/vz",
            "total": 100,
        },
        "local-lvm": {"type": "lvmthin", "content": "images,rootdir", "shared": 0, "total": 2048},
        "backup-nfs": {
            "type": "nfs",
            "content": "backup,iso,vztmpl",
            "shared": 1,
            "path": "/mnt/pve/backup-nfs",
            "server": "10.0.0.5",
            "export": "/export/pve-backup",
            "total": 16384,
        },
    }
    for name in node_names:
        world["content"][f"{name}/local"] = [
            {
                "volid": f"local:iso/{f}",
                "content": "iso",
                "format": "iso",
                "size": s,
                "ctime": EPOCH - 86400 * 30,
            }
            for f, s in ISOS[:2]
        ] + [
            {
                "volid": f"local:vztmpl/{f}",
                "content": "vztmpl",
                "format": "tzst" if f.endswith("zst") else "txz",
                "size": s,
                "ctime": EPOCH - 86400 * 40,
            }
            for f, s in TEMPLATES
        ]
    world["content"]["backup-nfs"] = [
        {
            "volid": f"backup-nfs:iso/{f}",
            "content": "iso",
            "format": "iso",
            "size": s,
            "ctime": EPOCH - 86400 * 90,
        }
        for f, s in ISOS
    ]

    backups = world["content"]["backup-nfs"]
    for n in range(guests):
        vmid = 100 + n
        kind = "lxc" if rng.random() < 0.3 else "qemu"
        node = node_names[n % nodes] if rng.random() < 0.7 else rng.choice(node_names)
        env = rng.choice(ENVS)
        name = f"{rng.choice(ROLES)}-{env}-{vmid}"
        tags = sorted(set(rng.sample(TAGS, rng.randrange(0, 3))))
        if kind == "qemu" and rng.random() < 0.15:
            tags = sorted({*tags, "windows"} - {"linux"})
        template = kind == "qemu" and rng.random() < 0.02
        running = not template and rng.random() < 0.7
        cores = rng.choice((1, 2, 2, 4, 4, 8)) if kind == "qemu" else rng.choice((1, 1, 2, 4))
        mem_mib = (
            rng.choice((1024, 2048, 4096, 8192, 16384))
            if kind == "qemu"
            else rng.choice((256, 512, 1024, 2048))
        )
        disk_gib = rng.choice((16, 32, 64, 128, 256)) if kind == "qemu" else rng.choice((4, 8, 16, 32))
        make = qemu_config if kind == "qemu" else lxc_config
        config = make(rng, vmid, name, tags, cores, mem_mib, disk_gib)
        if template:  # `qm template` renames the disks base-VMID-disk-N (qemu-server template_create)
            config["template"] = 1
            for key, value in list(config.items()):
                if isinstance(value, str):
                    config[key] = value.replace(f"vm-{vmid}-disk", f"base-{vmid}-disk")
        config["digest"] = config_digest(config)
        snaps = []
        parent = None
        for s in range(rng.choice((0, 0, 0, 1, 2, 3))):
            sname = (
                rng.choice(("before_upgrade", "pre_patch", "baseline", "clean_install", "known_good"))
                + f"_{s}"
            )
            snap = {
                "name": sname,
                "description": f"snapshot {s + 1}",
                "snaptime": EPOCH - rng.randrange(90 * 86400),
            }
            if parent:
                snap["parent"] = parent
            if kind == "qemu":
                snap["vmstate"] = 0
            snap["config"] = {k: v for k, v in config.items() if k != "digest"}
            snaps.append(snap)
            parent = sname
        pool = rng.choice((*POOLS, None, None))
        world["guests"][str(vmid)] = {
            "vmid": vmid,
            "type": kind,
            "node": node,
            "status": "running" if running else "stopped",
            "pool": pool,
            "template": int(template),
            "config": config,
            "snapshots": snaps,
            "maxmem": mem_mib * 1024**2,
            "maxdisk": disk_gib * GIB,
            "cpu_load": round(rng.uniform(0.001, 0.35), 4) if running else 0,
            "mem_ratio": round(rng.uniform(0.15, 0.85), 3),
            "disk_ratio": round(rng.uniform(0.1, 0.8), 3),
            "uptime": rng.randrange(600, 120 * 86400) if running else 0,
            "netin": rng.randrange(10**6, 10**11) if running else 0,
            "netout": rng.randrange(10**6, 10**11) if running else 0,
        }
        if rng.random() < 0.4 and not template:
            ctime = EPOCH - rng.randrange(1, 30) * 86400 + 3600
            fmt = "vma.zst" if kind == "qemu" else "tar.zst"
            backups.append(
                {
                    "volid": f"backup-nfs:backup/{backup_name(kind, vmid, ctime)}",
                    "content": "backup",
                    "format": fmt,
                    "subtype": kind,
                    "vmid": vmid,
                    "size": int(disk_gib * GIB * rng.uniform(0.05, 0.4)),
                    "ctime": ctime,
                    "notes": name,
                }
            )

    world["roles"] = {r: {"privs": sorted(p), "special": 1} for r, p in builtin_roles_for(pve_major).items()}
    world["users"] = {
        "root@pam": {
            "enable": 1,
            "expire": 0,
            "comment": "",
            "email": "root@example.invalid",
            "groups": [],
            "firstname": "",
            "lastname": "",
            "password": None,
            "tokens": {},
        },
        "alice@pve": {
            "enable": 1,
            "expire": 0,
            "comment": "Operations",
            "email": "alice@example.invalid",
            "groups": ["admins"],
            "firstname": "Alice",
            "lastname": "Admin",
            "password": None,
            "tokens": {},
        },
    }
    world["acls"] = [{"path": "/", "type": "group", "ugid": "admins", "roleid": "PVEAdmin", "propagate": 1}]
    return world


def backup_name(kind: str, vmid: int, ctime: int) -> str:
    import time

    stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime(ctime))
    ext = "vma.zst" if kind == "qemu" else "tar.zst"
    return f"vzdump-{kind}-{vmid}-{stamp}.{ext}"
