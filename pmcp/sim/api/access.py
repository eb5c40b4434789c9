"""/access: roles, users, API tokens, groups, ACLs, effective permissions and passwords.

Token secrets are returned once, at creation; only their SHA-256 is kept. Deleting a role, user
or token takes its ACL entries with it, as reading user.cfg back does on PVE.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from pmcp.sim import access as perms
from pmcp.sim.api.common import Ctx, split_list
from pmcp.sim.errors import ApiError, param_error
from pmcp.sim.routes import route

REALMS = {
    "pam": {"type": "pam", "comment": "Linux PAM standard authentication"},
    "pve": {"type": "pve", "comment": "Proxmox VE authentication server"},
}
_ACL_PATH = re.compile(
    r"^/(|access(/(groups|realm)(/[^/]+)?)?|vms(/\d+)?|storage(/[^/]+)?|pool(/[^/]+){0,3}|nodes(/[^/]+)?"
    r"|sdn(/[^/]+){0,4}|mapping(/[^/]+){0,2})$"
)


def _user(ctx: Ctx, userid: str) -> dict[str, Any]:
    user = ctx.world["users"].get(userid)
    if user is None:
        raise ApiError(500, f"no such user ('{userid}')")
    return user


def _role(ctx: Ctx, roleid: str) -> dict[str, Any]:
    role = ctx.world["roles"].get(roleid)
    if role is None:
        raise ApiError(500, f"role '{roleid}' does not exist")
    return role


def _privs(ctx: Ctx, value: Any) -> list[str]:
    privs = split_list(value)
    valid = perms.host_privileges(ctx.state)
    bad = [p for p in privs if p not in valid]
    if bad:
        raise param_error({"privs": f"invalid format - invalid privilege '{bad[0]}'\n"})
    return sorted(set(privs))


@route("GET", "/access")
def access_index(ctx: Ctx, p: dict) -> list:
    subdirs = (
        "users",
        "groups",
        "roles",
        "acl",
        "domains",
        "openid",
        "tfa",
        "ticket",
        "password",
        "permissions",
    )
    return [{"subdir": s} for s in subdirs]


@route("GET", "/access/ticket")
def ticket_dummy(ctx: Ctx, p: dict) -> None:
    return None


@route("POST", "/access/ticket")
def ticket(ctx: Ctx, p: dict) -> dict:
    """A session for USER@REALM and its password (or a still-valid ticket, to renew it)."""
    username = p["username"]
    if "@" not in username:
        username = f"{username}@{p.get('realm', 'pam')}"
    password = p["password"]
    if password.startswith("PVE:") and perms.ticket_user(ctx.state, password) == username:
        valid = True
    else:
        valid = perms.check_password(ctx.state, username, password)
    if not valid:
        raise ApiError(401, "authentication failure")
    ticket_, csrf = perms.issue_ticket(ctx.state, username)
    return {
        "username": username,
        "ticket": ticket_,
        "CSRFPreventionToken": csrf,
        "clustername": ctx.world["cluster_name"],
        "cap": {},
    }


@route("GET", "/access/domains")
def domains(ctx: Ctx, p: dict) -> list:
    return [{"realm": r, **info} for r, info in REALMS.items()]


# --- roles ------------------------------------------------------------------------------------


@route("GET", "/access/roles")
def roles(ctx: Ctx, p: dict) -> list:
    out = []
    for rid, r in sorted(ctx.world["roles"].items()):
        entry: dict[str, Any] = {"roleid": rid, "privs": ",".join(r["privs"])}
        if r.get("special"):
            entry["special"] = 1
        out.append(entry)
    return out


@route("GET", "/access/roles/{roleid}")
def role_read(ctx: Ctx, p: dict) -> dict:
    """A role's privileges as ``{priv: 1}``; ``Administrator`` thus lists every valid privilege."""
    return {priv: 1 for priv in _role(ctx, p["roleid"])["privs"]}


