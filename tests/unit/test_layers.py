"""The layers in ARCHITECTURE.md hold: import-linter's contracts (pyproject.toml) run as part of the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = Path(sys.executable).with_name("lint-imports")
    path = str(found) if found.exists() else shutil.which("lint-imports")
    assert path, "lint-imports is missing: `make dev` installs import-linter (the dev extra)"
    return path


def test_import_contracts_are_kept():
    proc = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_a_wrong_way_import_is_caught(tmp_path):
    """The check can fail: a copy of the package where a foundation imports the CLI breaks a contract."""
    shutil.copytree(ROOT / "pmcp", tmp_path / "pmcp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    steps = tmp_path / "pmcp" / "steps.py"
    steps.write_text(steps.read_text(encoding="utf-8") + "\nimport pmcp.cli  # noqa\n", encoding="utf-8")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cmd = [_lint_imports(), "--no-cache"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout
