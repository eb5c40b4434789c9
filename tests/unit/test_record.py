"""state.json: typed, versioned, migrated; a newer file is refused, unknown keys survive a rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmcp import record
from pmcp.errors import ExitCode, NotReady
from pmcp.paths import InstallPaths


def write(tmp_path: Path, data: dict) -> InstallPaths:
    paths = InstallPaths.at(tmp_path)
    paths.state_file.write_text(json.dumps(data))
    return paths


@pytest.mark.parametrize(
    ("config", "url", "tls"),
    [
        ({"public_names": ["192.0.2.10"], "https_port": 8443}, "https://192.0.2.10:8443/mcp", "internal"),
        ({"domain": "pve.example.com", "public_names": ["x"]}, "https://pve.example.com/mcp", "acme"),
        ({"public_names": ["2001:db8::1"], "tls_cert": "/c.pem"}, "https://[2001:db8::1]/mcp", "custom"),
    ],
)  # fmt: skip
def test_a_schema_1_file_gets_url_and_tls(tmp_path: Path, config: dict, url: str, tls: str) -> None:
    paths = write(tmp_path, {"schema": 1, "config": config, "project": "p"})
    rec = record.read(paths)
    assert rec is not None and (rec.schema, rec.url, rec.tls, rec.project) == (record.SCHEMA, url, tls, "p")
    assert json.loads(paths.state_file.read_text())["schema"] == 1  # reading never rewrites


def test_the_migrated_url_is_what_install_renders(tmp_path: Path) -> None:
    from pmcp.stack.render import StackConfig

    cfg = StackConfig(public_names=["2001:db8::1"], https_port=9443)
    paths = write(tmp_path, {"config": cfg.to_dict()})  # no schema at all: the oldest files
    assert record.read(paths).url == cfg.url  # type: ignore[union-attr]


def test_a_newer_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    paths = write(tmp_path, {"schema": record.SCHEMA + 1, "url": "https://x/mcp"})
    with pytest.raises(NotReady, match="newer than this pmcp understands") as err:
        record.load(paths)
    assert "newer pmcp" in err.value.fix and err.value.exit_code == ExitCode.NOT_READY


def test_unknown_keys_survive_a_round_trip(tmp_path: Path) -> None:
    paths = write(tmp_path, {"schema": record.SCHEMA, "url": "https://x/mcp", "future_key": {"a": 1}})
    rec = record.read(paths)
    assert rec is not None and rec.extra == {"future_key": {"a": 1}}
    rec.node = "pve1"
    record.save(paths, rec)
    back = json.loads(paths.state_file.read_text())
    assert back["future_key"] == {"a": 1} and back["node"] == "pve1" and back["schema"] == record.SCHEMA


def test_nothing_recorded_is_none(tmp_path: Path) -> None:
    assert record.read(InstallPaths.at(tmp_path)) is None


def test_mid_install_state_already_has_the_url(tmp_path: Path) -> None:
    """The stack step records ``config`` before install records ``url`` at its end: the client-config
    step in between must see the URL (else a first install writes no client configuration)."""
    from pmcp.stack.render import StackConfig

    cfg = StackConfig(public_names=["pve.lan"], https_port=8443)
    paths = InstallPaths.at(tmp_path)
    record.update(paths, config=cfg.to_dict(), project="p")
    assert record.read(paths).url == cfg.url and record.read(paths).tls == "internal"  # type: ignore[union-attr]
