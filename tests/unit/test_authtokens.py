"""The client token file: named tokens, 0600, atomic, strict parsing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pmcp import authtokens


def test_add_revoke_roundtrip_keeps_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "client-tokens"
    first = authtokens.add(path, "claude-code")
    second = authtokens.add(path, "cursor")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert authtokens.load(path) == {"claude-code": first, "cursor": second}
    assert first != second and len(first) >= 40
    assert authtokens.revoke(path, "cursor") is True
    assert authtokens.revoke(path, "cursor") is False
    assert authtokens.load(path) == {"claude-code": first}


def test_duplicate_and_bad_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    authtokens.add(path, "a")
    with pytest.raises(authtokens.TokenFileError, match="revoke it first"):
        authtokens.add(path, "a")
    with pytest.raises(authtokens.TokenFileError, match="invalid token name"):
        authtokens.add(path, "../etc")


@pytest.mark.parametrize("text", ["justatoken\n", "name:short\n", ":" + "x" * 20 + "\n"])
def test_malformed_lines_name_the_line(text: str) -> None:
    with pytest.raises(authtokens.TokenFileError, match="line 1"):
        authtokens.parse("# comment\n" * 0 + text)


def test_comments_and_blank_lines_are_ignored() -> None:
    assert authtokens.parse("# clients\n\nci:" + "y" * 20 + "\n") == {"ci": "y" * 20}


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_root_keeps_the_servers_ownership(tmp_path: Path) -> None:
    path = tmp_path / "client-tokens"
    authtokens.add(path, "first")
    os.chown(path, 10001, 10001)
    authtokens.add(path, "second")
    authtokens.revoke(path, "first")
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (10001, 10001), "the server (uid 10001) must still read its token file"
    assert stat.S_IMODE(st.st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_root_keeps_the_group_read_of_a_root_owned_file(tmp_path: Path) -> None:
    """secrets/ is root:GID 0640: the server reads its tokens through its group, also after a change."""
    path = tmp_path / "client-tokens"
    authtokens.add(path, "first")
    os.chown(path, 0, 10001)
    os.chmod(path, 0o640)
    authtokens.add(path, "second")
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 10001, 0o640)
    os.chmod(path, 0o666)
    authtokens.revoke(path, "first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # never wider than group-read


# --- a token's own limits (mode, scope, budget) -----------------------------------------------------


def old_server_match(text: str, presented_header: bytes) -> str | None:
    """What a server older than per-client limits did (pmcp.authtokens.parse and
    pmcp.server.auth at 11477f5): everything after the first ':' is the token; the Authorization
    header is decoded as Latin-1 and compared as UTF-8 bytes."""
    import hmac

    tokens = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, token = line.partition(":")
            tokens[name] = token
    _, _, given = presented_header.decode("latin-1").partition(" ")
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(given.strip().encode(), token.encode()) and found is None:
            found = name
    return found


def test_limits_roundtrip_and_the_plain_line_stays_plain(tmp_path: Path) -> None:
    path = tmp_path / "client-tokens"
    plain = authtokens.add(path, "laptop")
    limited = authtokens.TokenLimits("operator", ("web",), ("lab",), 5)
    secret = authtokens.add(path, "web", limited)
    lines = path.read_text().splitlines()
    assert f"laptop:{plain}" in lines, "a token without limits keeps the line every version reads"
    assert f"web:{secret} ‖ mode=operator scope=tag:web,pool:lab budget=5" in lines
    entries = authtokens.load_entries(path)
    assert entries["web"] == authtokens.ClientToken(secret, limited)
    assert entries["laptop"].limits == authtokens.NO_LIMITS
    assert authtokens.load(path) == {"laptop": plain, "web": secret}, "the bearer is the token alone"
    authtokens.revoke(path, "laptop")
    assert authtokens.load_entries(path) == {"web": entries["web"]}, "revoking another keeps the limits"
    authtokens.set_limits(path, "web", authtokens.NO_LIMITS)
    assert path.read_text() == f"web:{secret}\n"


def test_an_older_server_never_grants_a_limited_token_anything(tmp_path: Path) -> None:
    """Rollback: the older server reads the limited line as one long token. No header can match it
    (U+2016 is outside Latin-1), so that client is refused, while the plain tokens keep working."""
    path = tmp_path / "client-tokens"
    plain = authtokens.add(path, "laptop")
    secret = authtokens.add(path, "ro", authtokens.TokenLimits(mode="read-only"))
    text = path.read_text()
    assert old_server_match(text, f"Bearer {plain}".encode()) == "laptop"
    line_rest = text.split("ro:", 1)[1].strip()
    for header in (
        f"Bearer {secret}".encode(),
        f"Bearer {secret} mode=read-only".encode(),
        b"Bearer " + line_rest.encode("utf-8"),  # the whole stored value, as UTF-8 bytes
        b"Bearer " + line_rest.encode("utf-8").decode("latin-1").encode("latin-1"),
    ):
        assert old_server_match(text, header) is None


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ("mode=root", "mode 'root' is not one of"),
        ("scope=web", "neither tag:NAME nor pool:NAME"),
        ("budget=-3", "not a whole number"),
        ("mode=admin mode=read-only", "mode= given twice"),
        ("quota=5", "unknown setting 'quota=5'"),
    ],
)
def test_bad_settings_name_the_line_and_refuse_the_file(settings: str, error: str) -> None:
    text = "ok:" + "x" * 20 + "\nci:" + "y" * 20 + f" ‖ {settings}\n"
    with pytest.raises(authtokens.TokenFileError, match=f"line 2 \\(ci\\): .*{error}"):
        authtokens.parse(text)


def test_the_server_refuses_only_a_token_it_cannot_limit() -> None:
    """A newer pmcp's setting: this version's server leaves that one client out, keeps the others."""
    text = "ok:" + "x" * 20 + "\nnew:" + "y" * 20 + " ‖ mode=read-only hours=9-17\n"
    skipped: list[str] = []
    assert authtokens.parse_entries(text, skipped) == {"ok": authtokens.ClientToken("x" * 20)}
    assert skipped == ["line 2 (new): unknown setting 'hours=9-17' (this pmcp knows mode=, scope=, budget=; "
                       "a newer pmcp wrote it?)"]  # fmt: skip
