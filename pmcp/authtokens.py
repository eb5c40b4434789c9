"""Client bearer tokens: a file of `NAME:TOKEN` lines (0600), shared by the server and the CLI.

Named tokens let the audit log say which client acted. The server re-reads the file when it changes,
so adding or revoking a client needs no restart.

A token may carry its own limits after the mark ``‖`` (U+2016)::

    laptop:3q2-…                                      the install's mode, every guest, the default budget
    ci:Zx9…  ‖ mode=read-only
    web-agent:Kf0… ‖ mode=operator scope=tag:web,pool:lab budget=5

``mode`` is at most the install's (the server takes the lower of the two), ``scope`` names the guests
the client may see and touch (any listed tag OR any listed pool, nested pools included), ``budget``
is how many destructive actions it may take per hour.

Why that mark (update and rollback): a server older than these settings reads everything after the
first ``:`` as the token, compares it with the presented bearer and would grant such a line the
install's full mode and every guest, if a client could present it. It cannot: that server decodes
the Authorization header as Latin-1 (U+0000-U+00FF only) and compares UTF-8 bytes, so a stored
token holding U+2016 never matches anything a client sends. An older server therefore refuses a
limited token (401) and keeps serving the unlimited ones; an older CLI keeps such lines verbatim
when it adds or revokes others. Likewise forward: a setting this version does not know (a newer pmcp
wrote it) makes this server refuse that one token, naming the line in its log, never serve it wider;
this CLI refuses to rewrite such a file.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pmcp.files import atomic_write

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOKEN_BYTES = 32
MARK = "\u2016"  # "‖": never part of a bearer an older server could match (module docstring)
MODES = ("read-only", "operator", "admin")  # in order: each includes the ones before it
# pve-common src/PVE/JSONSchema.pm pve-tag (one tag of pve-tag-list) and
# pve-access-control src/PVE/AccessControl.pm verify_poolname (pve-poolid, up to three levels).
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.+-]{0,63}$")
POOL_RE = re.compile(r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$")
MAX_BUDGET = 100_000
SCOPE_SYNTAX = "tag:NAME and/or pool:NAME, comma-separated (e.g. tag:web,pool:lab)"


class TokenFileError(ValueError):
    """The token file is malformed; the message says which line and how to fix it."""


@dataclass(frozen=True)
class TokenLimits:
    """What one client token may do beyond the install's own limits; the defaults limit nothing."""

    mode: str | None = None  # None: the install's mode
    tags: tuple[str, ...] = ()  # lower-case; a guest with any of them is in scope
    pools: tuple[str, ...] = ()  # a guest in any of them (or a pool nested below) is in scope
    budget: int | None = None  # destructive actions per hour; None: the server's default

    @property
    def scoped(self) -> bool:
        return bool(self.tags or self.pools)

    @property
    def scope_text(self) -> str:
        return ",".join([f"tag:{t}" for t in self.tags] + [f"pool:{p}" for p in self.pools])

    def render(self) -> str:
        parts = []
        if self.mode is not None:
            parts.append(f"mode={self.mode}")
        if self.scoped:
            parts.append(f"scope={self.scope_text}")
        if self.budget is not None:
            parts.append(f"budget={self.budget}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "scope": {"tags": list(self.tags), "pools": list(self.pools)} if self.scoped else None,
            "budget_per_hour": self.budget,
        }


NO_LIMITS = TokenLimits()


@dataclass(frozen=True)
class ClientToken:
    token: str
    limits: TokenLimits = NO_LIMITS


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def parse_mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(f"mode {text!r} is not one of {', '.join(MODES)}")
    return text


