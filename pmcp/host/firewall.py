"""A Proxmox host firewall rule for the HTTPS port, through the API; never enables a disabled firewall.

Why through pvesh and not ufw/iptables: pve-firewall owns the host's rules and would overwrite foreign ones.
Why ``enable=1``: PVE creates a rule DISABLED unless told otherwise. Why never enable the firewall: turning
it on with the default input policy DROP can cut the admin off the node; that is the admin's decision, so the
step only says that the firewall is off. The rule carries a comment that ``undo()`` (uninstall) finds it by.

Interfaces (stable, used by pmcp.lifecycle):
    FirewallRule(pvesh, node, port=443, allow_from=None, comment="pmcp-mcp https")   -- a Step
        .name == "firewall"; check() -> Plan; apply(); undo()
    firewall_enabled(pvesh) -> bool
    ApiAccessRule(pvesh, node, subnet)  -- a Step (.name "api firewall"): ACCEPT tcp/8006 from the server's
        Docker network when the firewall is on; api_blocked(pvesh, node, subnet) -> cause or None
    PublishedPortFilter(port, allow_from, iptables_cmd, unit_dir, systemctl_cmd)  -- a Step: the same
        CIDR enforced in DOCKER-USER, since Docker-published ports never cross the INPUT chain
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
from pathlib import Path
from typing import Any

from pmcp.files import atomic_write
from pmcp.host.run import CommandError, Pvesh, PveshError, Result, run, systemctl
from pmcp.inputs import cidr
from pmcp.steps import Plan, StepError


def firewall_enabled(pvesh: Pvesh) -> bool:
    """The cluster-wide switch: host rules do nothing while it is off."""
    options = pvesh.get("/cluster/firewall/options") or {}
    return str(options.get("enable", 0)) not in ("0", "", "False", "false")


class FirewallRule:
    """Step: one ACCEPT rule for the MCP HTTPS port on this node's firewall, found again by its comment."""

    name = "firewall"

    def __init__(
        self,
        pvesh: Pvesh,
        node: str,
        port: int = 443,
        allow_from: str | None = None,
        comment: str = "pmcp-mcp https",
    ) -> None:
        if allow_from:
            allow_from = cidr(allow_from)  # parsed once, the CLI's own check
        if not comment.startswith("pmcp"):
            raise ValueError("the rule comment must start with 'pmcp' so uninstall can find it")
        self.pvesh = pvesh
        self.node = node
        self.port = int(port)
        self.allow_from = allow_from
        self.comment = comment

    @property
    def _rules_path(self) -> str:
        return f"/nodes/{self.node}/firewall/rules"

    def _desired(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "type": "in",
            "action": "ACCEPT",
            "proto": "tcp",
            "dport": str(self.port),
            "enable": 1,
            "comment": self.comment,
        }
        if self.allow_from:
            rule["source"] = self.allow_from
        return rule

    def _ours(self) -> list[dict[str, Any]]:
        rules = self.pvesh.get(self._rules_path) or []
        return sorted((r for r in rules if r.get("comment") == self.comment), key=lambda r: int(r["pos"]))

    def _matches(self, rule: dict[str, Any]) -> bool:
        want = self._desired()
        for key, value in want.items():
            if str(rule.get(key, "")) != str(value):
                return False
        return not (rule.get("source") and not self.allow_from)

    def _error(self, exc: PveshError) -> StepError:
        return StepError(
            f"Proxmox firewall API: {exc.message}",
            fix="check pve-firewall (systemctl status pve-firewall) and re-run",
        )

    def check(self) -> Plan:
        try:
            enabled = firewall_enabled(self.pvesh)
            ours = self._ours()
        except PveshError as exc:
            raise self._error(exc) from exc
        if not enabled:
            return Plan(
                notes=[
                    "the Proxmox firewall is disabled: no rule added, and pmcp does not enable it "
                    f"(if you enable it, allow TCP {self.port}: re-run pmcp install)"
                ]
            )
        src = f" from {self.allow_from}" if self.allow_from else " from anywhere"
        if not ours:
            return Plan(changes=[f"add firewall rule on {self.node}: ACCEPT tcp/{self.port}{src}"])
        plan = Plan()
        if not self._matches(ours[0]):
            plan.changes.append(f"update firewall rule on {self.node}: ACCEPT tcp/{self.port}{src}")
        if len(ours) > 1:
            plan.changes.append(f"remove {len(ours) - 1} duplicate pmcp firewall rule(s)")
        return plan

    def apply(self) -> None:
        try:
            if not firewall_enabled(self.pvesh):
                return
            ours = self._ours()
            for extra in sorted(ours[1:], key=lambda r: int(r["pos"]), reverse=True):
                self.pvesh.delete(f"{self._rules_path}/{int(extra['pos'])}")
            if not ours:
                self.pvesh.create(self._rules_path, self._desired())
            elif not self._matches(ours[0]):
                params = self._desired()
                if not self.allow_from and ours[0].get("source"):
                    params["delete"] = "source"
                self.pvesh.set(f"{self._rules_path}/{int(ours[0]['pos'])}", params)
        except PveshError as exc:
            raise self._error(exc) from exc

    def undo(self) -> None:
        """Delete every rule with our comment, highest position first (positions shift on delete)."""
        try:
            for rule in sorted(self._ours(), key=lambda r: int(r["pos"]), reverse=True):
                self.pvesh.delete(f"{self._rules_path}/{int(rule['pos'])}")
        except PveshError as exc:
            raise self._error(exc) from exc


