"""The audit log's HMAC chain: how a record is sealed, and how a whole log is proved whole.

A sealed record is one JSON line with ``seq`` first and ``mac`` last::

    {"seq":42,"time":"…","phase":"intent",…,"mac":"<64 hex>"}

``mac = HMAC-SHA256(key, previous mac (hex) + body)``, where ``body`` is the line's bytes before
``,"mac":"``; record 1 follows 64 zeros. The MAC covers the bytes as written, so the written line is
the canonical form: no re-serialization (key order, escapes, float formats) can make a verifier
disagree with the writer, and the writer serializes each record once (one HMAC per record).

What the chain proves, with the key: every record is as the server wrote it (an edit breaks its MAC),
in its place (``seq`` and the MAC of the one before: a deleted, inserted, repeated or reordered line
breaks the sequence), and no line was cut (a line ends with ``"}`` and a newline).

Files, oldest first: ``audit-<UTC time>.jsonl.gz`` (their names sort in time order), then the active
``audit.jsonl``. The chain runs on across them: a rotation starts the new file with a *checkpoint*
record holding the previous record's MAC and the file it follows. The server never deletes a rotated
file (its quota refuses changes instead); an administrator archives the oldest ones. Such a log still
verifies: the oldest file present begins with a checkpoint, itself sealed, which vouches for where its
chain starts; the records before it count as archived (``archived``). Only whole files from the oldest
end can go that way: lines cut from the head of a file, or a file missing in the middle, break the
chain (the next checkpoint names a record that is not there).

Records written by a pmcp older than the chain carry no ``mac``: they are counted (``unchained``) when
they come before the chain's first record, or in its first file within 15 minutes of it (the old server
still answers during the update that brings the chain), and are an error anywhere else. A record left out
because room was short (a refused call, never a change) is counted in the next record's ``dropped``.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hmac
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
MAC_KEY = b',"mac":"'
SUFFIX = len(MAC_KEY) + 64 + 2  # ,"mac":"<64 hex>"}
SEQ_KEY = b'{"seq":'
RESERVED = frozenset({"seq", "mac", "dropped"})
KEY_MIN_BYTES = 32
UPGRADE_WINDOW = timedelta(minutes=15)  # an update's switch and grace period take a minute or two
ACTIVE = "audit.jsonl"


def seal(key: bytes, prev: str, body: bytes) -> str:
    """The MAC of one record's body, chained to the one before (one-shot HMAC: half the time of
    ``hmac.new(...).hexdigest()``)."""
    return hmac.digest(key, prev.encode() + body, "sha256").hex()


def sealed_line(key: bytes, prev: str, seq: int, payload: bytes) -> tuple[bytes, str]:
    """``payload`` is a record's compact JSON object (``{…}``, without seq or mac): the line to
    append (with its newline) and its MAC."""
    inner = payload[1:-1]
    body = SEQ_KEY + str(seq).encode() + (b"," + inner if inner else b"")
    mac = seal(key, prev, body)
    return body + MAC_KEY + mac.encode() + b'"}\n', mac


def split(line: bytes) -> tuple[int, bytes, str] | None:
    """(seq, body, mac) of a sealed line without its newline; None if it is not one."""
    if len(line) < SUFFIX + len(SEQ_KEY) or not line.endswith(b'"}') or not line.startswith(SEQ_KEY):
        return None
    if line[-SUFFIX : -SUFFIX + len(MAC_KEY)] != MAC_KEY:
        return None
    mac = line[-66:-2]
    if not mac.isalnum():  # hex or not is settled by comparing it with the MAC computed
        return None
    body = line[:-SUFFIX]
    end = body.find(b",", len(SEQ_KEY))
    digits = body[len(SEQ_KEY) : end if end >= 0 else len(body)]
    if not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits), body, mac.decode()


def read_key(path: Path) -> bytes:
    """The chain's key: the file's text (``secrets.token_hex(32)`` writes 64 characters). Raises
    ``ValueError`` (with why) for a key too short to be one, ``OSError`` when unreadable."""
    key = path.read_bytes().strip()
    if len(key) < KEY_MIN_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes; an audit key has at least {KEY_MIN_BYTES}")
    return key


def log_files(directory: Path) -> list[Path]:
    """The audit files of a directory, oldest first: the rotated ones by name (UTC time), then the
    active one."""
    rotated = sorted(p for p in directory.glob("audit-*.jsonl.gz") if p.is_file())
    active = directory / ACTIVE
    return rotated + ([active] if active.is_file() else [])


def lines_of(path: Path) -> Iterator[bytes]:
    """The raw lines of an audit file (gzip or plain), newline kept; a damaged gzip stream raises
    ``Damaged``."""
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                yield from fh
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise Damaged(str(exc) or type(exc).__name__) from None
    else:
        with open(path, "rb") as fh:
            yield from fh


class Damaged(Exception):
    """A rotated file's gzip stream is cut short or corrupt."""


