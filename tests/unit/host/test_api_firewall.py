"""The Proxmox firewall and the server's way to the API: the simulator drops what PVEFW-HOST-IN drops
(pve-firewall Firewall.pm, enable_host_firewall), and ApiAccessRule lets the server's network in.

The simulator counts only 127.0.0.1 as the node itself (``lo``) here; a client bound to 127.0.0.2
stands for the server container, whose packets arrive over a Docker bridge on a real host.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pmcp.host.firewall import API_RULE_COMMENT, ApiAccessRule, api_blocked
from pmcp.host.run import Pvesh
from pmcp.sim.testing import running_sim
from pmcp.steps import StepError, run_steps
from tests.unit.host.conftest import InProcessPvesh, _sim_env

OUTSIDE = "127.0.0.2"  # the "server container"
OUTSIDE_NET = "127.0.0.2/31"


@pytest.fixture
def fwsim() -> Iterator[Any]:
    with running_sim(nodes=1, guests=2, lo=("127.0.0.1/32",)) as s:
        yield s


@pytest.fixture
def fwpvesh(fwsim: Any) -> Pvesh:
    return InProcessPvesh(["pvesh"], env=_sim_env(fwsim))


def answers(sim: Any, source: str = OUTSIDE, timeout: float = 1.5) -> bool:
    """One GET /version from ``source``: True when the API answers, False on silence (a DROP)."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=timeout, source_address=(source, 0)) as s:
        s.sendall(b"GET /api2/json/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            return s.recv(100).startswith(b"HTTP/1.1 ")
        except TimeoutError:
            return False


def test_firewall_on_drops_other_sources_until_a_rule_or_the_management_ipset(
    fwsim: Any, fwpvesh: Pvesh
) -> None:
    node = fwpvesh.get("/nodes")[0]["node"]
    assert answers(fwsim)  # firewall off (the cluster default): nothing filtered
    fwpvesh.set("/cluster/firewall/options", enable=1)
    started = time.monotonic()
    assert not answers(fwsim)  # PVEFW-HOST-IN: not lo, not management, policy DROP -> silence
    assert time.monotonic() - started >= 1.4
    assert answers(fwsim, "127.0.0.1")  # -i lo -j ACCEPT: the host's own pvesh still works
    fwpvesh.set(f"/nodes/{node}/firewall/options", enable=0)
    assert answers(fwsim)  # host.fw "enable: 0": no host chains
    fwpvesh.set(f"/nodes/{node}/firewall/options", enable=1)
    fwsim.state.world["firewall"]["cluster"]["ipset"] = {"management": [{"cidr": OUTSIDE_NET}]}
    assert answers(fwsim)  # the management ipset reaches 8006
    fwsim.state.world["firewall"]["cluster"]["ipset"] = {}
    fwpvesh.create(f"/nodes/{node}/firewall/rules", type="in", action="ACCEPT", proto="tcp", dport="8006",
                   source=OUTSIDE_NET)  # fmt: skip
    assert not answers(fwsim)  # created disabled, as PVE does
    fwpvesh.set("/cluster/firewall/options", policy_in="ACCEPT")
    assert answers(fwsim)


def test_api_access_rule_lets_the_server_network_in_and_uninstall_removes_it(
    fwsim: Any, fwpvesh: Pvesh
) -> None:
    node = fwpvesh.get("/nodes")[0]["node"]
    off = ApiAccessRule(fwpvesh, node, OUTSIDE_NET)
    assert not off.check().needed and "firewall is off" in off.check().notes[0]
    fwpvesh.set("/cluster/firewall/options", enable=1)
    assert not answers(fwsim)
    assert api_blocked(fwpvesh, node, OUTSIDE_NET) is not None
    assert "only from lo and the 'management' ipset" in str(api_blocked(fwpvesh, node, OUTSIDE_NET))
    step = ApiAccessRule(fwpvesh, node, OUTSIDE_NET)
    plan = step.check()
    assert plan.changes == [f"add firewall rule on {node}: ACCEPT tcp/8006 from {OUTSIDE_NET}"]
    result = run_steps([step])
    assert result.ok, result.to_dict()
    assert answers(fwsim)
    assert api_blocked(fwpvesh, node, OUTSIDE_NET) is None
    assert not ApiAccessRule(fwpvesh, node, OUTSIDE_NET).check().needed  # a re-run: already right
    ours = [r for r in fwpvesh.get(f"/nodes/{node}/firewall/rules") if r.get("comment") == API_RULE_COMMENT]
    assert len(ours) == 1 and ours[0]["source"] == OUTSIDE_NET and str(ours[0]["enable"]) == "1"
    ApiAccessRule(fwpvesh, node, None).undo()  # uninstall, the stack already gone: found by its comment
    assert fwpvesh.get(f"/nodes/{node}/firewall/rules") == []
    assert not answers(fwsim)
    with pytest.raises(StepError, match="Docker network"):
        ApiAccessRule(fwpvesh, node, None).check()
