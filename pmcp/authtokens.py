"""Client bearer tokens: a file of `NAME:TOKEN` lines (0600), shared by the server and the CLI.

Named tokens let the audit log say which client acted. The server re-reads the file when it changes,
so adding or revoking a client needs no restart.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from pmcp.files import atomic_write

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOKEN_BYTES = 32


class TokenFileError(ValueError):
    """The token file is malformed; the message says which line and how to fix it."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def parse(text: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep or not NAME_RE.match(name) or len(token) < 16:
            raise TokenFileError(f"line {lineno}: expected NAME:TOKEN (token of at least 16 characters)")
        tokens[name] = token
    return tokens


def load(path: str | Path) -> dict[str, str]:
    return parse(Path(path).read_text(encoding="utf-8"))


def save(path: str | Path, tokens: dict[str, str]) -> None:
    """Write atomically with mode 0600: a reader never sees a half-written file.

    The owner and group-read bit of an existing file are kept (never more than 0640): the server reads it
    through its group (root:GID 0640) and must still read it after root adds or revokes a client.
    """
    path = Path(path)
    body = "".join(f"{name}:{token}\n" for name, token in sorted(tokens.items()))
    owner = None
    mode = 0o600
    if path.exists():
        st = path.stat()
        owner = (st.st_uid, st.st_gid)
        mode |= st.st_mode & 0o040
    atomic_write(path, body, mode, owner)


def add(path: str | Path, name: str) -> str:
    """Add a named token and return it; refuses a name that exists (revoke it first)."""
    if not NAME_RE.match(name):
        raise TokenFileError(f"invalid token name {name!r}: use letters, digits, '.', '_' or '-'")
    path = Path(path)
    tokens = load(path) if path.exists() else {}
    if name in tokens:
        raise TokenFileError(f"a token named {name!r} exists; revoke it first")
    tokens[name] = new_token()
    save(path, tokens)
    return tokens[name]


def revoke(path: str | Path, name: str) -> bool:
    path = Path(path)
    tokens = load(path) if path.exists() else {}
    if tokens.pop(name, None) is None:
        return False
    save(path, tokens)
    return True
