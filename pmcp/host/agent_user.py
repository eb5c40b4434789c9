"""The agent's OS account: no sudo right but pmcp's drop-in, no root-equivalent group.

Why: a negated sudo rule is not a boundary, and any allowed root command with a pager, an editor, a
``--script`` hook, ``-exec``, ``pct push`` or docker access is a root shell (DESIGN §4). So containment is
judged by sudo's own answer (``sudo -ll -U USER``: rules through the name, the uid, a group, a User_Alias,
``ALL``, the main file, LDAP/SSSD): the only entries allowed are the drop-in's exact commands.

What ``AgentContainment`` does about each rule that reaches the account:
- a drop-in line naming the account or its uid (directly or in a User_Alias): the name is taken out
  (the line goes when nobody is left), the file backed up first;
- a rule for a supplementary group: the account leaves the group (``gpasswd -d``, put back by undo); so
  does it leave every root-equivalent group (ROOT_GROUPS) and every group that owns a sudo rule;
- what pmcp must not edit on its own is REFUSED with the exact line and the fix: anything in the main
  ``/etc/sudoers``, and a rule other accounts rely on (``ALL``, a shared primary group, a netgroup).
  With ``edit_shared=True`` (``--edit-shared-sudoers``) pmcp edits those too, backed up: the account's
  name is taken out of the main file's lines, and a shared rule gets ``, !USER`` at the end of its user
  list (sudo reads a user list from the end, so only the agent loses the rule);
- Defaults that carry the caller's environment to root (``!env_reset``, ``setenv``, ``env_keep`` of
  LD_*/PERL*/PYTHON*...) are refused with their line: the drop-in's ``qm`` and ``pct`` are Perl scripts.
After the change sudo is asked again; anything but the drop-in left is an error (and the step is undone).

Safety rules this module keeps:
- every sudoers file it writes is validated with ``visudo -cf`` BEFORE an atomic rename into place; the
  temporary file sits in the same directory with a name containing '.', which sudo's ``@includedir``
  ignores, so an interrupted run never leaves an invalid or half-written file that sudo would read;
- root's and other users' rights are never changed without ``edit_shared``;
- an account that does not exist is skipped with a note, and nothing is changed.

Interfaces (stable, used by pmcp.lifecycle):
    AgentContainment(user="claude-user", sudoers_dir=Path("/etc/sudoers.d"),
                     backup_dir=host_state_dir(paths) / "agent-user",   # pmcp.host.files.host_state_dir
                     dropin_name="pmcp-agent", template=None, remove_groups=REMOVE_GROUPS,
                     visudo="visudo", sudoers_file=Path("/etc/sudoers"), edit_shared=False,
                     sudo="sudo")       -- a Step
        .name == "agent account"; check() -> Plan; apply(); undo()
    escalation_battery(user, sudo="sudo", runuser="runuser", docker_socket=Path("/var/run/docker.sock"),
                       sudoers_file=Path("/etc/sudoers"), template=None)
        -> list[Check]    -- every escalation attempt must fail; ok=False names the hole and the fix
    DEFAULT_TEMPLATE      -- str.format template with {user}
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmcp.host import sudoers as sd
from pmcp.host.checks import Check
from pmcp.host.files import atomic_write, ensure_dir
from pmcp.host.run import CommandError, run
from pmcp.steps import Plan, StepError

# Groups that are root in disguise on a Proxmox host: blanket sudo (sudo, wheel, admin), the docker and
# lxd daemons, raw disks (disk), /dev/kvm (kvm), logs with secrets (adm), password hashes (shadow), files
# owned by group root, /usr/local on Debian (staff: root's PATH looks there first), and www-data, which
# reads /etc/pve (authkey.key signs root@pam tickets). Every group that owns a sudo rule is added at run time.
ROOT_GROUPS = (
    "root", "sudo", "wheel", "admin", "docker", "lxd", "disk", "kvm", "adm", "shadow", "staff", "www-data",
)  # fmt: skip
REMOVE_GROUPS = ROOT_GROUPS
MANIFEST = "agent-user.json"  # not "manifest.json": that name marks an `update` backup directory
SHARED_FLAG = "--edit-shared-sudoers"

DEFAULT_TEMPLATE = """\
# Installed by pmcp for the agent account {user}: its only sudo rights.
# Read-only commands with fixed arguments, NOEXEC (no shell escape). `pmcp uninstall` removes this file.
# The agent works on Proxmox through the pmcp MCP server, not through sudo.
{user} ALL=(root) NOPASSWD:NOEXEC: /usr/bin/pveversion "", /usr/sbin/qm list, /usr/sbin/pct list
"""

_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# sudoers tags as `sudo -ll` prints them (sudoers(5) "Tag_Spec")
_TAG_OPTION = {
    "NOPASSWD": "!authenticate",
    "PASSWD": "authenticate",
    "NOEXEC": "noexec",
    "EXEC": "!noexec",
    "SETENV": "setenv",
    "NOSETENV": "!setenv",
    "LOG_INPUT": "log_input",
    "NOLOG_INPUT": "!log_input",
    "LOG_OUTPUT": "log_output",
    "NOLOG_OUTPUT": "!log_output",
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _strip_user(text: str, user: str) -> tuple[str, list[str]]:
    """Remove ``user``'s own name from the user lists of sudoers text; return the new text and the
    original chunks of the lines it changed (a line naming only ``user`` goes)."""
    path = Path("-")
    lines = sd.logical_lines(path, text)
    phys = text.splitlines(keepends=True)
    out: list[str] = []
    removed: list[str] = []
    for line in lines:
        chunk = "".join(phys[line.first : line.last + 1])
        if sd.kind(line) != "spec":
            out.append(chunk)
            continue
        items, rest = sd.split_list(sd._strip_comment(line.text))
        if user not in items:
            out.append(chunk)
            continue
        removed.append(chunk if chunk.endswith("\n") else chunk + "\n")
        kept = [i for i in items if i != user]
        if any(not i.startswith("!") for i in kept):
            out.append(", ".join(kept) + rest.rstrip() + "\n")
    return "".join(out), removed


@dataclass
class Allowed:
    """The drop-in's entries as ``sudo -ll`` prints them: who, which options, exactly which commands."""

    runas: set[str]
    options: set[str]
    commands: set[str]

    @classmethod
    def from_template(cls, text: str) -> Allowed:
        allowed = cls(set(), set(), set())
        for line in sd.logical_lines(Path("-"), text):
            if sd.kind(line) != "spec":
                continue
            _, rest = sd.split_list(sd._strip_comment(line.text))
            m = re.match(r"^\s*\S+\s*=\s*(?:\(([^)]*)\))?\s*(.*)$", rest)
            if not m:
                raise ValueError(f"cannot read the drop-in rule {line.text!r}")
            allowed.runas |= {r.strip() for r in (m.group(1) or "root").split(":")[0].split(",")}
            body = m.group(2)
            while True:
                t = re.match(r"^([A-Z_]+)\s*:\s*", body)
                if not t or t.group(1) not in _TAG_OPTION:
                    break
                allowed.options.add(_TAG_OPTION[t.group(1)])
                body = body[t.end() :]
            allowed.commands |= {c.strip() for c in sd._split_settings(body)}
        return allowed

    def accepts(self, entry: sd.SudoEntry, command: str) -> bool:
        return (
            set(entry.runas_users or ["root"]) <= self.runas
            and not entry.runas_groups
            and set(entry.options) == self.options
            and command in self.commands
        )


