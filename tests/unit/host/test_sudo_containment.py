"""Containment judged by sudo's own answer, with real sudo/visudo/useradd/gpasswd in a private /etc.

The attack of issue 11: rules that reach the agent through a group (find), a User_Alias (env), its uid
(python3) and a line in the main /etc/sudoers (dd). Before, install contained "the agent" and verify
passed, while `sudo -n find /etc/hostname -exec id \\;` run as the agent printed uid 0.
Every body runs in tests.support.private_etc (own mount namespace, copy of /etc): never the host's /etc.
"""

from __future__ import annotations

import grp
import os
import subprocess
from pathlib import Path
from typing import Any

from pmcp.host.agent_user import AgentContainment, escalation_battery
from pmcp.steps import StepError, run_steps
from tests.support.accounts import SUDOERS_DIR, temp_account
from tests.support.private_etc import in_private_etc

MAIN = Path("/etc/sudoers")


def _root_via_find(user: str) -> str:
    """What the attack prints: `id` run by find -exec through sudo, as the agent."""
    res = subprocess.run(
        ["runuser", "-u", user, "--", "sudo", "-n", "find", "/etc/hostname", "-exec", "id", ";"],
        capture_output=True,
        text=True,
    )
    return res.stdout + res.stderr


def _sudo_ll(user: str) -> str:
    return subprocess.run(["sudo", "-ll", "-U", user], capture_output=True, text=True).stdout


def _dropin(f: str, text: str) -> Path:
    path = SUDOERS_DIR / f
    path.write_text(text)
    os.chmod(path, 0o440)
    return path


def _attack(acct: Any, group: str, main_line: bool = True) -> dict[str, Path]:
    uid = subprocess.run(["id", "-u", acct.name], capture_output=True, text=True).stdout.strip()
    files = {
        "group": _dropin("20-ops", f"%{group} ALL=(root) NOPASSWD: /usr/bin/find\n"),
        "alias": _dropin(
            "30-alias", f"User_Alias BOTS = {acct.name}\nBOTS ALL=(root) NOPASSWD: /usr/bin/env\n"
        ),
        "uid": _dropin("40-uid", f"#{uid} ALL=(root) NOPASSWD: /usr/bin/python3\n"),
    }
    if main_line:
        with MAIN.open("a") as fh:
            fh.write(f"{acct.name} ALL=(root) NOPASSWD: /bin/dd\n")
    assert subprocess.run(["visudo", "-c"], capture_output=True).returncode == 0
    return files


def _snapshot() -> dict[str, str]:
    out = {str(MAIN): MAIN.read_text(), "/etc/group": Path("/etc/group").read_text()}
    for p in sorted(SUDOERS_DIR.iterdir()):
        out[str(p)] = p.read_text()
    return out


def _refused_without_flag(tmp: str) -> dict[str, Any]:
    with temp_account(groups=("pmcpt-ops",)) as acct:
        _attack(acct, "pmcpt-ops")
        assert "uid=0(root)" in _root_via_find(acct.name)  # the hole, before pmcp
        before = _snapshot()
        step = AgentContainment(acct.name, backup_dir=Path(tmp) / "b")
        result = run_steps([step])
        failed = result.steps[-1]
        return {
            "ok": result.ok,
            "error": failed.error,
            "fix": failed.fix,
            "unchanged": _snapshot() == before,
            "still_root": "uid=0(root)" in _root_via_find(acct.name),
            "user": acct.name,
        }


def test_main_sudoers_rule_is_refused_with_the_line_and_the_fix(tmp_path: Path) -> None:
    out = in_private_etc(_refused_without_flag, str(tmp_path))
    assert not out["ok"]
    assert "/etc/sudoers:" in out["error"]
    assert f"`{out['user']} ALL=(root) NOPASSWD: /bin/dd`" in out["error"]
    assert "--edit-shared-sudoers" in out["fix"] and "visudo" in out["fix"]
    assert out["unchanged"]  # refused at check(): nothing was touched
    assert out["still_root"]  # honest: pmcp says it did not contain it (the admin decides)