@route("POST", "/access/roles")
def role_create(ctx: Ctx, p: dict) -> None:
    rid = p["roleid"]
    # pve-access-control src/PVE/API2/Role.pm create_role: the prefix check first, a 400 ...
    if rid.upper().startswith("PVE"):
        raise param_error(
            {"roleid": "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"}
        )
    if rid in ctx.world["roles"]:  # ... then inside lock_user_config: "create role failed: ..."
        raise ApiError(500, f"create role failed: role '{rid}' already exists")
    ctx.world["roles"][rid] = {"privs": _privs(ctx, p.get("privs"))}
    ctx.state.changed(access=True)


@route("PUT", "/access/roles/{roleid}")
def role_update(ctx: Ctx, p: dict) -> None:
    role = _role(ctx, p["roleid"])
    if role.get("special"):
        raise ApiError(500, f"update role failed: cannot modify built-in role '{p['roleid']}'")
    privs = _privs(ctx, p.get("privs"))
    role["privs"] = sorted(set(role["privs"]) | set(privs)) if p.get("append") else privs
    ctx.state.changed(access=True)


@route("DELETE", "/access/roles/{roleid}")
def role_delete(ctx: Ctx, p: dict) -> None:
    role = _role(ctx, p["roleid"])
    if role.get("special"):
        raise ApiError(500, f"delete role failed: cannot delete built-in role '{p['roleid']}'")
    del ctx.world["roles"][p["roleid"]]
    # Role.pm delete_role leaves the ACL lines in user.cfg ("fixme"), but parsing user.cfg drops
    # every ACL of an unknown role (AccessControl.pm parse_user_config: "ignore invalid acl role"),
    # so from then on they are gone.
    ctx.world["acls"] = [e for e in ctx.world["acls"] if e["roleid"] != p["roleid"]]
    ctx.state.changed(access=True)


# --- users ------------------------------------------------------------------------------------


def _user_view(userid: str, u: dict[str, Any], full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"userid": userid, "realm-type": userid.rpartition("@")[2]}
    for key in ("enable", "expire", "comment", "email", "firstname", "lastname"):
        if u.get(key) not in (None, ""):
            out[key] = u[key]
    if u.get("groups"):
        out["groups"] = ",".join(u["groups"])
    if full:
        out["tokens"] = [_token_view(t, info) for t, info in u.get("tokens", {}).items()]
    return out


def _token_view(tokenid: str | None, t: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"privsep": t.get("privsep", 1), "expire": t.get("expire", 0)}
    if t.get("comment"):
        out["comment"] = t["comment"]
    if tokenid is not None:
        out["tokenid"] = tokenid
    return out


def _may_see_user(ctx: Ctx, userid: str, u: dict[str, Any]) -> bool:
    if userid == ctx.auth.userid or ctx.has("/access/groups", "User.Modify", "Sys.Audit"):
        return True
    return any(ctx.has(f"/access/groups/{g}", "User.Modify", "Sys.Audit") for g in u.get("groups", ()))


@route("GET", "/access/users")
def users(ctx: Ctx, p: dict) -> list:
    out = []
    for userid, u in sorted(ctx.world["users"].items()):
        if p.get("enabled") and not u.get("enable", 1):
            continue
        if _may_see_user(ctx, userid, u):
            out.append(_user_view(userid, u, bool(p.get("full"))))
    return out


def _check_groups(ctx: Ctx, groups: list[str]) -> None:
    for g in groups:
        if g not in ctx.world["groups"]:
            raise ApiError(500, f"no such group '{g}'")


@route("POST", "/access/users")
def user_create(ctx: Ctx, p: dict) -> None:
    userid = p["userid"]
    realm = userid.rpartition("@")[2]
    if realm not in REALMS:
        raise ApiError(500, f"create user failed: domain '{realm}' does not exist")
    if userid in ctx.world["users"]:
        raise ApiError(500, f"create user failed: user '{userid}' already exists")
    groups = split_list(p.get("groups"))
    _check_groups(ctx, groups)
    ctx.world["users"][userid] = {
        "enable": p.get("enable", 1),
        "expire": p.get("expire", 0),
        "comment": p.get("comment", ""),
        "email": p.get("email", ""),
        "firstname": p.get("firstname", ""),
        "lastname": p.get("lastname", ""),
        "groups": groups,
        "password": _pw(p["password"]) if p.get("password") else None,
        "tokens": {},
    }
    ctx.state.changed(access=True)


