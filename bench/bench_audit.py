"""The audit log's cost per call, before and after the HMAC chain, and what verifying it costs.

1. A change call writes two records (intent, outcome). Measured per record, side by side in one run,
   interleaved rounds: the audit log of ``--before`` (default: the commit before the chain, read with
   ``git show``) and this tree's, both fsyncing into the same temporary directory; then both again with
   ``os.fsync`` made a no-op, which leaves the CPU path the chain changed (one HMAC-SHA256, an flock, an
   fstat per record).
2. Verification: ``pmcp audit verify`` of a log with full default-size files (32 MiB, ~100k records
   each): a cold verification, and ``audit_status``'s second one, which re-reads only the active file.

Run: .venv/bin/python bench/bench_audit.py [--records 2000] [--before REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmcp.server import audit as after  # noqa: E402
from pmcp.server.auditchain import Verifier  # noqa: E402

KEY = b"b" * 64
ARGS = {"vmid": 100, "name": "web-1", "confirm": True, "description": "nightly maintenance window"}


def before_module(rev: str) -> ModuleType | None:
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:pmcp/server/audit.py"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "audit_before.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("audit_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def per_record(make, records: int) -> float:
    """Microseconds per record of ``records // 2`` change calls (intent + outcome)."""
    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        log = make(Path(d) / "audit.jsonl")
        started = time.perf_counter()
        for i in range(records // 2):
            cid = log.intent("claude", "start_guest", "change", ARGS | {"vmid": 100 + i}, "192.0.2.1")
            log.outcome(cid, "claude", "start_guest", "ok", "UPID:pve1:0001:task")
        return (time.perf_counter() - started) / records * 1e6


def write_cost(before: ModuleType | None, records: int, rounds: int = 5) -> list[tuple[str, float, float]]:
    makers = {"after (chain)": lambda p: after.AuditLog(p, key=KEY, min_free=0)}
    if before is not None:
        makers = {"before": lambda p: before.AuditLog(p, min_free=0)} | makers
    rows = []
    for fsync in (True, False):
        real = os.fsync
        if not fsync:
            os.fsync = lambda fd: None  # type: ignore[assignment]
        try:
            times: dict[str, list[float]] = {name: [] for name in makers}
            for _ in range(rounds):
                for name, make in makers.items():
                    times[name].append(per_record(make, records if fsync else records * 10))
        finally:
            os.fsync = real
        for name, values in times.items():
            rows.append(
                (f"{name}, {'fsync' if fsync else 'no fsync (CPU path)'}", statistics.median(values), 0)
            )
    return rows


def verify_cost(files: int) -> tuple[int, float, float, float]:
    real = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]  # only to write the log fast
    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        try:
            log = after.AuditLog(Path(d) / "audit.jsonl", key=KEY, min_free=0, max_bytes=2 * 1024**3)
            while len(list(Path(d).glob("audit-*.jsonl.gz"))) < files:
                for i in range(5000):
                    cid = log.intent("claude", "start_guest", "change", ARGS | {"vmid": 100 + i})
                    log.outcome(cid, "claude", "start_guest", "ok")
        finally:
            os.fsync = real
        size = sum(p.stat().st_size for p in Path(d).glob("audit*"))
        verifier = Verifier(KEY)
        started = time.perf_counter()
        v = verifier.verify(Path(d))
        cold = time.perf_counter() - started
        assert v.ok, v.problem
        started = time.perf_counter()
        assert verifier.verify(Path(d)).ok
        warm = time.perf_counter() - started
        return v.records, size / 1024**2, cold, warm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--before", default="11477f5")
    parser.add_argument("--files", type=int, default=3, help="full rotated files in the verified log")
    a = parser.parse_args()
    before = before_module(a.before)
    print("## Audit log: cost per record, and verification (bench_audit.py)\n")
    print(
        f"Per record of {a.records // 2} change calls (intent + outcome), median of 5 interleaved rounds; "
        f"'before' is pmcp/server/audit.py at {a.before if before else '(not available)'}.\n"
    )
    print("| audit log | µs per record |\n| --- | ---: |")
    for name, us, _ in write_cost(before, a.records):
        print(f"| {name} | {us:.1f} |")
    records, mib, cold, warm = verify_cost(a.files)
    print(
        f"\nVerifying {records} records ({a.files} full 32 MiB files rotated into gzip, plus the active one; "
        f"{mib:.1f} MiB on disk): cold {cold:.2f} s ({records / cold / 1000:.0f}k records/s); again with "
        f"the rotated files unchanged (what `audit_status` does on its next call) {warm:.2f} s.\n"
    )


if __name__ == "__main__":
    main()
