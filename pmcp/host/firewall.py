"""A Proxmox host firewall rule for the HTTPS port, through the API; never enables a disabled firewall.

Why through pvesh and not ufw/iptables: pve-firewall owns the host's rules and would overwrite foreign ones.
Why ``enable=1``: PVE creates a rule DISABLED unless told otherwise. Why never enable the firewall: turning
it on with the default input policy DROP can cut the admin off the node; that is the admin's decision, so the
step only says that the firewall is off. The rule carries a comment that ``undo()`` (uninstall) finds it by.

Interfaces (stable, used by pmcp.lifecycle):
    FirewallRule(pvesh, node, port=443, allow_from=None, comment="pmcp-mcp https")   -- a Step
        .name == "firewall"; check() -> Plan; apply(); undo()
    firewall_enabled(pvesh) -> bool
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pmcp.host.run import Pvesh, PveshError
from pmcp.lifecycle.steps import Plan, StepError


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
            try:
                allow_from = str(ipaddress.ip_network(allow_from, strict=False))
            except ValueError as exc:
                raise StepError(
                    f"--allow-from {allow_from!r} is not an address or CIDR",
                    fix="e.g. --allow-from 192.0.2.0/24",
                ) from exc
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