def extra_entries(listing: sd.SudoList, allowed: Allowed) -> list[tuple[sd.SudoEntry, str]]:
    """Every (entry, command) sudo lists that is not one of the drop-in's exact commands."""
    return [(e, c) for e in listing.entries for c in e.commands if not allowed.accepts(e, c)]


def dangerous_defaults(listing: sd.SudoList, allowed: Allowed) -> list[tuple[str, str]]:
    """(setting as sudo prints it, why) for the Defaults that hand the caller's environment to root."""
    out = []
    for s in listing.defaults:
        why = sd.dangerous_setting(s)
        if why:
            out.append((s, why))
    paths = {c.split()[0] for c in allowed.commands}
    for scoped in listing.scoped:
        m = re.match(r"^Defaults([>!])(\S+)\s+(.*)$", scoped)
        if not m:
            continue
        targets = {t.strip() for t in m.group(2).split(",")}
        if m.group(1) == ">" and not targets & {"root", "ALL", "#0"}:
            continue  # only when running as another user: the agent runs as root only
        if m.group(1) == "!" and all(t.startswith("/") and t not in paths for t in targets):
            continue  # commands the agent may not run
        for setting in sd._split_settings(m.group(3)):
            why = sd.dangerous_setting(setting)
            if why:
                out.append((f"{m.group(1)}{m.group(2)} {setting}", why))
    return out


@dataclass
class Refusal:
    line: sd.Line
    why: str
    fix: str

    def text(self) -> str:
        return f"{self.line.where()}: `{self.line.text}` ({self.why})"


@dataclass
class Remedy:
    """What containment would do, computed from sudo's answer and the files (changes nothing)."""

    edits: dict[Path, str] = field(default_factory=dict)
    removed: dict[Path, list[str]] = field(default_factory=dict)  # original chunks of changed lines
    describe: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    group_reasons: dict[str, str] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)