API_PORT = 8006
API_RULE_COMMENT = "pmcp-proxmox-api"
# pve-firewall src/PVE/Firewall.pm, enable_host_firewall(): PVEFW-HOST-IN accepts "-i lo", then the node's
# and the cluster's rules, then "-m set --match-set PVEFW-0-management-v4 src -p tcp --dport 8006", then
# policy_in (DROP unless set). The server container's packets come from its Docker network, over a
# bridge, not lo: without a rule they are dropped, and every tool call times out.
BLOCKED_CAUSE = (
    "the Proxmox firewall is on and drops the MCP server's connections to port 8006: PVEFW-HOST-IN "
    "accepts the API only from lo and the 'management' ipset, and the server's Docker network {subnet} "
    "is neither"
)


class ApiAccessRule(FirewallRule):
    """Step: let the MCP server's Docker network reach the Proxmox API when the host firewall is on.

    A node rule (ACCEPT tcp/8006 from the network's subnet), not an entry in the cluster's
    ``management`` ipset: that ipset also opens SSH (22), VNC (5900-5999), SPICE (3128) and migration
    (60000-60050) to its members, and this network needs 8006 only. Through the API (pve-firewall owns
    the host's rules), found again by its comment, removed by uninstall.
    """

    name = "api firewall"

    def __init__(self, pvesh: Pvesh, node: str, subnet: str | None) -> None:
        super().__init__(pvesh, node, port=API_PORT, allow_from=subnet, comment=API_RULE_COMMENT)

    def check(self) -> Plan:
        try:
            enabled = firewall_enabled(self.pvesh)
        except PveshError as exc:
            raise self._error(exc) from exc
        if not enabled:
            return Plan(
                notes=[
                    "the Proxmox firewall is off: the server reaches the API without a rule (if you turn it "
                    "on, re-run pmcp install: it then allows the server's network to port 8006)"
                ]
            )
        if not self.allow_from:
            raise StepError(
                "cannot tell the MCP server's Docker network, so the Proxmox firewall would drop it",
                fix="pmcp install again once the stack runs (docker network ls)",
            )
        plan = super().check()
        if plan.changes:
            plan.notes.append(
                f"the Proxmox firewall is on: PVEFW-HOST-IN accepts 8006 only from lo and the management "
                f"ipset, so the server's network {self.allow_from} needs this rule"
            )
        return plan


def api_blocked(pvesh: Pvesh, node: str, subnet: str | None) -> str | None:
    """Why the firewall drops the server's API connections, or None when it does not (as far as the
    cluster switch, the node's switch and an accepting rule for the subnet tell)."""
    if not firewall_enabled(pvesh):
        return None
    host = pvesh.get(f"/nodes/{node}/firewall/options") or {}
    if str(host.get("enable", 1)) in ("0", "False", "false"):
        return None
    rules = pvesh.get(f"/nodes/{node}/firewall/rules") or []
    net = ipaddress.ip_network(subnet, strict=False) if subnet else None
    for rule in rules:
        if rule.get("comment") != API_RULE_COMMENT or str(rule.get("enable", 0)) in ("0", ""):
            continue
        src = rule.get("source")
        try:
            covered = net is not None and net.subnet_of(ipaddress.ip_network(src, strict=False))  # type: ignore[arg-type]
        except (TypeError, ValueError):  # another address family, or an ipset/alias name
            covered = False
        if not src or covered:
            return None
    return BLOCKED_CAUSE.format(subnet=subnet or "(unknown)")


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
        try:
            return run([*self.iptables, *args], timeout=30)
        except CommandError as exc:
            raise StepError(f"cannot run iptables: {exc.message}", fix="apt-get install iptables") from exc

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
        rule = " ".join(shlex.quote(a) for a in ["DOCKER-USER", *self.rule()])
        return "\n".join(
            [
                "# Installed by pmcp (`pmcp uninstall` removes it): only --allow-from reaches the MCP port.",
                "[Unit]",
                "Description=pmcp: enforce --allow-from on the published HTTPS port",
                "After=docker.service",
                "PartOf=docker.service",
                "",
                "[Service]",
                "Type=oneshot",
                "RemainAfterExit=yes",
                f"ExecStart=/bin/sh -c 'iptables -C {rule} 2>/dev/null || iptables -I {rule}'",
                "",
                "[Install]",
                "WantedBy=docker.service",
                "",
            ]
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
