"""Configurations that connect AI clients to the server, each in the format its client documents.

Pure functions: no file is read here except by the small helpers at the bottom (state, merge). The
token never appears in an output unless the caller passes it (``--show-token``): the default is a
reference the client resolves itself (an environment variable, a VS Code password prompt), so the
output can be pasted, shared or committed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pmcp.errors import PmcpError, UsageError

if TYPE_CHECKING:
    from pmcp.authtokens import TokenLimits
    from pmcp.paths import InstallPaths

CLIENTS = ("claude-code", "claude-desktop", "cursor", "vscode", "codex", "windsurf")
TOKEN_ENV = "PMCP_TOKEN"
PLACEHOLDER = "<PMCP_TOKEN>"
MCP_PATH = "/mcp"
AS_ROOT = "run as root (sudo pmcp client-config …)"


class ClientConfigError(PmcpError, ValueError):
    """The configuration cannot be made. Raised as "what: how to fix it" (or "what; how"): without an
    explicit ``fix`` the text is split there, so the CLI shows the fix on its own line."""

    def __init__(self, message: str, fix: str = "", detail: str = "") -> None:
        if not fix:
            what, sep, how = message.partition("; ") if "; " in message else message.partition(": ")
            if sep and how:
                message, fix = what, how
        super().__init__(message, fix, detail)


@dataclass(frozen=True)
class Target:
    """What a client needs to reach the server.

    ``token`` is the literal secret and is only set when the caller wants it in the output; otherwise
    outputs reference ``TOKEN_ENV``. ``ca_file`` is the exported root certificate of Caddy's internal
    CA (None: the certificate is publicly trusted, or the user has not exported it yet).
    """

    name: str
    url: str
    token: str | None = None
    token_name: str = ""
    token_file: str = ""
    ca_file: str | None = None
    public_tls: bool = False


@dataclass(frozen=True)
class Snippet:
    """One thing to paste: a command to run, or a file's content."""

    kind: str  # "command" | "file"
    language: str  # "sh" | "json" | "toml"
    text: str
    path: str = ""  # where a file belongs, e.g. "~/.cursor/mcp.json"
    secret: bool = False  # holds the literal token

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v != ""}


@dataclass(frozen=True)
class ClientConfig:
    client: str
    title: str
    snippets: list[Snippet]
    notes: list[str] = field(default_factory=list)

    @property
    def secret(self) -> bool:
        return any(s.secret for s in self.snippets)

    @property
    def file_snippet(self) -> Snippet | None:
        files = [s for s in self.snippets if s.kind == "file"]
        return files[0] if len(files) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "title": self.title,
            "snippets": [s.to_dict() for s in self.snippets],
            "notes": self.notes,
        }


