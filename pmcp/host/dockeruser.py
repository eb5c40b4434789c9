"""Every rule pmcp puts in Docker's DOCKER-USER chain, and the systemd units that re-add them.

Two reasons, one chain (Docker evaluates DOCKER-USER first in FORWARD and never rewrites it):
- ``ForwardSafety``: Docker sets the iptables FORWARD policy to DROP when it enables IP forwarding, and
  with ``br_netfilter`` loaded (Docker loads it) bridged VM traffic on ``vmbr*`` crosses FORWARD: the VMs
  go offline. The supported fixes: ``"ip-forward-no-drop": true`` in daemon.json (Docker >= 28; takes
  effect at Docker's next start) and an ACCEPT rule per bridge in DOCKER-USER (any Docker version,
  immediate; with Docker < 28 a small systemd unit re-adds it whenever Docker starts).
- ``PublishedPortFilter``: ``--allow-from`` for the published HTTPS port (pve-firewall's INPUT rule never
  sees Docker's DNATed traffic).

Interfaces (stable, used by pmcp.lifecycle and preflight):
    ForwardSafety(docker_version, state_dir, sys_class_net=Path("/sys/class/net"),
                  daemon_json=Path("/etc/docker/daemon.json"), iptables_cmd=("iptables",),
                  unit_dir=Path("/etc/systemd/system"), systemctl=("systemctl",))   -- a Step
        state_dir: where it records what it changed, for undo: host_state_dir(paths) (pmcp.host.files)
    PublishedPortFilter(port, allow_from, iptables_cmd, unit_dir, systemctl_cmd)  -- a Step
    forward_policy(iptables_cmd) -> "ACCEPT" | "DROP" | None
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pmcp.files import atomic_write
from pmcp.host.files import ensure_dir
from pmcp.host.run import CommandError, Result, run, systemctl
from pmcp.inputs import cidr
from pmcp.steps import Plan, StepError

RULE_COMMENT = "pmcp-vm-bridge"
UNIT_NAME = "pmcp-vm-forward.service"
_BRIDGE = re.compile(r"^vmbr[A-Za-z0-9_.-]{1,11}$")


def major_version(version: str) -> int:
    """Docker's major version from its version string ("20.10.24+dfsg1" -> 20)."""
    m = re.match(r"\D*(\d+)", version)
    return int(m.group(1)) if m else 0


def vm_bridges(sys_class_net: Path) -> list[str]:
    """The Proxmox VM bridges (``vmbr*``) that exist on this host."""
    if not sys_class_net.is_dir():
        return []
    return sorted(p.name for p in sys_class_net.iterdir() if p.name.startswith("vmbr"))


def iptables(cmd: Sequence[str], *args: str) -> Result:
    """One iptables call; a missing binary is a StepError with the package to install."""
    try:
        return run([*cmd, *args], timeout=30)
    except CommandError as exc:
        raise StepError(
            f"cannot run iptables: {exc.message}", fix="apt-get install iptables", detail=exc.message
        ) from exc


def reapply_unit(header: Sequence[str], description: str, rules: Sequence[Sequence[str]]) -> str:
    """A oneshot unit, started with Docker, that re-inserts ``rules`` (DOCKER-USER argument lists) when
    missing: Docker < 28 resets FORWARD at each start and iptables rules do not survive a reboot."""
    lines = [*(f"# {h}" for h in header), "[Unit]", f"Description=pmcp: {description}",
             "After=docker.service", "PartOf=docker.service", "",
             "[Service]", "Type=oneshot", "RemainAfterExit=yes"]  # fmt: skip
    for args in rules:
        rule = " ".join(shlex.quote(a) for a in ["DOCKER-USER", *args])
        lines.append(f"ExecStart=/bin/sh -c 'iptables -C {rule} 2>/dev/null || iptables -I {rule}'")
    lines += ["", "[Install]", "WantedBy=docker.service", ""]
    return "\n".join(lines)


def forward_policy(iptables_cmd: Sequence[str]) -> str | None:
    """The iptables FORWARD chain policy (ACCEPT/DROP), or None when iptables cannot be read."""
    try:
        res = run([*iptables_cmd, "-S", "FORWARD"], timeout=30)
    except CommandError:
        return None
    if not res.ok:
        return None
    m = re.search(r"^-P FORWARD (\w+)", res.stdout, re.M)
    return m.group(1) if m else None


