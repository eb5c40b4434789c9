"""What a user types, checked before anything runs: each check returns the clean value or raises a
``UsageError`` that says what is wrong with it and what to type instead.

The CLI wraps these in click types (so the option's name is in the message); the lifecycle calls the
same functions for options that come from elsewhere (the demo, state.json), so a rule exists once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmcp.errors import UsageError

# pve-access-control src/PVE/AccessControl.pm verify_poolname (format pve-poolid): up to three levels.
POOL_RE = re.compile(r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$")
# pve-common src/PVE/JSONSchema.pm pve_verify_node_name (format pve-node).
NODE_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
# useradd's default NAME_REGEX (Debian adduser.conf): what `adduser` accepts without --force-badname.
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")
LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # client and token names (pmcp.authtokens)
PSEUDO_FS = (Path("/proc"), Path("/sys"), Path("/dev"))
MODES = ("read-only", "operator", "admin")  # what the server may do; the token's role (pmcp.host.pve)


def port(value: int, *, allow_zero: bool = False, zero_means: str = "none") -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        zero = f", or 0 for {zero_means}" if allow_zero else ""
        raise UsageError(f"{value} is not a TCP port", fix=f"a number from 1 to 65535{zero}")
    return value


def cidr(value: str) -> str:
    """An IPv4 address or network (the firewall rules are IPv4 only); host bits are cleared."""
    import ipaddress  # here, not at the top: `pmcp --help` imports this module

    text = value.strip()
    if ":" in text:
        raise UsageError(
            f"{value!r} is IPv6, and pmcp's firewall rules are IPv4 only",
            fix="an IPv4 network such as 192.0.2.0/24 (the HTTPS port is then published on IPv4 only); "
            "leave --allow-from out to accept every source",
        )
    addr, _, length = text.partition("/")
    try:
        ipaddress.IPv4Address(addr)
    except ValueError:
        raise UsageError(
            f"{value!r} is not an IPv4 address or network", fix="e.g. 192.0.2.0/24 or 192.0.2.10"
        ) from None
    if length and (not length.isdigit() or int(length) > 32):
        raise UsageError(f"{value!r}: the prefix length must be 0 to 32", fix="e.g. 192.0.2.0/24")
    return str(ipaddress.IPv4Network(text, strict=False))


def dns_name(value: str, single_label: bool = False) -> str:
    """A DNS name Caddy can get an ACME certificate for: public CAs need a dotted name; a private ACME CA
    (``--acme-ca``, step-ca in a LAN) may also issue for a single-label host name such as ``pve``."""
    name = value.strip().rstrip(".").lower()
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or (len(labels) < 2 and not single_label)
        or not all(LABEL_RE.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise UsageError(
            f"{value!r} is not a DNS name",
            fix="the host's public name, such as pve.example.com (letters, digits, '-' and dots; no "
            "spaces); for an IP address or a private name leave --domain out (Caddy's internal CA)",
        )
    return name


def pool(value: str) -> str:
    if not POOL_RE.match(value):
        raise UsageError(
            f"{value!r} is not a Proxmox pool name",
            fix="letters, digits, '.', '-', '_' (nested: parent/child, up to 3 levels); `pvesh get /pools` "
            "lists the pools",
        )
    return value


def node(value: str) -> str:
    if not NODE_RE.match(value) or len(value) > 63:
        raise UsageError(
            f"{value!r} is not a Proxmox node name",
            fix="letters, digits and '-' (`hostname` on the node); leave --node out to detect it",
        )
    return value


def agent_user(value: str, *, must_exist: bool) -> str:
    """The agent's OS account: never root (it cannot be contained), and it exists when named."""
    import pwd

    if not USER_RE.match(value) or len(value) > 32:
        raise UsageError(f"{value!r} is not a user name", fix="a Linux account name such as claude-user")
    try:
        entry = pwd.getpwnam(value)
    except KeyError:
        if must_exist:
            raise UsageError(
                f"there is no account {value!r} on this host",
                fix=f"create it first (adduser {value}), or leave --agent-user out",
            ) from None
        return value
    if entry.pw_uid == 0:
        raise UsageError(
            f"{value!r} is root (uid 0): a root account cannot be contained",
            fix="the agent's own unprivileged account, such as claude-user (adduser claude-user)",
        )
    return value


def _reachable(check: Callable[[], Any], path: Path) -> Any:
    """Run a file test; a directory this user may not enter is said plainly, not as a traceback."""
    try:
        return check()
    except PermissionError:
        who = "root" if os.geteuid() == 0 else "this user"
        raise UsageError(
            f"{path}: permission denied ({who} may not look inside its directory)",
            fix="another path, or run as a user who may (sudo pmcp ...)",
        ) from None


