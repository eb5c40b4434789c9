"""Proxmox VE 9 privileges and built-in roles, as the simulator's host knows them.

PVE 9 has 47 privileges (PVE 8 had 42: PVE 9 dropped ``VM.Monitor`` and added ``VM.GuestAgent.*`` and
``VM.Replicate``). A test checks this list against the official schema's referenced privileges.
The built-in roles follow ``PVE::AccessControl``'s special roles; their exact privilege sets are a
close approximation, which is all the simulator's callers depend on (they build their own role).
"""

from __future__ import annotations

PRIVILEGES: tuple[str, ...] = (
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
)

PVE9_ONLY = frozenset(
    {
        "VM.GuestAgent.Audit",
        "VM.GuestAgent.FileRead",
        "VM.GuestAgent.FileSystemMgmt",
        "VM.GuestAgent.FileWrite",
        "VM.GuestAgent.Unrestricted",
        "VM.Replicate",
    }
)
PVE8_ONLY = frozenset({"VM.Monitor"})
PRIVILEGES_8: tuple[str, ...] = tuple(sorted((set(PRIVILEGES) - PVE9_ONLY) | PVE8_ONLY))
KNOWN = frozenset(PRIVILEGES) | PVE8_ONLY

_VM_ALL = tuple(p for p in PRIVILEGES if p.startswith("VM."))
_AUDIT = (
    "Datastore.Audit",
    "Mapping.Audit",
    "Pool.Audit",
    "SDN.Audit",
    "Sys.Audit",
    "VM.Audit",
    "VM.GuestAgent.Audit",
)

BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "Administrator": PRIVILEGES,
    "NoAccess": (),
    "PVEAdmin": tuple(
        p
        for p in PRIVILEGES
        if p not in ("Permissions.Modify", "Realm.Allocate", "Sys.Modify", "Sys.PowerMgmt", "User.Modify")
    ),
    "PVEAuditor": _AUDIT,
    "PVEDatastoreAdmin": (
        "Datastore.Allocate",
        "Datastore.AllocateSpace",
        "Datastore.AllocateTemplate",
        "Datastore.Audit",
    ),
    "PVEDatastoreUser": ("Datastore.AllocateSpace", "Datastore.Audit"),
    "PVEMappingAdmin": ("Mapping.Audit", "Mapping.Modify", "Mapping.Use"),
    "PVEMappingUser": ("Mapping.Audit", "Mapping.Use"),
    "PVEPoolAdmin": ("Pool.Allocate", "Pool.Audit"),
    "PVEPoolUser": ("Pool.Audit",),
    "PVESDNAdmin": ("SDN.Allocate", "SDN.Audit", "SDN.Use"),
    "PVESDNUser": ("SDN.Audit", "SDN.Use"),
    "PVESysAdmin": (
        "Permissions.Modify",
        "Sys.AccessNetwork",
        "Sys.Audit",
        "Sys.Console",
        "Sys.Incoming",
        "Sys.Modify",
        "Sys.PowerMgmt",
        "Sys.Syslog",
    ),
    "PVETemplateUser": ("VM.Audit", "VM.Clone"),
    "PVEUserAdmin": ("Group.Allocate", "Realm.AllocateUser", "User.Modify"),
    "PVEVMAdmin": (*_VM_ALL, "Pool.Audit"),
    "PVEVMUser": (
        "Pool.Audit",
        "VM.Audit",
        "VM.Backup",
        "VM.Config.CDROM",
        "VM.Config.Cloudinit",
        "VM.Console",
        "VM.GuestAgent.Audit",
        "VM.PowerMgmt",
    ),
}


def privileges_for(major: int) -> tuple[str, ...]:
    """The valid privileges of a PVE major version (9: 47, 8: 42)."""
    return PRIVILEGES if major >= 9 else PRIVILEGES_8


def builtin_roles_for(major: int) -> dict[str, tuple[str, ...]]:
    """Built-in roles of a PVE major version; PVE 8's VM roles carry ``VM.Monitor`` instead."""
    if major >= 9:
        return BUILTIN_ROLES
    valid = set(PRIVILEGES_8)
    out = {r: tuple(p for p in privs if p in valid) for r, privs in BUILTIN_ROLES.items()}
    out["Administrator"] = PRIVILEGES_8
    for role in ("PVEAdmin", "PVEVMAdmin"):
        out[role] = (*out[role], "VM.Monitor")
    return out