def normalize_url(url: str) -> str:
    """The MCP endpoint: a bare origin gets ``/mcp`` (what Caddy serves); anything else is kept."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientConfigError(f"invalid URL {url!r}: expected https://HOST[:PORT]/mcp")
    path = parts.path if parts.path not in ("", "/") else MCP_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise ClientConfigError(f"invalid server name {name!r}: use letters, digits, '_' or '-'")


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _bearer(target: Target, reference: str) -> str:
    return f"Bearer {target.token}" if target.token else f"Bearer {reference}"


def _token_note(target: Target, how: str) -> str:
    name = target.token_name or "NAME"
    where = f" (token {name!r} of {target.token_file})" if target.token_name and target.token_file else ""
    return (
        f"{how} To print the token, run on the server as root: "
        f"pmcp client-config --show-token --token-name {name}{where}."
    )


def _tls_note(target: Target, how: str) -> list[str]:
    if urlsplit(target.url).scheme != "https" or target.public_tls:
        return []
    if target.ca_file:
        return [
            f"TLS: the server's certificate comes from Caddy's internal CA, exported to {target.ca_file}."
            f" Copy that file to this client's machine, then: {how}"
        ]
    return [
        "TLS: with Caddy's internal CA (the default without --domain) this client must trust its root "
        "certificate: export it with `pmcp client-config --ca-cert pmcp-ca.crt`, or reinstall with "
        "`pmcp install --domain NAME` for a publicly trusted certificate."
    ]


def _node_trust(target: Target, launcher: str) -> str:
    return f"start {launcher} with NODE_EXTRA_CA_CERTS={target.ca_file} in its environment."


def claude_code(target: Target) -> ClientConfig:
    """``claude mcp add`` (options before the name, the variadic --header last) and ``.mcp.json``."""
    header = f"Authorization: {_bearer(target, '${' + TOKEN_ENV + '}')}"
    quoted = shlex.quote(header) if target.token else f'"{header}"'
    command = (
        f"claude mcp add --transport http {shlex.quote(target.name)} {shlex.quote(target.url)} "
        f"--header {quoted}"
    )
    doc = {
        "mcpServers": {
            target.name: {
                "type": "http",
                "url": target.url,
                "headers": {"Authorization": _bearer(target, "${" + TOKEN_ENV + "}")},
            }
        }
    }
    notes = []
    if not target.token:
        notes.append(
            _token_note(
                target,
                f"Set {TOKEN_ENV} in the environment Claude Code starts from (it expands ${{{TOKEN_ENV}}} "
                "in .mcp.json; the shell expands it in the `claude mcp add` line).",
            )
        )
    notes += _tls_note(target, f"start Claude Code as `NODE_EXTRA_CA_CERTS={target.ca_file} claude`.")
    return ClientConfig(
        "claude-code",
        "Claude Code",
        [
            Snippet("command", "sh", command + "\n", secret=bool(target.token)),
            Snippet("file", "json", _dump(doc), path=".mcp.json", secret=bool(target.token)),
        ],
        notes,
    )


def claude_desktop(target: Target) -> ClientConfig:
    """Claude Desktop runs stdio servers only, so the ``mcp-remote`` bridge carries the header.

    The header value travels through ``env`` (``Authorization:${AUTH}``, no space) because some
    launchers split arguments on spaces.
    """
    env = {"AUTH": _bearer(target, PLACEHOLDER)}
    if target.ca_file and urlsplit(target.url).scheme == "https" and not target.public_tls:
        env["NODE_EXTRA_CA_CERTS"] = target.ca_file
    doc = {
        "mcpServers": {
            target.name: {
                "command": "npx",
                "args": ["-y", "mcp-remote", target.url, "--header", "Authorization:${AUTH}"],
                "env": env,
            }
        }
    }
    notes = [
        "Paste into claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/, Windows: "
        "%APPDATA%\\Claude\\), then restart Claude Desktop. Needs Node.js 18+ (npx)."
    ]
    if not target.token:
        notes.append(
            _token_note(
                target, f"Replace {PLACEHOLDER} with the token (Claude Desktop expands no variables)."
            )
        )
    notes += _tls_note(
        target,
        'set "NODE_EXTRA_CA_CERTS" in the entry\'s "env" to that file\'s path '
        "(already filled in with the exported path).",
    )
    return ClientConfig(
        "claude-desktop",
        "Claude Desktop (through mcp-remote)",
        [Snippet("file", "json", _dump(doc), path="claude_desktop_config.json", secret=bool(target.token))],
        notes,
    )


def _editor_json(target: Target, client: str, title: str, url_key: str, path: str) -> ClientConfig:
    """Cursor and Windsurf: one `mcpServers` JSON with `${env:VAR}` expansion; only the URL key differs."""
    doc = {
        "mcpServers": {
            target.name: {
                url_key: target.url,
                "headers": {"Authorization": _bearer(target, "${env:" + TOKEN_ENV + "}")},
            }
        }
    }
    notes = []
    if not target.token:
        notes.append(_token_note(target, f"Set {TOKEN_ENV} in the environment {title} starts from."))
    notes += _tls_note(
        target, "add it to the operating system's trust store, or " + _node_trust(target, title)
    )
    snippet = Snippet("file", "json", _dump(doc), path=path, secret=bool(target.token))
    return ClientConfig(client, title, [snippet], notes)


def cursor(target: Target) -> ClientConfig:
    return _editor_json(target, "cursor", "Cursor", "url", "~/.cursor/mcp.json")


def vscode(target: Target) -> ClientConfig:
    """VS Code prompts for the token once (``password: true``) and keeps it in its secret storage."""
    input_id = f"{target.name}-token"
    server = {
        "type": "http",
        "url": target.url,
        "headers": {"Authorization": _bearer(target, "${input:" + input_id + "}")},
    }
    doc: dict[str, Any] = {"servers": {target.name: server}}
    if not target.token:
        doc = {
            "inputs": [
                {
                    "type": "promptString",
                    "id": input_id,
                    "description": f"Bearer token of the {target.name} MCP server",
                    "password": True,
                }
            ],
            **doc,
        }
    notes = []
    if not target.token:
        notes.append(_token_note(target, "VS Code asks for the token when the server first starts."))
    notes += _tls_note(
        target,
        "add it to the operating system's trust store (VS Code reads it), or "
        + _node_trust(target, "VS Code (`code`)"),
    )
    return ClientConfig(
        "vscode",
        "VS Code",
        [Snippet("file", "json", _dump(doc), path=".vscode/mcp.json", secret=bool(target.token))],
        notes,
    )


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def codex(target: Target) -> ClientConfig:
    """Codex reads the bearer token from an environment variable only (no inline token in the file)."""
    text = (
        f"[mcp_servers.{_toml_key(target.name)}]\n"
        f"url = {json.dumps(target.url)}\n"
        f"bearer_token_env_var = {json.dumps(TOKEN_ENV)}\n"
    )
    notes = []
    if target.token:
        notes.append(f"Before starting codex: export {TOKEN_ENV}={shlex.quote(target.token)}")
    else:
        notes.append(_token_note(target, f"Export {TOKEN_ENV} before starting codex."))
    notes += _tls_note(target, f"start codex with CODEX_CA_CERTIFICATE={target.ca_file} (or SSL_CERT_FILE).")
    return ClientConfig(
        "codex",
        "Codex",
        [Snippet("file", "toml", text, path="~/.codex/config.toml")],
        notes,
    )


def windsurf(target: Target) -> ClientConfig:
    return _editor_json(target, "windsurf", "Windsurf", "serverUrl", "~/.codeium/windsurf/mcp_config.json")


GENERATORS = {
    "claude-code": claude_code,
    "claude-desktop": claude_desktop,
    "cursor": cursor,
    "vscode": vscode,
    "codex": codex,
    "windsurf": windsurf,
}


def generate(client: str, target: Target) -> list[ClientConfig]:
    """One client's configuration, or every client's for ``all``."""
    _check_name(target.name)
    target = Target(**{**target.__dict__, "url": normalize_url(target.url)})
    names = CLIENTS if client == "all" else (client,)
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise ClientConfigError(f"unknown client {unknown[0]!r}: choose one of {', '.join(CLIENTS)}, all")
    return [GENERATORS[n](target) for n in names]


def render_text(configs: list[ClientConfig]) -> str:
    out: list[str] = []
    for cfg in configs:
        out.append(f"## {cfg.title}\n")
        for snip in cfg.snippets:
            where = "Run:" if snip.kind == "command" else f"File {snip.path}:"
            out.append(f"{where}\n```{snip.language}\n{snip.text.rstrip()}\n```\n")
        out.extend(f"- {note}" for note in cfg.notes)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# --- helpers that touch files -------------------------------------------------------------------


def url_from_state(state_file: Path) -> tuple[str, bool]:
    """The URL Caddy serves, as install recorded it (``url``), and whether its certificate is publicly
    trusted (``tls``: ``acme`` or ``custom``; ``internal`` is Caddy's own CA). Both are written by
    pmcp.lifecycle.install._record; nothing else is guessed at."""
    from pmcp import record
    from pmcp.paths import InstallPaths

    try:
        rec = record.read(InstallPaths.at(state_file.parent))
    except ValueError as exc:
        raise ClientConfigError(
            f"cannot read {state_file}: {exc}", fix="pass --url https://HOST/mcp"
        ) from None
    if rec is None:
        raise ClientConfigError(
            f"no pmcp install at {state_file.parent} (no {state_file.name})",
            fix="run `pmcp install`, pass --prefix DIR of your install, or pass --url https://HOST/mcp",
        )
    url = rec.url
    if not url:
        raise ClientConfigError(
            f"{state_file} records no URL (an install that never finished)",
            fix="re-run `pmcp install`, or pass --url https://HOST/mcp",
        )
    return url, rec.tls in ("acme", "custom")


def pick_token_name(tokens: dict[str, str], wanted: str | None) -> str:
    if wanted:
        if wanted not in tokens:
            known = ", ".join(sorted(tokens)) or "none"
            raise ClientConfigError(
                f"no client token named {wanted!r} (known: {known}); add one with --new-token {wanted}"
            )
        return wanted
    if len(tokens) == 1:
        return next(iter(tokens))
    if not tokens:
        raise ClientConfigError(
            "no client token exists yet: add one with `pmcp client-config --new-token NAME`"
        )
    raise ClientConfigError(
        f"several client tokens ({', '.join(sorted(tokens))}): choose one with --token-name"
    )


def write_private(path: Path, text: str, secret: bool) -> None:
    """Atomic write; 0600 when the text holds a token, else 0644 (a config meant to be shared)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, 0o600 if secret else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_into(existing: str, snippet: Snippet) -> str:
    """Our server's entry added to (or replacing it in) an existing config file; others kept as they are.

    Writing ``-o ~/.cursor/mcp.json`` must not drop the user's other servers.
    """
    if not existing.strip():
        return snippet.text
    if snippet.language == "json":
        try:
            old = json.loads(existing)
        except ValueError as exc:
            raise ClientConfigError(f"the existing file is not JSON ({exc}); fix or move it first") from None
        new = json.loads(snippet.text)
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(old.get(key), dict):
                old[key] = {**old[key], **value}
            elif isinstance(value, list) and isinstance(old.get(key), list):
                ids = {item.get("id") for item in value if isinstance(item, dict)}
                old[key] = [i for i in old[key] if not (isinstance(i, dict) and i.get("id") in ids)] + value
            else:
                old[key] = value
        return _dump(old)
    if snippet.language == "toml":
        try:
            tomllib.loads(existing)
        except tomllib.TOMLDecodeError as exc:
            raise ClientConfigError(f"the existing file is not TOML ({exc}); fix or move it first") from None
        header = snippet.text.splitlines()[0]
        kept: list[str] = []
        skipping = False
        for line in existing.splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                skipping = stripped == header or stripped.startswith(header[:-1] + ".")
            if not skipping:
                kept.append(line)
        body = "\n".join(kept).rstrip()
        return (body + "\n\n" if body else "") + snippet.text
    return snippet.text


@dataclass
class Prepared:
    """Everything ``pmcp client-config`` renders; ``new_token`` is shown once, then never again."""

    configs: list[ClientConfig]
    url: str
    token_name: str
    new_token: str | None = None
    ca_file: str | None = None
    limits: dict[str, Any] | None = None  # the token's own limits, when this run set them

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.url,
            "token_name": self.token_name,
            "clients": [c.to_dict() for c in self.configs],
        }
        if self.limits is not None:
            out["limits"] = self.limits
        if self.ca_file:
            out["ca_file"] = self.ca_file
        if self.new_token:
            out["new_token"] = self.new_token
        return out