def absolute_dir(value: str) -> Path:
    """An absolute directory path outside /proc, /sys and /dev (not necessarily existing)."""
    path = Path(value)
    if not path.is_absolute():
        raise UsageError(
            f"{value!r} is a relative path", fix=f"an absolute path, such as {Path.cwd() / value}"
        )
    path = Path(os.path.normpath(path))
    if path == Path("/") or any(path == p or p in path.parents for p in PSEUDO_FS):
        raise UsageError(f"{value} cannot hold an install", fix="a directory such as /opt/proxmox-mcp")
    if _reachable(lambda: path.exists() and not path.is_dir(), path):
        raise UsageError(f"{value} exists and is not a directory", fix="another path, or remove that file")
    return path


def writable_dir(value: str) -> Path:
    """``absolute_dir`` that this process can create or write into."""
    path = absolute_dir(value)
    probe = path
    while not _reachable(probe.exists, probe):
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK) or _read_only(probe):
        who = "root" if os.geteuid() == 0 else "this user"
        raise UsageError(
            f"{probe} is not writable by {who}, so {path} cannot be created or written",
            fix="another directory, or run as root (sudo pmcp ...)" if os.geteuid() else "another directory",
        )
    return path


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return True


def new_file(value: str, *, make_dirs: bool = False) -> Path:
    """A file to write: its directory must exist (or, with ``make_dirs``, be creatable) and be writable."""
    path = Path(value).expanduser()
    parent = path.parent
    if not os.access(parent, os.X_OK) and parent.exists():
        raise UsageError(f"cannot write into {parent}", fix="another directory, or run as its owner")
    if _reachable(path.is_dir, path):
        raise UsageError(f"{value} is a directory", fix=f"a file name, such as {path / 'out.json'}")
    probe = parent
    while make_dirs and not _reachable(probe.exists, probe) and probe != probe.parent:
        probe = probe.parent
    if not _reachable(probe.is_dir, probe):
        raise UsageError(f"the directory {parent} does not exist", fix=f"mkdir -p {parent}, or another path")
    if not os.access(probe, os.W_OK | os.X_OK) or _read_only(probe):
        raise UsageError(f"cannot write into {probe}", fix="another directory, or run as its owner")
    return path


def name(value: str, what: str = "name") -> str:
    if not NAME_RE.match(value):
        raise UsageError(
            f"{value!r} is not a valid {what}", fix="letters, digits, '.', '-', '_' (up to 64, no spaces)"
        )
    return value


def url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise UsageError(f"{value!r} is not an http(s) URL", fix="e.g. https://pve.example.com/mcp")
    return value


def non_negative(value: float) -> float:
    if value < 0:
        raise UsageError(f"{value:g} is negative", fix="a number of seconds, 0 or more")
    return value


def since(value: str) -> Any:
    """A point in time, as a UTC ``datetime``: ``2026-01-31``, ``2026-01-31T12:00`` (UTC unless it
    says otherwise, e.g. ``+02:00``), or an age back from now: ``90m``, ``24h``, ``7d``."""
    from datetime import UTC, datetime, timedelta

    text = value.strip()
    age = re.fullmatch(r"(\d{1,6})([smhd])", text)
    if age:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[age.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(age.group(1))})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{value!r} is not a date, a time or an age",
            fix="e.g. 2026-01-31, 2026-01-31T12:00:00Z or 7d (also 24h, 90m)",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def distinct_ports(ports: dict[str, int]) -> None:
    """Each service its own port: two on one port cannot both listen."""
    seen: dict[int, str] = {}
    for option, number in ports.items():
        if not number:
            continue
        if number in seen:
            raise UsageError(
                f"{seen[number]} and {option} are both {number}", fix=f"give {option} another port"
            )
        seen[number] = option


def client_mode(value: str) -> str:
    """A client token's mode (``client-config --mode``): never above the install's, checked later."""
    if value not in MODES:
        raise UsageError(
            f"{value!r} is not a mode",
            fix="read-only, operator or admin (at most the install's mode: `pmcp status` shows it)",
        )
    return value


def client_scope(value: str) -> str:
    """A client token's guest scope (``client-config --scope``), normalised; '' clears it."""
    from pmcp import authtokens

    if not value.strip():
        return ""
    try:
        tags, pools = authtokens.parse_scope(value)
    except ValueError as exc:
        raise UsageError(
            str(exc),
            fix=f"{authtokens.SCOPE_SYNTAX}; a guest with any listed tag or in any listed pool is in "
            "scope; --scope '' removes the scope",
        ) from None
    return authtokens.TokenLimits(tags=tags, pools=pools).scope_text


def client_budget(value: int) -> int:
    """Destructive actions per hour for a client token (``client-config --budget``)."""
    from pmcp.authtokens import MAX_BUDGET

    if not 0 <= value <= MAX_BUDGET:
        raise UsageError(
            f"{value} is not a budget",
            fix=f"destructive actions per hour, 0 (none) to {MAX_BUDGET}; leave --budget out for the "
            "server's default (PMCP_DESTRUCTIVE_PER_HOUR)",
        )
    return value
