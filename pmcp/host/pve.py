"""The MCP server's Proxmox identity: a custom role, user ``pmcp@pve`` (no password), a privilege-separated
API token, and ACLs for BOTH user and token (a privsep token gets the intersection of the two).

Why through ``pvesh``: it runs as root on the node with no credential to store, and the command is
configurable (``PMCP_PVESH``), so the tests drive the same code against the simulator.

Least privilege by construction: the role is the mode's privilege list intersected with what THIS host knows
(``GET /access/roles/Administrator``: PVE 8 and 9 differ), and it can never contain a privilege that allows
touching users, ACLs, realms, groups or the node's system (``FORBIDDEN``) — asserted before every role write.
``verify_identity`` proves it from the token's side: effective permissions, scope, and refused calls.

Where the ACLs go (no ``--pool``), because an ACL on ``/`` reaches more than the tools use:
    ``/`` (not propagated)                  read-only role: ``GET /cluster/status`` checks Sys.Audit on ``/``
    ``/nodes /storage /pool /sdn``          read-only role: what the read tools list
    ``/vms``                                the mode's role: power, snapshots, backups act on ``/vms/ID``
    ``/storage/ID`` (content ``backup``)    operator's role: vzdump needs Datastore.AllocateSpace there
    ``/storage``, ``/sdn`` (admin)           admin's role: clone/restore/grow allocate disks on any storage
                                            (Datastore.AllocateSpace), a restore uses bridges (SDN.Use)
    ``/vms/ID`` of each protected guest     ``NoAccess`` (PMCP_PROTECTED and the ``pmcp-protected`` tag)
Never the mode's role on ``/``: pve-manager PVE/API2/Nodes.pm ``stopall`` (and startall, suspendall)
accept VM.PowerMgmt on ``/`` for every guest of the node at once. Nothing propagates to ``/access`` (users,
ACLs). With ``--pool NAME`` the mode's role goes on ``/pool/NAME`` instead (PVE gives a pool's guests and
storages the pool's roles), plus the same ``NoAccess`` entries: pve-access-control
PVE/RPCEnvironment.pm ``$compile_acl_path`` never lets a pool ACL trump a guest's ``NoAccess``.

What pmcp made is recorded (state.json ``identity_acls``): a re-run removes only those of its ACLs that
are no longer wanted, keeps every other ACL of the user or token (an admin's ``NoAccess`` stays) and
says so in the plan. An install recorded before this list existed adopts only entries with pmcp's own
roles (``PMCP*``). Protection converges on every ``pmcp install`` re-run; ``pmcp update`` (cron) only adds
the NoAccess of a guest protected since (``deny_protected``: it never grants or removes); ``pmcp verify``
warns when a protected guest is still within the token's reach.

Interfaces (stable, used by pmcp.lifecycle):
    MODES = ("read-only", "operator", "admin");  ROLE_NAMES[mode];  FORBIDDEN;  mode_privileges(mode, valid)
    ProxmoxIdentity(pvesh, mode, paths, pool=None, rotate=False, userid="pmcp@pve", tokenid="mcp",
                    role=None, api_url="https://127.0.0.1:8006", verify=None, secret_owner=None,
                    protected=())  -- a Step
        verify: CA file path, True (system CAs) or False; None = /etc/pve/pve-root-ca.pem when present
        secret_owner: (uid, gid) of the secret file when the containers must read it: root:GID, file 0640 in
            a 0750 dir (group-readable); None: the caller's own, 0600 in 0700
        protected: VMIDs that get NoAccess (guests tagged pmcp-protected are added from the cluster)
        .name == "proxmox identity"; .token_full_id ("pmcp@pve!mcp"); .acl_path ("/vms" or "/pool/NAME")
        check() -> Plan; apply(); undo()  (undo after a failed apply reverts only that apply's changes;
        on a fresh object it tears the identity down: ACLs, tokens, user, roles -- the order PVE needs)
    verify_identity(api_url, token_full_id, secret_file, verify=None, mode="read-only", pool=None,
                    protected=(), tls_name=None) -> list[Check]   (tls_name: the certificate's name
                    when it is not api_url's)
    token_authenticates(api_url, token_full_id, secret, verify=None) -> bool  (IdentityError: unreachable)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pmcp import pvetls
from pmcp import record as statefile
from pmcp.host.checks import Check
from pmcp.host.files import atomic_write, ensure_dir, fix_owner_mode
from pmcp.host.run import Pvesh, PveshError
from pmcp.inputs import MODES
from pmcp.paths import InstallPaths
from pmcp.steps import Plan, StepError

ROLE_NAMES = {"read-only": "PMCPReadOnly", "operator": "PMCPOperator", "admin": "PMCPAdmin"}

FORBIDDEN = frozenset(
    {"User.Modify", "Permissions.Modify", "Group.Allocate", "Sys.Modify", "Sys.Console"}
)  # and every Realm.* privilege (see is_forbidden)

# Exactly what the server's tools need (pmcp/server/tools), nothing "just in case": reading everything;
# operator adds power, snapshots and their rollback (undo_last_change rolls back to pmcp's safety snapshot;
# Proxmox lets VM.Snapshot alone roll back too: qemu-server API2/Qemu.pm rollback checks VM.Snapshot |
# VM.Snapshot.Rollback), backups (a backup writes to a storage) and tags/notes; admin adds provisioning.
# VM.GuestAgent.Audit (PVE 9 only; guest_network) reads addresses and OS info through the agent. PVE 8 has
# no such privilege: there it takes VM.Monitor, which also allows `agent/exec` (qemu-server
# API2/Qemu/Agent.pm), a shell inside every guest, so no mode holds VM.Monitor.
_READ_ONLY = {"Sys.Audit", "VM.Audit", "Datastore.Audit", "Pool.Audit", "SDN.Audit", "VM.GuestAgent.Audit"}
_OPERATOR = _READ_ONLY | {
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
    "VM.Backup",
    "Datastore.AllocateSpace",
    "VM.Config.Options",
    "VM.Migrate",  # migrate_guest
}
# Admin adds provisioning (server/tools/provision.py): clone/restore/template/delete need
# VM.Allocate (+ VM.Clone), growing a disk VM.Config.Disk, cloud-init VM.Config.Cloudinit; a restore is
# checked against every key of the restored config (qemu-server check_restore_permissions ->
# check_vm_modify_config_perm) and its bridges (SDN.Use, PVE 8+).
_ADMIN = _OPERATOR | {
    "VM.Allocate",
    "VM.Clone",
    "VM.Config.Disk",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Cloudinit",
    "SDN.Use",
    # download_template: an appliance template (pve-manager API2/Nodes.pm apl_download) or, with
    # Sys.AccessNetwork that pmcp does not take (the node could reach any address), a URL
    "Datastore.AllocateTemplate",
}
_MODE_PRIVS = {"read-only": _READ_ONLY, "operator": _OPERATOR, "admin": _ADMIN}

REFUSED = (403,)
PVE_CA = Path("/etc/pve/pve-root-ca.pem")

PROTECTED_TAG = "pmcp-protected"  # the server's policy.PROTECTED_TAG (the host side never imports the server)
RECORD_KEY = "identity_acls"  # state.json: the ACLs pmcp made, [path, type, ugid, role]
READ_PATHS = (("/", 0), ("/nodes", 1), ("/storage", 1), ("/pool", 1), ("/sdn", 1))
MODE_PATH = "/vms"

AclKey = tuple[str, str, str, str]  # (path, "user"|"token", ugid, role)


def split_tags(text: str | None) -> set[str]:
    """Proxmox's tags: one string separated by ';', ',' or spaces (the server's policy reads them so)."""
    return {t.strip().lower() for t in (text or "").replace(",", ";").replace(" ", ";").split(";") if t}


def _prop(entry: dict[str, Any]) -> int:
    return int(bool(entry.get("propagate", 1)))


def _batches(keys: Iterable[AclKey], prop: dict[AclKey, int]) -> list[list[AclKey]]:
    """Entries grouped by (path, role, propagate), in first-seen order: one API call each."""
    groups: dict[tuple[str, str, int], list[AclKey]] = {}
    for k in keys:
        groups.setdefault((k[0], k[3], prop[k]), []).append(k)
    return list(groups.values())


def _under(path: str, parent: str) -> bool:
    """``path`` is strictly below ``parent`` in the ACL tree (``/`` is above everything)."""
    return path != parent and (parent == "/" or path.startswith(parent.rstrip("/") + "/"))


def acl_command(key: AclKey, delete: bool = False) -> str:
    """The pvesh line an admin runs to add or remove one ACL entry by hand."""
    path, kind, ugid, role = key
    who = "--users" if kind == "user" else "--tokens"
    line = f"pvesh set /access/acl --path {path} --roles {role} {who} '{ugid}'"
    return line + (" --delete 1" if delete else "")


class IdentityError(Exception):
    """The Proxmox API could not be reached to test a token."""


def is_forbidden(priv: str) -> bool:
    return priv in FORBIDDEN or priv.startswith("Realm.")


def mode_privileges(mode: str, valid: Iterable[str]) -> list[str]:
    """The mode's privileges that this host knows, sorted; never a forbidden one."""
    if mode not in _MODE_PRIVS:
        raise StepError(f"unknown mode {mode!r}", fix=f"use --mode {'|'.join(MODES)}")
    privs = sorted(_MODE_PRIVS[mode] & set(valid))
    bad = [p for p in privs if is_forbidden(p)]
    assert not bad, f"refusing to grant {bad}"  # a code bug, not a host condition
    return privs


