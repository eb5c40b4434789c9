"""Derive ``schema_subset.json`` from the official schema: only the endpoints the simulator serves.

Keeps what verification and authorisation need (parameters without descriptions, permissions,
allowtoken), so the one-file build carries a few kilobytes instead of the whole schema.
Run: ``python -m pmcp.sim.make_schema`` (needs ``<repo>/../shared/pve-api``). A test asserts the
committed file equals this script's output, so it cannot drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pmcp.sim.routes import all_routes
from pmcp.sim.schema import SUBSET_FILE

REPO = Path(__file__).resolve().parents[2]
FULL_SCHEMA = REPO.parent / "shared" / "pve-api" / "pve-9.1.json"
PARAM_KEYS = (
    "name",
    "type",
    "optional",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "requires",
)


def _param(p: dict[str, Any]) -> dict[str, Any]:
    out = {k: p[k] for k in PARAM_KEYS if k in p and p[k] is not None}
    if not isinstance(out.get("format"), str):
        out.pop("format", None)
    if p.get("indexed") or p["name"].endswith("[n]"):
        out["indexed"] = True
    return out


def build(schema: dict[str, Any]) -> dict[str, Any]:
    endpoints: dict[str, dict[str, Any]] = {}
    for method, path in all_routes():
        info = schema["endpoints"][path][method]
        perms = {k: v for k, v in info.get("permissions", {}).items() if k in ("check", "raw", "user")}
        endpoints.setdefault(path, {})[method] = {
            "allowtoken": info.get("allowtoken", True),
            "parameters": [_param(p) for p in info["parameters"]],
            "permissions": perms,
        }
    meta = schema["meta"]
    return {
        "source": {
            "file": "pve-9.1.json",
            "pve_docs_version": meta.get("pve_docs_version"),
            "git_commit": meta.get("git_commit"),
        },
        "endpoints": endpoints,
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(build(schema), separators=(",", ":"), sort_keys=True) + "\n"


def main() -> int:
    if not FULL_SCHEMA.exists():
        print(
            f"official schema not found at {FULL_SCHEMA}: put shared/pve-api beside the repo", file=sys.stderr
        )
        return 1
    SUBSET_FILE.write_text(render(json.loads(FULL_SCHEMA.read_text())))
    print(f"wrote {SUBSET_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
