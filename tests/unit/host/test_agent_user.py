"""AgentContainment against the real sudo/visudo, a real account, and a fake cloud-init drop-in."""

from __future__ import annotations

import grp
import subprocess
from pathlib import Path

import pytest

from pmcp.host.agent_user import AgentContainment, _strip_user, escalation_battery
from pmcp.steps import StepError, run_steps
from tests.support.accounts import SUDOERS_DIR, temp_account
from tests.support.private_etc import in_private_etc


def _sudoers_valid() -> bool:
    return subprocess.run(["visudo", "-c"], capture_output=True).returncode == 0


def _in_group(user: str, group: str) -> bool:
    return user in grp.getgrnam(group).gr_mem


def _step(acct, tmp_path: Path, **kw) -> AgentContainment:
    return AgentContainment(
        user=acct.name, backup_dir=tmp_path / "backups", dropin_name=f"pmcp-agent-{acct.name}", **kw
    )


def test_strip_user_edits_only_that_users_lines() -> None:
    text = (
        "# cloud-init\n"
        "root ALL=(ALL) ALL\n"
        "claude-user ALL=(ALL) NOPASSWD:ALL\n"
        "alice, claude-user ALL=(ALL) \\\n    NOPASSWD: /usr/bin/id\n"
        "Defaults:claude-user !requiretty\n"
        "claude-userx ALL=(ALL) ALL\n"
        "%sudo ALL=(ALL:ALL) ALL\n"
    )
    new, removed = _strip_user(text, "claude-user")
    assert "root ALL=(ALL) ALL\n" in new
    assert "claude-userx ALL=(ALL) ALL\n" in new
    assert "%sudo ALL=(ALL:ALL) ALL\n" in new
    assert "Defaults:claude-user !requiretty\n" in new
    assert "alice ALL=(ALL) NOPASSWD: /usr/bin/id\n" in new
    assert "NOPASSWD:ALL" not in new
    assert len(removed) == 2


def test_absent_user_is_skipped(tmp_path: Path) -> None:
    step = AgentContainment(user="pmcp-nobody-here", sudoers_dir=tmp_path, backup_dir=tmp_path / "b")
    plan = step.check()
    assert not plan.needed
    assert plan.notes == ["skipped: user pmcp-nobody-here absent"]
    step.apply()
    step.undo()
    assert list(tmp_path.iterdir()) == []


def test_contain_verify_rerun_undo(tmp_path: Path) -> None:
    in_private_etc(_contain_verify_rerun_undo, tmp_path)


def _contain_verify_rerun_undo(tmp_path: Path) -> None:
    with temp_account(groups=("docker", "sudo")) as acct:
        cloud = acct.sudoers_file(
            f"90-cloud-init-{acct.name}",
            f"# Created by cloud-init\nroot ALL=(ALL) ALL\n{acct.name} ALL=(ALL) NOPASSWD:ALL\n",
        )
        original = cloud.read_text()
        before = {c.name: c for c in escalation_battery(acct.name)}
        assert not before["sudo: root shell"].ok
        assert not before["sudo: any command"].ok
        assert not before["groups: none root-equivalent"].ok

        step = _step(acct, tmp_path)
        plan = step.check()
        assert any("remove" in c and str(cloud) in c for c in plan.changes)
        assert any("from group docker" in c for c in plan.changes)
        result = run_steps([step])
        assert result.ok, result.to_dict()

        assert acct.name not in cloud.read_text()
        assert "root ALL=(ALL) ALL" in cloud.read_text()
        dropin = SUDOERS_DIR / f"pmcp-agent-{acct.name}"
        assert dropin.stat().st_mode & 0o777 == 0o440
        assert "NOEXEC" in dropin.read_text()
        assert not _in_group(acct.name, "docker") and not _in_group(acct.name, "sudo")
        assert _sudoers_valid()
        assert not list(SUDOERS_DIR.glob(f".*{acct.name}*"))

        after = escalation_battery(acct.name)
        assert all(c.ok for c in after), [c for c in after if not c.ok]

        again = step.check()
        assert not again.needed, again.changes

        step.undo()
        assert cloud.read_text() == original
        assert not dropin.exists()
        assert _in_group(acct.name, "docker") and _in_group(acct.name, "sudo")
        assert _sudoers_valid()
        assert step.check().needed


