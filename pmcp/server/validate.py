"""Argument formats from the Proxmox API schema, checked before any request is made.

Every value that reaches an API path goes through one of these checks and is then formatted by
``api_path`` (percent-encoded, one segment each), so a client string is never pasted into a URL:
``node="../access/users"`` fails ``pve-node`` here and no request is sent.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

# PVE::JSONSchema formats (pve-common), restated for Python `re`.
NODE_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")  # pve-node
STORAGE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9._-]{0,62}[a-zA-Z0-9]$")  # pve-storage-id
CONFIGID_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{1,39}$")  # pve-configid, snapshot names (maxLength 40)
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.+-]{0,63}$")  # one tag of pve-tag-list
POOL_RE = re.compile(r"^[a-zA-Z0-9._-]{1,64}$")  # pve-poolid
UPID_RE = re.compile(
    r"^UPID:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:[0-9A-Fa-f]{8}"
    r":[^:\s]{1,64}:[^:\s]{0,64}:[^:\s]{1,128}:$"
)
VMID_MIN, VMID_MAX = 100, 999_999_999
MAX_DESCRIPTION = 8192  # the schema's maxLength for guest descriptions

# JSON-schema patterns published in the tools' inputSchema (same rules as above).
NODE_PATTERN = NODE_RE.pattern
STORAGE_PATTERN = STORAGE_RE.pattern
SNAPNAME_PATTERN = CONFIGID_RE.pattern
UPID_PATTERN = UPID_RE.pattern
TAG_PATTERN = TAG_RE.pattern
POOL_PATTERN = POOL_RE.pattern


class InvalidArgument(ValueError):
    """A value does not match its Proxmox format; the message names the field and the rule."""


def _check(value: object, regex: re.Pattern[str], field: str, rule: str) -> str:
    if not isinstance(value, str) or len(value) > 256 or not regex.fullmatch(value):
        shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
        raise InvalidArgument(f"{field}: {shown} is not a valid {rule}")
    return value


def node(value: object) -> str:
    return _check(value, NODE_RE, "node", "node name (letters, digits and '-')")


def storage(value: object) -> str:
    return _check(value, STORAGE_RE, "storage", "storage id (pve-storage-id)")


def snapname(value: object) -> str:
    return _check(
        value, CONFIGID_RE, "snapshot", "snapshot name (a letter, then letters, digits, '_' or '-')"
    )


def upid(value: object) -> str:
    return _check(value, UPID_RE, "upid", "task id (UPID:node:...:)")


def tag(value: object) -> str:
    return _check(value, TAG_RE, "tag", "tag (letters, digits, '_', '-', '+', '.')")


def pool(value: object) -> str:
    return _check(value, POOL_RE, "pool", "pool id")


def vmid(value: object) -> int:
    """Accept an int (or a string of digits, as models sometimes send) in the schema's range."""
    if isinstance(value, bool):
        raise InvalidArgument("vmid: expected a number")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        value = int(value)
    if not isinstance(value, int) or not VMID_MIN <= value <= VMID_MAX:
        raise InvalidArgument(f"vmid: must be a whole number from {VMID_MIN} to {VMID_MAX}")
    return value


def upid_node(value: str) -> str:
    """The node a task runs on, read from its (already validated) UPID."""
    return upid(value).split(":")[1]


def tags(values: list[str]) -> str:
    """Format a tag list the way the API takes it (``;``-separated), each tag validated."""
    return ";".join(tag(v) for v in values)


def description(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION or "\x00" in value:
        raise InvalidArgument(f"description: text of at most {MAX_DESCRIPTION} characters, no NUL bytes")
    return value


_NOTES_VAR = re.compile(r"\{\{([^\s{}]+)\}\}")
NOTES_VARS = ("cluster", "guestname", "node", "vmid")


def notes_template(value: object) -> str:
    """Backup notes as vzdump's ``notes-template`` takes them (pve-manager PVE/VZDump.pm
    $verify_notes_template): one line, so a line break is written ``\\n`` and a backslash ``\\\\``;
    ``{{...}}`` only for the four variables it fills in."""
    text = description(value)
    unknown = sorted({m.group(1) for m in _NOTES_VAR.finditer(text)} - set(NOTES_VARS))
    if unknown:
        raise InvalidArgument(
            f"notes: unknown variable(s) {', '.join(unknown)}; vzdump fills in only "
            + ", ".join("{{" + v + "}}" for v in NOTES_VARS)
        )
    escaped = text.replace("\\", "\\\\").replace("\r\n", "\n").replace("\n", "\\n")
    if len(escaped) > 1024:  # the schema's maxLength for notes-template
        raise InvalidArgument("notes: at most 1024 characters (line breaks and backslashes count twice)")
    return escaped


def api_path(*segments: str | int) -> str:
    """Join already-validated segments into an API path, each percent-encoded as one segment."""
    out = []
    for seg in segments:
        text = str(seg)
        if not text or text in (".", "..") or "\x00" in text:
            raise InvalidArgument(f"refusing path segment {text[:20]!r}")
        out.append(quote(text, safe=""))
    return "/" + "/".join(out)


def plain_errors(errors: list[dict[str, Any]]) -> str:
    """pydantic's argument errors in the model's terms: `limit: must be at least 1` in place of
    `1 validation error for list_guestsArguments ... Input should be greater than or equal to 1
    [type=greater_than_equal, input_value=0, input_type=int] For further information visit ...`."""
    out = []
    for e in errors[:5]:
        field = ".".join(str(p) for p in e.get("loc", ()) if p not in ("function-before", "function-after"))
        ctx, kind = e.get("ctx") or {}, str(e.get("type", ""))
        words = {
            "missing": "is required",
            "greater_than_equal": f"must be at least {ctx.get('ge')}",
            "less_than_equal": f"must be at most {ctx.get('le')}",
            "string_too_long": f"must be at most {ctx.get('max_length')} characters",
            "too_long": f"must have at most {ctx.get('max_length')} items",
            "string_pattern_mismatch": f"has the wrong format (it must match {ctx.get('pattern')})",
            "literal_error": f"must be one of {ctx.get('expected')}",
            "enum": f"must be one of {ctx.get('expected')}",
            "bool_type": "must be the JSON boolean true or false",
            "bool_parsing": "must be the JSON boolean true or false",
            "int_parsing": "must be a whole number",
            "int_type": "must be a whole number",
            "int_from_float": "must be a whole number",
            "string_type": "must be a text string",
            "list_type": "must be a list",
        }.get(kind)
        if words is None:
            words = str(e.get("msg", "is not valid")).replace("Input should be", "must be")
        out.append(f"{field or 'arguments'}: {words}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(out) + more