def _api(api_url: str) -> str:
    base = api_url.rstrip("/")
    return base if base.endswith("/api2/json") else base + "/api2/json"


def _headers(token_full_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": f"PVEAPIToken={token_full_id}={secret}"}


def default_verify(verify: bool | str | None) -> bool | str:
    """TLS verification for the node's own API: the host's PVE CA when present, never "off" by default."""
    if verify is not None:
        return verify
    return str(PVE_CA) if PVE_CA.is_file() else True


_SESSIONS: dict[tuple[bool | str, str | None], Any] = {}


def _request(
    method: str,
    url: str,
    headers: dict[str, str],
    verify: bool | str | None,
    tls_name: str | None = None,
    **kw: Any,
) -> Any:
    """One verified request. TLS through pmcp.pvetls: on Python 3.13 (PVE 9) the strict X.509 default
    refuses the host's CA when it has no keyUsage, which is most hosts' CA."""
    import requests

    verify = default_verify(verify)
    key = (verify, tls_name)
    if key not in _SESSIONS:
        try:
            _SESSIONS[key] = pvetls.session(verify, tls_name)
        except (OSError, ValueError) as exc:  # the trust file is missing or holds no certificate
            raise IdentityError(f"cannot use {verify} to verify the Proxmox API: {exc}") from exc
    try:
        return _SESSIONS[key].request(method, url, headers=headers, timeout=15, **kw)
    except requests.exceptions.SSLError as exc:
        raise IdentityError(
            f"TLS verification of the Proxmox API at {url} failed: {_ssl_reason(exc)}"
        ) from exc
    except requests.RequestException as exc:
        raise IdentityError(f"cannot reach the Proxmox API at {url}: {type(exc).__name__}: {exc}") from exc


def _ssl_reason(exc: BaseException) -> str:
    text = str(exc)
    marker = "certificate verify failed:"
    return text[text.find(marker) :].split("(_ssl")[0].strip(" )'\"") if marker in text else text[:300]


def token_authenticates(
    api_url: str,
    token_full_id: str,
    secret: str,
    verify: bool | str | None = None,
    tls_name: str | None = None,
) -> bool:
    """True when the token is accepted (GET /version); False on 401; IdentityError when unreachable."""
    resp = _request("GET", _api(api_url) + "/version", _headers(token_full_id, secret), verify, tls_name)
    if resp.status_code == 401:
        return False
    if resp.status_code >= 400:
        raise IdentityError(
            f"GET /version with the token answered HTTP {resp.status_code}: {resp.text[:200]}"
        )
    return True


class _CachedPvesh:
    """pvesh with the reads of one step remembered until it changes what they show, fetched side by side.

    Each pvesh call starts a Perl interpreter on a real host (about half a second) and a Python one in
    the demo (0.13 s): the identity step made 20 calls one after the other, 5 of them reads it had
    just made in check(). A create or set forgets the reads of its own tree (``/access/roles``,
    ``/access/users``, ``/access/acl``, ...); a delete forgets every read, since Proxmox drops the ACLs
    of a deleted role, user or token (pve-access-control src/PVE/AccessControl.pm parse_user_config
    "ignore invalid acl", delete_user_acl). ``prefetch`` runs independent reads at once. A refused
    read is remembered as its error and raised to each caller, as the call would; anything else (a
    pvesh that cannot start) is raised by the call itself, as before."""

    def __init__(self, inner: Pvesh) -> None:
        self.inner = inner
        self._reads: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}

    @staticmethod
    def _key(path: str, params: dict[str, Any]) -> tuple[str, tuple[tuple[str, Any], ...]]:
        return path, tuple(sorted(params.items()))

    def get(self, api_path: str, params: dict[str, Any] | None = None, /, **kw: Any) -> Any:
        merged = {**(params or {}), **kw}
        key = self._key(api_path, merged)
        if key not in self._reads:
            try:
                self._reads[key] = self.inner.get(api_path, merged)
            except PveshError as exc:
                self._reads[key] = exc
        answer = self._reads[key]
        if isinstance(answer, PveshError):
            raise answer
        return answer

    def prefetch(self, reads: Iterable[tuple[str, dict[str, Any]]]) -> None:
        todo = [(path, params) for path, params in reads if self._key(path, params) not in self._reads]
        if len(todo) < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        def read(item: tuple[str, dict[str, Any]]) -> None:
            path, params = item
            try:
                self._reads[self._key(path, params)] = self.inner.get(path, params)
            except PveshError as exc:
                self._reads[self._key(path, params)] = exc

        with ThreadPoolExecutor(max_workers=min(len(todo), 6)) as pool:
            list(pool.map(read, todo))

    def _forget_tree(self, api_path: str) -> None:
        tree = "/".join(api_path.split("/")[:3])  # "/access/users/x/token/y" -> "/access/users"
        # a snapshot of the keys, and pop: the identity step writes from two threads (_side_by_side)
        for key in [k for k in list(self._reads) if k[0] == tree or k[0].startswith(tree + "/")]:
            self._reads.pop(key, None)

    def create(self, api_path: str, params: dict[str, Any] | None = None, /, **kw: Any) -> Any:
        self._forget_tree(api_path)
        return self.inner.create(api_path, params, **kw)

    def set(self, api_path: str, params: dict[str, Any] | None = None, /, **kw: Any) -> Any:
        self._forget_tree(api_path)
        return self.inner.set(api_path, params, **kw)

    def delete(self, api_path: str, params: dict[str, Any] | None = None, /, **kw: Any) -> Any:
        self._reads.clear()
        return self.inner.delete(api_path, params, **kw)


