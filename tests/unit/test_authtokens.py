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