def parse_scope(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``tag:web,pool:lab`` -> (tags, pools); raises ValueError naming the bad item."""
    tags: list[str] = []
    pools: list[str] = []
    for item in (i.strip() for i in text.split(",")):
        kind, sep, value = item.partition(":")
        if not sep or kind not in ("tag", "pool"):
            raise ValueError(f"scope item {item!r} is neither tag:NAME nor pool:NAME")
        if kind == "tag":
            if not TAG_RE.match(value):
                raise ValueError(f"scope item {item!r}: {value!r} is not a Proxmox tag")
            tags.append(value.lower())
        else:
            if not POOL_RE.match(value):
                raise ValueError(f"scope item {item!r}: {value!r} is not a Proxmox pool name")
            pools.append(value)
    return tuple(dict.fromkeys(tags)), tuple(dict.fromkeys(pools))


def parse_budget(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_BUDGET:
        raise ValueError(f"budget {text!r} is not a whole number from 0 to {MAX_BUDGET}")
    return int(text)


def parse_limits(text: str) -> TokenLimits:
    """The settings after the mark: ``mode=… scope=… budget=…``, each at most once."""
    found: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or key not in ("mode", "scope", "budget"):
            raise ValueError(
                f"unknown setting {word!r} (this pmcp knows mode=, scope=, budget=; a newer pmcp wrote it?)"
            )
        if key in found:
            raise ValueError(f"{key}= given twice")
        found[key] = value
    tags, pools = parse_scope(found["scope"]) if "scope" in found else ((), ())
    return TokenLimits(
        mode=parse_mode(found["mode"]) if "mode" in found else None,
        tags=tags,
        pools=pools,
        budget=parse_budget(found["budget"]) if "budget" in found else None,
    )


def parse_entries(text: str, skipped: list[str] | None = None) -> dict[str, ClientToken]:
    """Every token with its limits. A line whose settings this version cannot apply (a newer pmcp's)
    raises, or with ``skipped`` is left out (that client refused) and described there: the server
    refuses one client it cannot limit rather than every client."""
    tokens: dict[str, ClientToken] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        token, mark, settings = rest.partition(MARK)
        token = token.strip()
        if not sep or not NAME_RE.match(name) or len(token) < 16:
            raise TokenFileError(
                f"line {lineno}: expected NAME:TOKEN (token of at least 16 characters), "
                f"optionally followed by ' {MARK} mode=… scope=… budget=…'"
            )
        try:
            limits = parse_limits(settings) if mark else NO_LIMITS
        except ValueError as exc:
            if skipped is None:
                raise TokenFileError(f"line {lineno} ({name}): {exc}") from None
            skipped.append(f"line {lineno} ({name}): {exc}")
            continue
        tokens[name] = ClientToken(token, limits)
    return tokens


def parse(text: str) -> dict[str, str]:
    """Name -> bearer token (what a client presents); the limits are in ``parse_entries``."""
    return {name: entry.token for name, entry in parse_entries(text).items()}


def load(path: str | Path) -> dict[str, str]:
    return parse(Path(path).read_text(encoding="utf-8"))


def load_entries(path: str | Path, skipped: list[str] | None = None) -> dict[str, ClientToken]:
    return parse_entries(Path(path).read_text(encoding="utf-8"), skipped)


def _line(name: str, entry: ClientToken) -> str:
    settings = entry.limits.render()
    return f"{name}:{entry.token} {MARK} {settings}\n" if settings else f"{name}:{entry.token}\n"


def save(path: str | Path, tokens: Mapping[str, str | ClientToken]) -> None:
    """Write atomically with mode 0600: a reader never sees a half-written file.

    The owner and group-read bit of an existing file are kept (never more than 0640): the server reads it
    through its group (root:GID 0640) and must still read it after root adds or revokes a client.
    A token without limits is written as the plain ``NAME:TOKEN`` line every version reads.
    """
    path = Path(path)
    entries = {n: e if isinstance(e, ClientToken) else ClientToken(e) for n, e in tokens.items()}
    body = "".join(_line(name, entries[name]) for name in sorted(entries))
    owner = None
    mode = 0o600
    if path.exists():
        st = path.stat()
        owner = (st.st_uid, st.st_gid)
        mode |= st.st_mode & 0o040
    atomic_write(path, body, mode, owner)


def add(path: str | Path, name: str, limits: TokenLimits = NO_LIMITS) -> str:
    """Add a named token and return it; refuses a name that exists (revoke it first)."""
    if not NAME_RE.match(name):
        raise TokenFileError(f"invalid token name {name!r}: use letters, digits, '.', '_' or '-'")
    path = Path(path)
    entries = load_entries(path) if path.exists() else {}
    if name in entries:
        raise TokenFileError(f"a token named {name!r} exists; revoke it first")
    entries[name] = ClientToken(new_token(), limits)
    save(path, entries)
    return entries[name].token


def set_limits(path: str | Path, name: str, limits: TokenLimits) -> None:
    """Replace a token's limits, keeping its secret (the client needs no new configuration)."""
    path = Path(path)
    entries = load_entries(path)
    if name not in entries:
        raise TokenFileError(f"no client token named {name!r}")
    entries[name] = ClientToken(entries[name].token, limits)
    save(path, entries)


def revoke(path: str | Path, name: str) -> bool:
    path = Path(path)
    entries = load_entries(path) if path.exists() else {}
    if entries.pop(name, None) is None:
        return False
    save(path, entries)
    return True