def _bridge_rule(bridge: str) -> list[str]:
    return ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]


def _unit_text(bridges: Sequence[str]) -> str:
    header = [
        "Installed by pmcp (`pmcp uninstall` removes it). Docker < 28 sets the iptables FORWARD policy to",
        "DROP at every start, which cuts bridged VMs off: re-add pmcp's DOCKER-USER rules each time.",
    ]
    return reapply_unit(
        header,
        "keep bridged Proxmox VM traffic flowing while Docker runs",
        [_bridge_rule(b) for b in bridges],
    )


class ForwardSafety:
    """Step: keep bridged VM traffic flowing while Docker runs on the Proxmox host.

    Docker >= 28: ``ip-forward-no-drop`` in daemon.json (persistent) plus the DOCKER-USER rules when the
    policy is already DROP now. Docker < 28: the DOCKER-USER rules now, and a systemd unit that re-adds them
    whenever Docker starts (Docker resets the policy to DROP at each start).
    """

    name = "vm networking"

    def __init__(
        self,
        docker_version: str,
        state_dir: Path,
        sys_class_net: Path = Path("/sys/class/net"),
        daemon_json: Path = Path("/etc/docker/daemon.json"),
        iptables_cmd: Sequence[str] = ("iptables",),
        unit_dir: Path | None = Path("/etc/systemd/system"),
        systemctl: Sequence[str] = ("systemctl",),
    ) -> None:
        self.docker_major = major_version(docker_version)
        self.state_file = Path(state_dir) / "forward-safety.json"
        self.sys_class_net = Path(sys_class_net)
        self.daemon_json = Path(daemon_json)
        self.iptables = list(iptables_cmd)
        self.unit = Path(unit_dir) / UNIT_NAME if unit_dir else None
        self.systemctl = list(systemctl)

    @property
    def uses_daemon_option(self) -> bool:
        return self.docker_major >= 28

    def _bridges(self) -> list[str]:
        bridges = vm_bridges(self.sys_class_net)
        bad = [b for b in bridges if not _BRIDGE.match(b)]
        if bad:
            raise StepError(f"unexpected bridge name(s): {', '.join(bad)}", fix="rename the bridge (vmbrN)")
        return bridges

    def _rule(self, bridge: str) -> list[str]:
        return _bridge_rule(bridge)

    def _ipt(self, *args: str) -> Result:
        return iptables(self.iptables, *args)

    def _has_rule(self, bridge: str) -> bool:
        return self._ipt("-C", "DOCKER-USER", *self._rule(bridge)).ok

    def _chain_exists(self) -> bool:
        return self._ipt("-S", "DOCKER-USER").ok

    def _daemon_config(self) -> dict[str, Any]:
        if not self.daemon_json.is_file():
            return {}
        try:
            data = json.loads(self.daemon_json.read_text() or "{}")
        except json.JSONDecodeError as exc:
            raise StepError(
                f"{self.daemon_json} is not valid JSON: {exc}",
                fix=f"fix {self.daemon_json} (python3 -m json.tool {self.daemon_json})",
            ) from exc
        if not isinstance(data, dict):
            raise StepError(f"{self.daemon_json} is not a JSON object", fix=f"fix {self.daemon_json}")
        return data

    def _needs_rule(self, bridges: list[str]) -> list[str]:
        if not bridges:
            return []
        policy = forward_policy(self.iptables)
        if policy == "ACCEPT" and (self.uses_daemon_option or not self._chain_exists()):
            return []  # nothing drops now, and Docker (no-drop, or not managing iptables) will not later
        return [b for b in bridges if not self._has_rule(b)]

    def _unit_wanted(self, bridges: list[str]) -> bool:
        if not bridges or self.uses_daemon_option or self.unit is None:
            return False
        return self._chain_exists()

    def _unit_right(self, bridges: list[str]) -> bool:
        return self.unit is not None and self.unit.is_file() and self.unit.read_text() == _unit_text(bridges)

    def check(self) -> Plan:
        bridges = self._bridges()
        if not bridges:
            return Plan(notes=["no vmbr bridges: VM traffic does not cross Docker's FORWARD rules"])
        plan = Plan()
        if self.uses_daemon_option and self._daemon_config().get("ip-forward-no-drop") is not True:
            plan.changes.append(f'set "ip-forward-no-drop": true in {self.daemon_json} (Docker >= 28)')
        missing = self._needs_rule(bridges)
        if missing and not self._chain_exists():
            raise StepError(
                "iptables FORWARD policy drops bridged VM traffic and Docker's DOCKER-USER chain is missing",
                fix="systemctl restart docker (creates DOCKER-USER), or: iptables -P FORWARD ACCEPT",
            )
        for b in missing:
            plan.changes.append(f"iptables -I DOCKER-USER -i {b} -o {b} -j ACCEPT (bridged VM traffic)")
        if self._unit_wanted(bridges) and not self._unit_right(bridges):
            plan.changes.append(f"install {self.unit} (re-adds the rules whenever Docker starts)")
        elif not self.uses_daemon_option and self.unit is None:
            plan.notes.append(
                "Docker < 28 sets FORWARD to DROP at every start: after a Docker restart, re-run "
                "`pmcp install` (or upgrade Docker to >= 28) to restore the bridge rules"
            )
        return plan

    def _load_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.state_file.is_file():
            state = json.loads(self.state_file.read_text())
        state.setdefault("rules", [])
        state.setdefault("daemon", None)
        state.setdefault("unit", None)
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        ensure_dir(self.state_file.parent, 0o700)
        atomic_write(self.state_file, json.dumps(state, indent=2) + "\n", 0o600)

    def _systemctl(self, *args: str) -> None:
        systemctl(self.systemctl, *args)

    def apply(self) -> None:
        bridges = self._bridges()
        state = self._load_state()
        if self.uses_daemon_option and bridges:
            config = self._daemon_config()
            if config.get("ip-forward-no-drop") is not True:
                if state["daemon"] is None:
                    state["daemon"] = {
                        "existed": self.daemon_json.is_file(),
                        "had_key": "ip-forward-no-drop" in config,
                        "old": config.get("ip-forward-no-drop"),
                    }
                    self._save_state(state)
                config["ip-forward-no-drop"] = True
                ensure_dir(self.daemon_json.parent, 0o755)
                atomic_write(self.daemon_json, json.dumps(config, indent=2) + "\n", 0o644)
        for b in self._needs_rule(bridges):
            if b not in state["rules"]:
                state["rules"].append(b)
                self._save_state(state)
            res = self._ipt("-I", "DOCKER-USER", *self._rule(b))
            if not res.ok:
                raise StepError(
                    f"could not add the DOCKER-USER rule for {b}",
                    fix=f"iptables -I DOCKER-USER -i {b} -o {b} -j ACCEPT",
                    detail=res.text[-300:],
                )
        if self.unit is not None and self._unit_wanted(bridges) and not self._unit_right(bridges):
            state["unit"] = str(self.unit)
            self._save_state(state)
            atomic_write(self.unit, _unit_text(bridges), 0o644)
            self._systemctl("daemon-reload")
            self._systemctl("enable", UNIT_NAME)

    def undo(self) -> None:
        if not self.state_file.is_file():
            return
        state = self._load_state()
        if state["unit"]:
            unit = Path(state["unit"])
            if unit.exists():
                with contextlib.suppress(StepError):
                    self._systemctl("disable", UNIT_NAME)
                unit.unlink()
                with contextlib.suppress(StepError):
                    self._systemctl("daemon-reload")
        for b in state["rules"]:
            while self._has_rule(b):
                self._ipt("-D", "DOCKER-USER", *self._rule(b))
        saved = state.get("daemon")
        if saved is not None and self.daemon_json.is_file():
            config = self._daemon_config()
            if saved["had_key"]:
                config["ip-forward-no-drop"] = saved["old"]
            else:
                config.pop("ip-forward-no-drop", None)
            if not config and not saved["existed"]:
                self.daemon_json.unlink()
            else:
                atomic_write(self.daemon_json, json.dumps(config, indent=2) + "\n", 0o644)
        self.state_file.unlink()


