"""Sudo's policy as sudo itself states it, and the sudoers lines that produce it.

Two sources, for two jobs. What a user MAY do is sudo's own answer (``sudo -ll -U USER``: every rule that
applies through the user's name, uid, groups, User_Aliases, LDAP/SSSD or the main file, for this host);
nothing pmcp parses can overrule it. Where a rule COMES FROM (to remove it, or to show the admin the exact
line) needs the files: sudo 1.9.13 (Debian 12, PVE 8) does not print the source of an entry, so this module
reads the sudoers files the way sudo does (includes in order, ``#``-comments that are not ``#uid``,
backslash continuations, user lists matched from the end: sudo's userlist_matches() walks the list in
reverse and the first item that matches decides, so ``%g, !agent`` excludes the agent).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from pmcp.host.run import CommandError, run

ALIAS_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ALIAS_LINE = re.compile(r"^(User|Runas|Host|Cmnd|Cmd)_Alias\s+(.*)$", re.S)
_DEFAULTS = re.compile(r"^Defaults(?:([:@!>])\s*(.*?))?(?:\s+(.*))?$", re.S)
_INCLUDE = re.compile(r"^[@#](include|includedir)\s+(.+)$")


@dataclass(frozen=True)
class Line:
    """One logical sudoers line: where it is (1-based first physical line) and its text, joined."""

    path: Path
    lineno: int
    first: int  # physical line indexes [first, last] in the file
    last: int
    text: str

    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


@dataclass
class SudoersFile:
    path: Path
    text: str
    lines: list[Line]


def _strip_comment(text: str) -> str:
    """Drop a ``#`` comment: a ``#`` at a token start not followed by a digit (``#1001`` is a uid)."""
    out = []
    quoted = False
    prev = " "
    for i, ch in enumerate(text):
        if ch == '"' and prev != "\\":
            quoted = not quoted
        if ch == "#" and not quoted and (prev.isspace() or prev in ",=:(!") and i + 1 <= len(text):
            nxt = text[i + 1 : i + 2]
            if not nxt.isdigit():
                break
        out.append(ch)
        prev = ch
    return "".join(out).rstrip()


def logical_lines(path: Path, text: str) -> list[Line]:
    phys = text.splitlines()
    out: list[Line] = []
    i = 0
    while i < len(phys):
        j = i
        while phys[j].rstrip().endswith("\\") and j + 1 < len(phys):
            j += 1
        parts = [p.rstrip()[:-1].rstrip() if k < j else p for k, p in enumerate(phys[i : j + 1], start=i)]
        joined = " ".join([parts[0], *(p.strip() for p in parts[1:])])
        out.append(Line(path, i + 1, i, j, joined.strip()))
        i = j + 1
    return out


def kind(line: Line) -> str:
    """blank, comment, include, defaults, alias or spec."""
    t = line.text
    if not t:
        return "blank"
    if _INCLUDE.match(t):
        return "include"
    if t.startswith("#") and not re.match(r"^#\d", t):
        return "comment"
    if not _strip_comment(t):
        return "comment"
    if _DEFAULTS.match(t) and re.match(r"^Defaults\b", t):
        return "defaults"
    if _ALIAS_LINE.match(t):
        return "alias"
    return "spec"


def _include_target(arg: str, including: Path) -> Path:
    arg = arg.strip()
    if arg.startswith('"') and arg.endswith('"'):
        arg = arg[1:-1].replace('\\"', '"')
    arg = arg.replace("\\ ", " ").replace("%h", socket.gethostname().split(".")[0]).replace("%%", "%")
    p = Path(arg)
    return p if p.is_absolute() else including.parent / p


