"""FirewallRule against the simulator through `pmcp sim pvesh`."""

from __future__ import annotations

import pytest

from pmcp.host.firewall import FirewallRule
from pmcp.host.run import Pvesh
from pmcp.steps import StepError
from tests.unit.host.conftest import RecordingPvesh, assert_calls_in_schema


def _rules(pvesh: Pvesh, node: str) -> list[dict]:
    return pvesh.get(f"/nodes/{node}/firewall/rules")


def test_disabled_firewall_is_left_alone(pvesh: Pvesh, node: str) -> None:
    pvesh.set("/cluster/firewall/options", enable=0)
    step = FirewallRule(pvesh, node, port=443, allow_from="192.0.2.0/24")
    plan = step.check()
    assert not plan.needed
    assert "disabled" in plan.notes[0] and "does not enable" in plan.notes[0]
    step.apply()
    assert _rules(pvesh, node) == []
    assert str(pvesh.get("/cluster/firewall/options").get("enable", 0)) == "0"


def test_rule_added_once_then_updated_then_removed(pvesh: Pvesh, node: str) -> None:
    pvesh = RecordingPvesh(pvesh)
    pvesh.set("/cluster/firewall/options", enable=1)
    pvesh.create(
        f"/nodes/{node}/firewall/rules", type="in", action="ACCEPT", proto="tcp", dport="22", enable=1
    )
    step = FirewallRule(pvesh, node, port=8443, allow_from="192.0.2.7/24", comment="pmcp-mcp test")
    assert step.check().changes == [f"add firewall rule on {node}: ACCEPT tcp/8443 from 192.0.2.0/24"]
    step.apply()
    ours = [r for r in _rules(pvesh, node) if r.get("comment") == "pmcp-mcp test"]
    assert len(ours) == 1
    rule = ours[0]
    assert (rule["type"], rule["action"], rule["proto"], str(rule["dport"])) == (
        "in",
        "ACCEPT",
        "tcp",
        "8443",
    )
    assert str(rule["enable"]) == "1" and rule["source"] == "192.0.2.0/24"
    assert not step.check().needed
    step.apply()
    assert len(_rules(pvesh, node)) == 2

    wider = FirewallRule(pvesh, node, port=8443, allow_from=None, comment="pmcp-mcp test")
    assert wider.check().changes[0].startswith("update firewall rule")
    wider.apply()
    ours = [r for r in _rules(pvesh, node) if r.get("comment") == "pmcp-mcp test"]
    assert len(ours) == 1 and "source" not in ours[0]
    assert not wider.check().needed

    wider.undo()
    left = _rules(pvesh, node)
    assert [str(r["dport"]) for r in left] == ["22"]
    assert_calls_in_schema(pvesh.calls)


def test_bad_cidr_is_refused(pvesh: Pvesh, node: str) -> None:
    with pytest.raises(StepError, match="not an IPv4 address or network"):
        FirewallRule(pvesh, node, allow_from="everyone")


def test_through_the_real_pvesh_shim_process(shim_pvesh: Pvesh) -> None:
    """The same step with `python -m pmcp sim pvesh` as a subprocess, as PMCP_PVESH sets it up."""
    node = shim_pvesh.get("/nodes")[0]["node"]
    shim_pvesh.set("/cluster/firewall/options", enable=1)
    step = FirewallRule(shim_pvesh, node, port=443)
    step.apply()
    assert not step.check().needed
    step.undo()
    assert shim_pvesh.get(f"/nodes/{node}/firewall/rules") == []
