"""Benchmark of the MCP server against the simulator; prints a markdown section for BENCHMARKS.md.

Three processes, as deployed: the simulator (``pmcp sim serve --tls``), the server (``pmcp serve``,
configured from the environment, verifying the simulator's CA) and this client (the official SDK).

1. tools/call latency (p50/p99) and throughput of a read tool (``cluster_overview node=``: one request)
   through the whole stack, next to a direct proxmoxer call of the same API request to the same
   simulator in the same run: the overhead ratio.
2. One-guest calls (``guest_status``) at 50 and 5,000 guests: the ratio shows whether a call that
   names one guest grows with the cluster (target <= 1.3x, issue 16; server/locator.py says how).
3. The size of the list_guests answer (bytes of the JSON-RPC result, and bytes/4 as a token
   estimate) at 50 and 5,000 guests, default page.

Run: .venv/bin/python bench/bench_server.py [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmcp import authtokens  # noqa: E402
from pmcp.demo import free_port  # noqa: E402
from pmcp.sim.state import DEFAULT_ROOT_TOKEN, parse_token  # noqa: E402

USER, TOKEN_NAME, SECRET = parse_token(DEFAULT_ROOT_TOKEN)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait(url: str, proc: subprocess.Popen, **kw: object) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited: {proc.communicate()[1][-2000:]}")
        try:
            if httpx2.get(url, timeout=2, **kw).status_code < 500:
                return
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.1)


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@contextmanager
def stack(guests: int, workdir: Path) -> Iterator[tuple[str, str, str, str]]:
    """(sim url, CA file, MCP url, client token) with the simulator and the server running."""
    workdir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMCP_", "PROXMOX_"))}
    sim_port, mcp_port = free_port(), free_port()
    tls_dir = workdir / "tls"
    sim_args = [sys.executable, "-m", "pmcp", "sim", "serve", "--port", str(sim_port)]
    sim_args += ["--guests", str(guests), "--tls", "--tls-dir", str(tls_dir), "--task-seconds", "0.2"]
    with process(sim_args, env) as sim:
        ca = tls_dir / "pve-root-ca.pem"
        sim_url = f"https://127.0.0.1:{sim_port}"
        while not ca.exists():
            time.sleep(0.05)
        _wait(sim_url + "/api2/json/version", sim, verify=str(ca))
        (workdir / "secret").write_text(SECRET)
        tokens = workdir / "tokens"
        token = authtokens.add(tokens, "bench")
        server_env = env | {
            "PROXMOX_URL": sim_url,
            "PROXMOX_TOKEN_ID": f"{USER}!{TOKEN_NAME}",
            "PROXMOX_TOKEN_SECRET_FILE": str(workdir / "secret"),
            "PROXMOX_CA_FILE": str(ca),
            "PMCP_AUTH_TOKEN_FILE": str(tokens),
            # throughput of one client, measured: the per-token rate limits would answer it 429
            "PMCP_RATE_TOOL_CALLS": "0",
            "PMCP_RATE_REQUESTS": "0",
        }
        with process([sys.executable, "-m", "pmcp", "serve", "--port", str(mcp_port)], server_env) as server:
            base = f"http://127.0.0.1:{mcp_port}"
            _wait(base + "/health", server)
            yield sim_url, str(ca), base + "/mcp", token


async def mcp_calls(url: str, token: str, tool: str, args: dict, n: int) -> tuple[list[float], float, object]:
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        last = await client.call_tool(tool, args)  # warm-up
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            last = await client.call_tool(tool, args)
            lat.append(time.perf_counter() - s)
        total = time.perf_counter() - t0
        assert not last.is_error, last
        return lat, total, last


def direct_calls(sim_url: str, ca: str, node: str, n: int) -> tuple[list[float], float]:
    from proxmoxer import ProxmoxAPI

    api = ProxmoxAPI(
        sim_url.split("://", 1)[1], user=USER, token_name=TOKEN_NAME, token_value=SECRET, verify_ssl=ca
    )
    api.nodes(node).status.get()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        api.nodes(node).status.get()
        lat.append(time.perf_counter() - s)
    return lat, time.perf_counter() - t0


def answer_size(result) -> int:
    wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return len(json.dumps(wire, separators=(",", ":")))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    rows, sizes = [], []
    node = "pve1"
    with tempfile.TemporaryDirectory() as tmp:
        with stack(50, Path(tmp) / "a") as (sim_url, ca, url, token):
            lat, total, _ = anyio.run(mcp_calls, url, token, "cluster_overview", {"node": node}, args.calls)
            dlat, dtotal = direct_calls(sim_url, ca, node, args.calls)
            _, _, small = anyio.run(mcp_calls, url, token, "list_guests", {}, 1)
            sizes.append((50, small))
            vmid = small.structured_content["guests"][0]["vmid"]
            one_small, one_small_total, _ = anyio.run(
                mcp_calls, url, token, "guest_info", {"vmid": vmid}, args.calls
            )
        rows.append(("MCP tools/call cluster_overview node= (pmcp)", lat, total))
        rows.append(("direct proxmoxer GET /nodes/{node}/status", dlat, dtotal))
        with stack(5000, Path(tmp) / "b") as (_, _, url, token):
            big_lat, big_total, big = anyio.run(mcp_calls, url, token, "list_guests", {}, 30)
            sizes.append((5000, big))
            vmid = big.structured_content["guests"][0]["vmid"]
            one_big, one_big_total, _ = anyio.run(
                mcp_calls, url, token, "guest_info", {"vmid": vmid}, args.calls
            )
        rows.append(("MCP tools/call list_guests at 5,000 guests", big_lat, big_total))
        rows.append(("MCP tools/call guest_info at 50 guests", one_small, one_small_total))
        rows.append(("MCP tools/call guest_info at 5,000 guests", one_big, one_big_total))

    print("## MCP server (pmcp serve) against the simulator\n")
    print(
        f"{args.calls} sequential calls over one session on loopback; client, `pmcp serve` and "
        "`pmcp sim serve --tls` in three processes, TLS verified with the simulator's CA.\n"
    )
    print("| path | p50 ms | p99 ms | calls/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, lat, total in rows:
        p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {len(lat) / total:.0f} |")
    ratio = pct(rows[0][1], 0.5) / pct(rows[1][1], 0.5)
    added = (pct(rows[0][1], 0.5) - pct(rows[1][1], 0.5)) * 1000
    print(f"\nOverhead ratio (p50 MCP / p50 direct): **{ratio:.1f}x** (pmcp adds {added:.1f} ms at p50)\n")
    one = pct(one_big, 0.5) / pct(one_small, 0.5)
    print(f"One-guest call, 5,000 guests / 50 guests (guest_info p50): **{one:.2f}x** (target <= 1.3x)\n")
    print("| list_guests, default page | total | returned | answer bytes | est. tokens (bytes/4) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n, result in sizes:
        sc = result.structured_content
        b = answer_size(result)
        print(f"| {n} guests | {sc['total']} | {sc['returned']} | {b} | {b // 4} |")
    print("\nTarget: default page <= 8 KB at 5,000 guests, `total` always reported.")


if __name__ == "__main__":
    main()