def dir_entries(directory: Path) -> list[Path]:
    """Files sudo's @includedir reads: no '.' in the name, not ending in '~', sorted."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [
        directory / n for n in names if "." not in n and not n.endswith("~") and (directory / n).is_file()
    ]


def policy_files(main: Path, _seen: set[Path] | None = None) -> list[SudoersFile]:
    """The main file and everything it includes, in the order sudo reads them."""
    seen = _seen if _seen is not None else set()
    if main in seen or not main.is_file():
        return []
    seen.add(main)
    text = main.read_text(errors="replace")
    files = [SudoersFile(main, text, logical_lines(main, text))]
    for line in files[0].lines:
        m = _INCLUDE.match(line.text)
        if not m:
            continue
        target = _include_target(m.group(2), main)
        if m.group(1) == "include":
            files += policy_files(target, seen)
        else:
            for f in dir_entries(target):
                files += policy_files(f, seen)
    return files


# -- user lists -----------------------------------------------------------------------------------------


def split_list(text: str) -> tuple[list[str], str]:
    """Split a leading comma-separated list (user list of a rule) from the rest of the line."""
    items: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        start = i
        while i < n and text[i] == "!":
            i += 1
            while i < n and text[i].isspace():
                i += 1
        if i < n and text[i] == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        else:
            while i < n and not text[i].isspace() and text[i] not in ",=":
                i += 2 if text[i] == "\\" else 1
        items.append(re.sub(r"^(!+)\s+", r"\1", text[start:i]))
        j = i
        while j < n and text[j].isspace():
            j += 1
        if j < n and text[j] == ",":
            i = j + 1
            continue
        return items, text[i:]


def split_alias_defs(body: str) -> list[tuple[str, list[str]]]:
    """``A = x, y : B = z`` -> [("A", ["x", "y"]), ("B", ["z"])]."""
    out = []
    for part in re.split(r"\s*:\s*(?=[A-Z][A-Z0-9_]*\s*=)", body):
        name, _, members = part.partition("=")
        items, _ = split_list(members.strip())
        out.append((name.strip(), [x for x in items if x]))
    return out


@dataclass
class Account:
    """What sudo matches a user list against."""

    name: str
    uid: int
    gid: int
    groups: dict[str, int]  # every group the account is in: name -> gid (primary included)

    @classmethod
    def of(cls, name: str) -> Account:
        import grp
        import pwd

        pw = pwd.getpwnam(name)
        groups = {g.gr_name: g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
        with contextlib.suppress(KeyError):
            groups[grp.getgrgid(pw.pw_gid).gr_name] = pw.pw_gid
        return cls(name, pw.pw_uid, pw.pw_gid, groups)

    def primary(self) -> str | None:
        return next((n for n, g in self.groups.items() if g == self.gid), None)


@dataclass
class Via:
    """One reason a user-list item matches the account."""

    item: str  # as written
    how: str  # user, uid, group, primary, all, unknown, alias
    group: str = ""
    alias: str = ""
    inner: list[Via] = field(default_factory=list)


def _unquote(item: str) -> str:
    if item.startswith('"') and item.endswith('"'):
        return item[1:-1]
    return item.replace("\\", "")


def item_via(item: str, acct: Account, aliases: dict[str, list[str]], depth: int = 0) -> Via | None:
    """Why a (non-negated) user-list item matches ``acct``; None when it does not."""
    it = _unquote(item)
    if it == "ALL":
        return Via(item, "all")
    if it.startswith("%:") or it.startswith("+"):
        return Via(item, "unknown")  # non-Unix group, netgroup: pmcp cannot resolve it, sudo may
    if it.startswith("%#"):
        gid = it[2:]
        for name, g in acct.groups.items():
            if gid.isdigit() and int(gid) == g:
                return Via(item, "primary" if g == acct.gid else "group", group=name)
        return None
    if it.startswith("%"):
        name = it[1:]
        if name in acct.groups:
            return Via(item, "primary" if acct.groups[name] == acct.gid else "group", group=name)
        return None
    if it.startswith("#"):
        return Via(item, "uid") if it[1:].isdigit() and int(it[1:]) == acct.uid else None
    if it == acct.name:
        return Via(item, "user")
    if ALIAS_NAME.match(it) and it in aliases and depth < 16:
        inner = list_vias(aliases[it], acct, aliases, depth + 1)
        return Via(item, "alias", alias=it, inner=inner) if inner else None
    return None


def list_vias(items: list[str], acct: Account, aliases: dict[str, list[str]], depth: int = 0) -> list[Via]:
    """The positive items by which the list matches ``acct`` (empty when it does not), sudo's way: walk
    from the end; a matching negated item excludes the account, whatever comes before it."""
    vias: list[Via] = []
    for item in reversed(items):
        neg = len(item) - len(item.lstrip("!"))
        via = item_via(item.lstrip("!"), acct, aliases, depth)
        if via is None:
            continue
        if neg % 2:
            if via.how == "unknown":
                continue  # may or may not exclude the account: assume it does not
            break  # excluded: nothing before this item can match
        vias.append(via)  # every positive item up to an exclusion: removing one may uncover the next
    return vias


def user_alias_lines(files: list[SudoersFile]) -> dict[str, tuple[Line, list[str]]]:
    """Every User_Alias: its defining line and its members."""
    out: dict[str, tuple[Line, list[str]]] = {}
    for f in files:
        for line in f.lines:
            m = _ALIAS_LINE.match(_strip_comment(line.text)) if kind(line) == "alias" else None
            if m and m.group(1) == "User":
                for name, members in split_alias_defs(m.group(2)):
                    out[name] = (line, members)
    return out


def user_aliases(files: list[SudoersFile]) -> dict[str, list[str]]:
    return {name: members for name, (_, members) in user_alias_lines(files).items()}


def rewrite_alias_line(text: str, drop: dict[str, set[str]]) -> str:
    """A User_Alias line without the ``drop[name]`` members; an alias left empty matches nobody (!ALL)."""
    m = _ALIAS_LINE.match(_strip_comment(text))
    assert m is not None
    defs = []
    for name, members in split_alias_defs(m.group(2)):
        kept = [x for x in members if x not in drop.get(name, set())]
        defs.append(f"{name} = {', '.join(kept) or '!ALL'}")
    return f"{m.group(1)}_Alias " + " : ".join(defs)


@dataclass
class Grant:
    """A rule line that gives the account rights, and how it reaches the account."""

    line: Line
    items: list[str]
    rest: str
    vias: list[Via]


def grants(files: list[SudoersFile], acct: Account) -> list[Grant]:
    aliases = user_aliases(files)
    out = []
    for f in files:
        for line in f.lines:
            if kind(line) != "spec":
                continue
            items, rest = split_list(_strip_comment(line.text))
            vias = list_vias(items, acct, aliases)
            if vias:
                out.append(Grant(line, items, rest, vias))
    return out


def rule_groups(files: list[SudoersFile]) -> set[str]:
    """Groups that own a sudo rule somewhere (``%name`` in a rule's user list or a User_Alias)."""
    names: set[str] = set()
    lists: list[list[str]] = list(user_aliases(files).values())
    for f in files:
        for line in f.lines:
            if kind(line) == "spec":
                lists.append(split_list(_strip_comment(line.text))[0])
    for items in lists:
        for item in items:
            it = _unquote(item.lstrip("!"))
            if it.startswith("%") and not it.startswith(("%:", "%#")):
                names.add(it[1:])
    return names


def applying_defaults(files: list[SudoersFile], acct: Account, commands: set[str]) -> list[tuple[Line, str]]:
    """(line, setting) of every Defaults that can apply when ``acct`` runs one of ``commands`` as root:
    generic and host-bound ones, user-bound ones that match the account, runas-bound ones for root/ALL,
    command-bound ones for ALL, an alias or one of the commands."""
    aliases = user_aliases(files)
    out = []
    for line in defaults_lines(files):
        m = _DEFAULTS.match(_strip_comment(line.text))
        if not m:
            continue
        binding, target, body = m.group(1), m.group(2) or "", m.group(3) or ""
        if binding and not body:  # "Defaults:user setting": the regex's lazy target took nothing
            target, _, body = target.partition(" ")
        if binding == ":":
            if not list_vias(split_list(target)[0], acct, aliases):
                continue
        elif binding == ">":
            names = {_unquote(x.lstrip("!")) for x in split_list(target)[0]}
            if not names & {"root", "ALL", "#0"} and not any(ALIAS_NAME.match(n) for n in names):
                continue
        elif binding == "!":
            names = {_unquote(x.lstrip("!")) for x in split_list(target)[0]}
            if all(n.startswith("/") and n not in commands for n in names):
                continue
        for setting in _split_settings(body):
            out.append((line, setting))
    return out


def defaults_lines(files: list[SudoersFile]) -> list[Line]:
    return [line for f in files for line in f.lines if kind(line) == "defaults"]


# -- sudo's own answer ---------------------------------------------------------------------------------


@dataclass
class SudoEntry:
    """One "Sudoers entry" of ``sudo -ll``."""

    runas_users: list[str]
    runas_groups: list[str]
    options: list[str]
    commands: list[str]

    def describe(self) -> str:
        who = ",".join(self.runas_users) or "root"
        if self.runas_groups:
            who += ":" + ",".join(self.runas_groups)
        opts = f" [{', '.join(self.options)}]" if self.options else ""
        return f"({who}){opts} {', '.join(self.commands)}"


@dataclass
class SudoList:
    defaults: list[str]  # "Matching Defaults entries"
    scoped: list[str]  # "Runas and Command-specific defaults", each "Defaults>x ..." / "Defaults!x ..."
    entries: list[SudoEntry]
    raw: str


def _split_settings(text: str) -> list[str]:
    out, cur, quoted, prev = [], [], False, ""
    for ch in text:
        if ch == '"' and prev != "\\":
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        prev = ch
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return [s for s in out if s]


def parse_sudo_ll(text: str) -> SudoList:
    """Parse ``LC_ALL=C sudo -ll -U USER`` (sudo 1.9)."""
    section = ""
    defaults_txt: list[str] = []
    scoped_txt: list[str] = []
    entries: list[SudoEntry] = []
    cur: SudoEntry | None = None
    field_name = ""
    for raw in text.splitlines():
        line = raw.strip()
        if raw.startswith("Matching Defaults entries"):
            section = "defaults"
            continue
        if raw.startswith("Runas and Command-specific defaults"):
            section = "scoped"
            continue
        if raw.startswith("User ") and ("may run" in raw or "not allowed" in raw):
            section = "rules"
            continue
        if section == "defaults" and line:
            defaults_txt.append(line)
        elif section == "scoped" and line:
            scoped_txt.append(line)
        elif section == "rules":
            if line == "Sudoers entry:" or line.startswith("Sudoers entry:"):
                cur = SudoEntry([], [], [], [])
                entries.append(cur)
                field_name = ""
                continue
            if cur is None or not line:
                continue
            key, sep, val = line.partition(":")
            if sep and key in ("RunAsUsers", "RunAsGroups", "Options", "Commands"):
                field_name = key
                values = [v.strip() for v in val.split(",") if v.strip()] if key != "Commands" else []
                if key == "RunAsUsers":
                    cur.runas_users = values
                elif key == "RunAsGroups":
                    cur.runas_groups = values
                elif key == "Options":
                    cur.options = values
                continue
            if field_name == "Commands":
                cur.commands.append(line)
    scoped = [s.strip() for s in re.split(r"\s{2,}(?=Defaults)", " ".join(scoped_txt)) if s.strip()]
    return SudoList(_split_settings(" ".join(defaults_txt)), scoped, entries, text)


class SudoUnavailable(Exception):
    pass


def sudo_list(user: str, sudo: str = "sudo") -> SudoList:
    """sudo's own list of what ``user`` may run here, with the Defaults that apply (run as root)."""
    try:
        res = run([sudo, "-n", "-ll", "-U", user], timeout=30, env={"LC_ALL": "C"})
    except CommandError as exc:
        raise SudoUnavailable(exc.message) from exc
    text = res.stdout
    if not res.ok and "not allowed to run sudo" not in text + res.stderr:
        raise SudoUnavailable((res.stderr or res.stdout).strip()[-300:] or f"exit {res.returncode}")
    return parse_sudo_ll(text)


# -- what is dangerous --------------------------------------------------------------------------------

# Interpreter and loader variables: kept across sudo, each runs the caller's code as root (qm and pct are
# Perl scripts: PERL5OPT=-M... alone is a root shell).
_ENV_DANGER = re.compile(
    r"^(LD_|PERL|PYTHON|RUBY|NODE_|BASH_ENV$|ENV$|SHELLOPTS$|BASHOPTS$|PS4$|IFS$|GCONV_PATH$|"
    r"JAVA_TOOL_OPTIONS$|GIT_|LOCPATH$|HOSTALIASES$|TCL|LUA_|PHPRC$|GLOBIGNORE$|\*)"
)


def dangerous_setting(setting: str) -> str:
    """Why a Defaults setting lets a sudo command run the caller's code, or ''."""
    s = setting.strip()
    bare = s.replace(" ", "")
    if bare == "!env_reset":
        return "env_reset is off: the caller's environment (PERL5OPT, PYTHONPATH…) reaches root"
    if re.fullmatch(r"setenv", bare):
        return "setenv: the caller may keep any environment variable (sudo -E)"
    m = re.match(r"^env_keep\s*(\+?=)\s*(.*)$", s)
    if m:
        names = m.group(2).strip().strip('"').split()
        bad = [n for n in names if _ENV_DANGER.match(n.split("=")[0])]
        if bad:
            return f"env_keep keeps {' '.join(bad)}: it reaches root and runs the caller's code"
    return ""


def setting_lines(setting: str, lines: list[Line]) -> list[Line]:
    """The Defaults lines that contain ``setting`` (compared without spaces and quotes)."""

    def norm(x: str) -> str:
        return x.replace(" ", "").replace('"', "").replace("\\", "")

    want = norm(setting)
    out = []
    for line in lines:
        m = _DEFAULTS.match(_strip_comment(line.text))
        body = (m.group(3) or "") if m else ""
        if m and m.group(1) and not m.group(3):  # "Defaults:user setting" parsed as binding only
            body = m.group(2) or ""
        if any(norm(s) == want for s in _split_settings(body)):
            out.append(line)
    return out


def exists_like(command: str) -> str | None:
    """An existing file a listed command (path, maybe a glob) names, for a probe; None when there is none."""
    path = command.split()[0] if command else ""
    if not path.startswith("/"):
        return None
    if any(c in path for c in "*?["):
        found = sorted(glob.glob(path))
        return found[0] if found else None
    return path if os.path.exists(path) else None
