"""The agent's OS account: no blanket sudo, no docker group, at most a few read-only commands.

Why: a negated sudo rule is not a boundary, and any allowed root command with a pager, an editor, a
``--script`` hook, ``pct push`` or docker access is a root shell (DESIGN §4). So ``AgentContainment``
removes the account's own rules from the sudoers drop-ins (backed up first), installs one positive drop-in,
and takes the account out of the groups that are root in disguise (``docker``) or blanket sudo (``sudo``,
``wheel``, ``admin``).

Safety rules this module keeps:
- every sudoers file it writes is validated with ``visudo -cf`` BEFORE an atomic rename into place; the
  temporary file sits in the same directory with a name containing '.', which sudo's ``@includedir``
  ignores, so an interrupted run never leaves an invalid or half-written file that sudo would read;
- only lines naming the agent account are changed; root's and other users' lines are never touched (a line
  that lists several users loses only the agent's name);
- an account that does not exist is skipped with a note, and nothing is changed.

Interfaces (stable, used by pmcp.lifecycle):
    AgentContainment(user="claude-user", sudoers_dir=Path("/etc/sudoers.d"),
                     backup_dir=host_state_dir(paths) / "agent-user",   # pmcp.host.files.host_state_dir
                     dropin_name="pmcp-agent", template=None, remove_groups=REMOVE_GROUPS,
                     visudo="visudo", sudoers_file=Path("/etc/sudoers"))       -- a Step
        .name == "agent account"; check() -> Plan; apply(); undo()
    escalation_battery(user, sudo="sudo", runuser="runuser", docker_socket=Path("/var/run/docker.sock"))
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

from pmcp.host.checks import Check
from pmcp.host.files import atomic_write, ensure_dir
from pmcp.host.run import CommandError, run
from pmcp.steps import Plan, StepError

REMOVE_GROUPS = ("docker", "sudo", "wheel", "admin")
MANIFEST = "agent-user.json"  # not "manifest.json": that name marks an `update` backup directory

DEFAULT_TEMPLATE = """\
# Installed by pmcp for the agent account {user}: its only sudo rights.
# Read-only commands with fixed arguments, NOEXEC (no shell escape). `pmcp uninstall` removes this file.
# The agent works on Proxmox through the pmcp MCP server, not through sudo.
{user} ALL=(root) NOPASSWD:NOEXEC: /usr/bin/pveversion "", /usr/sbin/qm list, /usr/sbin/pct list
"""

_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_NOT_USER_SPEC = re.compile(
    r"^(Defaults\b|Defaults[:@>!]|(User|Runas|Host|Cmnd|Cmd)_Alias\b|[@#]include)", re.IGNORECASE
)
_USER_LIST = re.compile(r"^\s*((?:[^\s,=]+\s*,\s*)*[^\s,=]+)(\s+.*)$", re.S)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Edit:
    """One sudoers file and the agent's rules to take out of it."""

    path: Path
    old: str
    new: str
    removed: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) physical line indexes of each logical line (a trailing backslash continues a line)."""
    lines = text.splitlines()
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        j = i
        while lines[j].rstrip().endswith("\\") and j + 1 < len(lines):
            j += 1
        spans.append((i, j))
        i = j + 1
    return spans


def _strip_user(text: str, user: str) -> tuple[str, list[str]]:
    """Remove ``user``'s user-spec lines from sudoers text; return the new text and the removed rules."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    removed: list[str] = []
    for start, end in _logical_lines(text):
        chunk = "".join(lines[start : end + 1])
        logical = re.sub(r"\s*\\\n\s*", " ", chunk).strip()
        if not logical or (logical.startswith("#") and not logical.lower().startswith("#include")):
            out.append(chunk)
            continue
        if _NOT_USER_SPEC.match(logical):
            out.append(chunk)
            continue
        m = _USER_LIST.match(logical)
        if not m:
            out.append(chunk)
            continue
        users = [u.strip() for u in m.group(1).split(",")]
        if user not in users:
            out.append(chunk)
            continue
        removed.append(chunk if chunk.endswith("\n") else chunk + "\n")
        rest = [u for u in users if u != user]
        if rest:
            out.append(", ".join(rest) + m.group(2).rstrip() + "\n")
    return "".join(out), removed


def _aliases_naming(text: str, user: str) -> list[str]:
    found = []
    for line in text.splitlines():
        m = re.match(r"^\s*User_Alias\s+(\w+)\s*=\s*(.*)$", line)
        if m and user in [u.strip() for u in m.group(2).split(",")]:
            found.append(m.group(1))
    return found


def _sudo_reads(path: Path) -> bool:
    """Files sudo's @includedir reads: no '.' in the name, not ending in '~'."""
    return path.is_file() and "." not in path.name and not path.name.endswith("~")