def _load_tokens(token_file: Path, required: bool) -> dict[str, str]:
    from pmcp import authtokens

    try:
        return authtokens.load(token_file)
    except FileNotFoundError:
        if required:
            raise ClientConfigError(
                f"no client token file at {token_file}: run `pmcp install`, or add a token with "
                "`pmcp client-config --new-token NAME`"
            ) from None
    except PermissionError:
        if required:
            raise ClientConfigError(f"cannot read {token_file}: {AS_ROOT}") from None
    except authtokens.TokenFileError as exc:
        raise ClientConfigError(f"{token_file}: {exc}") from None
    return {}


def export_ca(
    root_ca: Path, dest: Path, base: Path | None = None, what: str = "Caddy's root certificate"
) -> Path:
    """Copy the server's root certificate (public, 0644) to where the user wants it: Caddy's, or pmcp's own
    CA under the systemd runtime (``what`` names it in errors). ``base``: the trusted directory above the
    container-owned one; from there no symlink is followed and only a PEM certificate is accepted (root
    must not copy a host file a compromised Caddy pointed it to)."""
    from pmcp.files import UnsafeFile, read_certificate

    try:
        if base is not None:
            pem = read_certificate(base, root_ca.relative_to(base)).encode("ascii")
        else:
            pem = root_ca.read_bytes()
    except FileNotFoundError:
        raise ClientConfigError(
            f"{what} is not at {root_ca}: the server creates it on first start (check `pmcp status`), or "
            "the install uses --domain: a publicly trusted certificate needs no export"
        ) from None
    except PermissionError:
        raise ClientConfigError(f"cannot read {root_ca}: {AS_ROOT}") from None
    except UnsafeFile as exc:
        raise ClientConfigError(f"refusing to export {what}: {exc.strerror}") from None
    if b"BEGIN CERTIFICATE" not in pem:
        again = "restart Caddy to recreate it" if "Caddy" in what else "`pmcp install` again recreates it"
        raise ClientConfigError(f"{root_ca} is not a PEM certificate; {again}")
    dest = dest.resolve()
    write_private(dest, pem.decode("ascii"), secret=False)
    return dest


