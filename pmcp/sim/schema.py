"""The compact API schema subset: route matching and parameter verification the way PVE does it.

The subset (``schema_subset.json``, made by ``make_schema.py`` from the official schema) ships
inside the one file; the full schema in ``../shared/pve-api`` does not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pmcp.sim.errors import param_error

SUBSET_FILE = Path(__file__).with_name("schema_subset.json")

_INT = re.compile(r"^-?\d+$")
_NUM = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")

_NODE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
# pve-common src/PVE/JSONSchema.pm: "our $CONFIGID_RE = qr/[a-z][a-z0-9_-]+/i;" and parse_id
# (pve-storage-id): m/^[a-z][a-z0-9\-\_\.]*[a-z0-9]$/i -- both case-insensitive.
_CONFIGID = re.compile(r"^[a-z][a-z0-9_-]+$", re.IGNORECASE)
_STORAGEID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.IGNORECASE)
_USERID = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$")
_TOKENID = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+$")
_ROLEID = re.compile(r"^[A-Za-z0-9.\-_]+$")
_GROUPID = re.compile(r"^[A-Za-z0-9.\-_]+$")
_POOLID = re.compile(r"^[A-Za-z0-9\-_]+(/[A-Za-z0-9\-_]+){0,2}$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*$")
_DNS = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)(\.([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?))*$"
)


def _list_of(check: Any, value: str) -> str | None:
    for item in re.split(r"[,;\s]+", value.strip()):
        if item and (msg := check(item)):
            return msg
    return None


def _fmt_node(v: str) -> str | None:
    return None if _NODE.match(v) else "value does not look like a valid node name"


def _fmt_configid(v: str) -> str | None:
    return None if _CONFIGID.match(v) else f"invalid configuration ID '{v}'"


def _fmt_storage(v: str) -> str | None:
    return None if _STORAGEID.match(v) else f"storage ID '{v}' contains illegal characters"


def _fmt_userid(v: str) -> str | None:
    return None if _USERID.match(v) and len(v) <= 64 else f"value '{v}' does not look like a valid user name"


def _fmt_tokenid(v: str) -> str | None:
    return None if _TOKENID.match(v) else f"value '{v}' does not look like a valid token ID"


def _fmt_roleid(v: str) -> str | None:
    return None if _ROLEID.match(v) else f"role name '{v}' contains invalid characters"


def _fmt_groupid(v: str) -> str | None:
    return None if _GROUPID.match(v) else f"group name '{v}' contains invalid characters"


def _fmt_poolid(v: str) -> str | None:
    return None if _POOLID.match(v) else f"pool name '{v}' contains invalid characters"


def _fmt_vmid(v: str) -> str | None:
    return None if _INT.match(v) and 100 <= int(v) <= 999999999 else "value does not look like a valid VM ID"


def _fmt_tag(v: str) -> str | None:
    return None if _TAG.match(v) else f"invalid tag '{v}'"


def _fmt_dns(v: str) -> str | None:
    return None if _DNS.match(v) else "value does not look like a valid DNS name"


def _fmt_priv(v: str) -> str | None:
    from pmcp.sim.privileges import KNOWN

    return None if v in KNOWN else f"invalid privilege '{v}'"


FORMATS: dict[str, Any] = {
    "pve-node": _fmt_node,
    "pve-node-list": lambda v: _list_of(_fmt_node, v),
    "pve-configid": _fmt_configid,
    "pve-configid-list": lambda v: _list_of(_fmt_configid, v),
    "pve-storage-id": _fmt_storage,
    "pve-storage-id-list": lambda v: _list_of(_fmt_storage, v),
    "pve-userid": _fmt_userid,
    "pve-userid-list": lambda v: _list_of(_fmt_userid, v),
    "pve-tokenid-list": lambda v: _list_of(_fmt_tokenid, v),
    "pve-roleid": _fmt_roleid,
    "pve-roleid-list": lambda v: _list_of(_fmt_roleid, v),
    "pve-groupid": _fmt_groupid,
    "pve-groupid-list": lambda v: _list_of(_fmt_groupid, v),
    "pve-poolid": _fmt_poolid,
    "pve-vmid": _fmt_vmid,
    "pve-vmid-list": lambda v: _list_of(_fmt_vmid, v),
    "pve-tag-list": lambda v: _list_of(_fmt_tag, v),
    "dns-name": _fmt_dns,
    "pve-priv-list": lambda v: _list_of(_fmt_priv, v),
}


@dataclass
class Endpoint:
    """One method on one path of the subset, with what verification needs."""

    method: str
    path: str
    allowtoken: bool
    params: dict[str, dict]
    indexed: list[tuple[re.Pattern[str], dict]] = field(default_factory=list)
    permissions: dict = field(default_factory=dict)

    def spec(self, name: str) -> dict | None:
        if name in self.params:
            return self.params[name]
        for pattern, spec in self.indexed:
            if pattern.match(name):
                return spec
        return None


@cache
def load_subset() -> dict:
    return json.loads(SUBSET_FILE.read_text())


@cache
def endpoints() -> dict[tuple[str, str], Endpoint]:
    out: dict[tuple[str, str], Endpoint] = {}
    for path, methods in load_subset()["endpoints"].items():
        for method, info in methods.items():
            params: dict[str, dict] = {}
            indexed: list[tuple[re.Pattern[str], dict]] = []
            for p in info["parameters"]:
                if p.get("indexed") or p["name"].endswith("[n]"):
                    indexed.append((re.compile("^" + re.escape(p["name"][:-3]) + r"\d+$"), p))
                else:
                    params[p["name"]] = p
            out[(method, path)] = Endpoint(
                method, path, info.get("allowtoken", True), params, indexed, info.get("permissions", {})
            )
    return out


def _check_one(spec: dict, raw: Any) -> tuple[Any, str | None]:
    """Convert one raw (string) value to its type and verify it; returns (value, error)."""
    typ = spec.get("type", "string")
    if typ == "array":
        items = raw if isinstance(raw, list) else [raw]
        return [str(i) for i in items], None
    if isinstance(raw, list):
        raw = raw[-1] if typ != "string" else ",".join(str(x) for x in raw)
    if typ == "boolean":
        # pve-common JSONSchema.pm check_type: a JSON boolean, or exactly '1' / '0' (the
        # "true|yes|on" forms are commented out there): "type check ('boolean') failed - got 'true'".
        if isinstance(raw, bool):
            return int(raw), None
        s = str(raw)
        if s in ("1", "0"):
            return int(s), None
        return None, f"type check ('boolean') failed - got '{s}'"
    if typ == "integer":
        s = str(raw)
        if not _INT.match(s):
            return None, f"type check ('integer') failed - got '{s}'"
        value: Any = int(s)
    elif typ == "number":
        s = str(raw)
        if not _NUM.match(s):
            return None, f"type check ('number') failed - got '{s}'"
        value = float(s)
    else:
        value = str(raw)
    if typ in ("integer", "number"):
        if "minimum" in spec and value < spec["minimum"]:
            return None, f"value must have a minimum value of {spec['minimum']}"
        if "maximum" in spec and value > spec["maximum"]:
            return None, f"value must have a maximum value of {spec['maximum']}"
    if typ == "string":
        if "minLength" in spec and len(value) < spec["minLength"]:
            return None, f"value must be at least {spec['minLength']} characters long"
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            return None, f"value may only be {spec['maxLength']} characters long"
    enum = spec.get("enum")
    if enum and str(value) not in [str(e) for e in enum]:
        return None, f"value '{value}' does not have a value in the enumeration '{', '.join(map(str, enum))}'"
    if spec.get("pattern") and typ == "string" and not re.fullmatch(spec["pattern"], value):
        return None, "value does not match the regex pattern"
    fmt = spec.get("format")
    if isinstance(fmt, str) and fmt in FORMATS and typ == "string" and (msg := FORMATS[fmt](value)):
        return None, f"invalid format - {msg}\n"
    return value, None


def verify(ep: Endpoint, raw: dict[str, Any]) -> dict[str, Any]:
    """Verify raw request parameters against the endpoint's schema; raise PVE's 400 on any error."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        spec = ep.spec(name)
        if spec is None:
            errors[name] = (
                "property is not defined in schema and the schema does not allow additional properties"
            )
            continue
        conv, err = _check_one(spec, value)
        if err:
            errors[name] = err
        else:
            out[name] = conv
    for name, spec in ep.params.items():
        if not spec.get("optional", False) and name not in raw and name not in errors:
            errors[name] = "property is missing and it is not optional"
    for name in raw:
        spec = ep.spec(name)
        needed = spec.get("requires") if spec else None
        if isinstance(needed, str) and needed not in raw and needed not in errors:
            errors[needed] = f"missing property - '{name}' requires this property"
    if errors:
        raise param_error(errors)
    return out
