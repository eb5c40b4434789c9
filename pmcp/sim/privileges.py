"""Proxmox VE 9 privileges and built-in roles, as the simulator's host knows them.

PVE 9 has 47 privileges (PVE 8 had 42: PVE 9 dropped ``VM.Monitor`` and added ``VM.GuestAgent.*`` and
``VM.Replicate``). A test checks this list against the official schema's referenced privileges.
The built-in roles are derived exactly as ``PVE::AccessControl::create_roles`` derives them.
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

# pve-access-control src/PVE/AccessControl.pm $privgroups (master = PVE 9; stable-bookworm = PVE 8
# differs only in the VM group, see _VM_8): category -> (root, admin, user, audit) privileges.
_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "VM": (
        (),
        (
            "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
            "VM.Config.HWType", "VM.Config.Options", "VM.Allocate", "VM.Clone",
            "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.Replicate", "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ),
        (
            "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
            "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ),
        ("VM.Audit", "VM.GuestAgent.Audit"),
    ),
    "Sys": (
        ("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"),
        ("Sys.Console", "Sys.Syslog"),
        (),
        ("Sys.Audit",),
    ),
    "Datastore": (
        (),
        ("Datastore.Allocate", "Datastore.AllocateTemplate"),
        ("Datastore.AllocateSpace",),
        ("Datastore.Audit",),
    ),
    "SDN": ((), ("SDN.Allocate", "SDN.Audit"), ("SDN.Use",), ("SDN.Audit",)),
    "User": (("Realm.Allocate",), ("User.Modify", "Group.Allocate", "Realm.AllocateUser"), (), ()),
    "Pool": ((), ("Pool.Allocate",), ("Pool.Audit",), ("Pool.Audit",)),
    "Mapping": ((), ("Mapping.Modify",), ("Mapping.Use",), ("Mapping.Audit",)),
}  # fmt: skip
_VM_8 = (
    (),
    (
        "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType",
        "VM.Config.Options", "VM.Allocate", "VM.Clone", "VM.Migrate", "VM.Monitor", "VM.Snapshot",
        "VM.Snapshot.Rollback",
    ),
    ("VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.PowerMgmt"),
    ("VM.Audit",),
)  # fmt: skip


def _roles(groups: dict, all_privs: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """AccessControl.pm create_roles: PVE<cat>Admin = admin+user+audit (all of them: PVEAdmin,
    less Mapping.Modify); PVE<cat>User = user+audit when the category has user privileges;
    PVEAuditor = every audit privilege; PVETemplateUser = VM.Clone + VM.Audit."""
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, (_root, admin, user, audit) in groups.items():
        roles.setdefault(f"PVE{cat}Admin", set()).update(admin, user, audit)
        roles["PVEAdmin"].update(admin, user, audit)
        if user:
            roles.setdefault(f"PVE{cat}User", set()).update(user, audit)
        roles["PVEAuditor"].update(audit)
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    out = {name: tuple(sorted(privs)) for name, privs in sorted(roles.items())}
    out["Administrator"] = all_privs
    return out


BUILTIN_ROLES: dict[str, tuple[str, ...]] = _roles(_GROUPS, PRIVILEGES)
BUILTIN_ROLES_8: dict[str, tuple[str, ...]] = _roles(_GROUPS | {"VM": _VM_8}, PRIVILEGES_8)


def privileges_for(major: int) -> tuple[str, ...]:
    """The valid privileges of a PVE major version (9: 47, 8: 42)."""
    return PRIVILEGES if major >= 9 else PRIVILEGES_8


def builtin_roles_for(major: int) -> dict[str, tuple[str, ...]]:
    """Built-in roles of a PVE major version."""
    return BUILTIN_ROLES if major >= 9 else BUILTIN_ROLES_8