def prepare(
    prefix: str | Path,
    client: str,
    *,
    name: str = "pmcp",
    url: str | None = None,
    token_name: str | None = None,
    show_token: bool = False,
    ca_cert: str | None = None,
    new_token: str | None = None,
    limits: LimitOptions | None = None,
) -> Prepared:
    """Read the install (state, tokens, CA), optionally add a token or set a token's limits, and
    generate the configurations."""
    from pmcp import authtokens
    from pmcp.paths import InstallPaths

    paths = InstallPaths.at(prefix)
    public = False
    if url is None:
        url, public = url_from_state(paths.state_file)
    url = normalize_url(url)
    token_file = paths.client_tokens
    fresh = None
    chosen_limits = None
    if limits is not None and limits.given:
        if not (new_token or token_name):
            raise UsageError(
                "--mode, --scope and --budget set one client token's limits",
                fix="add --new-token NAME (a new token) or --token-name NAME (change an existing one; "
                "its secret stays the same)",
            )
        if not new_token:
            assert token_name is not None
            chosen_limits = _set_limits(paths, token_name, limits)
    if new_token:
        chosen_limits = limits.apply(authtokens.NO_LIMITS, install_mode(paths)) if limits else None
        try:
            fresh = authtokens.add(token_file, new_token, chosen_limits or authtokens.NO_LIMITS)
        except authtokens.TokenFileError as exc:
            raise ClientConfigError(str(exc)) from None
        except PermissionError:
            raise ClientConfigError(f"cannot write {token_file}: {AS_ROOT}") from None
        token_name = new_token
    tokens = {new_token: fresh} if fresh and new_token else _load_tokens(token_file, required=show_token)
    chosen = ""
    if tokens or show_token or token_name:
        chosen = pick_token_name(tokens, token_name)
    own = paths.own_root_ca.is_file()  # the systemd runtime: pmcp's own CA, no Caddy
    root = paths.own_root_ca if own else paths.caddy_root_ca
    what = "pmcp's root certificate" if own else "Caddy's root certificate"
    ca_file = str(export_ca(root, Path(ca_cert), paths.prefix, what)) if ca_cert else None
    target = Target(
        name=name,
        url=url,
        token=tokens[chosen] if show_token else None,
        token_name=chosen,
        token_file=str(token_file),
        ca_file=ca_file,
        public_tls=public,
    )
    return Prepared(
        generate(client, target),
        url,
        chosen,
        new_token=fresh,
        ca_file=ca_file,
        limits=chosen_limits.to_dict() if chosen_limits is not None else None,
    )


