"""Air-gapped installs: every image the stack needs in one gzip tar, verified before anything changes.

Layout of a bundle (a gzip tar, members in this order)::

    manifest.json          format, pmcp version, created, and per image: name, id, file, sha256, size
    images/0.tar           `docker save` of the first image
    images/1.tar           ...

The manifest comes first so a wrong file is refused after reading a few bytes, and every image's
sha256 is checked over the whole archive before the first image is loaded: a truncated copy or a
flipped bit changes nothing on the host. The Docker SDK is imported lazily (``pmcp --help`` stays light).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pmcp import __version__
from pmcp.files import sha256_file
from pmcp.stack import images as stack_images
from pmcp.steps import StepError

FORMAT = "pmcp-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 1 << 20
MAX_MANIFEST = 1 << 20
COMPRESSLEVEL = 6

Progress = Callable[[str], None]


class BundleError(StepError):
    """The bundle cannot be made, read or loaded; ``fix`` says what to do."""


@dataclass(frozen=True)
class Entry:
    name: str
    id: str
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    pmcp_version: str
    created: str
    images: list[Entry]
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "pmcp_version": self.pmcp_version,
            "created": self.created,
            "images": [asdict(e) for e in self.images],
        }

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.images]

    @classmethod
    def from_dict(cls, doc: Any) -> Manifest:
        """Validate strictly: a bundle is an input from another machine."""
        bad = BundleError("the bundle's manifest.json is malformed", fix=REMAKE)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleError("not a pmcp bundle (manifest.json has no format 'pmcp-bundle')", fix=REMAKE)
        if doc.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"bundle format version {doc.get('format_version')!r} is not {FORMAT_VERSION}",
                fix="make the bundle with the same pmcp version as the one that installs it",
            )
        raw = doc.get("images")
        if not isinstance(raw, list) or not raw:
            raise bad
        entries = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise bad
            try:
                entry = Entry(
                    name=str(item["name"]),
                    id=str(item["id"]),
                    file=str(item["file"]),
                    sha256=str(item["sha256"]),
                    size=int(item["size"]),
                )
            except (KeyError, TypeError, ValueError):
                raise bad from None
            if entry.file != f"images/{i}.tar" or len(entry.sha256) != 64 or entry.size < 0:
                raise bad
            entries.append(entry)
        return cls(str(doc.get("pmcp_version", "")), str(doc.get("created", "")), entries)


REMAKE = "make the bundle again with `pmcp bundle create` and copy it over"
RECOPY = (
    "copy the bundle again (compare `sha256sum` with the .sha256 file written beside it), "
    "or make it again with `pmcp bundle create`"
)


def default_images(monitoring: bool = False, mcp_image: str | None = None) -> list[str]:
    """What an install needs: the Python base (or the built MCP image), Caddy, and Prometheus if asked."""
    names = [mcp_image or stack_images.python_base(), stack_images.caddy()]
    if monitoring:
        names.append(stack_images.prometheus())
    return names


def _report(progress: Progress | None) -> Callable[[str, int, bool], None]:
    """Progress lines at most every 2 s per image, so a multi-GB save does not flood the terminal."""
    last = [time.monotonic()]

    def report(what: str, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if progress and (final or now - last[0] >= 2):
            last[0] = now
            progress(f"{what}: {done / 1e6:.1f} MB{' done' if final else ''}")

    return report


def write_bundle(
    output: str | Path,
    sources: Iterable[tuple[str, str, Iterable[bytes]]],
    progress: Progress | None = None,
) -> Manifest:
    """Write a bundle from (name, image id, `docker save` chunks) triples; atomic, with a .sha256 beside it.

    Each image is spooled to a temporary file first: a tar member needs its size before its data.
    """
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    report = _report(progress)
    created = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".pmcp-bundle-") as tmp:
        entries: list[Entry] = []
        spooled: list[Path] = []
        for i, (name, image_id, chunks) in enumerate(sources):
            path = Path(tmp) / f"{i}.tar"
            digest = hashlib.sha256()
            size = 0
            with path.open("wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    report(f"saving {name}", size)
            report(f"saving {name}", size, True)
            entries.append(Entry(name, image_id, f"images/{i}.tar", digest.hexdigest(), size))
            spooled.append(path)
        if not entries:
            raise BundleError("no image to put in the bundle", fix="name images with --image, or drop it")
        manifest = Manifest(__version__, created.isoformat(), entries)
        partial = Path(tmp) / "bundle.tar.gz"
        with tarfile.open(partial, "w:gz", compresslevel=COMPRESSLEVEL, format=tarfile.PAX_FORMAT) as tar:
            body = (json.dumps(manifest.to_dict(), indent=2) + "\n").encode()
            tar.addfile(_info(MANIFEST, len(body), created), _BytesReader(body))
            for entry, path in zip(entries, spooled, strict=True):
                if progress:
                    progress(f"compressing {entry.name} ({entry.size / 1e6:.1f} MB)")
                with path.open("rb") as fh:
                    tar.addfile(_info(entry.file, entry.size, created), fh)
                path.unlink()
        os.chmod(partial, 0o644)
        os.replace(partial, output)
    digest = sha256_file(output)
    Path(f"{output}.sha256").write_text(f"{digest}  {output.name}\n", encoding="utf-8")
    return manifest


def _info(name: str, size: int, created: datetime) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(created.timestamp())
    return info


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        out = bytes(self._data[self._pos : end])
        self._pos += len(out)
        return out


def _read_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    yield from iter(lambda: fh.read(CHUNK), b"")


READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _corrupt(path: str | Path, exc: BaseException) -> BundleError:
    return BundleError(f"{path} is corrupt or incomplete ({exc})", fix=RECOPY)


def _walk(path: str | Path) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """Stream the archive's members in order (callers turn READ_ERRORS into one clear error)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no bundle at {path}", fix="pass the path of a file made by `pmcp bundle create`")
    with tarfile.open(path, "r|gz") as tar:
        for member in tar:
            yield member, tar.extractfile(member) if member.isfile() else None