@dataclass
class Problem:
    """The first place the chain breaks."""

    kind: str  # edited | missing | reordered | truncated | unchained
    file: str
    line: int
    message: str


@dataclass
class Verification:
    """What a verification found; ``ok`` when the whole chain present holds."""

    ok: bool = True
    records: int = 0
    files: list[str] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    last_mac: str | None = None
    first_time: str | None = None
    last_time: str | None = None
    archived: int = 0  # records before the oldest file present (archived by an administrator)
    unchained: int = 0  # records older than the chain (no mac), all before its first record
    dropped: int = 0  # refused-call records left out for room, as the chain itself counts them
    skipped: int = 0  # older rotated files present but not read (a check of the newest part only)
    problem: Problem | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("last_mac")
        return out

    @property
    def summary(self) -> str:
        if self.problem:
            return f"the audit log does not verify: {self.problem.message}"
        if not self.records:
            return "the audit log holds no sealed record yet" + (
                f" ({self.unchained} older unsealed)" if self.unchained else ""
            )
        text = (
            f"the audit log verifies: {self.records} records (seq {self.first_seq}-{self.last_seq}) "
            f"in {len(self.files)} file(s), {self.first_time} to {self.last_time}"
        )
        if self.skipped:
            text += (
                f"; {self.skipped} older rotated file(s) not read here (`pmcp audit verify` reads them all), "
                f"records 1-{self.archived} are in them or archived"
            )
        elif self.archived:
            text += f"; records 1-{self.archived} were archived (their files are gone)"
        if self.unchained:
            text += (
                f"; {self.unchained} unsealed records (from a pmcp without the chain: before it began, or "
                "from the old server during the update that brought it)"
            )
        if self.dropped:
            text += f"; {self.dropped} refused-call records were left out for room"
        return text


@dataclass
class _Span:
    """What one rotated file added to a verification, kept to skip re-reading it while it is unchanged."""

    stat: tuple[int, ...]
    start: tuple[int | None, str | None]  # the chain's state it was verified from
    end: tuple[int | None, str | None]
    counts: tuple[int, int, int]  # records, dropped, unchained
    begun: tuple[int, int, str | None] | None  # (first seq, archived, first time): the chain began here
    last_time: str | None


