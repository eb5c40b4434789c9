"""Reading sudoers the way sudo does, and sudo's own `-ll` listing (sudo 1.9.13, captured from the real
binary in a private /etc; the end-to-end checks are in test_sudo_containment.py)."""

from __future__ import annotations

from pathlib import Path

from pmcp.host import sudoers as sd
from pmcp.host.agent_user import DEFAULT_TEMPLATE, Allowed, dangerous_defaults, extra_entries

ACCT = sd.Account("agent", 1001, 1001, {"agent": 1001, "ops": 2000})


def _line(text: str) -> sd.Line:
    return sd.logical_lines(Path("x"), text)[0]


def test_a_hash_before_a_digit_is_a_uid_not_a_comment() -> None:
    assert sd.kind(_line("#1001 ALL=(root) NOPASSWD: /usr/bin/python3")) == "spec"
    assert sd.kind(_line("# agent ALL=(ALL) ALL")) == "comment"
    assert sd.kind(_line("#includedir /etc/sudoers.d")) == "include"
    assert sd.kind(_line("Defaults:agent !env_reset")) == "defaults"
    assert sd.kind(_line("User_Alias A = agent : B = bob")) == "alias"
    assert sd._strip_comment("agent ALL=ALL # note") == "agent ALL=ALL"
    assert sd.logical_lines(Path("x"), "a, \\\n   b ALL=\\\n  ALL\n")[0].text == "a, b ALL= ALL"


def test_user_lists_match_from_the_end_like_sudo() -> None:
    aliases = {"BOTS": ["bob", "#1001"]}
    assert [v.how for v in sd.list_vias(["%ops", "!agent"], ACCT, aliases)] == []
    assert [v.how for v in sd.list_vias(["!agent", "%ops"], ACCT, aliases)] == ["group"]
    assert [v.how for v in sd.list_vias(["agent", "%agent"], ACCT, aliases)] == ["primary", "user"]
    assert [v.how for v in sd.list_vias(["ALL"], ACCT, aliases)] == ["all"]
    (via,) = sd.list_vias(["BOTS"], ACCT, aliases)
    assert via.how == "alias" and via.inner[0].how == "uid"
    assert [v.how for v in sd.list_vias(["+admins"], ACCT, aliases)] == ["unknown"]
    assert sd.list_vias(["bob", "%#2001", "#1002"], ACCT, aliases) == []
    assert [v.how for v in sd.list_vias(["%#2000"], ACCT, aliases)] == ["group"]
    assert sd.split_list('"%domain users", agent  host1 = ALL') == (
        ['"%domain users"', "agent"],
        "  host1 = ALL",
    )


def test_alias_rewrite_keeps_the_others_and_never_leaves_an_empty_alias() -> None:
    text = "User_Alias BOTS = agent, bob : ONLY = agent"
    out = sd.rewrite_alias_line(text, {"BOTS": {"agent"}, "ONLY": {"agent"}})
    assert out == "User_Alias BOTS = bob : ONLY = !ALL"


LL = """Matching Defaults entries for agent on vm:
    env_reset, mail_badpass,
    secure_path=/usr/local/sbin\\:/usr/local/bin\\:/usr/sbin\\:/usr/bin\\:/sbin\\:/bin,
    use_pty, env_keep+="PERL5OPT LD_PRELOAD", !env_reset

Runas and Command-specific defaults for agent:
    Defaults>other setenv    Defaults!/usr/bin/vi env_keep+=PYTHONPATH

User agent may run the following commands on vm:

Sudoers entry:
    RunAsUsers: root
    Options: noexec, !authenticate
    Commands:
\t/bin/sh
\t/usr/bin/find /etc -name *

Sudoers entry:
    RunAsUsers: root
    Options: noexec, !authenticate
    Commands:
\t/usr/bin/pveversion ""
\t/usr/sbin/qm list
\t/usr/sbin/pct list
"""


def test_sudo_ll_listing_and_what_is_accepted() -> None:
    listing = sd.parse_sudo_ll(LL)
    assert listing.scoped == ["Defaults>other setenv", "Defaults!/usr/bin/vi env_keep+=PYTHONPATH"]
    assert 'env_keep+="PERL5OPT LD_PRELOAD"' in listing.defaults and "!env_reset" in listing.defaults
    assert listing.entries[1].commands == [
        '/usr/bin/pveversion ""',
        "/usr/sbin/qm list",
        "/usr/sbin/pct list",
    ]
    allowed = Allowed.from_template(DEFAULT_TEMPLATE.format(user="agent"))
    assert allowed.options == {"noexec", "!authenticate"} and allowed.runas == {"root"}
    assert [c for _, c in extra_entries(listing, allowed)] == ["/bin/sh", "/usr/bin/find /etc -name *"]
    bad = [s for s, _ in dangerous_defaults(listing, allowed)]
    assert bad == ['env_keep+="PERL5OPT LD_PRELOAD"', "!env_reset"]  # vi and runas-other are out of reach
    allowed_vi = Allowed(allowed.runas, allowed.options, {"/usr/bin/vi"})
    assert "!/usr/bin/vi env_keep+=PYTHONPATH" in [s for s, _ in dangerous_defaults(listing, allowed_vi)]


def test_dangerous_settings() -> None:
    assert sd.dangerous_setting("!env_reset")
    assert sd.dangerous_setting("setenv")
    assert sd.dangerous_setting('env_keep += "LD_LIBRARY_PATH"')
    assert sd.dangerous_setting("env_keep=PYTHONPATH")
    assert not sd.dangerous_setting('env_keep+="LANG LC_ALL"')
    assert not sd.dangerous_setting("env_reset")
    assert not sd.dangerous_setting("!setenv")
