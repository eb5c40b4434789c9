"""--allow-from enforced in DOCKER-USER, in a private network namespace (the host's firewall is untouched)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pmcp.host.firewall import PORT_FILTER_UNIT, PublishedPortFilter
from pmcp.steps import StepError, run_steps
from tests.unit.host.conftest import docker_user_rules


def _step(tmp_path: Path, ipt: list[str], cidr: str = "192.0.2.0/24", port: int = 443) -> PublishedPortFilter:
    calls = tmp_path / "systemctl.log"
    systemctl = ["sh", "-c", f'echo "$@" >> {calls}', "systemctl"]
    (tmp_path / "systemd").mkdir(exist_ok=True)
    return PublishedPortFilter(port, cidr, ipt, tmp_path / "systemd", systemctl)


def test_rule_and_unit_then_already_right_then_undo(tmp_path: Path, netns: list[str]) -> None:
    step = _step(tmp_path, netns)
    plan = step.check()
    assert len(plan.changes) == 2 and "not from 192.0.2.0/24" in plan.changes[0]
    assert run_steps([step]).ok
    rules = docker_user_rules(netns)
    assert "! -s 192.0.2.0/24" in rules and "--ctstate DNAT" in rules and "--ctorigdstport 443" in rules
    assert "-j DROP" in rules
    unit = (tmp_path / "systemd" / PORT_FILTER_UNIT).read_text()
    assert "WantedBy=docker.service" in unit and "192.0.2.0/24" in unit
    assert (tmp_path / "systemctl.log").read_text().splitlines() == [
        "daemon-reload",
        f"enable {PORT_FILTER_UNIT}",
    ]
    assert not step.check().needed, "a second run must find it already right"

    step.undo()
    assert "pmcp-https-allow-from" not in docker_user_rules(netns)
    assert not (tmp_path / "systemd" / PORT_FILTER_UNIT).exists()


def test_a_new_cidr_replaces_the_old_rule(tmp_path: Path, netns: list[str]) -> None:
    assert run_steps([_step(tmp_path, netns, "192.0.2.0/24")]).ok
    wider = _step(tmp_path, netns, "198.51.100.7")
    assert wider.check().needed
    assert run_steps([wider]).ok
    rules = docker_user_rules(netns)
    assert (
        rules.count("pmcp-https-allow-from") == 1 and "198.51.100.7/32" in rules and "192.0.2.0" not in rules
    )


def test_kernel_holds_a_drop_for_dnat_from_outside_sources(tmp_path: Path, netns: list[str]) -> None:
    """Read back from the kernel (not our own text): DROP, only for DNATed connections, negated CIDR."""
    assert run_steps([_step(tmp_path, netns)]).ok
    out = subprocess.run([*netns, "-L", "DOCKER-USER", "-v", "-n"], capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if "pmcp-https-allow-from" in ln)
    assert (
        "DROP" in line and "!192.0.2.0/24" in line.replace(" ", "") and "ctstateDNAT" in line.replace(" ", "")
    )


def test_missing_chain_says_how_to_fix(tmp_path: Path, netns: list[str]) -> None:
    subprocess.run([*netns, "-X", "DOCKER-USER"], check=True)
    with pytest.raises(StepError, match="DOCKER-USER chain is missing") as err:
        _step(tmp_path, netns).check()
    assert "restart docker" in err.value.fix
