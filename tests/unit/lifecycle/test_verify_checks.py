"""The pure parts of `pmcp verify`: hardening read from `docker inspect`, the report, the tool choice."""

from __future__ import annotations

from types import SimpleNamespace

from pmcp.lifecycle.verify import FAIL, PASS, WARN, Report, Row, _pick_read_tool, hardening_problems

HARD = {
    "Config": {"User": "10001:10001"},
    "HostConfig": {
        "ReadonlyRootfs": True,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
    },
}


def test_hardened_container_has_no_problem() -> None:
    assert hardening_problems(HARD, loopback_only=True) == []


def test_each_missing_hardening_is_named() -> None:
    soft = {
        "Config": {"User": ""},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
    }
    problems = hardening_problems(soft, loopback_only=True)
    assert problems == [
        "runs as root",
        "root filesystem writable",
        "capabilities not dropped",
        "no-new-privileges not set",
        "port published on 0.0.0.0",
    ]


def test_added_capabilities_are_named_unless_allowed() -> None:
    attrs = {**HARD, "HostConfig": {**HARD["HostConfig"], "CapAdd": ["NET_BIND_SERVICE", "SYS_ADMIN"]}}
    assert hardening_problems(attrs, loopback_only=True, allowed_caps=("NET_BIND_SERVICE",)) == [
        "capabilities added: SYS_ADMIN"
    ]


def test_report_fails_on_any_fail_not_on_warn() -> None:
    assert Report([Row("a", PASS), Row("b", WARN, fix="x")]).ok
    rep = Report([Row("a", PASS), Row("tls", FAIL, "bad cert", "pmcp logs caddy")])
    assert not rep.ok
    assert "fix:" in rep.table() and "pmcp logs caddy" in rep.table()


def _tool(name: str, ro: bool, required: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        annotations=SimpleNamespace(read_only_hint=ro),
        input_schema={"type": "object", "required": required or []},
    )


def test_picks_a_read_tool_without_required_arguments() -> None:
    tools = [_tool("delete_guest", False), _tool("guest_status", True, ["vmid"]), _tool("list_nodes", True)]
    assert _pick_read_tool(tools) == "list_nodes"
    assert _pick_read_tool([_tool("delete_guest", False)]) is None


def test_allow_from_flags_an_https_port_published_on_ipv6() -> None:
    """--allow-from's DOCKER-USER filter is IPv4: a port Docker also publishes on [::] bypasses it."""
    both = {**HARD, "HostConfig": {**HARD["HostConfig"], "PortBindings": {"8443/tcp": [{"HostIp": ""}]}}}
    v6 = {**HARD, "HostConfig": {**HARD["HostConfig"], "PortBindings": {"8443/tcp": [{"HostIp": "::"}]}}}
    v4 = {**HARD, "HostConfig": {**HARD["HostConfig"], "PortBindings": {"8443/tcp": [{"HostIp": "0.0.0.0"}]}}}
    assert hardening_problems(both, loopback_only=False, ipv4_only=True) == [
        "8443/tcp published on IPv6 too (all addresses)"
    ]
    assert hardening_problems(v6, loopback_only=False, ipv4_only=True) == [
        "8443/tcp published on IPv6 too (::)"
    ]
    assert hardening_problems(v4, loopback_only=False, ipv4_only=True) == []
    assert hardening_problems(both, loopback_only=False) == []  # no --allow-from: both families are fine
