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
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pmcp.host.run import Pvesh, PveshError
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