class Verifier:
    """Verifies a directory's chain; keeps what it proved of each rotated file (keyed by its inode,
    size and times) so a server answering ``capabilities verify_audit`` re-reads only the active file and
    files that changed. The active file is always read again."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._cache: dict[str, _Span] = {}
        self._on_file: Callable[[str], None] | None = None

    def verify(
        self,
        directory: Path,
        witness: tuple[int, str] | None = None,
        newest: int | None = None,
        on_file: Callable[[str], None] | None = None,
    ) -> Verification:
        """``witness``: the (seq, mac) the caller itself last wrote: a log ending before it was cut.
        ``newest``: read only the active file and that many rotated files before it (each begins with
        a checkpoint, so the chain is checked from there); the older ones are counted in ``skipped``.
        A full quota is about 5 GB of records: minutes to verify, too long for a tool call or for
        ``pmcp verify``, so they check the newest part and ``pmcp audit verify`` reads it all.
        ``on_file(name)`` is called as each file is read (progress).

        Rotated files never change, so they are read first with no lock (and kept); then, holding the
        writers' flock (shared), the active file, so no half-written line or rotation is seen. A server
        waits for that second pass only: at most one 32 MiB file, never a whole log."""
        self._on_file = on_file
        self._verify(directory, None, newest, rotated_only=True)
        with _shared_lock(directory / ACTIVE):
            return self._verify(directory, witness, newest)

    def _verify(
        self,
        directory: Path,
        witness: tuple[int, str] | None,
        newest: int | None,
        rotated_only: bool = False,
    ) -> Verification:
        v = Verification()
        self._seq: int | None = None  # the next seq expected (None: the chain has not begun)
        self._prev: str | None = None
        self._genesis: tuple[str, datetime] | None = None  # file and time of record 1
        files = log_files(directory)
        if newest is not None:
            rotated = len(files) - (1 if files and files[-1].name == ACTIVE else 0)
            v.skipped = max(0, rotated - newest)
            files = files[v.skipped :]
        if rotated_only:
            files = [p for p in files if p.name != ACTIVE]
        v.files = [p.name for p in files]
        seen: set[str] = set()
        for i, path in enumerate(files):
            seen.add(path.name)
            if not self._file(v, path, files[i + 1 :]):
                break
        if rotated_only:
            return v
        for name in set(self._cache) - seen:
            del self._cache[name]
        if v.ok and witness is not None and (v.last_seq or 0) < witness[0]:
            where = files[-1].name if files else ACTIVE
            v.ok = False
            v.problem = Problem(
                "truncated",
                where,
                _count(files[-1]) if files else 0,
                f"{where} ends at record {v.last_seq or 0}, but this server wrote up to record "
                f"{witness[0]}: records were cut from its end",
            )
        return v

    def _file(self, v: Verification, path: Path, later: list[Path]) -> bool:
        stat = _stat(path) if path.name != ACTIVE else None
        start = (self._seq, self._prev)
        hit = self._cache.get(path.name)
        if stat is not None and hit is not None and hit.stat == stat and hit.start == start:
            self._seq, self._prev = hit.end
            v.records += hit.counts[0]
            v.dropped += hit.counts[1]
            v.unchained += hit.counts[2]
            if hit.begun:
                v.first_seq, v.archived, v.first_time = hit.begun
            if hit.counts[0]:
                v.last_time = hit.last_time
                v.last_seq, v.last_mac = (self._seq or 1) - 1, self._prev
            return True
        if self._on_file is not None:
            self._on_file(path.name)
        before = (v.records, v.dropped, v.unchained, v.first_seq)
        ok = self._read(v, path, later)
        if ok and stat is not None:
            began = before[3] is None and v.first_seq is not None
            self._cache[path.name] = _Span(
                stat,
                start,
                (self._seq, self._prev),
                (v.records - before[0], v.dropped - before[1], v.unchained - before[2]),
                (v.first_seq, v.archived, v.first_time) if began else None,  # type: ignore[arg-type]
                v.last_time,
            )
        return ok

    def _read(self, v: Verification, path: Path, later: list[Path]) -> bool:
        name = path.name
        n = 0
        last_body = b""
        try:
            for n, raw in enumerate(lines_of(path), 1):
                if not raw.endswith(b"\n"):
                    return _fail(
                        v, "truncated", name, n, f"line {n} of {name} is cut short (it has no end of line)"
                    )
                line = raw[:-1]
                parts = split(line)
                if parts is None:
                    if _is_record(line) and (self._seq is None or self._upgrading(name, line)):
                        v.unchained += 1
                        continue
                    what = (
                        "a record without a MAC (written by a pmcp older than the chain, after it began)"
                        if _is_record(line)
                        else "not a sealed record (edited or cut)"
                    )
                    return _fail(v, "edited" if not _is_record(line) else "unchained", name, n,
                                 f"line {n} of {name} is {what}")  # fmt: skip
                seq, body, mac = parts
                if self._seq is None and not self._begin(v, seq, body, name, n):
                    return False
                if seq != self._seq:
                    return self._out_of_place(v, seq, name, n, path, later)
                assert self._prev is not None
                if not hmac.compare_digest(seal(self.key, self._prev, body), mac):
                    return _fail(
                        v, "edited", name, n,
                        f"line {n} of {name} (record {seq}) does not match its MAC: it was edited, "
                        "or sealed with another key",
                    )  # fmt: skip
                rec = json.loads(line) if b'"phase":"cut"' in body else None
                if rec is not None and rec.get("phase") == "cut":
                    return _fail(
                        v, "truncated", name, n,
                        f"line {n} of {name}: the server found the log cut when it wrote this record "
                        f"(it had written up to record {rec.get('had_written')}; the file ended at record "
                        f"{seq - 1}): records were removed from its end",
                    )  # fmt: skip
                if b'"dropped":' in body:
                    v.dropped += int(json.loads(line).get("dropped") or 0)
                if v.first_time is None:
                    v.first_time = _time(line)
                last_body = line
                self._prev = mac
                self._seq = seq + 1
                v.records += 1
                v.last_seq, v.last_mac = seq, mac
        except Damaged as exc:
            return _fail(
                v, "truncated", name, n + 1,
                f"{name} is damaged after line {n} (its gzip stream: {exc}): it was cut or altered",
            )  # fmt: skip
        if last_body:
            v.last_time = _time(last_body)
        return True

    def _upgrading(self, name: str, line: bytes) -> bool:
        """An unsealed record just after the chain began, in its first file: during the update that
        brings the chain, the old server (and its standby) still answer calls for a minute or two
        beside the new one. Anywhere else an unsealed record is an error."""
        if self._genesis is None or self._genesis[0] != name:
            return False
        when = _when(_time(line))
        return when is not None and timedelta(0) <= when - self._genesis[1] <= UPGRADE_WINDOW

    def _begin(self, v: Verification, seq: int, body: bytes, name: str, n: int) -> bool:
        """The chain's first record present: record 1, or a checkpoint that says where it starts."""
        if seq == 1:
            self._seq, self._prev = 1, GENESIS
            began = _when(_time(body + b"}"))
            self._genesis = (name, began) if began else None
        else:
            try:
                rec = json.loads(body + b"}")
            except ValueError:
                rec = {}
            prev = rec.get("prev_mac") if rec.get("phase") == "checkpoint" else None
            if not isinstance(prev, str) or len(prev) != 64:
                return _fail(
                    v, "missing", name, n,
                    f"line {n} of {name} is record {seq} and records 1-{seq - 1} are missing: only whole "
                    "rotated files may be archived (the oldest file present begins with a checkpoint)",
                )  # fmt: skip
            self._seq, self._prev = seq, prev
            v.archived = seq - 1
        v.first_seq = seq
        return True

    def _out_of_place(
        self, v: Verification, seq: int, name: str, n: int, path: Path, later: list[Path]
    ) -> bool:
        want = self._seq
        assert want is not None
        if seq < want:
            return _fail(
                v, "reordered", name, n,
                f"line {n} of {name} is record {seq}, which came before; record {want} belongs there "
                "(records were reordered or repeated)",
            )  # fmt: skip
        found = _find(want, path, n, later)
        if found:
            return _fail(
                v, "reordered", name, n,
                f"line {n} of {name} is record {seq} where record {want} belongs; record {want} is at "
                f"line {found[1]} of {found[0]} (records were reordered)",
            )  # fmt: skip
        gap = f"record {want} is" if seq == want + 1 else f"records {want}-{seq - 1} are"
        return _fail(
            v, "missing", name, n,
            f"{gap} missing before line {n} of {name} (lines deleted, or a rotated file from the middle)",
        )  # fmt: skip


