"""state.json: what install recorded (version, options, names, image), so verify/status/update/uninstall
rebuild the same steps without asking again. Never a secret; written atomically."""

from __future__ import annotations

import json
from typing import Any

from pmcp.files import write_json
from pmcp.paths import InstallPaths

SCHEMA = 1


def load(paths: InstallPaths) -> dict[str, Any]:
    """The recorded state, or {} when there is none (not installed, or an install that never got far)."""
    try:
        data = json.loads(paths.state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{paths.state_file} is not valid JSON ({exc}); restore it from backups/") from exc
    return data if isinstance(data, dict) else {}


def save(paths: InstallPaths, data: dict[str, Any]) -> None:
    paths.prefix.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, **{k: v for k, v in data.items() if k != "schema"}}
    write_json(paths.state_file, data)


def update(paths: InstallPaths, **changes: Any) -> dict[str, Any]:
    data = load(paths)
    data.update(changes)
    save(paths, data)
    return data
