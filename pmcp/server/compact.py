"""Tool schemas as a model reads them: what pydantic generates, minus the bytes that say nothing.

Every tools/list is sent into the model's context on every conversation; pydantic's schemas repeat a
`title` for every property (the property name again, title-cased) and wrap each optional argument in
`anyOf: [<type>, {"type": "null"}]` with `default: null`, which also buries the description inside the
`anyOf` for constrained types. Measured on this server in admin mode (35 tools): 28.3 KB of names,
descriptions and input schemas before, see BENCHMARKS.md for after.

Only the listing changes: arguments are still validated by the tool's own pydantic model, which accepts
an explicit null for every optional argument, so the advertised schema is never looser than the server.
"""

from __future__ import annotations

from typing import Any

NULL = {"type": "null"}


def compact(schema: Any) -> Any:
    """A copy of a JSON schema without titles and with optional-null unions folded into their type."""
    if isinstance(schema, list):
        return [compact(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {
                name: compact(sub) for name, sub in value.items()
            }  # keys here are names, not keywords
        else:
            out[key] = compact(value)
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) > 2 and NULL in options:  # int | str | None
        out["anyOf"] = [o for o in options if o != NULL]
        if out.get("default", 0) is None:
            del out["default"]
        return out
    if isinstance(options, list) and len(options) == 2 and NULL in options:
        other = options[0] if options[1] == NULL else options[1]
        if isinstance(other, dict) and "$ref" not in other:
            del out["anyOf"]
            merged = {**other, **out}  # the outer description and default win over the inner ones
            if merged.get("default", 0) is None:
                del merged["default"]
            return merged
    return out