@dataclass(frozen=True)
class LimitOptions:
    """``client-config --mode/--scope/--budget`` (checked by pmcp.inputs); None: not given."""

    mode: str | None = None
    scope: str | None = None  # '' removes the scope
    budget: int | None = None

    @property
    def given(self) -> bool:
        return self.mode is not None or self.scope is not None or self.budget is not None

    def apply(self, base: TokenLimits, installed: str | None) -> TokenLimits:
        """``base`` with the given settings replaced; a mode above the install's is refused."""
        from dataclasses import replace

        from pmcp import authtokens

        out = base
        if self.mode is not None:
            modes = authtokens.MODES
            if installed in modes and modes.index(self.mode) > modes.index(installed):
                raise UsageError(
                    f"--mode {self.mode} is above this install's mode ({installed}): a client token "
                    "never gets more than the server may do",
                    fix=f"--mode {installed}{' or lower' if modes.index(installed) else ''}, or first "
                    f"`pmcp install --mode {self.mode}`",
                )
            out = replace(out, mode=self.mode)
        if self.scope is not None:
            tags, pools = authtokens.parse_scope(self.scope) if self.scope else ((), ())
            out = replace(out, tags=tags, pools=pools)
        if self.budget is not None:
            out = replace(out, budget=self.budget)
        return out


