#!/usr/bin/env python3
"""Benchmark the Proxmox simulator at scale: 5,000 guests on 20 nodes.

Prints a markdown table (median and p95 over N calls, in ms) and the machine it ran on, for
BENCHMARKS.md. Run: ``.venv/bin/python bench/bench_sim.py [--guests 5000] [--nodes 20] [--runs 50]``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pmcp.sim.testing import running_sim


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(conn: http.client.HTTPConnection, path: str, token: str, runs: int, before=None) -> list[float]:
    headers = {"Authorization": f"PVEAPIToken={token}"}
    out = []
    for _ in range(runs):
        if before:
            before()
        t = time.perf_counter()
        conn.request("GET", "/api2/json" + path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        out.append((time.perf_counter() - t) * 1000)
        if resp.status != 200:
            raise SystemExit(f"GET {path}: HTTP {resp.status} {body[:200]!r}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guests", type=int, default=5000)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    with running_sim(nodes=args.nodes, guests=args.guests, seed=1) as sim:
        conn = http.client.HTTPConnection(sim.host, sim.port, timeout=60)
        root = sim.root_token
        # a privilege-separated token limited to one pool: every entry goes through the ACL check
        for method, path, params in [
            (
                "POST",
                "/access/roles",
                {"roleid": "BenchAudit", "privs": "VM.Audit,Sys.Audit,Datastore.Audit"},
            ),
            ("POST", "/access/users", {"userid": "bench@pve"}),
        ]:
            assert sim.request(method, path, params=params)[0] == 200
        _, body = sim.request("POST", "/access/users/bench@pve/token/bench", params={"privsep": 1})
        limited = f"bench@pve!bench={body['data']['value']}"
        for kind, who in (("users", "bench@pve"), ("tokens", "bench@pve!bench")):
            assert (
                sim.request(
                    "PUT", "/access/acl", params={"path": "/pool/lab", "roles": "BenchAudit", kind: who}
                )[0]
                == 200
            )
        changed = sim.state.changed  # a state change (task finished, config edited) drops cached answers

        def touch() -> None:
            with sim.state.lock:
                changed()

        cases = [
            ("GET /version", "/version", root, None),
            ("GET /cluster/resources (root, all types)", "/cluster/resources", root, None),
            ("GET /cluster/resources, after a state change (root)", "/cluster/resources", root, touch),
            ("GET /cluster/resources?type=vm (root)", "/cluster/resources?type=vm", root, None),
            (
                "GET /cluster/resources?type=vm, after a state change",
                "/cluster/resources?type=vm",
                root,
                touch,
            ),
            (
                "GET /cluster/resources?type=vm (privsep token, pool ACL)",
                "/cluster/resources?type=vm",
                limited,
                None,
            ),
            ("GET /nodes/pve1/qemu (root)", "/nodes/pve1/qemu", root, None),
            (
                "GET /nodes/pve1/storage/local-lvm/content (root)",
                "/nodes/pve1/storage/local-lvm/content",
                root,
                None,
            ),
        ]
        rows = []
        for label, path, token, before in cases:
            timed(conn, path, token, 3, before)
            samples = timed(conn, path, token, args.runs, before)
            p95 = statistics.quantiles(samples, n=20)[-1]
            rows.append((label, statistics.median(samples), p95))
    print("## Proxmox simulator (pmcp sim)\n")
    print(f"{args.guests} guests on {args.nodes} nodes, {args.runs} calls each, keep-alive HTTP.")
    print(
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}\n"
    )
    print("| call | median ms | p95 ms |")
    print("| --- | ---: | ---: |")
    for label, med, p95 in rows:
        print(f"| {label} | {med:.1f} | {p95:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