def _contained_with_flag(tmp: str) -> dict[str, Any]:
    with temp_account(groups=("pmcpt-ops",)) as acct:
        files = _attack(acct, "pmcpt-ops")
        before = _snapshot()
        battery_before = {c.name: c.ok for c in escalation_battery(acct.name)}
        step = AgentContainment(acct.name, backup_dir=Path(tmp) / "b", edit_shared=True)
        plan = step.check()
        result = run_steps([step])
        after = {
            "ok": result.ok,
            "result": result.to_dict(),
            "plan": plan.changes,
            "find": _root_via_find(acct.name),
            "listing": _sudo_ll(acct.name),
            "battery": [(c.name, c.ok, c.detail) for c in escalation_battery(acct.name)],
            "battery_before": battery_before,
            "in_group": acct.name in grp.getgrnam("pmcpt-ops").gr_mem,
            "main": MAIN.read_text(),
            "files": {k: p.read_text() for k, p in files.items()},
            "again": step.check().changes,
            "valid": subprocess.run(["visudo", "-c"], capture_output=True).returncode == 0,
        }
        step.undo()
        after["restored"] = _snapshot() == before
        after["find_after_undo"] = _root_via_find(acct.name)
        after["user"] = acct.name
        return after


def test_every_path_to_root_is_closed_and_undo_restores_it(tmp_path: Path) -> None:
    out = in_private_etc(_contained_with_flag, str(tmp_path))
    user = out["user"]
    # before: sudo's own list shows the four rules, and the battery (every listed rule) fails on them
    assert not out["battery_before"]["sudo: rules"]
    assert not out["battery_before"]["sudo: /usr/bin/find"]
    assert out["ok"], out["result"]
    assert any("pmcpt-ops" in c for c in out["plan"]), out["plan"]
    assert "uid=0" not in out["find"], out["find"]
    for cmd in ("/usr/bin/find", "/usr/bin/env", "/usr/bin/python3", "/bin/dd"):
        assert cmd not in out["listing"], out["listing"]
    assert "/usr/sbin/qm list" in out["listing"]
    assert all(ok for _, ok, _ in out["battery"]), [b for b in out["battery"] if not b[1]]
    assert not out["in_group"]
    assert f"{user} ALL=(root) NOPASSWD: /bin/dd" not in out["main"]
    assert "%pmcpt-ops ALL=(root) NOPASSWD: /usr/bin/find" in out["files"]["group"]  # others keep it
    assert f"BOTS = {user}" not in out["files"]["alias"]
    assert "python3" not in out["files"]["uid"]
    assert out["valid"] and out["again"] == []
    assert out["restored"]
    assert "uid=0(root)" in out["find_after_undo"]


def _dropins_only(tmp: str) -> dict[str, Any]:
    with temp_account(groups=("pmcpt-ops", "disk", "adm")) as acct:
        _attack(acct, "pmcpt-ops", main_line=False)
        step = AgentContainment(acct.name, backup_dir=Path(tmp) / "b")
        result = run_steps([step])
        return {
            "ok": result.ok,
            "result": result.to_dict(),
            "find": _root_via_find(acct.name),
            "battery": [(c.name, c.ok, c.detail) for c in escalation_battery(acct.name)],
            "groups": [g.gr_name for g in grp.getgrall() if acct.name in g.gr_mem],
        }


def test_without_the_main_file_no_flag_is_needed(tmp_path: Path) -> None:
    out = in_private_etc(_dropins_only, str(tmp_path))
    assert out["ok"], out["result"]
    assert "uid=0" not in out["find"]
    assert all(ok for _, ok, _ in out["battery"]), [b for b in out["battery"] if not b[1]]
    assert not {"pmcpt-ops", "disk", "adm"} & set(out["groups"])


def _shared_rule(tmp: str, flag: bool) -> dict[str, Any]:
    with temp_account(groups=()) as acct, temp_account(groups=()) as other:
        _dropin("50-all", "ALL ALL=(root) NOPASSWD: /usr/bin/less\n")
        step = AgentContainment(acct.name, backup_dir=Path(tmp) / "b", edit_shared=flag)
        try:
            result = run_steps([step])
            err = result.steps[-1].error
        except StepError as exc:  # pragma: no cover - run_steps reports, never raises
            err = exc.message
        return {
            "ok": result.ok,
            "error": err,
            "fix": result.steps[-1].fix,
            "agent": _sudo_ll(acct.name),
            "other": _sudo_ll(other.name),
            "text": (SUDOERS_DIR / "50-all").read_text(),
            "user": acct.name,
        }