class ProxmoxIdentity:
    """Step: role, user, privsep token and ACLs for the MCP server, converged idempotently."""

    name = "proxmox identity"

    def __init__(
        self,
        pvesh: Pvesh,
        mode: str,
        paths: InstallPaths,
        pool: str | None = None,
        rotate: bool = False,
        userid: str = "pmcp@pve",
        tokenid: str = "mcp",
        role: str | None = None,
        api_url: str = "https://127.0.0.1:8006",
        verify: bool | str | None = None,
        secret_owner: tuple[int, int] | None = None,
        protected: Iterable[int] = (),
        tls_name: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise StepError(f"unknown mode {mode!r}", fix=f"use --mode {'|'.join(MODES)}")
        self.pvesh = _CachedPvesh(pvesh)
        self.mode = mode
        self.paths = paths
        self.pool = pool
        self.rotate = rotate
        self.userid = userid
        self.tokenid = tokenid
        self.role = role or ROLE_NAMES[mode]
        if self.role.upper().startswith("PVE"):
            raise StepError(
                f"role name {self.role!r} starts with PVE (reserved)", fix="choose another role name"
            )
        self.api_url = api_url
        self.verify = verify
        self.tls_name = (
            tls_name  # the name on 8006's certificate when it is not api_url's (pmcp.host.pvecert)
        )
        self.secret_owner = secret_owner
        self.protected = frozenset(int(v) for v in protected)
        self._journal: list[tuple[Any, ...]] | None = None
        self._rotated = False

    @property
    def token_full_id(self) -> str:
        return f"{self.userid}!{self.tokenid}"

    @property
    def acl_path(self) -> str:
        """Where the mode's role goes: ``/vms`` (never ``/``: see the module's docstring), or the pool."""
        return f"/pool/{self.pool}" if self.pool else MODE_PATH

    @property
    def read_role(self) -> str:
        """The role of the read paths: always the read-only one (a custom --role never reaches ``/``)."""
        return ROLE_NAMES["read-only"]

    @property
    def secret_file(self) -> Path:
        return self.paths.proxmox_token_secret

    # -- reading PVE -------------------------------------------------------------------------------------

    def _pve_error(self, what: str, exc: PveshError) -> StepError:
        return StepError(
            f"{what}: {exc.message}",
            fix="check that pve-cluster and pveproxy run (systemctl status pve-cluster pveproxy) and re-run",
            detail=" ".join(exc.argv[:6]),
        )

    def valid_privileges(self) -> set[str]:
        try:
            admin = self.pvesh.get("/access/roles/Administrator") or {}
        except PveshError as exc:
            raise self._pve_error(
                "cannot read the host's privileges (/access/roles/Administrator)", exc
            ) from exc
        if isinstance(admin, dict) and isinstance(admin.get("privs"), str):
            return {p for p in admin["privs"].split(",") if p}
        return {k for k, v in admin.items() if v}

    def _get_or_none(self, path: str) -> Any:
        try:
            return self.pvesh.get(path)
        except PveshError as exc:
            if exc.status in (None, 404, 500):
                return None
            raise self._pve_error(f"cannot read {path}", exc) from exc

    def _role_privs(self, role: str) -> set[str] | None:
        data = self._get_or_none(f"/access/roles/{role}")
        if data is None:
            return None
        if isinstance(data, dict) and isinstance(data.get("privs"), str):
            return {p for p in data["privs"].split(",") if p}
        return {k for k, v in data.items() if v}

    def _user(self) -> dict[str, Any] | None:
        try:
            users = self.pvesh.get("/access/users") or []
        except PveshError as exc:
            raise self._pve_error("cannot list users", exc) from exc
        return next((u for u in users if u.get("userid") == self.userid), None)

    def _user_exists(self) -> bool:
        return self._user() is not None

    @staticmethod
    def _user_disabled(user: dict[str, Any]) -> bool:
        """A disabled or expired user makes every token of it fail: re-enable rather than rotate forever."""
        expire = int(user.get("expire") or 0)
        return str(user.get("enable", 1)) in ("0", "False", "false") or 0 < expire < time.time()

    def _token(self) -> dict[str, Any] | None:
        try:
            tokens = self.pvesh.get(f"/access/users/{self.userid}/token") or []
        except PveshError:
            return None
        for t in tokens:
            if t.get("tokenid") == self.tokenid:
                return t
        return None

    def _acls(self) -> list[dict[str, Any]]:
        try:
            acls = self.pvesh.get("/access/acl") or []
        except PveshError as exc:
            raise self._pve_error("cannot read ACLs", exc) from exc
        return [a for a in acls if a.get("ugid") in (self.userid, self.token_full_id)]

    def _pool_exists(self) -> bool:
        try:
            pools = self.pvesh.get("/pools") or []
        except PveshError as exc:
            raise self._pve_error("cannot list pools", exc) from exc
        return any(p.get("poolid") == self.pool for p in pools)

    def backup_storages(self) -> list[str]:
        """Storages that hold backups: vzdump needs Datastore.AllocateSpace there, nowhere else."""
        try:
            storages = self.pvesh.get("/storage") or []
        except PveshError as exc:
            raise self._pve_error("cannot list storages", exc) from exc
        return sorted(
            str(st["storage"])
            for st in storages
            if "backup" in {c.strip() for c in str(st.get("content") or "").split(",")}
        )

    def protected_guests(self) -> dict[int, str]:
        """VMID -> why it is protected: listed (PMCP_PROTECTED) or tagged ``pmcp-protected`` now."""
        why = {v: "listed in PMCP_PROTECTED" for v in self.protected}
        try:
            guests = self.pvesh.get("/cluster/resources", type="vm") or []
        except PveshError as exc:
            raise self._pve_error("cannot list guests (/cluster/resources)", exc) from exc
        for g in guests:
            if PROTECTED_TAG in split_tags(g.get("tags")) and g.get("vmid") is not None:
                why.setdefault(int(g["vmid"]), f"tagged {PROTECTED_TAG}")
        return dict(sorted(why.items()))

    def _desired_acls(self, protected: Iterable[int] | None = None) -> dict[AclKey, int]:
        """Every ACL entry this identity should have -> its propagate flag (user and token alike)."""
        if protected is None:
            protected = self.protected_guests()
        places: list[tuple[str, str, int]] = []
        if self.pool:
            places.append((self.acl_path, self.role, 1))
        else:
            privs = _MODE_PRIVS[self.mode]
            # a mode that allocates disks (clone, restore, grow) needs Datastore.AllocateSpace on any
            # storage it puts them on, and one that picks bridges SDN.Use on /sdn/zones/...: its role
            # goes on the whole tree; otherwise the tree only reads
            wide = {
                "/storage": bool(privs & {"VM.Allocate", "VM.Config.Disk"}),
                "/sdn": "SDN.Use" in privs,
            }
            places += [
                (path, self.role if wide.get(path) else self.read_role, prop) for path, prop in READ_PATHS
            ]
            places.append((MODE_PATH, self.role, 1))
            if self.role != self.read_role and not wide["/storage"]:
                places += [(f"/storage/{sid}", self.role, 1) for sid in self.backup_storages()]
        out: dict[AclKey, int] = {}
        for path, role, prop in places:
            out[(path, "user", self.userid, role)] = prop
            out[(path, "token", self.token_full_id, role)] = prop
        return {**out, **self._noaccess_acls(protected)}

    def _noaccess_acls(self, protected: Iterable[int]) -> dict[AclKey, int]:
        out: dict[AclKey, int] = {}
        for vmid in sorted(protected):
            out[(f"/vms/{vmid}", "user", self.userid, "NoAccess")] = 1
            out[(f"/vms/{vmid}", "token", self.token_full_id, "NoAccess")] = 1
        return out

    def deny_protected(self) -> list[str]:
        """Narrowing only, for `pmcp update` (cron): add the NoAccess ACL of each guest protected since the
        last install (a tag added later), record it, and say which. Never grants or removes an ACL: that
        can widen the token, and only `pmcp install` does it, with its plan shown."""
        protected = self.protected_guests()
        want = self._noaccess_acls(protected)
        current = {self._acl_key(a): a for a in self._acls()}
        missing = sorted(set(want) - set(current))
        if not missing:
            return []
        owned = self.owned_acls(current)
        try:
            for batch in _batches(missing, want):
                self._set_acls(batch, delete=False)
                owned.update(batch)
                self._save_owned(owned)
        except PveshError as exc:
            raise self._pve_error("Proxmox refused a NoAccess ACL", exc) from exc
        vmids = sorted({int(k[0].rsplit("/", 1)[1]) for k in missing})
        return [
            f"denied /vms/{v} to {self.token_full_id} (NoAccess: guest {v} is {protected[v]})" for v in vmids
        ]

    @staticmethod
    def _acl_key(a: dict[str, Any]) -> AclKey:
        return (a.get("path", ""), a.get("type", ""), a.get("ugid", ""), a.get("roleid", ""))

    # -- what pmcp made (state.json) ---------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        try:
            return statefile.load(self.paths)
        except ValueError as exc:
            raise StepError(str(exc), fix=f"restore {self.paths.state_file} from backups/") from exc

    def owned_acls(self, current: Iterable[AclKey]) -> set[AclKey]:
        """The ACLs pmcp made: the record; for an install made before the record existed, the entries
        with pmcp's own roles (only pmcp creates those roles)."""
        recorded = self._record().get(RECORD_KEY)
        if recorded is None:
            ours = set(ROLE_NAMES.values()) | {self.role}
            return {k for k in current if k[3] in ours}
        return {tuple(k) for k in recorded if isinstance(k, list) and len(k) == 4}  # type: ignore[misc]

    def _save_owned(self, owned: set[AclKey]) -> None:
        """Written after every ACL change, so a run killed half-way still knows what it made."""
        if not self.paths.state_file.exists() and not owned:
            return
        statefile.update(self.paths, **{RECORD_KEY: [list(k) for k in sorted(owned)]})

    def _own(self, key: AclKey, owned: bool) -> None:
        keys = self.owned_acls(self._current_keys())
        keys = keys | {key} if owned else keys - {key}
        self._save_owned(keys)

    def _current_keys(self) -> set[AclKey]:
        return {self._acl_key(a) for a in self._acls()}

    @staticmethod
    def _describe(key: AclKey) -> str:
        path, kind, ugid, role = key
        return f"{role} on {path} for {kind} {ugid}"

    def acl_plan(self) -> tuple[list[str], list[str]]:
        """(changes, notes) for the ACLs: what a run adds, removes or only reports."""
        protected = self.protected_guests()
        desired = self._desired_acls(protected)
        current = {self._acl_key(a): a for a in self._acls()}
        owned = self.owned_acls(current)
        changes: list[str] = []
        notes: list[str] = []
        for key in sorted(set(desired) - set(current)):
            path, kind, ugid, role = key
            if role == "NoAccess":
                vmid = int(path.rsplit("/", 1)[1])
                changes.append(f"deny {path} to {kind} {ugid} (NoAccess: guest {vmid} is {protected[vmid]})")
            else:
                prop = "" if desired[key] else " (not propagated)"
                changes.append(f"grant {role} on {path}{prop} to {kind} {ugid}")
        for key in sorted(set(desired) & set(current)):
            if key in owned and _prop(current[key]) != desired[key]:
                changes.append(f"set propagate={desired[key]} on {self._describe(key)}")
        for key in sorted(set(current) - set(desired)):
            if key in owned:
                widen = ""
                if key[3] == "NoAccess":
                    widen = f": {key[0]} is no longer protected, the token may act on it again"
                changes.append(f"remove ACL pmcp made: {self._describe(key)}{widen}")
            else:
                below = sorted(
                    {d[0] for d in desired if d[3] != "NoAccess" and d[1] == key[1] and _under(d[0], key[0])}
                )
                over = f"; pmcp's more specific ACLs override it on {', '.join(below)}" if below else ""
                notes.append(
                    f"warning: kept ACL pmcp did not make: {self._describe(key)}{over} "
                    f"(to remove it: {acl_command(key, delete=True)})"
                )
        return changes, notes

    def _secret(self) -> str | None:
        try:
            text = self.secret_file.read_text().strip()
        except (FileNotFoundError, PermissionError):
            return None
        return text or None

    def _token_broken(self, test_auth: bool = True) -> str:
        """Why the existing token must be replaced, or '' when it still works."""
        secret = self._secret()
        if secret is None:
            return f"its secret file {self.secret_file} is missing"
        if not test_auth:
            return ""
        try:
            ok = token_authenticates(self.api_url, self.token_full_id, secret, self.verify, self.tls_name)
        except IdentityError as exc:
            raise StepError(
                str(exc),
                fix="check PROXMOX_URL / the CA file, and that pveproxy runs (systemctl status pveproxy)",
            ) from exc
        return "" if ok else "the stored secret no longer authenticates"

    # -- Step --------------------------------------------------------------------------------------------

    def _prefetch(self) -> None:
        """Every read check() makes, at once (they do not depend on each other)."""
        reads: list[tuple[str, dict[str, Any]]] = [
            ("/access/roles/Administrator", {}),
            *((f"/access/roles/{role}", {}) for role in {self.role, self.read_role}),
            ("/access/users", {}),
            (f"/access/users/{self.userid}/token", {}),
            ("/cluster/resources", {"type": "vm"}),
            ("/access/acl", {}),
        ]
        if self.pool:
            reads.append(("/pools", {}))
        elif self.role != self.read_role:
            reads.append(("/storage", {}))
        self.pvesh.prefetch(reads)

    def check(self) -> Plan:
        plan = Plan()
        self._prefetch()
        valid = self.valid_privileges()
        want = set(mode_privileges(self.mode, valid))
        plan.notes.append(f"role {self.role}: {', '.join(sorted(want))}")
        if self.pool and not self._pool_exists():
            raise StepError(
                f"pool {self.pool} does not exist", fix=f"pvesh create /pools --poolid {self.pool}"
            )
        for role, privs in self._roles_wanted(valid).items():
            have = self._role_privs(role)
            if have is None:
                plan.changes.append(f"create role {role} ({len(privs)} privileges)")
            elif have != set(privs):
                diff = [f"+{p}" for p in sorted(set(privs) - have)]
                diff += [f"-{p}" for p in sorted(have - set(privs))]
                plan.changes.append(f"update role {role}: {' '.join(diff)}")
        user_entry = self._user()
        user = user_entry is not None
        if user_entry is None:
            plan.changes.append(f"create user {self.userid} (no password: it cannot log in)")
        elif self._user_disabled(user_entry):
            plan.changes.append(f"enable user {self.userid} (it is disabled or expired)")
        token = self._token() if user else None
        if token is None:
            plan.changes.append(
                f"create API token {self.token_full_id} (privilege-separated); secret in {self.secret_file}"
            )
        elif self.rotate:
            plan.changes.append(f"replace API token {self.token_full_id} (--rotate-token)")
        elif broken := self._token_broken(test_auth=not (user_entry and self._user_disabled(user_entry))):
            plan.changes.append(f"replace API token {self.token_full_id}: {broken}")
        else:
            plan.notes.append(f"token {self.token_full_id} still authenticates: kept")
            if not token.get("privsep", 1):
                plan.changes.append(f"make API token {self.token_full_id} privilege-separated")
            if self._secret_mode_wrong():
                plan.changes.append(f"protect {self.secret_file} (0600, directory 0700)")
        changes, notes = self.acl_plan()
        plan.changes += changes
        plan.notes += notes
        return plan

    def _roles_wanted(self, valid: set[str]) -> dict[str, list[str]]:
        """The mode's role, and the read-only role that the read paths carry (when they differ)."""
        roles = {self.role: mode_privileges(self.mode, valid)}
        if not self.pool and self.read_role != self.role:
            roles[self.read_role] = mode_privileges("read-only", valid)
        return roles

    def _secret_mode_wrong(self) -> bool:
        try:
            st = self.secret_file.stat()
        except FileNotFoundError:
            return False
        if self.secret_owner and (st.st_uid, st.st_gid) != tuple(self.secret_owner):
            return True
        file_mode, dir_mode = self._secret_modes()
        return (st.st_mode & 0o777) != file_mode or (
            self.secret_file.parent.stat().st_mode & 0o777
        ) != dir_mode

    def _secret_modes(self) -> tuple[int, int]:
        return (0o640, 0o750) if self.secret_owner else (0o600, 0o700)

    def apply(self) -> None:
        self._journal = []
        valid = self.valid_privileges()
        roles = self._roles_wanted(valid)
        assert not any(is_forbidden(p) for privs in roles.values() for p in privs)
        try:
            self._side_by_side(
                [lambda role=role, want=want: self._apply_role(role, want) for role, want in roles.items()]
                + [self._apply_user]
            )
            self._apply_token()
            self._apply_acls()
        except PveshError as exc:
            raise self._pve_error("Proxmox refused a change", exc) from exc

    def _side_by_side(self, calls: list[Callable[[], None]]) -> None:
        """Roles and the user do not depend on each other: one pvesh process each, at once (Proxmox
        serialises them under its user.cfg lock: pve-access-control src/PVE/API2/Role.pm create_role and
        User.pm create_user, lock_user_config). Every call finishes before the first refusal is raised,
        so the journal holds all that was made."""
        from concurrent.futures import ThreadPoolExecutor

        def run(call: Callable[[], None]) -> BaseException | None:
            try:
                call()
            except Exception as exc:
                return exc
            return None

        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            errors = [e for e in pool.map(run, calls) if e is not None]
        if errors:
            raise errors[0]

    def _apply_role(self, role: str, want: list[str]) -> None:
        have = self._role_privs(role)
        if have is None:
            self.pvesh.create("/access/roles", roleid=role, privs=",".join(want))
            self._journal_add(("role-created", role))
        elif have != set(want):
            self.pvesh.set(f"/access/roles/{role}", privs=",".join(want))
            self._journal_add(("role-updated", role, sorted(have)))

    def _apply_user(self) -> None:
        user = self._user()
        if user is None:
            self.pvesh.create(
                "/access/users", userid=self.userid, comment="pmcp MCP server (API token only, no password)"
            )
            self._journal_add(("user-created",))
        elif self._user_disabled(user):
            self.pvesh.set(f"/access/users/{self.userid}", enable=1, expire=0)

    def _apply_token(self) -> None:
        # a user this run just created has no token yet: no pvesh to ask
        token = None if ("user-created",) in (self._journal or []) else self._token()
        replace = token is not None and ((self.rotate and not self._rotated) or bool(self._token_broken()))
        if token is not None and not replace:
            if not token.get("privsep", 1):
                self.pvesh.set(f"/access/users/{self.userid}/token/{self.tokenid}", privsep=1)
            self._write_secret(None)
            return
        if token is not None:
            self.pvesh.delete(f"/access/users/{self.userid}/token/{self.tokenid}")
        created = self.pvesh.create(
            f"/access/users/{self.userid}/token/{self.tokenid}", privsep=1, comment="pmcp MCP server"
        )
        self._journal_add(("token-created",))
        secret = (created or {}).get("value")
        if not secret:
            raise StepError(
                "Proxmox created the token but returned no secret",
                fix=f"pvesh delete /access/users/{self.userid}/token/{self.tokenid} && pmcp install",
            )
        self._write_secret(secret)
        self._rotated = True

    def _write_secret(self, secret: str | None) -> None:
        """Store (or only re-protect) the token secret: 0600 in 0700, or root:GID 0640 in 0750."""
        file_mode, dir_mode = self._secret_modes()
        ensure_dir(self.paths.secrets_dir, dir_mode)
        if self.secret_owner:
            fix_owner_mode(self.paths.secrets_dir, dir_mode, self.secret_owner)
        if secret is not None:
            atomic_write(self.secret_file, secret, file_mode)
        elif os.path.lexists(self.secret_file):
            fix_owner_mode(self.secret_file, file_mode)  # never through a symlink
        if self.secret_owner and os.path.lexists(self.secret_file):
            fix_owner_mode(self.secret_file, file_mode, self.secret_owner)

    def _apply_acls(self) -> None:
        """Deny first, then grant, then remove: the token is never wider in between than before or after.
        Only ACLs pmcp made are removed; the others are kept (check() lists them)."""
        reads: list[tuple[str, dict[str, Any]]] = [("/cluster/resources", {"type": "vm"})]
        reads.append(("/access/acl", {}))
        if not self.pool and self.role != self.read_role:
            reads.append(("/storage", {}))
        self.pvesh.prefetch(reads)  # read again after the writes above, side by side
        desired = self._desired_acls()
        current = {self._acl_key(a): a for a in self._acls()}
        owned = self.owned_acls(current)
        if self._record().get(RECORD_KEY) is None:
            self._save_owned(owned)  # adopt what an older pmcp made, once
        missing = set(desired) - set(current)
        denies = sorted(k for k in missing if k[3] == "NoAccess")
        for phase in (denies, sorted(missing - set(denies))):  # every deny is in place before any grant
            done, failed = self._set_acls_at_once(_batches(phase, desired), desired)
            for batch in done:
                for key in batch:
                    self._journal_add(("acl-added", *key))
                owned.update(batch)
            self._save_owned(owned)
            if failed is not None:
                raise failed
        moved = [k for k in sorted(set(desired) & set(current) & owned) if _prop(current[k]) != desired[k]]
        for batch in _batches(moved, desired):
            self._set_acls(batch, delete=False, propagate=desired[batch[0]])
        stale = {k: _prop(current[k]) for k in (set(current) - set(desired)) & owned}
        for batch in _batches(sorted(stale), stale):
            self._set_acls(batch, delete=True)
            for key in batch:
                self._journal_add(("acl-removed", *key, stale[key]))
            owned.difference_update(batch)
            self._save_owned(owned)

    def _set_acls_at_once(
        self, batches: list[list[AclKey]], desired: dict[AclKey, int]
    ) -> tuple[list[list[AclKey]], PveshError | None]:
        """Add these ACL batches side by side (each a separate pvesh call; Proxmox serialises them under
        its user.cfg lock: pve-access-control src/PVE/API2/ACL.pm update_acl, lock_user_config).
        Returns the batches that were made and the first refusal, so undo() knows what to remove."""
        if len(batches) < 2:
            try:
                for batch in batches:
                    self._set_acls(batch, delete=False, propagate=desired[batch[0]])
            except PveshError as exc:
                return [], exc
            return batches, None
        from concurrent.futures import ThreadPoolExecutor

        def add(batch: list[AclKey]) -> PveshError | None:
            try:
                self._set_acls(batch, delete=False, propagate=desired[batch[0]])
            except PveshError as exc:
                return exc
            return None

        with ThreadPoolExecutor(max_workers=min(len(batches), 6)) as pool:  # as many as prefetch
            errors = list(pool.map(add, batches))
        done = [b for b, e in zip(batches, errors, strict=True) if e is None]
        return done, next((e for e in errors if e is not None), None)

    def _set_acls(self, keys: list[AclKey], delete: bool, propagate: int = 1) -> None:
        """One PUT /access/acl for the user and the token on one path and role (it takes lists of both)."""
        path, role = keys[0][0], keys[0][3]
        params: dict[str, Any] = {"path": path, "roles": role, "propagate": propagate}
        users = [k[2] for k in keys if k[1] == "user"]
        tokens = [k[2] for k in keys if k[1] == "token"]
        if users:
            params["users"] = ",".join(users)
        if tokens:
            params["tokens"] = ",".join(tokens)
        if delete:
            params["delete"] = 1
        self.pvesh.set("/access/acl", params)

    def _set_acl(self, path: str, kind: str, ugid: str, role: str, delete: bool, propagate: Any = 1) -> None:
        params: dict[str, Any] = {"path": path, "roles": role, "propagate": 1 if propagate else 0}
        params["users" if kind == "user" else "tokens"] = ugid
        if delete:
            params["delete"] = 1
        self.pvesh.set("/access/acl", params)

    def _journal_add(self, entry: tuple[Any, ...]) -> None:
        if self._journal is not None:
            self._journal.append(entry)

    def undo(self) -> None:
        try:
            if self._journal is not None:
                self._undo_journal(self._journal)
                self._journal = None
            else:
                self._teardown()
        except PveshError as exc:
            raise self._pve_error("Proxmox refused to remove the pmcp identity", exc) from exc

    def _undo_journal(self, journal: list[tuple[Any, ...]]) -> None:
        """Revert only what the failed apply did, newest first."""
        for entry in reversed(journal):
            kind = entry[0]
            if kind == "acl-added":
                self._set_acl(*entry[1:5], delete=True)
                self._own(entry[1:5], False)
            elif kind == "acl-removed":
                self._set_acl(*entry[1:5], delete=False, propagate=entry[5])
                self._own(entry[1:5], True)
            elif kind == "token-created":
                with contextlib.suppress(PveshError):
                    self.pvesh.delete(f"/access/users/{self.userid}/token/{self.tokenid}")
                with contextlib.suppress(FileNotFoundError):
                    self.secret_file.unlink()
            elif kind == "user-created":
                self.pvesh.delete(f"/access/users/{self.userid}")
            elif kind == "role-created":
                self.pvesh.delete(f"/access/roles/{entry[1]}")
            elif kind == "role-updated":
                self.pvesh.set(f"/access/roles/{entry[1]}", privs=",".join(entry[2]))

    def _teardown(self) -> None:
        """Uninstall: ACLs, then tokens, then the user, then the roles (deleting a role leaves its ACLs)."""
        for a in self._acls():
            self._set_acl(*self._acl_key(a), delete=True, propagate=a.get("propagate", 1))
        if self.paths.state_file.exists():
            self._save_owned(set())
        if self._user_exists():
            with contextlib.suppress(PveshError):
                for t in self.pvesh.get(f"/access/users/{self.userid}/token") or []:
                    self.pvesh.delete(f"/access/users/{self.userid}/token/{t['tokenid']}")
            self.pvesh.delete(f"/access/users/{self.userid}")
        try:
            used = {a.get("roleid") for a in (self.pvesh.get("/access/acl") or [])}
        except PveshError:
            used = set()
        for role in {self.role, *ROLE_NAMES.values()}:
            if role not in used and self._role_privs(role) is not None:
                self.pvesh.delete(f"/access/roles/{role}")
        with contextlib.suppress(FileNotFoundError):
            self.secret_file.unlink()


# -- verification -------------------------------------------------------------------------------------------


def _message(resp: Any) -> str:
    try:
        return str(resp.json().get("message") or "").strip() or resp.reason
    except ValueError:
        return resp.text[:200].strip() or resp.reason


def verify_identity(
    api_url: str,
    token_full_id: str,
    secret_file: Path,
    verify: bool | str | None = None,
    mode: str = "read-only",
    pool: str | None = None,
    protected: Iterable[int] = (),
    tls_name: str | None = None,
) -> list[Check]:
    """Prove the token's limits from its side: it works, holds no forbidden privilege and nothing beyond
    its mode, holds nothing on ``/access`` and no more than reading on ``/`` itself, cannot see a protected
    guest, and is refused a change to root@pam and to the ACLs."""
    fix = "pmcp install --rotate-token"
    try:
        secret = Path(secret_file).read_text().strip()
    except (FileNotFoundError, PermissionError) as exc:
        return [Check("proxmox token", False, f"cannot read {secret_file}: {exc.strerror}", fix)]
    headers = _headers(token_full_id, secret)
    api = _api(api_url)
    checks: list[Check] = []
    try:
        resp = _request("GET", api + "/version", headers, verify, tls_name)
        if resp.status_code != 200:
            return [
                Check("proxmox token", False, f"GET /version: HTTP {resp.status_code} {_message(resp)}", fix)
            ]
        version = (resp.json().get("data") or {}).get("version", "?")
        checks.append(Check("proxmox token", True, f"{token_full_id} authenticates (Proxmox VE {version})"))

        resp = _request("GET", api + "/access/permissions", headers, verify, tls_name)
        if resp.status_code != 200:
            checks.append(Check("token permissions", False, f"HTTP {resp.status_code} {_message(resp)}", fix))
        else:
            perms: dict[str, dict[str, Any]] = resp.json().get("data") or {}
            # A key is a held privilege; its value is only the propagate flag (0 for an ACL without
            # propagation or a pool member's): pve-access-control RPCEnvironment.pm permissions.
            held = {p for privs in perms.values() for p in privs or {}}
            bad = sorted(p for p in held if is_forbidden(p))
            extra = sorted(held - _MODE_PRIVS.get(mode, set()))
            scope = f"/pool/{pool}" if pool else MODE_PATH
            at_scope = set(perms.get(scope) or {})
            if bad:
                checks.append(Check("token permissions", False, f"token holds {', '.join(bad)}", fix))
            elif extra:
                checks.append(
                    Check("token permissions", False, f"more than mode {mode}: {', '.join(extra)}", fix)
                )
            elif not at_scope:
                checks.append(Check("token permissions", False, f"no privileges on {scope}", fix))
            else:
                checks.append(
                    Check("token permissions", True, f"{len(at_scope)} privileges on {scope}, none forbidden")
                )
            checks.append(_scope_check(perms))

        checks.append(_protected_check(api, headers, verify, protected, tls_name))

        # The current comment when the token can read it: even if PVE wrongly allowed it, nothing changes.
        comment = "pmcp-probe"
        current = _request("GET", api + "/access/users/root@pam", headers, verify, tls_name)
        if current.status_code == 200:
            comment = (current.json().get("data") or {}).get("comment") or comment
        resp = _request(
            "PUT", api + "/access/users/root@pam", headers, verify, tls_name, data={"comment": comment}
        )
        checks.append(_refused("root@pam protected", "PUT /access/users/root@pam", resp))

        # PUT /access/password proves nothing: PVE refuses it to every token (allowtoken => 0). An ACL
        # change can fail: on /access/realm/X it needs Permissions.Modify (pve-access-control
        # PVE/RPCEnvironment.pm check_perm_modify, for PVE/API2/ACL.pm update_acl), and a token
        # that had it could grant itself anything. If it was not refused, it removed an ACL entry that
        # cannot exist (a random realm path): nothing changes.
        probe_path = f"/access/realm/pmcp-probe-{secrets.token_hex(6)}"
        resp = _request(
            "PUT",
            api + "/access/acl",
            headers,
            verify,
            tls_name,
            data={"path": probe_path, "roles": "NoAccess", "tokens": token_full_id, "delete": 1},
        )
        checks.append(_refused("acl change refused", "PUT /access/acl", resp, "can change ACLs"))
    except IdentityError as exc:
        checks.append(Check("proxmox api", False, str(exc), "check PROXMOX_URL and the CA file"))
    return checks


def _refused(name: str, call: str, resp: Any, what: str = "can change root@pam") -> Check:
    if resp.status_code in REFUSED:
        return Check(name, True, f"{call}: HTTP {resp.status_code} {_message(resp)}")
    return Check(
        name,
        False,
        f"{call} was NOT refused (HTTP {resp.status_code}): the token {what}",
        "remove the ACLs that give pmcp@pve more (pvesh get /access/acl), then pmcp install "
        "(or pmcp uninstall && pmcp install: recreates the role without user privileges)",
    )


def _scope_check(perms: dict[str, dict[str, Any]]) -> Check:
    """Nothing on /access (users, ACLs), and on / itself at most reading: pve-manager PVE/API2/Nodes.pm
    stopall/startall/suspendall take VM.PowerMgmt on / as leave to act on every guest of a node."""
    on_access = sorted(p for p, v in (perms.get("/access") or {}).items() if v)
    on_root = sorted(p for p, v in (perms.get("/") or {}).items() if v and p not in _MODE_PRIVS["read-only"])
    fix = "pmcp install (re-run: it moves pmcp's ACLs off / and removes the ones it made there)"
    if on_access:
        return Check("token scope", False, f"holds {', '.join(on_access)} on /access", fix)
    if on_root:
        return Check("token scope", False, f"holds {', '.join(on_root)} on / (e.g. stopall)", fix)
    return Check("token scope", True, "nothing on /access; on / only reading")


def _protected_check(
    api: str,
    headers: dict[str, str],
    verify: bool | str | None,
    listed: Iterable[int],
    tls_name: str | None = None,
) -> Check:
    """A protected guest the token can still see is one its NoAccess ACL does not cover yet: listed after
    the install, or tagged ``pmcp-protected`` since. The server refuses it meanwhile; a re-run converges."""
    resp = _request("GET", api + "/cluster/resources", headers, verify, tls_name, params={"type": "vm"})
    if resp.status_code != 200:
        return Check(
            "protected guests", False, f"GET /cluster/resources: HTTP {resp.status_code}", "pmcp logs"
        )
    listed = set(listed)
    exposed = []
    for g in resp.json().get("data") or []:
        vmid = g.get("vmid")
        if vmid in listed or PROTECTED_TAG in split_tags(g.get("tags")):
            exposed.append(int(vmid))
    if exposed:
        ids = ", ".join(str(v) for v in sorted(exposed))
        return Check(
            "protected guests",
            True,
            f"the token still reaches protected guest(s) {ids} (no NoAccess ACL yet); the server refuses "
            "changes to them meanwhile",
            "pmcp update or pmcp install (either adds a NoAccess ACL for each protected guest)",
            warn=True,
        )
    return Check("protected guests", True, "no protected guest is visible to the token (NoAccess)")