@dataclass
class _Op:
    drop: set[str] = field(default_factory=set)  # user-list items to take out
    exclude: bool = False  # append ", !USER"
    alias_drop: dict[str, set[str]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def _sudo_reads(path: Path) -> bool:
    """Files sudo's @includedir reads: no '.' in the name, not ending in '~'."""
    return path.is_file() and "." not in path.name and not path.name.endswith("~")


def _group_shared(name: str, user: str) -> bool:
    """Does any other account rely on group ``name`` (a member, or its primary group)?"""
    try:
        g = grp.getgrnam(name)
    except KeyError:
        return False
    if any(m != user for m in g.gr_mem):
        return True
    return any(p.pw_gid == g.gr_gid and p.pw_name != user for p in pwd.getpwall())


class AgentContainment:
    """Step: take every root path away from the agent's OS account but the drop-in, reversibly."""

    name = "agent account"

    def __init__(
        self,
        user: str = "claude-user",
        sudoers_dir: Path = Path("/etc/sudoers.d"),
        backup_dir: Path = Path("/opt/proxmox-mcp/host-state/agent-user"),
        dropin_name: str = "pmcp-agent",
        template: str | None = None,
        remove_groups: Sequence[str] = REMOVE_GROUPS,
        visudo: str = "visudo",
        sudoers_file: Path = Path("/etc/sudoers"),
        edit_shared: bool = False,
        sudo: str = "sudo",
    ) -> None:
        if user == "root":
            raise StepError(
                "refusing to contain root: the agent account must be a separate, unprivileged account",
                fix="pass --agent-user with the agent's own login name",
            )
        if not _USERNAME.match(user):
            raise StepError(
                f"refusing agent user name {user!r}: not a plain account name",
                fix="pass --agent-user with the account's login name (letters, digits, '-', '_')",
            )
        if "." in dropin_name or dropin_name.endswith("~") or "/" in dropin_name:
            raise ValueError("dropin_name must be a name sudo reads: no '.', no '/', not ending in '~'")
        self.user = user
        self.sudoers_dir = Path(sudoers_dir)
        self.backup_dir = Path(backup_dir)
        self.dropin = self.sudoers_dir / dropin_name
        self.template = DEFAULT_TEMPLATE if template is None else template
        self.remove_groups = list(remove_groups)
        self.visudo = visudo
        self.sudoers_file = Path(sudoers_file)
        self.edit_shared = edit_shared
        self.sudo = sudo

    # -- facts -------------------------------------------------------------------------------------------

    def _exists(self) -> bool:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            return False
        return True

    def _dropin_text(self) -> str:
        return self.template.format(user=self.user)

    def _allowed(self) -> Allowed:
        try:
            return Allowed.from_template(self._dropin_text())
        except ValueError:
            return Allowed(set(), set(), set())  # an unreadable template: visudo refuses it at apply

    def _has_sudo(self) -> bool:
        return bool(shutil.which(self.sudo)) and self.sudoers_file.is_file()

    def _files(self) -> list[sd.SudoersFile]:
        files = sd.policy_files(self.sudoers_file)
        known = {f.path for f in files}
        # drop-ins in sudoers_dir even when the main file does not (yet) include it: tests, odd hosts
        for path in sd.dir_entries(self.sudoers_dir):
            if path not in known:
                files += sd.policy_files(path, set(known))
        return files

    def _listing(self) -> sd.SudoList | None:
        if not self._has_sudo():
            return None
        try:
            return sd.sudo_list(self.user, self.sudo)
        except sd.SudoUnavailable as exc:
            raise StepError(
                f"cannot ask sudo what {self.user} may run: {exc}",
                fix=f"check the sudoers files: visudo -c; then: sudo -ll -U {self.user}",
            ) from exc

    def _remedy(self, listing: sd.SudoList | None) -> Remedy:
        rem = Remedy()
        files = self._files()
        acct = sd.Account.of(self.user)
        aliases = sd.user_alias_lines(files)
        ops: dict[sd.Line, _Op] = {}
        flag_fix = f"or let pmcp edit it (backed up, restored by uninstall): pmcp install {SHARED_FLAG}"

        def editable(line: sd.Line, why: str) -> bool:
            if line.path == self.sudoers_file and not self.edit_shared:
                rem.refusals.append(
                    Refusal(
                        line,
                        why + "; pmcp does not edit the main sudoers file on its own",
                        f"remove that line with `visudo` (it edits {self.sudoers_file}), {flag_fix}",
                    )
                )
                return False
            return True

        def shared(rule: sd.Line, why: str) -> None:
            if not self.edit_shared:
                rem.refusals.append(
                    Refusal(
                        rule,
                        why + "; other accounts rely on this rule",
                        f"remove {self.user} from its reach with visudo -f {rule.path} "
                        f"(e.g. append ', !{self.user}' to its user list), {flag_fix}",
                    )
                )
                return
            op = ops.setdefault(rule, _Op())
            op.exclude = True
            op.reasons.append(why)

        def handle(rule: sd.Line, where: sd.Line, alias: str, vias: list[sd.Via]) -> None:
            for via in vias:
                if via.how in ("user", "uid", "primary") and not (
                    via.how == "primary" and _group_shared(via.group, self.user)
                ):
                    what = {
                        "user": f"it names {self.user}",
                        "uid": f"{via.item} is {self.user}'s uid",
                        "primary": f"{via.item} is {self.user}'s own group",
                    }
                    why = what[via.how] + (f" (in User_Alias {alias})" if alias else "")
                    if editable(where, why):
                        op = ops.setdefault(where, _Op())
                        if alias:
                            op.alias_drop.setdefault(alias, set()).add(via.item)
                        else:
                            op.drop.add(via.item)
                        op.reasons.append(why)
                elif via.how == "group":
                    if via.group not in rem.groups:
                        rem.groups.append(via.group)
                        rem.group_reasons[via.group] = f"owns the rule at {rule.where()}"
                elif via.how == "alias":
                    line = aliases[via.alias][0]
                    handle(rule, line, via.alias, via.inner)
                else:
                    how = {
                        "all": "ALL: every account",
                        "primary": f"{via.item}: {self.user}'s primary group, shared with other accounts",
                        "unknown": f"{via.item}: a netgroup or non-Unix group pmcp cannot resolve",
                    }[via.how]
                    if editable(rule, how):
                        shared(rule, how)

        for g in sd.grants(files, acct):
            if g.line.path == self.dropin:
                continue
            handle(g.line, g.line, "", g.vias)

        # root-equivalent groups and every group that owns a sudo rule: the account leaves them
        owning = sd.rule_groups(files)
        for name in sorted(acct.groups):
            if acct.groups[name] == acct.gid:
                continue
            if (name in self.remove_groups or name in owning) and name not in rem.groups:
                rem.groups.append(name)
                rem.group_reasons[name] = (
                    "root-equivalent" if name in self.remove_groups else "owns a sudo rule"
                )

        # Defaults: refused, with the line (they are everyone's: pmcp does not edit them). The files say
        # which apply before the drop-in exists (sudo lists no Defaults for an account without rules);
        # sudo's own list adds what the files do not hold (LDAP, SSSD) and is asked again after apply.
        allowed = self._allowed()
        refused: set[tuple[str, str]] = set()

        def refuse_default(line: sd.Line, setting: str, why: str) -> None:
            key = (line.where(), re.sub(r'[\s"]', "", setting))
            if key in refused:
                return
            refused.add(key)
            rem.refusals.append(
                Refusal(
                    line,
                    f"Defaults `{setting}` applies to {self.user}: {why}",
                    f"remove `{setting}` with visudo -f {line.path}",
                )
            )

        paths = {c.split()[0] for c in allowed.commands}
        for line, setting in sd.applying_defaults(files, acct, paths):
            why = sd.dangerous_setting(setting)
            if why:
                refuse_default(line, setting, why)
        if listing is not None:
            dlines = sd.defaults_lines(files)
            for setting, why in dangerous_defaults(listing, allowed):
                plain = setting.split(" ", 1)[-1] if setting[:1] in "!>" else setting
                found = sd.setting_lines(plain, dlines) or [
                    sd.Line(Path("(sudo -ll, not in the files: LDAP/SSSD?)"), 0, 0, 0, f"Defaults {setting}")
                ]
                refuse_default(found[0], plain, why)

        # the edits, as file texts
        by_file: dict[Path, dict[sd.Line, _Op]] = {}
        for line, op in ops.items():
            by_file.setdefault(line.path, {})[line] = op
        for f in files:
            if f.path not in by_file:
                continue
            phys = f.text.splitlines(keepends=True)
            out: list[str] = []
            for line in f.lines:
                chunk = "".join(phys[line.first : line.last + 1])
                op = by_file[f.path].get(line)
                if op is None:
                    out.append(chunk)
                    continue
                rem.removed.setdefault(f.path, []).append(chunk if chunk.endswith("\n") else chunk + "\n")
                if op.alias_drop:
                    new = sd.rewrite_alias_line(line.text, op.alias_drop)
                    out.append(new + "\n")
                    rem.describe.append(f"take {self.user} out of User_Alias at {line.where()}: `{new}`")
                    continue
                items, rest = sd.split_list(sd._strip_comment(line.text))
                kept = [i for i in items if i not in op.drop]
                if op.exclude:
                    kept.append(f"!{self.user}")
                if any(not i.startswith("!") for i in kept):
                    new = ", ".join(kept) + rest.rstrip()
                    out.append(new + "\n")
                    rem.describe.append(f"{line.where()}: `{line.text}` -> `{new}` ({'; '.join(op.reasons)})")
                else:
                    rem.describe.append(f"remove {line.where()}: `{line.text}` ({'; '.join(op.reasons)})")
            rem.edits[f.path] = "".join(out)

        if listing is not None:
            extra = extra_entries(listing, allowed)
            if extra and not (ops or rem.groups or rem.refusals):
                rem.unexplained = [f"({','.join(e.runas_users) or 'root'}) {c}" for e, c in extra]
        return rem

    def _member_groups(self) -> list[str]:
        member = []
        for name in self.remove_groups:
            try:
                g = grp.getgrnam(name)
            except KeyError:
                continue
            if self.user in g.gr_mem:
                member.append(name)
        return member

    def _primary_group_blocked(self) -> str | None:
        gid = pwd.getpwnam(self.user).pw_gid
        for name in self.remove_groups:
            with contextlib.suppress(KeyError):
                if grp.getgrnam(name).gr_gid == gid:
                    return name
        return None

    def _dropin_right(self) -> bool:
        if not self.dropin.is_file():
            return False
        st = self.dropin.stat()
        return (
            self.dropin.read_text() == self._dropin_text()
            and (st.st_mode & 0o777) == 0o440
            and st.st_uid == os.geteuid()
        )

    def _validate(self, path: Path) -> None:
        try:
            res = run([self.visudo, "-c", "-f", str(path)], timeout=30)
        except CommandError as exc:
            raise StepError(
                f"cannot validate sudoers files: {exc.message}",
                fix="apt-get install sudo",
            ) from exc
        if not res.ok:
            raise StepError(
                "a sudoers file pmcp was about to install is invalid; nothing was installed",
                fix="report this as a pmcp bug; the host's sudoers are unchanged (check: visudo -c)",
                detail=res.text[-600:],
            )

    # -- Step --------------------------------------------------------------------------------------------

    def _assess(self) -> tuple[Plan, Remedy]:
        plan = Plan()
        if pwd.getpwnam(self.user).pw_uid == 0:
            raise StepError(
                f"{self.user} has uid 0: it is root, and pmcp will not edit root's rights",
                fix="give the agent its own unprivileged account (useradd) and pass it with --agent-user",
            )
        blocked = self._primary_group_blocked()
        if blocked:
            raise StepError(
                f"{self.user}'s primary group is {blocked}, which grants root; pmcp cannot remove it",
                fix=f"usermod -g {self.user} {self.user}   (after: groupadd {self.user})",
            )
        listing = self._listing()
        rem = self._remedy(listing)
        if rem.refusals:
            refs = rem.refusals
            if len(refs) == 1:
                message = (
                    f"{self.user} can still become root through a sudoers line pmcp will not change on its "
                    f"own: {refs[0].text()}"
                )
                fix = refs[0].fix
            else:
                message = (
                    f"{self.user} can still become root through {len(refs)} sudoers lines pmcp will not "
                    "change on its own: "
                    + ", ".join(r.line.where() for r in refs)
                    + " (each line and its fix below)"
                )
                fix = f"the fix under each line below, or let pmcp edit them: pmcp install {SHARED_FLAG}"
            raise StepError(message, fix=fix, detail="\n".join(f"{r.text()}\n  fix: {r.fix}" for r in refs))
        if rem.unexplained:
            raise StepError(
                f"sudo lets {self.user} run {', '.join(rem.unexplained)}, from no sudoers file pmcp can "
                f"read (LDAP, SSSD?)",
                fix=f"remove those rules where they are defined; check with: sudo -ll -U {self.user}",
            )
        plan.changes += [f"{d} (backed up)" for d in rem.describe]
        if listing is None:
            plan.notes.append("sudo is not installed: no sudo rule to remove, no drop-in to install")
        elif not self._dropin_right():
            plan.changes.append(f"install {self.dropin} (read-only commands with fixed arguments, NOEXEC)")
        for name in rem.groups:
            plan.changes.append(f"remove {self.user} from group {name} ({rem.group_reasons.get(name, '')})")
        if rem.groups:
            plan.notes.append(
                f"{self.user}'s running sessions keep their groups until they end: "
                f"loginctl terminate-user {self.user} (verify checks)"
            )
        return plan, rem

    def check(self) -> Plan:
        if not self._exists():
            return Plan(notes=[f"skipped: user {self.user} absent"])
        return self._assess()[0]

    def apply(self) -> None:
        if not self._exists():
            return
        _, rem = (
            self._assess()
        )  # refuses uid 0, root primary groups and shared rules, even when called directly
        ensure_dir(self.backup_dir, 0o700)
        manifest = self._load_manifest()
        for path, new in rem.edits.items():
            entry = manifest["files"].setdefault(str(path), {})
            if "backup" not in entry:
                backup = self.backup_dir / str(path).strip("/").replace("/", "_")
                shutil.copy2(path, backup)
                os.chmod(backup, 0o600)
                entry["backup"] = str(backup)
                entry["mode"] = path.stat().st_mode & 0o777
            entry.setdefault("removed", []).extend(rem.removed.get(path, []))
            self._save_manifest(manifest)
            mode = path.stat().st_mode & 0o777
            atomic_write(path, new, mode, validate=self._validate)
            entry["written_sha256"] = _sha(new)
            self._save_manifest(manifest)
        has_sudo = self._has_sudo()
        if has_sudo and not self._dropin_right():
            key = str(self.dropin)
            if key not in manifest["created"] and key not in manifest["files"]:
                if self.dropin.exists():
                    backup = self.backup_dir / self.dropin.name
                    shutil.copy2(self.dropin, backup)
                    manifest["files"][key] = {"backup": str(backup), "mode": 0o440, "replaced": True}
                else:
                    manifest["created"].append(key)
                self._save_manifest(manifest)
            atomic_write(self.dropin, self._dropin_text(), 0o440, validate=self._validate)
        for name in rem.groups:
            if name not in manifest["groups"]:
                manifest["groups"].append(name)
            self._save_manifest(manifest)
            res = run(["gpasswd", "-d", self.user, name], timeout=30)
            if not res.ok:
                raise StepError(
                    f"could not remove {self.user} from group {name}",
                    fix=f"gpasswd -d {self.user} {name}",
                    detail=res.text[-300:],
                )
        if has_sudo:  # sudo's own answer, once more: only the drop-in may be left
            listing = self._listing()
            assert listing is not None
            extra = extra_entries(listing, self._allowed())
            bad = dangerous_defaults(listing, self._allowed())
            if bad:
                raise StepError(
                    f"sudo applies Defaults to {self.user} that hand its environment to root: "
                    + "; ".join(f"`{s}`: {why}" for s, why in bad),
                    fix="remove them with visudo",
                )
            if extra:
                raise StepError(
                    f"after containment sudo still lets {self.user} run: "
                    + "; ".join(f"{e.describe()} -> {c}" for e, c in extra),
                    fix=f"remove those rules with visudo; see: sudo -ll -U {self.user}",
                    detail=listing.raw[-1500:],
                )

    def undo(self) -> None:
        manifest = self._load_manifest()
        if not (manifest["files"] or manifest["created"] or manifest["groups"]):
            return
        if self._exists():
            for name in manifest["groups"]:
                with contextlib.suppress(KeyError):
                    grp.getgrnam(name)
                    if self.user not in grp.getgrnam(name).gr_mem:
                        res = run(["gpasswd", "-a", self.user, name], timeout=30)
                        if not res.ok:
                            raise StepError(
                                f"could not put {self.user} back into group {name}",
                                fix=f"gpasswd -a {self.user} {name}",
                                detail=res.text[-300:],
                            )
        for key in manifest["created"]:
            with contextlib.suppress(FileNotFoundError):
                Path(key).unlink()
        for key, entry in manifest["files"].items():
            self._restore(Path(key), entry)
        self._manifest_path().unlink()

    def _restore(self, path: Path, entry: dict[str, Any]) -> None:
        """Put the agent's rules back; the whole backup only if nobody changed the file since pmcp did."""
        backup = Path(entry.get("backup", ""))
        mode = int(entry.get("mode", 0o440))
        current = path.read_text() if path.exists() else None
        if backup.is_file() and (
            current is None or entry.get("replaced") or _sha(current) == entry.get("written_sha256")
        ):
            atomic_write(path, backup.read_text(), mode, validate=self._validate)
        elif current is not None and entry.get("removed"):
            text = current if current.endswith("\n") or not current else current + "\n"
            missing = [r for r in entry["removed"] if r not in text]
            if missing:
                atomic_write(path, text + "".join(missing), mode, validate=self._validate)

    # -- manifest ----------------------------------------------------------------------------------------

    def _manifest_path(self) -> Path:
        return self.backup_dir / MANIFEST

    def _load_manifest(self) -> dict[str, Any]:
        path = self._manifest_path()
        data: dict[str, Any] = {}
        if path.is_file():
            data = json.loads(path.read_text())
        data.setdefault("user", self.user)
        data.setdefault("files", {})
        data.setdefault("created", [])
        data.setdefault("groups", [])
        return data

    def _save_manifest(self, manifest: dict[str, Any]) -> None:
        ensure_dir(self.backup_dir, 0o700)
        atomic_write(self._manifest_path(), json.dumps(manifest, indent=2, sort_keys=True) + "\n", 0o600)


# -- verification ------------------------------------------------------------------------------------------

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# (check name, command, arguments): each one is a root shell or a root-password change if sudo allows it.
# Asked on top of every rule sudo lists, so a rule pmcp's parser missed is still caught.
PROBES: list[tuple[str, str, list[str]]] = [
    ("sudo: any command", "true", []),
    ("sudo: pvesh set root@pam", "pvesh", ["set", "/access/users/root@pam", "--comment", "pmcp-probe"]),
    ("sudo: passwd root", "passwd", ["root"]),
    ("sudo: root shell", "bash", []),
    ("sudo: pager escape", "less", ["/etc/hosts"]),
    ("sudo: docker", "docker", ["ps"]),
    ("sudo: vzdump --script", "vzdump", ["100", "--script", "/tmp/pmcp-probe"]),
    ("sudo: pct push", "pct", ["push", "100", "/etc/hosts", "/root/pmcp-probe"]),
]


def _hole(user: str) -> str:
    return (
        f"pmcp install --agent-user {user}   (it removes what it can and names the rest; "
        f"{SHARED_FLAG} lets it edit /etc/sudoers and shared rules)"
    )


def _ask(user: str, argv: list[str], sudo: str, runuser: str, runas: str = "") -> tuple[bool, bool, str]:
    """May ``user`` run ``argv`` through sudo? (without a password, at all, sudo's last word). ``-l`` with
    a command only asks the policy: nothing is run."""
    as_r = ["-u", runas] if runas and runas not in ("root", "ALL") else []
    as_user = run([runuser, "-u", user, "--", sudo, "-n", *as_r, "-l", *argv], timeout=30)
    policy = run([sudo, "-n", *as_r, "-l", "-U", user, *argv], timeout=30)
    last = ((as_user.stderr or as_user.stdout).strip().splitlines() or ["refused"])[-1]
    return as_user.ok, as_user.ok or policy.ok, last


def _probe(user: str, name: str, cmd: str, args: list[str], sudo: str, runuser: str) -> Check:
    path = shutil.which(cmd, path=_PATH)
    if path is None:
        return Check(name, True, f"{cmd} is not installed on this host: nothing to run")
    try:
        nopw, allowed, last = _ask(user, [path, *args], sudo, runuser)
    except CommandError as exc:
        return Check(name, False, exc.message, fix="apt-get install sudo util-linux")
    if allowed:
        how = "without a password" if nopw else "with a password"
        return Check(name, False, f"{user} may run `sudo {cmd} {' '.join(args)}` {how}".strip(), _hole(user))
    return Check(name, True, f"refused: {last}")


def _probe_argv(command: str) -> list[str] | None:
    """A concrete command line for a listed sudo command (None: nothing on this host to ask about)."""
    if command == "ALL":
        return ["/usr/bin/id"]
    if command.startswith("sudoedit"):
        parts = command.split()
        return ["sudoedit", *parts[1:2]] if len(parts) > 1 else None
    path = sd.exists_like(command)
    if path is None:
        return None
    args = command.split()[1:]
    if args == ['""']:
        args = []
    return [path, *(a.replace("*", "x") for a in args)]


def sudo_checks(
    user: str, sudo: str = "sudo", runuser: str = "runuser", sudoers_file: Path = Path("/etc/sudoers"),
    template: str | None = None,
) -> list[Check]:  # fmt: skip
    """Sudo's own list for ``user``: every entry but the drop-in's exact commands is a hole (with the
    line it comes from), every listed command is asked about, and so are the drop-in's with an argument
    more; Defaults that carry the caller's environment to root fail too."""
    if not shutil.which(sudo):
        return [Check("sudo: rules", True, "sudo is not installed: no sudo rights")]
    try:
        listing = sd.sudo_list(user, sudo)
    except sd.SudoUnavailable as exc:
        return [Check("sudo: rules", False, f"cannot ask sudo: {exc}", "visudo -c")]
    allowed = Allowed.from_template((DEFAULT_TEMPLATE if template is None else template).format(user=user))
    files = sd.policy_files(sudoers_file)
    acct = sd.Account.of(user)
    sources = [
        f"{g.line.where()} `{g.line.text}` via {', '.join(v.item for v in g.vias)}"
        for g in sd.grants(files, acct)
        if not (g.line.path.name.startswith("pmcp-agent") and all(v.how == "user" for v in g.vias))
    ]
    checks: list[Check] = []
    extra = extra_entries(listing, allowed)
    if extra:
        listed = "; ".join(f"{e.describe()} -> {c}" for e, c in extra)
        where = f" (from {'; '.join(sources)})" if sources else ""
        checks.append(Check("sudo: rules", False, f"sudo lets {user} run: {listed}{where}", _hole(user)))
    else:
        n = sum(len(e.commands) for e in listing.entries)
        what = f"only pmcp's drop-in ({n} exact commands)" if n else "no sudo rule"
        checks.append(Check("sudo: rules", True, what))
    bad = dangerous_defaults(listing, allowed)
    if bad:
        dl = sd.defaults_lines(files)
        detail = "; ".join(
            f"`{s}`: {why}"
            + "".join(
                f" at {ln.where()}"
                for ln in sd.setting_lines(s.split(" ", 1)[-1] if s[:1] in "!>" else s, dl)
            )
            for s, why in bad
        )
        checks.append(Check("sudo: defaults", False, detail, "remove those Defaults with visudo"))
    else:
        checks.append(Check("sudo: defaults", True, "env_reset on, no interpreter variable kept"))
    seen: set[tuple[str, str]] = set()
    for entry in listing.entries:
        runas = (entry.runas_users or ["root"])[0]
        for command in entry.commands:
            if (runas, command) in seen:
                continue
            seen.add((runas, command))
            ok_entry = allowed.accepts(entry, command)
            argv = _probe_argv(command)
            name = f"sudo: {command}"[:60]
            if argv is None:
                if ok_entry:
                    checks.append(Check(name, True, "pmcp's drop-in; not installed on this host"))
                else:
                    checks.append(
                        Check(name, False, f"sudo lists `{command}` for {user} (as {runas})", _hole(user))
                    )
                continue
            try:
                if ok_entry:  # pmcp's own command: exactly as written, never with one argument more
                    _, more, _ = _ask(user, [*argv, "--pmcp-probe"], sudo, runuser)
                    if more:
                        checks.append(
                            Check(name, False, f"{user} may add arguments to `{command}`", _hole(user))
                        )
                    else:
                        checks.append(Check(name, True, "pmcp's drop-in: exact arguments only"))
                    continue
                nopw, allowed_now, last = _ask(user, argv, sudo, runuser, runas)
            except CommandError as exc:
                checks.append(Check(name, False, exc.message, "apt-get install sudo util-linux"))
                continue
            how = "without a password" if nopw else "with a password" if allowed_now else f"listed ({last})"
            checks.append(
                Check(name, False, f"{user} may run `sudo {' '.join(argv)}` as {runas} {how}", _hole(user))
            )
    return checks


def root_groups(user: str, sudoers_file: Path = Path("/etc/sudoers")) -> tuple[list[str], list[str]]:
    """(root-equivalent or rule-owning groups ``user`` is in, all its groups)."""
    acct = sd.Account.of(user)
    owning = sd.rule_groups(sd.policy_files(sudoers_file)) if sudoers_file.is_file() else set()
    bad = sorted(n for n in acct.groups if n in ROOT_GROUPS or n in owning)
    return bad, sorted(acct.groups)


def sessions_holding(
    user: str, sudoers_file: Path = Path("/etc/sudoers"), proc: Path = Path("/proc")
) -> list[str]:
    """Processes of ``user`` whose credentials still carry a root-equivalent or rule-owning group.

    Leaving a group changes /etc/group, not running processes: the kernel keeps a session's supplementary
    groups until it ends, and sudo's default ``group_source=static`` trusts the caller's group vector. So
    a shell the agent opened before install keeps `%ops` rules and the docker socket until it is ended.
    """
    pw = pwd.getpwnam(user)
    files = sd.policy_files(sudoers_file) if sudoers_file.is_file() else []
    names = set(ROOT_GROUPS) | sd.rule_groups(files)
    gids: dict[int, str] = {}
    for name in names:
        with contextlib.suppress(KeyError):
            gids[grp.getgrnam(name).gr_gid] = name
    out = []
    for status in sorted(proc.glob("[0-9]*/status")):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # the process ended
        uids = {int(x) for x in fields.get("Uid", "").split()}
        if pw.pw_uid not in uids:
            continue
        held = sorted({gids[int(g)] for g in fields.get("Groups", "").split() if int(g) in gids})
        if held:
            out.append(
                f"pid {status.parent.name} ({fields.get('Name', '?').strip()}) still holds {', '.join(held)}"
            )
    return out


def escalation_battery(
    user: str,
    sudo: str = "sudo",
    runuser: str = "runuser",
    docker_socket: Path = Path("/var/run/docker.sock"),
    sudoers_file: Path = Path("/etc/sudoers"),
    template: str | None = None,
) -> list[Check]:
    """Try, as ``user``, the ways to become root that matter on a Proxmox host; every one must fail.

    Sudo is asked with ``-l`` (may this user run exactly this command?), as the user (``sudo -n``) and as
    root for the user (``-U``, which also catches rules that need the user's password), so no probe ever
    runs a command that would change the host. Every rule sudo lists is tried, then a fixed list.
    """
    try:
        pwd.getpwnam(user)
    except KeyError:
        return [Check("agent account", True, f"{user} does not exist: nothing to contain")]
    checks = sudo_checks(user, sudo, runuser, sudoers_file, template)
    if shutil.which(sudo):
        checks += [_probe(user, name, cmd, args, sudo, runuser) for name, cmd, args in PROBES]

    bad, groups = root_groups(user, sudoers_file)
    checks.append(
        Check(
            "groups: none root-equivalent",
            not bad,
            f"{user} is in {', '.join(bad)}" if bad else f"{user} groups: {', '.join(groups)}",
            _hole(user) if bad else "",
        )
    )
    held = sessions_holding(user, sudoers_file)
    checks.append(
        Check(
            "groups: running processes",
            not held,
            "; ".join(held) if held else f"no process of {user} holds a root-equivalent group",
            f"end {user}'s sessions so they pick up the new groups: loginctl terminate-user {user} "
            f"(or pkill -KILL -u {user})"
            if held
            else "",
        )
    )

    if docker_socket.exists():
        res = run([runuser, "-u", user, "--", "test", "-w", str(docker_socket)], timeout=30)
        checks.append(
            Check(
                "docker socket",
                not res.ok,
                f"{user} can write {docker_socket} (docker access is root)" if res.ok else "not writable",
                _hole(user) if res.ok else "",
            )
        )
    docker = shutil.which("docker", path=_PATH)
    if docker:
        res = run(
            [runuser, "-u", user, "--", docker, "-H", f"unix://{docker_socket}", "ps"],
            timeout=30,
        )
        detail = (res.stderr.strip().splitlines() or ["refused"])[-1]
        checks.append(
            Check(
                "docker ps as the agent",
                not res.ok,
                f"{user} can list containers through the docker socket" if res.ok else f"refused: {detail}",
                _hole(user) if res.ok else "",
            )
        )
    return checks
