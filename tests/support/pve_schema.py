"""Calls checked against the official Proxmox VE API schemas (../shared/pve-api, 8.4 and 9.1):
the method on the path, and every parameter name sent (query or body) defined for it there."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "pve-api"
VERSIONS = ("8.4", "9.1")


@cache
def schema(version: str) -> dict[str, Any]:
    path = SCHEMA_DIR / f"pve-{version}.json"
    assert path.exists(), f"the official PVE API schema is missing at {path}: put shared/ beside the clone"
    return json.loads(path.read_text())


@cache
def _templates(version: str) -> list[tuple[int, re.Pattern[str], str]]:
    """Templates, the most literal first: /cluster/firewall/options wins over /cluster/firewall/{x}."""
    out = []
    for template in schema(version)["endpoints"]:
        rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        out.append((-template.count("{"), rx, template))
    return [(n, rx, t) for n, rx, t in sorted(out, key=lambda x: x[0], reverse=True)]


def endpoint(version: str, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """(template, method info) of the endpoint a concrete call reaches, or None."""
    endpoints = schema(version)["endpoints"]
    for _, rx, template in _templates(version):
        if rx.match(path) and method in endpoints[template]:
            return template, endpoints[template][method]
    return None


def _param_names(info: dict[str, Any]) -> tuple[set[str], list[re.Pattern[str]]]:
    plain, indexed = set(), []
    for p in info.get("parameters") or []:
        name = p["name"]
        if name.endswith("[n]"):
            indexed.append(re.compile("^" + re.escape(name[:-3]) + r"\d+$"))
        else:
            plain.add(name)
    return plain, indexed


def problems(
    calls: Iterable[tuple[str, str, Iterable[str]]], versions: Iterable[str] = VERSIONS
) -> list[str]:
    """Every (method, path, parameter names) that either schema does not accept, explained."""
    out = []
    for method, path, names in sorted({(m, p, tuple(sorted(n))) for m, p, n in calls}):
        for version in versions:
            hit = endpoint(version, method, path)
            if hit is None:
                out.append(f"PVE {version}: {method} {path} does not exist")
                continue
            template, info = hit
            plain, indexed = _param_names(info)
            unknown = [n for n in names if n not in plain and not any(rx.match(n) for rx in indexed)]
            if unknown:
                out.append(f"PVE {version}: {method} {template} has no parameter {', '.join(unknown)}")
    return out