def describe_limits(limits: dict[str, Any]) -> str:
    """One line for ``Prepared.limits`` (TokenLimits.to_dict)."""
    scope = limits.get("scope") or {}
    where = []
    if scope.get("tags"):
        where.append("guests tagged " + " or ".join(scope["tags"]))
    if scope.get("pools"):
        where.append("guests in pool " + " or ".join(scope["pools"]))
    budget = limits.get("budget_per_hour")
    per_hour = "the server's default number of" if budget is None else str(budget)
    return (
        f"mode {limits.get('mode') or 'of the install'}; {' or '.join(where) or 'every guest'}; "
        f"{per_hour} destructive actions per hour. The server applies them from the next request."
    )


def install_mode(paths: InstallPaths) -> str | None:
    """The mode install recorded (state.json), or None when it cannot be read (the server still
    takes the lower of the token's and its own)."""
    from pmcp import record

    try:
        rec = record.read(paths)
    except ValueError:
        return None
    if rec is None:
        return None
    # the stack's configuration is what the server runs with (PMCP_MODE); the options what was asked
    mode = (rec.config or {}).get("mode") or (rec.options or {}).get("mode")
    return mode if isinstance(mode, str) else None


def _set_limits(paths: InstallPaths, name: str, limits: LimitOptions) -> TokenLimits:
    from pmcp import authtokens

    token_file = paths.client_tokens
    try:
        entries = authtokens.load_entries(token_file)
    except FileNotFoundError:
        entries = {}
    except PermissionError:
        raise ClientConfigError(f"cannot read {token_file}: {AS_ROOT}") from None
    except authtokens.TokenFileError as exc:
        raise ClientConfigError(f"{token_file}: {exc}") from None
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ClientConfigError(
            f"no client token named {name!r} (known: {known})",
            fix=f"pmcp client-config --new-token {name} with the same options",
        )
    chosen = limits.apply(entries[name].limits, install_mode(paths))
    try:
        authtokens.set_limits(token_file, name, chosen)
    except PermissionError:
        raise ClientConfigError(f"cannot write {token_file}: {AS_ROOT}") from None
    return chosen


def revoke_token(prefix: str | Path, name: str) -> str:
    from pmcp import authtokens
    from pmcp.paths import InstallPaths

    token_file = InstallPaths.at(prefix).client_tokens
    tokens = _load_tokens(token_file, required=True)
    if name not in tokens:
        known = ", ".join(sorted(tokens)) or "none"
        raise ClientConfigError(f"no client token named {name!r} in {token_file} (known: {known})")
    try:
        authtokens.revoke(token_file, name)
    except PermissionError:
        raise ClientConfigError(f"cannot write {token_file}: {AS_ROOT}") from None
    left = "" if len(tokens) > 1 else " No client token is left: add one with --new-token NAME."
    return (
        f"Revoked client token {name!r}. The server re-reads {token_file} when it changes, so requests "
        f"with that token are refused from now on: no restart needed.{left}"
    )


def write_output(prepared: Prepared, output: str | Path, as_json: bool) -> tuple[Path, bool]:
    """Write the configuration to a file: a client's own config file is merged, not overwritten."""
    path = Path(output).expanduser()
    secret = any(c.secret for c in prepared.configs) or bool(prepared.new_token and as_json)
    single = prepared.configs[0].file_snippet if len(prepared.configs) == 1 else None
    if as_json:
        text = _dump(prepared.to_dict())
    elif single is not None:
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        text = merge_into(existing, single)
        secret = secret or (path.exists() and (path.stat().st_mode & 0o077) == 0)
    else:
        text = render_text(prepared.configs)
    write_private(path, text, secret)
    return path, secret