@contextlib.contextmanager
def _shared_lock(active: Path) -> Iterator[None]:
    """Hold the writers' flock (shared) while reading: a server writes a whole line and fsyncs it under
    the exclusive lock, and rotates under it. Writers wait for as long as a verification reads."""
    try:
        fd = os.open(active, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _fail(v: Verification, kind: str, name: str, line: int, message: str) -> bool:
    v.ok = False
    v.problem = Problem(kind, name, line, message)
    return False


def _find(seq: int, path: Path, after: int, later: list[Path]) -> tuple[str, int] | None:
    """Where record ``seq`` is, if anywhere after line ``after`` of ``path`` (only on a failure)."""
    for i, p in enumerate([path, *later]):
        try:
            for n, raw in enumerate(lines_of(p), 1):
                if i == 0 and n <= after:
                    continue
                parts = split(raw.rstrip(b"\n"))
                if parts and parts[0] == seq:
                    return p.name, n
        except (Damaged, OSError):
            return None
    return None


def _count(path: Path) -> int:
    try:
        return sum(1 for _ in lines_of(path))
    except (Damaged, OSError):
        return 0


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _time(line: bytes) -> str | None:
    try:
        value = json.loads(line).get("time")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _when(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _stat(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def head_of(directory: Path, tail_bytes: int = 256 * 1024) -> tuple[int, str, bool]:
    """Where the chain goes on: (last seq, its mac, whether the active file lacks a final newline).

    Reads the active file from its end (all of it only when its tail holds no sealed record), else
    the newest rotated file (a rotation interrupted before its checkpoint), else the chain begins.
    Used at start and whenever another server process wrote since this one did."""
    active = directory / ACTIVE
    torn = False
    try:
        with open(active, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            for start in (max(0, size - tail_bytes), 0):
                fh.seek(start)
                chunk = fh.read()
                torn = bool(chunk) and not chunk.endswith(b"\n")
                found = _last_sealed(chunk.splitlines()[1:] if start else chunk.splitlines())
                if found:
                    return found[0], found[1], torn
                if start == 0:
                    break
    except FileNotFoundError:
        pass
    for path in sorted(directory.glob("audit-*.jsonl.gz"), reverse=True):
        try:
            found = _last_sealed(list(lines_of(path)))
        except (Damaged, OSError):
            found = None
        if found:
            return found[0], found[1], torn
    return 0, GENESIS, torn


def _last_sealed(lines: list[bytes]) -> tuple[int, str] | None:
    for raw in reversed(lines):
        parts = split(raw.rstrip(b"\n"))
        if parts:
            return parts[0], parts[2]
    return None
