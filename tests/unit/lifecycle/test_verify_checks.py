"""The pure parts of `pmcp verify`: hardening read from `docker inspect`, the report, the tool choice."""

from __future__ import annotations

from pathlib import Path
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


def test_verify_trusts_the_private_acme_root_of_a_domain_install(tmp_path: Path) -> None:
    """--acme-ca-root: verify's TLS check and MCP session trust the copy install made (a private CA's
    certificate is in no system trust store), on top of the system's roots."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from pmcp.lifecycle.verify import Target
    from pmcp.paths import InstallPaths
    from pmcp.stack.render import ACME_ROOT, StackConfig

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pmcp unit private ACME root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    paths = InstallPaths.at(tmp_path)
    (tmp_path / ACME_ROOT).parent.mkdir(parents=True)
    (tmp_path / ACME_ROOT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def subjects(cfg: StackConfig) -> list[str]:
        ctx = Target(paths, cfg, "p", "t", None, {}).ssl_context()
        return [str(c.get("subject")) for c in ctx.get_ca_certs()]

    private = StackConfig(domain="pve.example.lan", acme_ca="https://ca.example.lan/dir", acme_ca_root="/x")
    assert any("pmcp unit private ACME root" in s for s in subjects(private))
    public = StackConfig(domain="pve.example.com")  # Let's Encrypt: the system's roots only
    assert not any("pmcp unit private ACME root" in s for s in subjects(public))


def test_audit_space_warns_before_the_server_refuses_changes(tmp_path) -> None:
    """Issue 11, item 7: status and verify warn while changes still work, with the directory to clear."""
    from pmcp.lifecycle.status import audit_space, render_text
    from pmcp.lifecycle.verify import check_audit_space
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(tmp_path / "inst")
    paths.audit_dir.mkdir(parents=True)
    paths.env_file.write_text("PMCP_MODE=operator\nPMCP_AUDIT_MAX_BYTES=1048576\n")
    (paths.audit_dir / "audit.jsonl").write_bytes(b"x" * 100_000)
    target = SimpleNamespace(paths=paths)
    assert check_audit_space(target).result == PASS  # type: ignore[arg-type]

    (paths.audit_dir / "audit-20260101T000000000000Z.jsonl.gz").write_bytes(b"x" * 800_000)
    row = check_audit_space(target)  # type: ignore[arg-type]
    assert row.result == WARN and "quota" in row.detail and str(paths.audit_dir) in row.fix
    usage = audit_space(paths)
    assert usage.used_bytes == 900_000 and usage.max_bytes == 1048576
    text = render_text(
        {
            "version": "1",
            "prefix": str(paths.prefix),
            "pmcp_running": "1",
            "mode": "operator",
            "url": "u",
            "image": "i",
            "services": {},
            "token_age": {"client": "1", "proxmox": "1"},
            "audit": {
                "directory": usage.directory,
                "used_bytes": usage.used_bytes,
                "max_bytes": usage.max_bytes,
                "free_bytes": usage.free_bytes,
                "warnings": usage.warnings,
            },
        }
    )
    assert "audit log: 0 of 1 MiB used" in text and "warning: the audit log uses" in text


def test_images_are_checked_against_the_ids_install_recorded() -> None:
    """Issue 11, item 8: images by mutable tag; a moved tag or a foreign pmcp file in the image fails."""
    from pmcp.lifecycle.verify import image_problems

    mcp_id, caddy_id, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
    running = {
        "mcp-server": {"Config": {"Image": "pmcp/mcp-server:1-abc"}, "Image": mcp_id},
        "caddy": {"Config": {"Image": "caddy:2.10-alpine"}, "Image": caddy_id},
    }
    recorded = {"pmcp/mcp-server:1-abc": mcp_id, "caddy:2.10-alpine": caddy_id}
    good = image_problems(running, recorded, {"io.pmcp.sha256": "d" * 64}, "d" * 64)
    assert [r.result for r in good] == [PASS, PASS]

    moved = image_problems(
        running, recorded | {"caddy:2.10-alpine": other}, {"io.pmcp.sha256": "d" * 64}, "d" * 64
    )
    row = next(r for r in moved if r.check == "caddy image")
    assert row.result == FAIL and "tag was moved" in row.detail

    foreign = image_problems(running, recorded, {"io.pmcp.sha256": "e" * 64}, "d" * 64)
    assert any(r.check == "mcp-server pmcp file" and r.result == FAIL for r in foreign)
    assert image_problems(running, {}, {}, "")[0].result == WARN  # an older install recorded nothing
