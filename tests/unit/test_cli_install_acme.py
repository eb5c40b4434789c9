"""`pmcp install --acme-ca` reaches the install's options and is checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pmcp.cli import main


def test_bad_acme_ca_is_refused_with_the_fix_before_any_step(tmp_path: Path) -> None:
    prefix = tmp_path / "inst"
    args = ["install", "--prefix", str(prefix), "--domain", "pve.example.lan", "--json", "--dry-run"]
    result = CliRunner().invoke(main, [*args, "--acme-ca", "http://ca.example.lan/acme/acme/directory"])
    assert result.exit_code in (1, 2), result.output  # refused before anything ran (README: exit codes)
    out = json.loads(result.stdout)  # the one JSON result; the error is on stderr too
    assert out["ok"] is False and out["steps"] == []  # checked before any step
    assert "https URL" in out["error"]["message"] and "--acme-ca https://" in out["error"]["fix"]
    assert not prefix.exists()


def test_a_single_label_domain_needs_a_private_acme_ca(tmp_path: Path) -> None:
    """`--domain pve` is refused for a public CA (the options step says so) but reaches the options with
    `--acme-ca` (step-ca issues for it): the command line checks syntax only."""
    prefix = tmp_path / "inst"
    base = ["install", "--prefix", str(prefix), "--domain", "pve", "--json", "--dry-run"]
    public = CliRunner().invoke(main, base)
    assert public.exit_code in (1, 2), public.output
    assert "not a DNS name" in json.loads(public.stdout)["error"]["message"]
    private = CliRunner().invoke(main, [*base, "--acme-ca", "http://ca.lan/acme/acme/directory"])
    message = json.loads(private.stdout)["error"]["message"]
    assert "not a DNS name" not in message and "https URL" in message  # past the domain, at the URL check
