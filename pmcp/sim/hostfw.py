"""Who reaches the API port (8006) when the Proxmox firewall is on: ``PVEFW-HOST-IN`` as pve-firewall
builds it, evaluated for one TCP connection's source address.

From proxmox/pve-firewall ``src/PVE/Firewall.pm``:
- ``compile()``: nothing at all is filtered while the cluster option ``enable`` is off
  (``return ({}, {}, {}, {}) if !$cluster_conf->{options}->{enable}``); the ``management`` ipset
  always gets ``local_network()`` (the node's own network, ``127.0.0.0/8`` when it cannot tell).
- ``compile_iptables_filter()``: the host chains exist unless the node's ``host.fw`` says
  ``enable: 0`` (``$hostfw_enable``).
- ``enable_host_firewall()`` builds ``PVEFW-HOST-IN``: ``-i lo -j ACCEPT`` first; then the node's
  rules, then the cluster's rules (enabled, ``type in``), in position order, first match wins; then
  ``-m set --match-set PVEFW-0-management-v4 src -p tcp --dport 8006 -j RETURN`` (accept); then the
  input policy, ``policy_in`` or ``DROP``.

A dropped SYN is never answered, so a client sees a timeout: the server holds such a connection
without a word until the client gives up.

"lo" here: the simulator cannot see interfaces, so ``lo`` lists the source networks that count as the
node itself: loopback, plus (in the demo stack) the Docker gateway through which the host's own pvesh
and installer connect, as they would over ``lo`` on a real node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

API_PORT = 8006


def _truthy(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    return str(value).lower() not in ("0", "false", "no", "off")


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, spec: str, ipsets: dict[str, Any]) -> bool:
    """Does ``addr`` match a rule's source: CIDR, address, range, list, or ``+ipset``."""
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item.startswith("+"):
            name = item[1:].split("/", 1)[-1]
            if any(
                _in(addr, e.get("cidr", ""), ipsets) for e in ipsets.get(name, []) if not e.get("nomatch")
            ):
                return True
            continue
        if "-" in item:
            lo, hi = (ipaddress.ip_address(x) for x in item.split("-", 1))
            if lo.version == addr.version and lo <= addr <= hi:  # type: ignore[operator]
                return True
            continue
        try:
            if addr in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue  # an alias name: not modelled, never matches
    return False


def _port_in(port: int, spec: str) -> bool:
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        lo, _, hi = item.partition(":")
        try:
            if int(lo) <= port <= int(hi or lo):
                return True
        except ValueError:
            continue  # a service name from /etc/services: not modelled
    return False


def _rule_verdict(rule: dict[str, Any], addr: Any, port: int, ipsets: dict[str, Any]) -> str | None:
    """ACCEPT/DROP/REJECT when an enabled ``in`` rule matches this connection, else None."""
    if not _truthy(rule.get("enable"), False) or rule.get("type") != "in" or rule.get("macro"):
        return None
    if rule.get("iface"):
        return None  # interfaces are not modelled: such a rule never matches here
    if rule.get("proto") not in (None, "", "tcp", "6"):
        return None
    if rule.get("dport") and not _port_in(port, str(rule["dport"])):
        return None
    if rule.get("source") and not _in(addr, str(rule["source"]), ipsets):
        return None
    if rule.get("dest"):
        return None  # the node's own address as seen by the client is not modelled
    return str(rule.get("action", "")).upper() or None


LOOPBACK = ("127.0.0.0/8", "::1/128")


def local_network(world: dict[str, Any], node: str) -> str:
    """Firewall.pm ``local_network()``: the routed network holding the node's own address (here its
    /24: the simulated nodes sit in one 10.0.0.0/24), else ``127.0.0.0/8``; the alias
    ``local_network`` overrides it (modelled as the cluster key of that name)."""
    cluster = (world.get("firewall") or {}).get("cluster") or {}
    if cluster.get("local_network"):
        return str(cluster["local_network"])
    ip = ((world.get("nodes") or {}).get(node) or {}).get("ip")
    return str(ipaddress.ip_network(f"{ip}/24", strict=False)) if ip else "127.0.0.0/8"


def admits(
    world: dict[str, Any], node: str, source: str, lo: Iterable[str] = LOOPBACK, port: int = API_PORT
) -> bool:
    """Would ``PVEFW-HOST-IN`` on ``node`` let a TCP connection from ``source`` to ``port`` in?"""
    fw = world.get("firewall") or {}
    cluster = fw.get("cluster") or {}
    options = cluster.get("options") or {}
    if not _truthy(options.get("enable"), False):
        return True
    host = (fw.get("nodes") or {}).get(node) or {}
    if not _truthy((host.get("options") or {}).get("enable"), True):
        return True
    addr = ipaddress.ip_address(source.split("%")[0])
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped  # type: ignore[union-attr]
    if any(addr in ipaddress.ip_network(n, strict=False) for n in lo if n):
        return True  # -i lo -j ACCEPT
    ipsets = {k: list(v) for k, v in (cluster.get("ipset") or {}).items()}
    ipsets.setdefault("management", []).append({"cidr": local_network(world, node)})
    for rule in [*(host.get("rules") or []), *(cluster.get("rules") or [])]:
        verdict = _rule_verdict(rule, addr, port, ipsets)
        if verdict == "ACCEPT":
            return True
        if verdict in ("DROP", "REJECT"):
            return False
    if port == API_PORT and _in(addr, "+management", ipsets):
        return True
    return str(options.get("policy_in") or "DROP").upper() == "ACCEPT"
