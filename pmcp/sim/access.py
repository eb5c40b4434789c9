"""Who is asking and what they may do: tokens, roles, ACLs, and the schema's permission checks.

Follows PVE's rules: ACLs on paths propagate down and a more specific path overrides; at one level a
user's own ACLs override its groups'; ``NoAccess`` removes everything; a guest or storage in a pool
also gets the pool's permissions unless a ``NoAccess`` on its own path says otherwise; ``root@pam``
has every privilege; a privilege-separated token gets the INTERSECTION of its own ACLs and its user's,
a non-separated token its user's. Each rule cites the PVE function it follows.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pmcp.sim.errors import ApiError, auth_error, perm_error
from pmcp.sim.privileges import privileges_for

if TYPE_CHECKING:
    from pmcp.sim.state import SimState


def host_privileges(state: SimState) -> frozenset[str]:
    """The privileges this simulated host knows (PVE 9: 47, PVE 8: 42)."""
    return frozenset(privileges_for(pve_major(state)))


def pve_major(state: SimState) -> int:
    return int(str(state.world.get("pve_version", "9")).split(".")[0])


@dataclass(frozen=True)
class Auth:
    """The authenticated caller: ``userid`` (``mcp@pve``) and, for a token, ``tokenid`` (``mcp``)."""

    userid: str
    tokenid: str | None = None

    @property
    def authid(self) -> str:
        return f"{self.userid}!{self.tokenid}" if self.tokenid else self.userid

    @property
    def is_root(self) -> bool:
        return self.userid == "root@pam"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


TICKET_SECONDS = 2 * 3600


def issue_ticket(state: SimState, userid: str) -> tuple[str, str]:
    """A session ticket and its CSRF token (valid two hours, like PVE's)."""
    now = int(time.time())
    ticket = f"PVE:{userid}:{now:08X}::{secrets.token_urlsafe(48)}"
    csrf = f"{now:08X}:{secrets.token_urlsafe(24)}"
    state.tickets[ticket] = (userid, now + TICKET_SECONDS, csrf)
    return ticket, csrf


def ticket_user(state: SimState, ticket: str) -> str | None:
    entry = state.tickets.get(ticket)
    if entry is None or entry[1] < time.time():
        return None
    return entry[0]


def check_password(state: SimState, userid: str, password: str) -> bool:
    """root@pam uses the simulator's root password; @pve users the password set through the API."""
    user = state.world["users"].get(userid)
    if not user or not user.get("enable", 1):
        return False
    if userid == "root@pam":
        return hmac.compare_digest(password, state.root_password)
    stored = user.get("password")
    return bool(stored) and hmac.compare_digest(stored, hashlib.sha256(password.encode()).hexdigest())


def _ticket_auth(state: SimState, cookie: str, csrf: str | None, method: str) -> Auth:
    ticket = ""
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "PVEAuthCookie":
            ticket = unquote(value)
    userid = ticket_user(state, ticket) if ticket else None
    if userid is None:
        raise auth_error()
    if method != "GET" and csrf != state.tickets[ticket][2]:
        raise auth_error("Permission denied - invalid csrf token")
    return Auth(userid)


def authenticate(
    state: SimState,
    header: str | None,
    cookie: str | None = None,
    csrf: str | None = None,
    method: str = "GET",
) -> Auth:
    """An API token (``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``) or a session ticket
    (``PVEAuthCookie``, plus ``CSRFPreventionToken`` for changes); anything else is a 401."""
    fail = auth_error()
    if not header and cookie and "PVEAuthCookie=" in cookie:
        return _ticket_auth(state, cookie, csrf, method)
    if not header:
        raise auth_error("No ticket")
    scheme, _, cred = header.partition("=")
    if scheme.strip() not in ("PVEAPIToken", "PVEAPIToken "):
        scheme2, _, cred2 = header.partition(" ")
        if scheme2 != "PVEAPIToken":
            raise fail
        cred = cred2
    full, sep, secret = cred.strip().rpartition("=")
    userid, bang, tokenid = full.partition("!")
    if not (sep and bang and userid and tokenid and secret):
        raise fail
    user = state.world["users"].get(userid)
    token = (user or {}).get("tokens", {}).get(tokenid)
    if not user or not token or not hmac.compare_digest(token["secret_sha256"], hash_secret(secret)):
        raise fail
    now = time.time()
    if (
        not user.get("enable", 1)
        or (user.get("expire") or now + 1) < now
        or (token.get("expire") or now + 1) < now
    ):
        raise fail
    return Auth(userid, tokenid)


def _levels(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _roles(state: SimState, path: str, matches: Any) -> dict[str, int]:
    """pve-access-control PVE/AccessControl.pm ``roles()``: the walk from ``/`` to ``path``; at each
    level the entries that apply (``propagate`` set, or the final level) REPLACE what was inherited
    (a user's own entries before its groups'); a final set holding ``NoAccess`` is ``NoAccess`` alone.
    Returns role -> propagate flag."""
    acls = state.acl_index()
    roles: dict[str, int] = {}
    levels = _levels(path)
    for i, level in enumerate(levels):
        final = i == len(levels) - 1
        entries = [e for e in acls.get(level, ()) if final or e.get("propagate", 1)]
        if not entries:
            continue
        own = [e for e in entries if matches(e) == 2]
        chosen = own or [e for e in entries if matches(e) == 1]
        if chosen:
            roles = {e["roleid"]: int(bool(e.get("propagate", 1))) for e in chosen}
    if "NoAccess" in roles:
        return {"NoAccess": roles["NoAccess"]}
    return roles


def _matcher(state: SimState, authid: str) -> Any:
    """Which ACL entries name ``authid``: a token only its own entries (PVE never gives a token its
    user's groups), a user its own (2) before its groups' (1)."""
    if "!" in authid:
        return lambda e: 2 if e["type"] == "token" and e["ugid"] == authid else 0
    groups = set(state.world["users"].get(authid, {}).get("groups", ()))

    def matches(e: dict) -> int:
        if e["type"] == "user" and e["ugid"] == authid:
            return 2
        if e["type"] == "group" and e["ugid"] in groups:
            return 1
        return 0

    return matches


def _pool_members(state: SimState, path: str) -> list[str]:
    """The pools ``path`` belongs to: a guest (``/vms/ID``) or a storage (``/storage/ID``) member."""
    parts = path.strip("/").split("/")
    if len(parts) != 2:
        return []
    if parts[0] == "vms":
        guest = state.world["guests"].get(parts[1])
        return [guest["pool"]] if guest and guest.get("pool") else []
    if parts[0] == "storage":
        return [p for p, d in state.world["pools"].items() if parts[1] in (d.get("storage") or ())]
    return []


def _compiled(state: SimState, authid: str, path: str) -> dict[str, int]:
    """pve-access-control PVE/RPCEnvironment.pm ``$compile_acl_path`` for one user or token: its roles
    on ``path``, then the roles it holds on the pools ``path`` belongs to. A ``NoAccess`` on the path
    is never trumped by pool ACLs; a pool's ``NoAccess`` trumps the path's roles; else pool roles
    are added with flag 0 ("never set propagation for pool-derived ACLs"). Returns privilege ->
    propagate flag, 1 if any role holding it propagates (``$privs->{$p} ||= $roles->{$role}``)."""
    matches = _matcher(state, authid)
    roles = _roles(state, path, matches)
    pool_roles: set[str] = set()
    for pool in _pool_members(state, path):
        pool_roles |= set(_roles(state, f"/pool/{pool}", matches))
    if pool_roles and "NoAccess" not in roles:
        roles = {"NoAccess": 0} if "NoAccess" in pool_roles else {**dict.fromkeys(pool_roles, 0), **roles}
    privs: dict[str, int] = {}
    for r, flag in roles.items():
        for priv in state.world["roles"].get(r, {}).get("privs", ()):
            privs[priv] = privs.get(priv, 0) or flag
    return privs


def _user_privs(state: SimState, userid: str, path: str) -> dict[str, int]:
    if userid == "root@pam":
        return dict.fromkeys(host_privileges(state), 1)
    user = state.world["users"].get(userid)
    if not user or not user.get("enable", 1):
        return {}
    return _compiled(state, userid, path)


def privilege_flags(state: SimState, auth: Auth, path: str) -> dict[str, int]:
    """PVE/RPCEnvironment.pm ``permissions()``: privilege -> propagate flag on ``path`` (a key present
    is a held privilege, whatever its value; cached until identity or ACLs change). A token that is
    not privilege-separated is its user; a privilege-separated one gets its own compiled privileges
    INTERSECTED with its user's, flags ANDed (both after pool roles are merged in)."""
    key = (auth.authid, path)
    cache = state.perm_cache
    hit = cache.get(key)
    if hit is not None:
        return hit
    privs = _user_privs(state, auth.userid, path)
    if auth.tokenid:  # root@pam's own privsep token: all & its ACLs = its ACLs, as in PVE
        token = state.world["users"].get(auth.userid, {}).get("tokens", {}).get(auth.tokenid, {})
        if token.get("privsep", 1):
            mine = _compiled(state, auth.authid, path)
            privs = {p: int(bool(privs[p] and flag)) for p, flag in mine.items() if p in privs}
    cache[key] = privs
    return privs


def privileges(state: SimState, auth: Auth, path: str) -> frozenset[str]:
    """Effective privileges of the caller on ``path``."""
    return frozenset(privilege_flags(state, auth, path))


def has(
    state: SimState, auth: Auth, path: str, privs: list[str] | tuple[str, ...], any_: bool = False
) -> bool:
    held = privileges(state, auth, path)
    return any(p in held for p in privs) if any_ else all(p in held for p in privs)


def require(
    state: SimState, auth: Auth, path: str, privs: list[str] | tuple[str, ...], any_: bool = False
) -> None:
    """Raise PVE's 403 unless the caller holds the privilege(s) on ``path``."""
    held = privileges(state, auth, path)
    if any_:
        if not any(p in held for p in privs):
            raise perm_error(f"{path}, {'|'.join(privs)}")
        return
    for p in privs:
        if p not in held:
            raise perm_error(f"{path}, {p}")


def _perm_modify_privs(path: str) -> list[str]:
    """PVE/RPCEnvironment.pm check_perm_modify: Permissions.Modify, or the path kind's Allocate."""
    tests = ["Permissions.Modify"]
    if path.startswith("/storage/"):
        tests.append("Datastore.Allocate")
    elif path.startswith("/vms/"):
        tests.append("VM.Allocate")
    elif path.startswith("/pool/"):
        tests.append("Pool.Allocate")
    return tests


def may_modify(state: SimState, auth: Auth, path: str) -> bool:
    return has(state, auth, path, _perm_modify_privs(path), any_=True)


def _subst(template: str, params: dict[str, Any]) -> str:
    out = template
    for k, v in params.items():
        out = out.replace("{" + k + "}", str(v))
    return out


def _realm(userid: str) -> str:
    return userid.split("!", 1)[0].rpartition("@")[2]


def _userid_group(state: SimState, auth: Auth, params: dict, privs: list[str], opts: dict) -> None:
    """PVE's ``userid-group``: privilege on /access/groups, or on a group the target user is in.

    A user in no group (like ``root@pam``) can therefore only be changed by someone holding the
    privilege on ``/access/groups`` itself.
    """
    userid = params.get("userid", "")
    mode = opts.get("groups_param")
    existing = mode != "create"
    if existing and userid not in state.world["users"]:
        raise ApiError(500, f"no such user ('{userid}')")
    if mode and params.get("groups"):
        for g in str(params["groups"]).split(","):
            if g:
                require(state, auth, f"/access/groups/{g}", privs, any_=True)
    if not existing:
        if not params.get("groups"):
            require(state, auth, "/access/groups", privs, any_=True)
        return
    if has(state, auth, "/access/groups", privs, any_=True):
        return
    for g in state.world["users"][userid].get("groups", ()):
        if has(state, auth, f"/access/groups/{g}", privs, any_=True):
            return
    raise perm_error(f"/access/groups, {'|'.join(privs)}")


def check(state: SimState, auth: Auth, perms: dict, params: dict[str, Any]) -> None:
    """Evaluate an endpoint's schema ``permissions`` for the caller; raise 403 when they fail.

    Handles the check trees the served endpoints use: ``perm``, ``perm-modify``, ``userid-param``,
    ``userid-group``, ``and``, ``or``. ``user: all`` passes here and the handler filters (as PVE's
    code does); "root@pam only" endpoints refuse everyone else.
    """
    # pve-access-control RPCEnvironment.pm check_api2_permissions: "return 1 if $username eq
    # 'root@pam'" -- a root@pam session only; a token's username is USER@REALM!TOKENID.
    if auth.authid == "root@pam":
        return
    raw = perms.get("raw")
    if raw is None:
        if "root@pam only" in str(perms.get("check", "")) and auth.authid != "root@pam":
            raise perm_error("root@pam only")
        return
    _eval(state, auth, raw, params)


def _eval(state: SimState, auth: Auth, node: list, params: dict[str, Any]) -> None:
    op = node[0]
    if op == "and":
        for sub in node[1:]:
            _eval(state, auth, sub, params)
        return
    if op == "or":
        first: ApiError | None = None
        for sub in node[1:]:
            try:
                _eval(state, auth, sub, params)
                return
            except ApiError as e:
                first = first or e
        raise first or perm_error()
    if op == "perm":
        opts = dict(zip(node[3::2], node[4::2], strict=False))
        if opts.get("require_param") and opts["require_param"] not in params:
            raise perm_error(f"{node[1]}, {'|'.join(node[2])}")
        require(state, auth, _subst(node[1], params), node[2], any_=bool(opts.get("any")))
        return
    if op == "perm-modify":
        path = _subst(node[1], params)
        require(state, auth, path, _perm_modify_privs(path), any_=True)
        return
    if op == "userid-param":
        userid = str(params.get("userid", ""))
        if node[1] == "self":
            if userid and userid == auth.userid:
                return
            raise perm_error()
        require(state, auth, f"/access/realm/{_realm(userid)}", [node[1]])
        return
    if op == "userid-group":
        opts = dict(zip(node[2::2], node[3::2], strict=False))
        _userid_group(state, auth, params, list(node[1]), opts)
        return
    raise perm_error(f"unsupported check {op}")