def test_undo_after_admin_edit_keeps_the_edit(tmp_path: Path) -> None:
    in_private_etc(_undo_after_admin_edit_keeps_the_edit, tmp_path)


def _undo_after_admin_edit_keeps_the_edit(tmp_path: Path) -> None:
    with temp_account(groups=()) as acct:
        cloud = acct.sudoers_file(f"90-ci-{acct.name}", f"{acct.name} ALL=(ALL) NOPASSWD:ALL\n")
        step = _step(acct, tmp_path)
        step.apply()
        cloud.write_text(cloud.read_text() + "# admin note\n")
        step.undo()
        text = cloud.read_text()
        assert "# admin note" in text and f"{acct.name} ALL=(ALL) NOPASSWD:ALL" in text
        assert _sudoers_valid()


def test_invalid_template_is_never_installed(tmp_path: Path) -> None:
    in_private_etc(_invalid_template_is_never_installed, tmp_path)


def _invalid_template_is_never_installed(tmp_path: Path) -> None:
    with temp_account(groups=()) as acct:
        step = _step(acct, tmp_path, template="{user} ALL=(ALL) NOPASSWD: this is not sudoers ((\n")
        result = run_steps([step])
        assert not result.ok
        failed = result.steps[-1]
        assert "invalid" in failed.error and failed.fix
        assert not (SUDOERS_DIR / f"pmcp-agent-{acct.name}").exists()
        assert not list(SUDOERS_DIR.glob(f".pmcp-agent-{acct.name}*"))
        assert _sudoers_valid()


def test_bad_template_raises_steperror_directly(tmp_path: Path) -> None:
    in_private_etc(_bad_template_raises_steperror_directly, tmp_path)


def _bad_template_raises_steperror_directly(tmp_path: Path) -> None:
    with temp_account(groups=()) as acct:
        step = _step(acct, tmp_path, template="{user} ALL=\n")
        with pytest.raises(StepError):
            step.apply()
        assert not (SUDOERS_DIR / f"pmcp-agent-{acct.name}").exists()
        assert _sudoers_valid()


def test_rejects_unsafe_user_name(tmp_path: Path) -> None:
    with pytest.raises(StepError):
        AgentContainment(user="bob ALL=(ALL) ALL", sudoers_dir=tmp_path, backup_dir=tmp_path)


def test_interrupted_write_leaves_nothing_sudo_reads(tmp_path: Path) -> None:
    in_private_etc(_interrupted_write_leaves_nothing_sudo_reads, tmp_path)


def _interrupted_write_leaves_nothing_sudo_reads(tmp_path: Path) -> None:
    with temp_account(groups=()) as acct:
        step = _step(acct, tmp_path)

        def interrupted(path: Path) -> None:
            assert path.name.startswith(".") and "." in path.name[1:]
            raise KeyboardInterrupt

        step._validate = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            step.apply()
        assert not (SUDOERS_DIR / f"pmcp-agent-{acct.name}").exists()
        assert not list(SUDOERS_DIR.glob(f".pmcp-agent-{acct.name}*"))

        # A temp file left by a kill -9 is ignored by sudo: its name contains a '.'.
        stray = acct.sudoers_file(f".pmcp-agent-{acct.name}.x1.tmp", "this is ((( not sudoers\n")
        assert _sudoers_valid()
        assert subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
        stray.unlink()


def test_root_is_never_touched(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="refusing to contain root"):
        AgentContainment(user="root", sudoers_dir=tmp_path, backup_dir=tmp_path)
    step = AgentContainment(user="sync", sudoers_dir=tmp_path, backup_dir=tmp_path / "b")
    step.user = "root"  # an account with uid 0 under any name is refused at check() and apply()
    with pytest.raises(StepError, match="uid 0"):
        step.check()
    with pytest.raises(StepError, match="uid 0"):
        step.apply()
    assert not (tmp_path / "b").exists()
