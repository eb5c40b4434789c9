"""Option values checked at the edge: what a user may type for a domain."""

from __future__ import annotations

import pytest

from pmcp import inputs
from pmcp.errors import UsageError


@pytest.mark.parametrize("bad", ["pve example.com", "pve", "-pve.example.com", "pve.example.123", ""])
def test_public_acme_needs_a_dotted_dns_name(bad: str) -> None:
    with pytest.raises(UsageError, match="not a DNS name") as err:
        inputs.dns_name(bad)
    assert "pve.example.com" in err.value.fix


def test_a_private_acme_ca_may_issue_for_a_single_label_host_name() -> None:
    """step-ca in a LAN issues for `pve`; Let's Encrypt never does (so only with --acme-ca)."""
    assert inputs.dns_name("PVE.", single_label=True) == "pve"
    with pytest.raises(UsageError):
        inputs.dns_name("pve host", single_label=True)
