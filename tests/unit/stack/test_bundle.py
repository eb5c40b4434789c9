"""Bundles: the manifest matches the content, and any damage is refused before anything changes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pmcp.stack import bundle
from pmcp.stack.bundle import BundleError
from tests.support.bundles import tiny_images  # noqa: F401  (fixture)

IMAGES = [
    ("example/a:1", "sha256:" + "a" * 64, b"A" * 300_000),
    ("example/b:2", "sha256:" + "b" * 64, b"B" * 1000),
]


def make(path: Path, images: list[tuple[str, str, bytes]] = IMAGES) -> bundle.Manifest:
    return bundle.write_bundle(path, [(n, i, [data[:1000], data[1000:]]) for n, i, data in images])


def members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def rewrite(path: Path, items: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_written_bundle_verifies_and_describes_its_content(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    manifest = make(out)
    assert bundle.verify_bundle(out) == manifest
    items = members(out)
    assert [name for name, _ in items] == ["manifest.json", "images/0.tar", "images/1.tar"]
    doc = json.loads(items[0][1])
    assert doc["format"] == "pmcp-bundle" and doc["format_version"] == 1 and doc["pmcp_version"]
    for entry, (name, image_id, data) in zip(doc["images"], IMAGES, strict=True):
        assert entry["name"] == name and entry["id"] == image_id
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    digest, filename = (tmp_path / "b.tar.gz.sha256").read_text().split()
    assert filename == "b.tar.gz" and digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no spool left behind


def test_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    make(out)
    items = members(out)
    data = bytearray(items[1][1])
    data[12345] ^= 1
    items[1] = (items[1][0], bytes(data))
    rewrite(out, items)
    with pytest.raises(BundleError, match="example/a:1 does not match its checksum") as err:
        bundle.verify_bundle(out)
    assert "copy the bundle again" in err.value.fix


def test_a_tampered_manifest_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    make(out)
    items = members(out)
    doc = json.loads(items[0][1])
    doc["images"][1]["sha256"] = hashlib.sha256(b"other").hexdigest()
    items[0] = ("manifest.json", json.dumps(doc).encode())
    rewrite(out, items)
    with pytest.raises(BundleError, match="example/b:2 does not match"):
        bundle.verify_bundle(out)


def test_a_truncated_copy_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    make(out)
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(BundleError, match="corrupt or incomplete"):
        bundle.verify_bundle(out)


def test_a_missing_image_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    make(out)
    rewrite(out, members(out)[:2])
    with pytest.raises(BundleError, match="incomplete: missing example/b:2"):
        bundle.verify_bundle(out)


def test_an_extra_member_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    make(out)
    rewrite(out, [*members(out), ("../evil", b"x")])
    with pytest.raises(BundleError, match="unexpected member"):
        bundle.verify_bundle(out)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not gzip at all", "corrupt or incomplete"),
        (gzip.compress(b""), "empty|corrupt"),
    ],
)
def test_garbage_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    out = tmp_path / "b.tar.gz"
    out.write_bytes(content)
    with pytest.raises(BundleError, match=message):
        bundle.verify_bundle(out)


def test_other_archives_and_versions_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    rewrite(out, [("images/0.tar", b"x")])
    with pytest.raises(BundleError, match="not a pmcp bundle"):
        bundle.verify_bundle(out)
    make(out)
    items = members(out)
    doc = json.loads(items[0][1])
    doc["format_version"] = 99
    rewrite(out, [("manifest.json", json.dumps(doc).encode()), *items[1:]])
    with pytest.raises(BundleError, match="format version 99"):
        bundle.verify_bundle(out)
    with pytest.raises(BundleError, match="no bundle at"):
        bundle.verify_bundle(tmp_path / "absent.tar.gz")


def test_default_images_follow_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMCP_PYTHON_BASE_IMAGE", "local/python:3.11")
    monkeypatch.setenv("PMCP_CADDY_IMAGE", "local/caddy:2")
    monkeypatch.setenv("PMCP_PROMETHEUS_IMAGE", "local/prom:3")
    assert bundle.default_images() == ["local/python:3.11", "local/caddy:2"]
    assert bundle.default_images(monitoring=True)[-1] == "local/prom:3"
    assert bundle.default_images(mcp_image="pmcp/mcp-server:1")[0] == "pmcp/mcp-server:1"


@pytest.mark.docker
def test_tampered_bundle_loads_nothing(tmp_path: Path, tiny_images: tuple[Any, list[str]]) -> None:  # noqa: F811
    client, names = tiny_images
    out = tmp_path / "b.tar.gz"
    manifest = bundle.create_bundle(out, names, pull_missing=False, client=client)
    assert manifest.names == names
    items = members(out)
    data = bytearray(items[2][1])
    data[-2000] ^= 0xFF
    items[2] = (items[2][0], bytes(data))
    rewrite(out, items)
    for name in names:
        client.images.remove(name, force=True)
    with pytest.raises(BundleError, match="does not match its checksum"):
        bundle.load_bundle(out, client=client)
    present = {t for image in client.images.list() for t in image.tags}
    assert not present & set(names)  # the first, intact image was not loaded either


@pytest.mark.docker
def test_missing_image_without_pull_is_refused(tmp_path: Path) -> None:
    from tests.support.bundles import docker_client

    client = docker_client()
    with pytest.raises(BundleError, match="not present locally"):
        bundle.create_bundle(tmp_path / "b.tar.gz", ["pmcp-test/absent:0"], pull_missing=False, client=client)
    assert not (tmp_path / "b.tar.gz").exists()


def test_is_bundle_tells_bundles_from_docker_archives(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    make(out)
    assert bundle.is_bundle(out)
    docker_save = tmp_path / "images.tar.gz"
    rewrite(docker_save, [("manifest.json", b'[{"Config": "x.json", "RepoTags": ["a:1"], "Layers": []}]')])
    assert not bundle.is_bundle(docker_save)
    (tmp_path / "junk").write_bytes(b"junk")
    assert not bundle.is_bundle(tmp_path / "junk")
    assert not bundle.is_bundle(tmp_path / "absent")


@pytest.mark.docker
def test_load_tags_images_saved_without_a_name(tmp_path: Path, tiny_images: tuple[Any, list[str]]) -> None:  # noqa: F811
    client, names = tiny_images
    image = client.images.get(names[0])
    out = tmp_path / "b.tar.gz"
    bundle.write_bundle(out, [(names[0], image.id, image.save(named=False))])
    client.images.remove(names[0], force=True)
    assert bundle.load_bundle(out, client=client) == [names[0]]
    assert client.images.get(names[0]).id == image.id
