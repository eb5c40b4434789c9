"""pmcp's DOCKER-USER rules (bridged VM traffic, --allow-from), in a private network namespace (the host's
firewall is untouched)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pmcp.host.dockeruser import PORT_FILTER_UNIT, UNIT_NAME, ForwardSafety, PublishedPortFilter
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


# -- ForwardSafety in a private network namespace: the host's own firewall is never touched ----------------


def _bridges(tmp_path: Path, *names: str) -> Path:
    net = tmp_path / "net"
    for n in names:
        (net / n).mkdir(parents=True)
    return net


def test_forward_safety_docker28_daemon_option_anddocker_user_rules(tmp_path: Path, netns: list[str]) -> None:
    daemon = tmp_path / "docker" / "daemon.json"
    daemon.parent.mkdir()
    daemon.write_text('{"log-driver": "json-file"}\n')
    step = ForwardSafety(
        "28.1.1", tmp_path / "state", _bridges(tmp_path, "vmbr0", "vmbr1", "eth0"), daemon, netns
    )
    plan = step.check()
    assert len(plan.changes) == 3 and "ip-forward-no-drop" in plan.changes[0]
    assert run_steps([step]).ok
    assert json.loads(daemon.read_text()) == {"log-driver": "json-file", "ip-forward-no-drop": True}
    rules = docker_user_rules(netns)
    assert "-i vmbr0 -o vmbr0" in rules and "-i vmbr1 -o vmbr1" in rules and "eth0" not in rules
    assert not step.check().needed

    step.undo()
    assert json.loads(daemon.read_text()) == {"log-driver": "json-file"}
    assert "vmbr" not in docker_user_rules(netns)
    assert not (tmp_path / "state" / "forward-safety.json").exists()


def test_forward_safety_old_docker_rules_and_unit(tmp_path: Path, netns: list[str]) -> None:
    daemon = tmp_path / "daemon.json"
    units = tmp_path / "systemd"
    units.mkdir()
    calls = tmp_path / "systemctl.log"
    systemctl = ["sh", "-c", f'echo "$@" >> {calls}', "systemctl"]
    net = _bridges(tmp_path, "vmbr0")
    step = ForwardSafety("20.10.24+dfsg1", tmp_path / "state", net, daemon, netns, units, systemctl)
    plan = step.check()
    assert plan.changes == [
        "iptables -I DOCKER-USER -i vmbr0 -o vmbr0 -j ACCEPT (bridged VM traffic)",
        f"install {units / UNIT_NAME} (re-adds the rules whenever Docker starts)",
    ]
    step.apply()
    assert not daemon.exists()
    assert "-i vmbr0 -o vmbr0" in docker_user_rules(netns)
    unit = (units / UNIT_NAME).read_text()
    assert "WantedBy=docker.service" in unit and "-i vmbr0 -o vmbr0" in unit
    assert calls.read_text().splitlines() == ["daemon-reload", f"enable {UNIT_NAME}"]
    assert not step.check().needed

    subprocess.run([*netns, "-F", "DOCKER-USER"], check=True)  # what a reboot does to our rule
    assert step.check().changes == [
        "iptables -I DOCKER-USER -i vmbr0 -o vmbr0 -j ACCEPT (bridged VM traffic)"
    ]
    step.apply()

    step.undo()
    assert "vmbr0" not in docker_user_rules(netns)
    assert not (units / UNIT_NAME).exists()
    assert calls.read_text().splitlines()[-2:] == [f"disable {UNIT_NAME}", "daemon-reload"]


def test_forward_safety_unit_runs_under_sh(tmp_path: Path, netns: list[str]) -> None:
    """The unit's ExecStart lines are real shell: run them (in the namespace) and get exactly one rule."""
    net = _bridges(tmp_path, "vmbr0", "vmbr1")
    ForwardSafety("20.10.0", tmp_path / "s", net, tmp_path / "d", netns, tmp_path, ["true"]).apply()
    subprocess.run([*netns, "-F", "DOCKER-USER"], check=True)
    ns = netns[:4]
    for line in (tmp_path / UNIT_NAME).read_text().splitlines():
        if line.startswith("ExecStart="):
            cmd = line.removeprefix("ExecStart=/bin/sh -c ").strip("'")
            for _ in range(2):
                subprocess.run([*ns, "sh", "-c", cmd], check=True)
    rules = docker_user_rules(netns)
    assert rules.count("-i vmbr0 -o vmbr0") == 1 and rules.count("-i vmbr1 -o vmbr1") == 1


def test_forward_safety_nothing_without_bridges(tmp_path: Path) -> None:
    step = ForwardSafety(
        "28.0.0", tmp_path / "state", _bridges(tmp_path, "eth0"), tmp_path / "d.json", ["false"]
    )
    plan = step.check()
    assert not plan.needed and "no vmbr bridges" in plan.notes[0]
    step.apply()
    assert not (tmp_path / "d.json").exists()


def test_forward_safety_without_docker_user_chain(tmp_path: Path, netns: list[str]) -> None:
    subprocess.run([*netns, "-X", "DOCKER-USER"], check=True)
    step = ForwardSafety(
        "20.10.0", tmp_path / "state", _bridges(tmp_path, "vmbr0"), tmp_path / "d.json", netns
    )
    with pytest.raises(StepError, match="DOCKER-USER chain is missing") as err:
        step.check()
    assert "iptables -P FORWARD ACCEPT" in err.value.fix


def test_forward_safety_refuses_broken_daemon_json(tmp_path: Path, netns: list[str]) -> None:
    daemon = tmp_path / "daemon.json"
    daemon.write_text("{broken")
    step = ForwardSafety("28.0.0", tmp_path / "state", _bridges(tmp_path, "vmbr0"), daemon, netns)
    with pytest.raises(StepError, match="not valid JSON"):
        step.check()
    assert daemon.read_text() == "{broken"


def test_forward_safety_docker_without_iptables_management(tmp_path: Path, netns: list[str]) -> None:
    """`"iptables": false` in daemon.json: no DOCKER-USER chain and FORWARD stays ACCEPT: nothing to do."""
    subprocess.run([*netns, "-X", "DOCKER-USER"], check=True)
    subprocess.run([*netns, "-P", "FORWARD", "ACCEPT"], check=True)
    net = _bridges(tmp_path, "vmbr0")
    step = ForwardSafety("20.10.0", tmp_path / "state", net, tmp_path / "d.json", netns, tmp_path, ["false"])
    assert not step.check().needed
