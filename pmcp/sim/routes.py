"""The simulator's route table: which handler answers which (method, schema path).

Handlers register with ``@route("GET", "/nodes/{node}/qemu")``; the path is spelled exactly as in
the official schema so conformance can be tested by lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

Handler = Callable[..., Any]

ROUTES: dict[tuple[str, str], Handler] = {}
_exact: dict[tuple[str, str], str] = {}
_templated: list[tuple[str, re.Pattern[str], str, list[str]]] = []


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        key = (method, path)
        if key in ROUTES:
            raise RuntimeError(f"route registered twice: {method} {path}")
        ROUTES[key] = fn
        names = re.findall(r"\{(\w+)\}", path)
        if names:
            pattern = re.sub(r"\\\{\w+\\\}", "([^/]+)", re.escape(path))
            if path.endswith("{volume}"):  # volume IDs contain '/' (local:backup/vzdump-...)
                pattern = pattern[: -len("([^/]+)")] + "(.+)"
            rx = re.compile("^" + pattern + "$")
            _templated.append((method, rx, path, names))
            _templated.sort(key=lambda t: t[2].count("{"))
        else:
            _exact[key] = path
        return fn

    return register


def match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """Find the schema path a request path matches, with its path parameters (URL-decoded)."""
    if (method, path) in _exact:
        return path, {}
    for m, rx, template, names in _templated:
        if m == method and (hit := rx.match(path)):
            return template, {n: unquote(v) for n, v in zip(names, hit.groups(), strict=True)}
    return None


def path_exists(path: str) -> bool:
    """Whether any method serves this path (PVE answers 501 for a wrong method, as for unknown paths)."""
    return any(match(m, path) for m in ("GET", "POST", "PUT", "DELETE"))


def all_routes() -> list[tuple[str, str]]:
    _load_handlers()
    return sorted(ROUTES, key=lambda k: (k[1], ("GET", "POST", "PUT", "DELETE").index(k[0])))


def _load_handlers() -> None:
    from pmcp.sim import api  # noqa: F401  (registers every handler)