class AgentContainment:
    """Step: take blanket rights away from the agent's OS account, reversibly."""

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

    # -- facts -------------------------------------------------------------------------------------------

    def _exists(self) -> bool:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            return False
        return True

    def _dropin_text(self) -> str:
        return self.template.format(user=self.user)

    def _edits(self) -> list[_Edit]:
        edits = []
        if not self.sudoers_dir.is_dir():
            return edits
        for path in sorted(self.sudoers_dir.iterdir()):
            if path == self.dropin or not _sudo_reads(path):
                continue
            old = path.read_text()
            new, removed = _strip_user(old, self.user)
            if removed:
                edits.append(_Edit(path, old, new, removed))
        return edits

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

    def check(self) -> Plan:
        if not self._exists():
            return Plan(notes=[f"skipped: user {self.user} absent"])
        if pwd.getpwnam(self.user).pw_uid == 0:
            raise StepError(
                f"{self.user} has uid 0: it is root, and pmcp will not edit root's rights",
                fix="give the agent its own unprivileged account (useradd) and pass it with --agent-user",
            )
        plan = Plan()
        blocked = self._primary_group_blocked()
        if blocked:
            raise StepError(
                f"{self.user}'s primary group is {blocked}, which grants root; pmcp cannot remove it",
                fix=f"usermod -g {self.user} {self.user}   (after: groupadd {self.user})",
            )
        for edit in self._edits():
            plan.changes.append(
                f"remove {self.user}'s sudo rule from {edit.path} ({len(edit.removed)} line(s), backed up)"
            )
        if not self._dropin_right():
            plan.changes.append(f"install {self.dropin} (read-only commands with fixed arguments, NOEXEC)")
        for name in self._member_groups():
            plan.changes.append(f"remove {self.user} from group {name}")
        if self.sudoers_dir.is_dir():
            for path in sorted(self.sudoers_dir.iterdir()):
                if _sudo_reads(path) and path != self.dropin:
                    for alias in _aliases_naming(path.read_text(), self.user):
                        plan.notes.append(
                            f"{self.user} is in User_Alias {alias} in {path}: review it (visudo)"
                        )
        if self.sudoers_file.is_file():
            _, main_rules = _strip_user(self.sudoers_file.read_text(), self.user)
            if main_rules:
                plan.notes.append(
                    f"{self.sudoers_file} itself has a rule for {self.user}; pmcp does not edit that file: "
                    f"remove it with `visudo`"
                )
        return plan

    def apply(self) -> None:
        if not self._exists():
            return
        self.check()  # refuses uid 0 and a primary group that grants root, even when called directly
        ensure_dir(self.backup_dir, 0o700)
        manifest = self._load_manifest()
        for edit in self._edits():
            entry = manifest["files"].setdefault(str(edit.path), {})
            if "backup" not in entry:
                backup = self.backup_dir / edit.path.name
                shutil.copy2(edit.path, backup)
                os.chmod(backup, 0o600)
                entry["backup"] = str(backup)
                entry["mode"] = edit.path.stat().st_mode & 0o777
            entry.setdefault("removed", []).extend(edit.removed)
            self._save_manifest(manifest)
            mode = edit.path.stat().st_mode & 0o777
            atomic_write(edit.path, edit.new, mode, validate=self._validate)
            entry["written_sha256"] = _sha(edit.new)
            self._save_manifest(manifest)
        if not self._dropin_right():
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
        for name in self._member_groups():
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
    return f"pmcp install --agent-user {user}   (or remove {user}'s sudo rules with visudo)"


def _probe(user: str, name: str, cmd: str, args: list[str], sudo: str, runuser: str) -> Check:
    path = shutil.which(cmd, path=_PATH)
    if path is None:
        return Check(name, True, f"{cmd} is not installed on this host: nothing to run")
    try:
        as_user = run([runuser, "-u", user, "--", sudo, "-n", "-l", path, *args], timeout=30)
        policy = run([sudo, "-n", "-l", "-U", user, path, *args], timeout=30)
    except CommandError as exc:
        return Check(name, False, exc.message, fix="apt-get install sudo util-linux")
    if as_user.ok or policy.ok:
        how = "without a password" if as_user.ok else "with a password"
        return Check(name, False, f"{user} may run `sudo {cmd} {' '.join(args)}` {how}".strip(), _hole(user))
    last = (as_user.stderr.strip().splitlines() or ["refused"])[-1]
    return Check(name, True, f"refused: {last}")


def escalation_battery(
    user: str,
    sudo: str = "sudo",
    runuser: str = "runuser",
    docker_socket: Path = Path("/var/run/docker.sock"),
) -> list[Check]:
    """Try, as ``user``, the ways to become root that matter on a Proxmox host; every one must fail.

    Sudo is asked with ``-l`` (may this user run exactly this command?), as the user (``sudo -n``) and as
    root for the user (``-U``, which also catches rules that need the user's password), so no probe ever
    runs a command that would change the host.
    """
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return [Check("agent account", True, f"{user} does not exist: nothing to contain")]
    checks = [_probe(user, name, cmd, args, sudo, runuser) for name, cmd, args in PROBES]

    groups = [g.gr_name for g in grp.getgrall() if user in g.gr_mem]
    with contextlib.suppress(KeyError):
        groups.append(grp.getgrgid(pw.pw_gid).gr_name)
    bad = sorted(set(groups) & set(REMOVE_GROUPS))
    checks.append(
        Check(
            "groups: no docker/sudo",
            not bad,
            f"{user} is in {', '.join(bad)}" if bad else f"{user} groups: {', '.join(sorted(set(groups)))}",
            _hole(user) if bad else "",
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