def is_bundle(path: str | Path) -> bool:
    """True when the file starts like a pmcp bundle (cheap: reads only the manifest, checks nothing else).

    Lets ``--images ARCHIVE`` accept both a plain `docker save` archive and a bundle.
    """
    try:
        for member, fh in _walk(path):
            if member.name != MANIFEST or fh is None or member.size > MAX_MANIFEST:
                return False
            return json.loads(fh.read()).get("format") == FORMAT
    except (*READ_ERRORS, ValueError, AttributeError, BundleError):
        return False
    return False


def verify_bundle(path: str | Path, progress: Progress | None = None) -> Manifest:
    """Check the whole bundle (structure and every sha256) without changing anything."""
    try:
        return _verify(path, progress)
    except READ_ERRORS as exc:
        raise _corrupt(path, exc) from None


def _verify(path: str | Path, progress: Progress | None) -> Manifest:
    report = _report(progress)
    manifest: Manifest | None = None
    seen: set[str] = set()
    for member, fh in _walk(path):
        if manifest is None:
            if member.name != MANIFEST or fh is None or member.size > MAX_MANIFEST:
                raise BundleError(
                    f"{path} is not a pmcp bundle (it does not start with {MANIFEST})", fix=REMAKE
                )
            try:
                manifest = Manifest.from_dict(json.loads(fh.read()))
            except ValueError:
                raise BundleError(f"{path}: {MANIFEST} is not JSON", fix=REMAKE) from None
            expected = {e.file: e for e in manifest.images}
            continue
        entry = expected.get(member.name)
        if entry is None or fh is None or member.name in seen:
            raise BundleError(f"{path} holds an unexpected member {member.name!r}", fix=REMAKE)
        digest = hashlib.sha256()
        size = 0
        for chunk in _read_chunks(fh):
            digest.update(chunk)
            size += len(chunk)
            report(f"verifying {entry.name}", size)
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise BundleError(
                f"{path}: the image {entry.name} does not match its checksum in {MANIFEST}", fix=RECOPY
            )
        seen.add(member.name)
    if manifest is None:
        raise BundleError(f"{path} is empty", fix=RECOPY)
    missing = [e.name for e in manifest.images if e.file not in seen]
    if missing:
        raise BundleError(f"{path} is incomplete: missing {', '.join(missing)}", fix=RECOPY)
    return manifest


def _docker(client: Any = None) -> Any:
    if client is not None:
        return client
    import docker
    from docker.errors import DockerException

    try:
        found = docker.from_env()
        found.ping()
    except DockerException as exc:
        raise BundleError(
            f"cannot reach the Docker engine ({exc})",
            fix="start it (`systemctl start docker`) or point DOCKER_HOST at it",
        ) from None
    return found


def _get_or_pull(client: Any, name: str, pull_missing: bool, progress: Progress | None) -> Any:
    from docker.errors import APIError, ImageNotFound

    try:
        return client.images.get(name)
    except ImageNotFound:
        pass
    if not pull_missing:
        raise BundleError(
            f"the image {name} is not present locally", fix=f"run `docker pull {name}`, or allow pulls"
        )
    if progress:
        progress(f"pulling {name} (not present locally)")
    try:
        return client.images.pull(name)
    except APIError as exc:
        raise BundleError(
            f"cannot pull {name} ({exc.explanation or exc})",
            fix=f"check the registry is reachable (`docker pull {name}`), or choose images with --image",
        ) from None