def _pw(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@route("GET", "/access/users/{userid}")
def user_read(ctx: Ctx, p: dict) -> dict:
    u = _user(ctx, p["userid"])
    out = _user_view(p["userid"], u, False)
    out.pop("userid")
    out.pop("realm-type")
    out["groups"] = list(u.get("groups", []))
    out["tokens"] = {t: _token_view(None, info) for t, info in u.get("tokens", {}).items()}
    return out


@route("PUT", "/access/users/{userid}")
def user_update(ctx: Ctx, p: dict) -> None:
    u = _user(ctx, p["userid"])
    for key in ("enable", "expire", "comment", "email", "firstname", "lastname", "keys"):
        if key in p:
            u[key] = p[key]
    if "groups" in p:
        groups = split_list(p["groups"])
        _check_groups(ctx, groups)
        u["groups"] = sorted(set(u.get("groups", [])) | set(groups)) if p.get("append") else groups
    ctx.state.changed(access=True)


@route("DELETE", "/access/users/{userid}")
def user_delete(ctx: Ctx, p: dict) -> None:
    _user(ctx, p["userid"])
    if p["userid"] == "root@pam":
        raise ApiError(500, "cannot delete user 'root@pam'")
    del ctx.world["users"][p["userid"]]
    # User.pm delete_user: delete_user_acl; its tokens' ACLs go with the tokens (parse_user_config:
    # "ignore invalid acl token")
    ctx.world["acls"] = [
        e
        for e in ctx.world["acls"]
        if not (e["type"] == "user" and e["ugid"] == p["userid"])
        and not (e["type"] == "token" and e["ugid"].split("!", 1)[0] == p["userid"])
    ]
    ctx.state.changed(access=True)


# --- tokens -----------------------------------------------------------------------------------


def _token(ctx: Ctx, userid: str, tokenid: str) -> dict[str, Any]:
    t = _user(ctx, userid).get("tokens", {}).get(tokenid)
    if t is None:
        raise ApiError(500, f"no such token '{tokenid}' for user '{userid}'")
    return t


@route("GET", "/access/users/{userid}/token")
def tokens(ctx: Ctx, p: dict) -> list:
    return [_token_view(t, info) for t, info in sorted(_user(ctx, p["userid"]).get("tokens", {}).items())]


@route("GET", "/access/users/{userid}/token/{tokenid}")
def token_read(ctx: Ctx, p: dict) -> dict:
    return _token_view(None, _token(ctx, p["userid"], p["tokenid"]))


@route("POST", "/access/users/{userid}/token/{tokenid}")
def token_create(ctx: Ctx, p: dict) -> dict:
    """The only time the secret is shown: ``{"full-tokenid", "info", "value"}``."""
    user = _user(ctx, p["userid"])
    toks = user.setdefault("tokens", {})
    if p["tokenid"] in toks:  # User.pm generate_token: raise_param_exc, a 400
        raise param_error({"tokenid": "Token already exists."})
    secret = str(uuid.uuid4())
    info: dict[str, Any] = {"privsep": p.get("privsep", 1), "expire": p.get("expire", user.get("expire", 0))}
    if p.get("comment"):
        info["comment"] = p["comment"]
    toks[p["tokenid"]] = {**info, "secret_sha256": perms.hash_secret(secret)}
    ctx.state.changed(access=True)
    return {"full-tokenid": f"{p['userid']}!{p['tokenid']}", "info": info, "value": secret}


@route("PUT", "/access/users/{userid}/token/{tokenid}")
def token_update(ctx: Ctx, p: dict) -> dict:
    t = _token(ctx, p["userid"], p["tokenid"])
    for key in split_list(p.get("delete")):
        t.pop(key, None)
    for key in ("privsep", "expire", "comment"):
        if key in p:
            t[key] = p[key]
    ctx.state.changed(access=True)
    return _token_view(None, t)


@route("DELETE", "/access/users/{userid}/token/{tokenid}")
def token_delete(ctx: Ctx, p: dict) -> None:
    _token(ctx, p["userid"], p["tokenid"])
    if _user(ctx, p["userid"])["tokens"][p["tokenid"]].get("sim_root"):
        raise ApiError(500, "cannot delete the simulator's root credential")
    del ctx.world["users"][p["userid"]]["tokens"][p["tokenid"]]
    full = f"{p['userid']}!{p['tokenid']}"
    ctx.world["acls"] = [e for e in ctx.world["acls"] if not (e["type"] == "token" and e["ugid"] == full)]
    ctx.state.changed(access=True)


# --- groups -----------------------------------------------------------------------------------


def _members(ctx: Ctx, groupid: str) -> list[str]:
    return sorted(u for u, info in ctx.world["users"].items() if groupid in info.get("groups", ()))


@route("GET", "/access/groups")
def groups(ctx: Ctx, p: dict) -> list:
    out = []
    for gid, g in sorted(ctx.world["groups"].items()):
        if ctx.has(f"/access/groups/{gid}", "Sys.Audit", "Group.Allocate", "User.Modify"):
            out.append(
                {"groupid": gid, "comment": g.get("comment", ""), "users": ",".join(_members(ctx, gid))}
            )
    return out


@route("POST", "/access/groups")
def group_create(ctx: Ctx, p: dict) -> None:
    if p["groupid"] in ctx.world["groups"]:
        raise ApiError(500, f"create group failed: group '{p['groupid']}' already exists")
    ctx.world["groups"][p["groupid"]] = {"comment": p.get("comment", "")}
    ctx.state.changed(access=True)


def _group(ctx: Ctx, gid: str) -> dict[str, Any]:
    g = ctx.world["groups"].get(gid)
    if g is None:
        raise ApiError(500, f"group '{gid}' does not exist")
    return g


@route("GET", "/access/groups/{groupid}")
def group_read(ctx: Ctx, p: dict) -> dict:
    g = _group(ctx, p["groupid"])
    return {"comment": g.get("comment", ""), "members": _members(ctx, p["groupid"])}


@route("PUT", "/access/groups/{groupid}")
def group_update(ctx: Ctx, p: dict) -> None:
    g = _group(ctx, p["groupid"])
    if "comment" in p:
        g["comment"] = p["comment"]
    ctx.state.changed(access=True)


@route("DELETE", "/access/groups/{groupid}")
def group_delete(ctx: Ctx, p: dict) -> None:
    _group(ctx, p["groupid"])
    del ctx.world["groups"][p["groupid"]]
    for u in ctx.world["users"].values():
        if p["groupid"] in u.get("groups", ()):
            u["groups"].remove(p["groupid"])
    ctx.world["acls"] = [
        e for e in ctx.world["acls"] if not (e["type"] == "group" and e["ugid"] == p["groupid"])
    ]
    ctx.state.changed(access=True)


# --- ACLs, permissions, password ----------------------------------------------------------------


@route("GET", "/access/acl")
def acl_read(ctx: Ctx, p: dict) -> list:
    # PVE/API2/ACL.pm read_acl: everything with Sys.Audit on /access, else only the entries on paths the
    # caller may modify (RPCEnvironment.pm check_perm_modify)
    audit = ctx.has("/access", "Sys.Audit")
    out = []
    for e in ctx.world["acls"]:
        if audit or perms.may_modify(ctx.state, ctx.auth, e["path"]):
            out.append({k: e[k] for k in ("path", "type", "ugid", "roleid", "propagate")})
    return out


@route("PUT", "/access/acl")
def acl_update(ctx: Ctx, p: dict) -> None:
    """Add (or with ``delete=1`` remove) role assignments for users, groups and tokens on a path."""
    path = "/" + "/".join(x for x in p["path"].split("/") if x)
    if not p.get("delete") and not _ACL_PATH.match(path):  # ACL.pm update_acl: check_path only when adding
        raise param_error({"path": f"invalid ACL path '{p['path']}'"})
    roles_ = split_list(p["roles"])
    world = ctx.world
    targets: list[tuple[str, str]] = []
    for gid in split_list(p.get("groups")):
        _group(ctx, gid)
        targets.append(("group", gid))
    for uid in split_list(p.get("users")):
        if uid not in world["users"]:
            raise ApiError(500, f"user '{uid}' does not exist")
        targets.append(("user", uid))
    for tid in split_list(p.get("tokens")):
        uid, _, name = tid.partition("!")
        if name not in world["users"].get(uid, {}).get("tokens", {}):
            raise ApiError(500, f"no such token '{name}' for user '{uid}'")
        targets.append(("token", tid))
    if not targets:
        raise ApiError(
            400,
            "Parameter verification failed.",
            {"users": "either 'users', 'groups' or 'tokens' is required"},
        )
    if not p.get("delete"):
        for rid in roles_:
            _role(ctx, rid)
    propagate = p.get("propagate", 1)
    for typ, ugid in targets:
        for rid in roles_:
            match = [
                e
                for e in world["acls"]
                if (e["path"], e["type"], e["ugid"], e["roleid"]) == (path, typ, ugid, rid)
            ]
            if p.get("delete"):
                for e in match:
                    world["acls"].remove(e)
            elif match:
                match[0]["propagate"] = propagate
            else:
                world["acls"].append(
                    {"path": path, "type": typ, "ugid": ugid, "roleid": rid, "propagate": propagate}
                )
    ctx.state.changed(access=True)


_EFFECTIVE_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


@route("GET", "/access/permissions")
def permissions(ctx: Ctx, p: dict) -> dict:
    """Effective privileges per path, for the caller or (with Sys.Audit on /access) anyone."""
    target = p.get("userid") or ctx.auth.authid
    userid, _, tokenid = target.partition("!")
    own = userid == ctx.auth.userid and (not ctx.auth.tokenid or target == ctx.auth.authid)
    if not own:
        ctx.require("/access", "Sys.Audit")
    user = ctx.world["users"].get(userid)
    if user is None or (tokenid and tokenid not in user.get("tokens", {})):
        raise ApiError(500, f"no such user/token '{target}'")
    who = perms.Auth(userid, tokenid or None)
    if p.get("path"):
        return {p["path"]: dict(sorted(perms.privilege_flags(ctx.state, who, p["path"]).items()))}
    else:
        # PVE/RPCEnvironment.pm get_effective_permissions: the top-level paths, every ACL path and
        # every pool member's path (/vms/ID, /storage/ID); paths without privileges are left out.
        # Values are propagate flags: 0 (an ACL without propagation, a pool's) is still held.
        paths = sorted(
            {*_EFFECTIVE_PATHS, *(e["path"] for e in ctx.world["acls"])}
            | {f"/vms/{g['vmid']}" for g in ctx.world["guests"].values() if g.get("pool")}
            | {f"/storage/{s}" for d in ctx.world["pools"].values() for s in d.get("storage") or ()}
        )
    out: dict[str, dict[str, int]] = {}
    for path in paths:
        held = perms.privilege_flags(ctx.state, who, path)
        if held:
            out[path] = dict(sorted(held.items()))
    return out


@route("PUT", "/access/password")
def password(ctx: Ctx, p: dict) -> None:
    u = _user(ctx, p["userid"])
    u["password"] = _pw(p["password"])
    if p["userid"] == "root@pam":
        ctx.state.root_password = p["password"]
    ctx.state.changed()
