"""One token floods the server with sessions: can another client still get in, and what does it cost?

Issue 11, item 6. The simulator and ``pmcp serve`` run as separate processes (as deployed); one
client token sends N ``initialize`` requests (each opens a 2025-11-era session it never closes), then
a second token does one handshake. Measured side by side in one run:

- ``before``: the server of an older tree (``--before DIR``, e.g. ``git archive main``), if given;
- ``after, defaults``: this tree with its default limits;
- ``after, rates off``: this tree with ``PMCP_RATE_*=0``, so only the per-token session cap bounds it.

Reported: the flood's answers by status, its duration, the server's RSS before and after (from
/proc), and the second token's status.

Run: .venv/bin/python bench/bench_limits.py [--sessions 10000] [--before /tmp/pmcp-main]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmcp import authtokens  # noqa: E402
from pmcp.demo import free_port  # noqa: E402
from pmcp.sim.state import DEFAULT_ROOT_TOKEN, parse_token  # noqa: E402
from tests.support.mcp_raw import initialize  # noqa: E402

USER, TOKEN_NAME, SECRET = parse_token(DEFAULT_ROOT_TOKEN)
INIT = initialize("b")
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.communicate()[1][-2000:])
        try:
            httpx2.get(url, timeout=2)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def measure(src: Path, sim_url: str, sessions: int, extra: dict[str, str], work: Path) -> dict[str, object]:
    work.mkdir(parents=True)
    (work / "secret").write_text(SECRET)
    tokens = work / "tokens"
    flood, other = authtokens.add(tokens, "flood"), authtokens.add(tokens, "other")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMCP_", "PROXMOX_"))} | {
        "PROXMOX_URL": sim_url,
        "PROXMOX_TOKEN_ID": f"{USER}!{TOKEN_NAME}",
        "PROXMOX_TOKEN_SECRET_FILE": str(work / "secret"),
        "PMCP_AUTH_TOKEN_FILE": str(tokens),
        "PYTHONPATH": str(src),
    }
    args = [sys.executable, "-m", "pmcp", "serve", "--port", str(port)]
    log = (work / "server.log").open("w")  # a pipe nobody reads would fill and block the server
    proc = subprocess.Popen(args, cwd=src, env=env | extra, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_up(f"http://127.0.0.1:{port}/health", proc)
        body = json.dumps(INIT)
        with httpx2.Client(timeout=30) as http:
            http.post(url, content=body, headers=HEADERS | {"Authorization": f"Bearer {other}"})  # warm-up
            rss0 = rss_mib(proc.pid)
            codes: collections.Counter[int] = collections.Counter()
            t0 = time.perf_counter()
            for i in range(sessions):
                if i % 1000 == 0:
                    print(f"{work.name}: {i} sessions, {dict(codes)}", file=sys.stderr)
                codes[
                    http.post(
                        url, content=body, headers=HEADERS | {"Authorization": f"Bearer {flood}"}
                    ).status_code
                ] += 1
            took = time.perf_counter() - t0
            rss1 = rss_mib(proc.pid)
            second = http.post(url, content=body, headers=HEADERS | {"Authorization": f"Bearer {other}"})
        return {
            "codes": ", ".join(f"{n}× {c}" for c, n in sorted(codes.items())),
            "seconds": took,
            "rss0": rss0,
            "rss1": rss1,
            "other": second.status_code,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--before", type=Path, help="a tree of the older server (git archive main | tar -x)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        sim_port = free_port()
        sim = subprocess.Popen(
            [sys.executable, "-m", "pmcp", "sim", "serve", "--port", str(sim_port), "--guests", "20"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sim_url = f"http://127.0.0.1:{sim_port}"
        try:
            wait_up(sim_url + "/api2/json/version", sim)
            runs: list[tuple[str, dict[str, object]]] = []
            if a.before:
                runs.append(("before", measure(a.before, sim_url, a.sessions, {}, tmpdir / "before")))
            runs.append(("after, defaults", measure(ROOT, sim_url, a.sessions, {}, tmpdir / "after")))
            off = {k: "0" for k in ("PMCP_RATE_INITIALIZE", "PMCP_RATE_REQUESTS", "PMCP_RATE_TOOL_CALLS")}
            runs.append(("after, rates off", measure(ROOT, sim_url, a.sessions, off, tmpdir / "off")))
        finally:
            sim.terminate()
            sim.communicate(timeout=30)
    print("## One token floods the server with sessions (bench_limits.py)\n")
    print(
        f"One token sends {a.sessions} `initialize` requests (2025-11 era, never closed) over one keep-alive "
        "connection, then a second token sends one. RSS of the `pmcp serve` process from /proc.\n"
    )
    print("| server | flood answers | flood s | RSS before MiB | RSS after MiB | second token |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, r in runs:
        row = [name, r["codes"], f"{r['seconds']:.1f}", f"{r['rss0']:.0f}", f"{r['rss1']:.0f}", r["other"]]
        print("| " + " | ".join(str(x) for x in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