def create_bundle(
    output: str | Path,
    images: list[str],
    pull_missing: bool = True,
    progress: Progress | None = None,
    client: Any = None,
) -> Manifest:
    """Save the named images (taken locally; pulled only when missing) into one verified bundle."""
    client = _docker(client)
    found = [(name, _get_or_pull(client, name, pull_missing, progress)) for name in images]

    def sources() -> Iterator[tuple[str, str, Iterable[bytes]]]:
        for name, image in found:
            named = name if name in image.tags else (image.tags[0] if image.tags else False)
            yield name, image.id, image.save(chunk_size=CHUNK, named=named)

    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        return write_bundle(output, sources(), progress)
    except (DockerException, RequestException) as exc:
        raise BundleError(f"saving the images failed ({exc})", fix="check the engine (docker info)") from None
    except OSError as exc:
        raise BundleError(
            f"cannot write {output} ({exc.strerror or exc})",
            fix="write where the directory exists and has room for about twice the images' size (-o FILE)",
        ) from None


def _load_stream(fh: IO[bytes], entry: Entry, report: Callable[[str, int, bool], None]) -> Iterator[bytes]:
    """Feed `docker load` while checking the bytes again (the file could change after verification)."""
    digest = hashlib.sha256()
    size = 0
    for chunk in _read_chunks(fh):
        digest.update(chunk)
        size += len(chunk)
        report(f"loading {entry.name}", size)
        yield chunk
    if digest.hexdigest() != entry.sha256:
        raise BundleError(f"the image {entry.name} changed while it was loaded", fix=RECOPY)


def load_bundle(
    path: str | Path, progress: Progress | None = None, client: Any = None, manifest: Manifest | None = None
) -> list[str]:
    """Verify the whole bundle, then load its images into the engine; returns the loaded image names.

    Pass the ``manifest`` that ``verify_bundle`` returned to skip the second full read (the bytes are
    hashed again while they stream to the engine either way).
    """
    from docker.errors import APIError, ImageNotFound
    from docker.utils import parse_repository_tag

    manifest = manifest or verify_bundle(path, progress)
    client = _docker(client)
    report = _report(progress)
    by_file = {e.file: e for e in manifest.images}
    try:
        for member, fh in _walk(path):
            entry = by_file.get(member.name)
            if entry is None or fh is None:
                continue
            try:
                client.images.load(_load_stream(fh, entry, report))
            except APIError as exc:
                raise BundleError(
                    f"Docker refused the image {entry.name} ({exc.explanation or exc})",
                    fix="check the engine's free disk space (`docker system df`) and its log",
                ) from None
            report(f"loading {entry.name}", entry.size, True)
    except READ_ERRORS as exc:
        raise _corrupt(path, exc) from None
    loaded = []
    for entry in manifest.images:
        try:
            image = client.images.get(entry.id)
        except ImageNotFound:
            raise BundleError(f"{entry.name} is not in the engine after loading", fix=REMAKE) from None
        if entry.name not in image.tags and "@" not in entry.name and not entry.name.startswith("sha256:"):
            repo, tag = parse_repository_tag(entry.name)
            image.tag(repo, tag or "latest")
        loaded.append(entry.name)
    return loaded


def build_mcp_image(progress: Progress | None = None, client: Any = None) -> str:
    """Build the MCP image (the Python base plus the running pmcp file) here, and return its tag.

    The tag names the file's sha256, so an install run by the same file finds the image present and
    needs no base image and no build on the air-gapped host.
    """
    try:
        from pmcp.stack import engine, render
    except ImportError as exc:  # pragma: no cover - both ship with pmcp
        raise BundleError("this pmcp cannot build the MCP image", fix="drop --with-mcp-image") from exc
    pmcp_file = engine.self_file()
    if pmcp_file is None:
        raise BundleError(
            "--with-mcp-image needs the one-file pmcp (the zipapp), not a source checkout",
            fix="run `make dist`, then `./dist/pmcp bundle create --with-mcp-image`",
        )
    client = _docker(client)
    digest = engine.file_digest(pmcp_file)
    base = stack_images.python_base()
    tag = stack_images.mcp_image_for(digest, base)
    if engine.image_present(client, tag):
        return tag
    if progress:
        progress(f"building {tag} from {base} and {pmcp_file}")
    with tempfile.TemporaryDirectory(prefix="pmcp-image-") as context:
        cfg = render.StackConfig(base_image=base, digest=digest)
        Path(context, "Dockerfile").write_text(render.dockerfile_text(cfg), encoding="utf-8")
        engine.build_mcp_image(client, Path(context), tag, base, pmcp_file)
    return tag