PORT_FILTER_COMMENT = "pmcp-https-allow-from"
PORT_FILTER_UNIT = "pmcp-https-allow.service"


class PublishedPortFilter:
    """Step: make ``--allow-from`` real for Caddy's published HTTPS port.

    Docker publishes ports by DNAT in PREROUTING, so the forwarded packets never cross the host's INPUT
    chain, where pve-firewall's rule lives: that rule alone lets every source in. This step adds, in
    Docker's own ``DOCKER-USER`` chain, a DROP for connections DNATed from the HTTPS port whose source is
    outside the CIDR. ``--ctstate DNAT`` limits it to published ports, so bridged VM traffic is never
    touched; connections from the host itself reach Caddy through docker-proxy, not FORWARD, so verify
    still works. A systemd unit re-adds the rule whenever Docker starts (iptables rules do not survive a
    reboot).
    """

    name = "published port filter"

    def __init__(
        self,
        port: int,
        allow_from: str,
        iptables_cmd: tuple[str, ...] | list[str] = ("iptables",),
        unit_dir: Path | None = Path("/etc/systemd/system"),
        systemctl_cmd: tuple[str, ...] | list[str] = ("systemctl",),
    ) -> None:
        self.port = int(port)
        self.allow_from = cidr(allow_from)
        self.iptables = list(iptables_cmd)
        self.unit = Path(unit_dir) / PORT_FILTER_UNIT if unit_dir else None
        self.systemctl = list(systemctl_cmd)
        self._added = False
        self._unit_before: str | None = None

    def rule(self) -> list[str]:
        return [
            "-p", "tcp", "-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", str(self.port),
            "--ctdir", "ORIGINAL", "!", "-s", self.allow_from,
            "-m", "comment", "--comment", PORT_FILTER_COMMENT, "-j", "DROP",
        ]  # fmt: skip

    def _ipt(self, *args: str) -> Result:
        return iptables(self.iptables, *args)

    def _ours(self) -> list[list[str]]:
        """Our rules as `-A DOCKER-USER ...` argument lists (any CIDR or port an earlier run chose)."""
        res = self._ipt("-S", "DOCKER-USER")
        if not res.ok:
            raise StepError(
                "Docker's DOCKER-USER chain is missing, so --allow-from cannot be enforced",
                fix="systemctl restart docker (Docker creates the chain), then re-run pmcp install",
                detail=res.text[-300:],
            )
        return [
            shlex.split(line)[2:]
            for line in res.stdout.splitlines()
            if line.startswith("-A DOCKER-USER ") and PORT_FILTER_COMMENT in line
        ]

    def _unit_text(self) -> str:
        return reapply_unit(
            ["Installed by pmcp (`pmcp uninstall` removes it): only --allow-from reaches the MCP port."],
            "enforce --allow-from on the published HTTPS port",
            [self.rule()],
        )

    def check(self) -> Plan:
        plan = Plan()
        ours = self._ours()
        if len(ours) != 1 or not self._ipt("-C", "DOCKER-USER", *self.rule()).ok:
            plan.changes.append(
                f"iptables -I DOCKER-USER: drop connections to published port {self.port} "
                f"not from {self.allow_from}"
            )
        if self.unit is not None and (not self.unit.is_file() or self.unit.read_text() != self._unit_text()):
            plan.changes.append(f"install {self.unit} (re-adds the rule whenever Docker starts)")
        return plan

    def apply(self) -> None:
        self._delete_ours()
        res = self._ipt("-I", "DOCKER-USER", *self.rule())
        if not res.ok:
            raise StepError(
                "could not add the DOCKER-USER rule for --allow-from",
                fix="iptables -I DOCKER-USER " + " ".join(shlex.quote(a) for a in self.rule()),
                detail=res.text[-300:],
            )
        self._added = True
        if self.unit is not None and (not self.unit.is_file() or self.unit.read_text() != self._unit_text()):
            self._unit_before = self.unit.read_text() if self.unit.is_file() else None
            atomic_write(self.unit, self._unit_text(), 0o644)
            systemctl(self.systemctl, "daemon-reload")
            systemctl(self.systemctl, "enable", PORT_FILTER_UNIT)

    def _delete_ours(self) -> None:
        for args in self._ours():
            self._ipt("-D", "DOCKER-USER", *args)

    def undo(self) -> None:
        """Remove the rule and the unit (uninstall, or a failed apply): the port is as open as before."""
        self._delete_ours()
        if self.unit is not None and self.unit.exists():
            with contextlib.suppress(StepError):
                systemctl(self.systemctl, "disable", PORT_FILTER_UNIT)
            self.unit.unlink()
            with contextlib.suppress(StepError):
                systemctl(self.systemctl, "daemon-reload")