def test_a_rule_other_accounts_rely_on_is_refused_then_excluded_with_the_flag(tmp_path: Path) -> None:
    out = in_private_etc(_shared_rule, str(tmp_path), False)
    assert not out["ok"]
    assert "/etc/sudoers.d/50-all:1" in out["error"]
    assert "ALL ALL=(root) NOPASSWD: /usr/bin/less" in out["error"]
    assert "other accounts rely on" in out["error"] and "--edit-shared-sudoers" in out["fix"]
    assert "/usr/bin/less" in out["agent"]

    out = in_private_etc(_shared_rule, str(tmp_path), True)
    assert out["ok"], out["error"]
    assert "/usr/bin/less" not in out["agent"]
    assert "/usr/bin/less" in out["other"]  # only the agent lost it
    assert out["text"].startswith(f"ALL, !{out['user']} ALL=")


def _defaults(tmp: str) -> dict[str, Any]:
    with temp_account(groups=()) as acct:
        step = AgentContainment(acct.name, backup_dir=Path(tmp) / "b", edit_shared=True)
        assert run_steps([step]).ok  # contained; then the admin keeps PERL5OPT for everyone
        _dropin("60-env", 'Defaults env_keep += "PERL5OPT"\n')
        result = run_steps([step])
        return {
            "ok": result.ok,
            "error": result.steps[-1].error,
            "battery": {c.name: (c.ok, c.detail) for c in escalation_battery(acct.name)},
        }


def test_defaults_that_keep_perl5opt_are_refused_and_fail_verify(tmp_path: Path) -> None:
    out = in_private_etc(_defaults, str(tmp_path))
    assert not out["ok"]
    assert "PERL5OPT" in out["error"] and "/etc/sudoers.d/60-env:1" in out["error"]
    ok, detail = out["battery"]["sudo: defaults"]
    assert not ok and "PERL5OPT" in detail and "60-env:1" in detail


def _unlisted_command(tmp: str) -> dict[str, Any]:
    with temp_account(groups=()) as acct:
        _dropin("70-tee", f"{acct.name} ALL=(root) NOPASSWD: /usr/bin/tee\n")
        return {c.name: (c.ok, c.detail) for c in escalation_battery(acct.name)}


def test_the_battery_tries_every_rule_sudo_lists(tmp_path: Path) -> None:
    """`tee` is in no fixed probe list: only asking sudo for its list finds it."""
    checks = in_private_etc(_unlisted_command, str(tmp_path))
    assert not checks["sudo: rules"][0] and "/usr/bin/tee" in checks["sudo: rules"][1]
    assert "70-tee:1" in checks["sudo: rules"][1]
    assert not checks["sudo: /usr/bin/tee"][0] and "without a password" in checks["sudo: /usr/bin/tee"][1]


def _old_session(tmp: str) -> dict[str, Any]:
    with temp_account(groups=("pmcpt-ops",)) as acct:
        _dropin("20-ops", "%pmcpt-ops ALL=(root) NOPASSWD: /usr/bin/find\n")
        # a shell the agent opened before install: it waits, then tries the group's rule
        shell = subprocess.Popen(
            ["runuser", "-u", acct.name, "--", "sh", "-c", "read x; sudo -n find /etc/hostname -exec id \\;"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            result = run_steps([AgentContainment(acct.name, backup_dir=Path(tmp) / "b")])
            checks = {c.name: (c.ok, c.detail, c.fix) for c in escalation_battery(acct.name)}
            out, _ = shell.communicate("go\n", timeout=30)
        finally:
            if shell.poll() is None:
                shell.kill()
        return {"ok": result.ok, "notes": result.steps[0].notes, "checks": checks, "old_shell": out,
                "fresh": _root_via_find(acct.name), "user": acct.name}  # fmt: skip


def test_sessions_opened_before_install_are_reported(tmp_path: Path) -> None:
    """Leaving a group changes /etc/group, not a running session: the kernel keeps its groups and sudo
    trusts them. Verify names the processes and the command that ends them."""
    out = in_private_etc(_old_session, str(tmp_path))
    assert out["ok"] and any("loginctl terminate-user" in n for n in out["notes"])
    assert "uid=0" not in out["fresh"]
    assert "uid=0(root)" in out["old_shell"]  # why the check exists
    ok, detail, fix = out["checks"]["groups: running processes"]
    assert not ok and "pmcpt-ops" in detail and f"loginctl terminate-user {out['user']}" in fix
